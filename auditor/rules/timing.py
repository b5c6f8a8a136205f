"""PG3xx time limits from the logs: training, training + calibration + serialization, evaluation (600 s each)."""

from __future__ import annotations

from auditor.rules.base import Example, Rule, register

LIMIT_S = 600.0


def _non_record(sub) -> bool:
    js = sub.submission_json if isinstance(sub.submission_json, dict) else {}
    track = str(js.get("track", ""))
    return "non_record" in str(sub.root).replace("-", "_") or "non" in track.lower()


def _level(rule, sub):
    """Non-record submissions have no time limit: their timings are informational notes."""
    return ("note", " (non-record track: informational)") if _non_record(sub) else (rule.level, "")


def _log(train_ms, evals, calib=None):
    s = [
        "step:1/20000 train_loss:6.9 train_time:90ms step_avg:90.00ms",
        f"stopping_early: wallclock_cap train_time:{train_ms}ms step:6000/20000",
    ]
    if calib is not None:
        s.append(f"GPTQ:quantized in {calib}s")
    for label, ms in evals:
        s.append(f"{label} val_loss:1.9000 val_bpb:1.1200 eval_time:{ms}ms")
    return "\n".join(s) + "\n"


_PY = "import torch\nprint('train')\n"
_WITHIN = Example("within_limits", {
    "train_gpt.py": _PY,
    "train_seed1.log": _log(600040, [("final_int6_sliding_window", 74000), ("legal_ttt", 410000)], 0.0),
})


@register
class PG301(Rule):
    id, level, title = "PG301", "error", "training longer than 600 s"
    why = "Record-track training must finish within 600 s on 8xH100 (the run's wallclock cap)."
    fix = "Set MAX_WALLCLOCK_SECONDS=600 so the training loop stops in time."
    LEGAL = (_WITHIN,)
    ILLEGAL = (
        Example("train_too_long",
                {"train_gpt.py": _PY, "train_seed1.log": _log(640000, [("final_int6_roundtrip", 6000)])},
                points_at=(("train_seed1.log", 2),)),
    )

    def check(self, facts):
        lvl, tail = _level(self, facts.sub)
        for rel, info in sorted(facts.sub.logs.items()):
            tt = info.train_time_ms
            step_avg = info.steps[-1][4] if info.steps and info.steps[-1][4] else 0.0
            if tt is not None and tt > LIMIT_S * 1000 + max(step_avg or 0.0, 500.0):
                yield self.finding(
                    f"{rel}: training took {tt / 1000:.1f} s (seed {info.seed}), over the {LIMIT_S:.0f} s limit; "
                    f"set MAX_WALLCLOCK_SECONDS=600 so the loop stops in time.{tail}",
                    rel, info.lines.get("stop", info.lines.get("last_step", 1)), level=lvl)


@register
class PG302(Rule):
    id, level, title = "PG302", "error", "training + calibration + serialization longer than 600 s"
    why = "Calibration on training data (GPTQ Hessians) is training-data access and counts against the 600 s budget."
    fix = "Reserve the calibration time inside the budget (e.g. GPTQ_RESERVE_SECONDS) or calibrate faster."
    LEGAL = (_WITHIN,)
    ILLEGAL = (
        Example("calibration_outside_budget",
                {"train_gpt.py": _PY, "train_seed1.log": _log(599500, [("final_int6_roundtrip", 6000)], 12.5)},
                points_at=(("train_seed1.log", 2),)),
    )

    def check(self, facts):
        lvl, tail = _level(self, facts.sub)
        for rel, info in sorted(facts.sub.logs.items()):
            tt = info.train_time_ms
            step_avg = info.steps[-1][4] if info.steps and info.steps[-1][4] else 0.0
            if tt is None or tt > LIMIT_S * 1000 + max(step_avg or 0.0, 500.0):
                continue  # PG301's case
            extra = (info.calibration_s or 0.0) + (info.serialize_s or 0.0)
            if extra > 0 and tt / 1000 + extra > LIMIT_S + 0.5:
                reserve = info.gptq_reserve_s
                yield self.finding(
                    f"{rel}: training {tt / 1000:.1f} s + calibration/serialization {extra:.1f} s = "
                    f"{tt / 1000 + extra:.1f} s, over {LIMIT_S:.0f} s"
                    f"{f' (reserved only {reserve:.1f} s)' if reserve else ''}; calibration on training data "
                    f"counts against the training budget. Reserve its time (e.g. GPTQ_RESERVE_SECONDS).{tail}",
                    rel, info.lines.get("stop", 1), level=lvl)


@register
class PG303(Rule):
    id, level, title = "PG303", "error", "evaluation longer than 600 s"
    why = "Evaluation (all scoring passes, including test-time training) must finish within 600 s."
    fix = "Drop evaluation passes or shorten test-time training."
    LEGAL = (_WITHIN,)
    ILLEGAL = (
        Example("eval_too_long", {
            "train_gpt.py": _PY,
            "train_seed1.log": _log(590000, [("final_int6_sliding_window", 120000), ("legal_ttt", 530000)]),
        }, points_at=(("train_seed1.log", 4),)),
    )

    def check(self, facts):
        lvl, tail = _level(self, facts.sub)
        for rel, info in sorted(facts.sub.logs.items()):
            ev = info.max_eval_time_ms
            if ev is not None and ev > LIMIT_S * 1000:
                yield self.finding(
                    f"{rel}: evaluation took {ev / 1000:.1f} s (sum of the timed evals"
                    f"{', incl. TTT' if info.ttt_elapsed_s or info.total_eval_time_s else ''}), over the "
                    f"{LIMIT_S:.0f} s evaluation limit. Drop passes or shorten TTT.{tail}",
                    rel, info.final_lines.get(info.scored_label, 1) if info.scored_label else 1, level=lvl)
