"""PG3xx time limits from the logs: training, training + calibration + serialization, evaluation (600 s each)."""

from __future__ import annotations

from auditor.rules.base import Example, Rule, register
from auditor.rules.data import _HP, late_train_reads

LIMIT_S = 600.0


def _non_record(sub) -> bool:
    js = sub.submission_json if isinstance(sub.submission_json, dict) else {}
    track = str(js.get("track", ""))
    return "non_record" in str(sub.root).replace("-", "_") or "non" in track.lower()


def _world_size(info) -> int | None:
    v = info.hyperparameters.get("world_size")
    return int(v) if isinstance(v, str) and v.isdigit() and int(v) > 0 else None


def _train_over(info) -> float | None:
    """Seconds the log's training time exceeds the limit (scaled to 8 GPUs when the run used fewer), else None."""
    tt = info.train_time_ms
    if tt is None:
        return None
    step_avg = info.steps[-1][4] if info.steps and info.steps[-1][4] else 0.0
    ws = _world_size(info)
    limit = LIMIT_S * (8 / ws if ws and ws < 8 else 1)
    over = tt / 1000 - limit
    return over if over * 1000 > max(step_avg or 0.0, 500.0) else None


def _logs_list(items) -> str:
    return ", ".join(f"{rel} ({what})" for rel, what in items)


def _level(rule, sub):
    """Non-record submissions have no time limit: their timings are informational notes."""
    return ("note", " (non-record track: informational)") if _non_record(sub) else (rule.level, "")


def _log(train_ms, evals, calib=None):
    s = [
        "step:1/20000 train_loss:6.9 train_time:90ms step_avg:90.00ms",
        f"stopping_early: wallclock_cap train_time:{train_ms}ms step:6000/20000",
    ]
    if calib is not None:
        s.append(f"GPTQ:collected 67 Hessians in {calib}s")
    for label, ms in evals:
        s.append(f"{label} val_loss:1.9000 val_bpb:1.1200 eval_time:{ms}ms")
    return "\n".join(s) + "\n"


_PY = "import torch\nprint('train')\n"
_GPTQ = _HP.replace("{reserve}", "12").replace("{save}", "pass")  # Hessians on training data after the loop
GRACE_S = 10.0  # calibration over its reserved time by at most this much: a warning (timer granularity, logging)
_WITHIN = Example("within_limits", {
    "train_gpt.py": _PY,
    "train_seed1.log": _log(600040, [("final_int6_sliding_window", 74000), ("legal_ttt", 410000)], 0.0),
})


@register
class PG301(Rule):
    id, level, title = "PG301", "error", "training longer than 600 s"
    why = ("Record-track training must finish within 600 s on 8xH100 (the run's wallclock cap). A run on fewer GPUs "
           "is held to the same GPU-time: 600 s x 8 / world_size.")
    fix = "Set MAX_WALLCLOCK_SECONDS=600 so the training loop stops in time."
    LEGAL = (_WITHIN, Example("two_gpus_four_times_longer", {
        "train_gpt.py": _PY, "train_v1.txt": "world_size:2 grad_accum_steps:4\n" + _log(2400100, [])}))
    ILLEGAL = (
        Example("train_too_long",
                {"train_gpt.py": _PY, "train_seed1.log": _log(640000, [("final_int6_roundtrip", 6000)]),
                 "train_seed2.log": _log(650000, [("final_int6_roundtrip", 6000)])},
                points_at=(("train_seed1.log", 2),), note="one finding listing every log over the limit"),
    )

    def check(self, facts):
        lvl, tail = _level(self, facts.sub)
        over = [(rel, info) for rel, info in sorted(facts.sub.logs.items()) if _train_over(info) is not None]
        if over:
            rel, info = over[0]
            yield self.finding(
                f"training ran over the {LIMIT_S:.0f} s limit: "
                f"{_logs_list((r, f'{i.train_time_ms / 1000:.1f} s, seed {i.seed}') for r, i in over)}; set "
                f"MAX_WALLCLOCK_SECONDS=600 so the loop stops in time.{tail}",
                rel, info.lines.get("stop", info.lines.get("last_step", 1)), level=lvl,
                evidence={"logs": [r for r, _i in over]})


@register
class PG302(Rule):
    id, level, title = "PG302", "error", "training-data calibration outside the 600 s training budget"
    why = ("Calibration on training data (GPTQ Hessians) is training-data access and counts against the 600 s "
           "budget: training time + calibration time must stay within it. Calibration on self-generated data and "
           "serialization do not count. Over the reserved time by a few seconds is a warning.")
    fix = "Reserve the calibration time inside the budget (e.g. GPTQ_RESERVE_SECONDS) or calibrate faster."
    LEGAL = (_WITHIN, Example("self_generated_calibration", {
        "train_gpt.py": _PY, "train_seed1.log": _log(600100, [("final_int6_roundtrip", 6000)], 196.7)},
        note="the code reads no training data after training: 197 s of generation + Hessians do not count"))
    ILLEGAL = (
        Example("calibration_outside_budget",
                {"train_gpt.py": _GPTQ, "train_seed1.log": _log(599500, [("final_int6_roundtrip", 6000)], 12.5)},
                points_at=(("train_seed1.log", 3),)),
        Example("calibration_over_reserve_by_a_second",
                {"train_gpt.py": _GPTQ, "train_seed1.log": _log(588100, [("final_int6_roundtrip", 6000)], 12.7)},
                points_at=(("train_seed1.log", 3),), note="over by 0.8 s: a warning"),
    )

    def check(self, facts):
        lvl, tail = _level(self, facts.sub)
        if facts.prog is not None and not [x for x in late_train_reads(facts) if not (x[1].off or x[0].reach == "off")]:
            return  # the code reads no training data after training: its calibration (if any) is self-generated
        over = []
        for rel, info in sorted(facts.sub.logs.items()):
            tt, cal = info.train_time_ms, info.calibration_s
            if tt is None or not cal or _train_over(info) is not None:
                continue  # nothing to add up, or PG301's case
            excess = tt / 1000 + cal - LIMIT_S
            if excess > 0.5:
                over.append((rel, info, excess))
        if not over:
            return
        worst = max(e for _r, _i, e in over)
        level = lvl if lvl == "note" else ("warning" if worst <= GRACE_S else self.level)
        rel, info, _e = over[0]
        reserve = info.gptq_reserve_s
        each = _logs_list((r, f"{i.train_time_ms / 1000:.1f} s + {i.calibration_s:.1f} s, over by {e:.1f} s")
                          for r, i, e in over)
        yield self.finding(
            f"training + calibration on training data ran over {LIMIT_S:.0f} s"
            f"{f' (reserved {reserve:g} s)' if reserve is not None else ''}: "
            f"{each}"
            f"; calibration on training data counts against the training budget. Reserve its time (e.g. "
            f"GPTQ_RESERVE_SECONDS).{tail}", rel, info.lines.get("calibration", info.lines.get("stop", 1)),
            level=level, evidence={"logs": [r for r, _i, _e in over], "max_excess_s": round(worst, 3)})


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
        over = [(rel, info) for rel, info in sorted(facts.sub.logs.items())
                if info.max_eval_time_ms is not None and info.max_eval_time_ms > LIMIT_S * 1000]
        if over:
            rel, info = over[0]
            yield self.finding(
                f"evaluation ran over the {LIMIT_S:.0f} s limit (sum of the timed evals, incl. TTT): "
                f"{_logs_list((r, f'{i.max_eval_time_ms / 1000:.1f} s') for r, i in over)}. Drop passes or "
                f"shorten TTT.{tail}", rel, info.final_lines.get(info.scored_label, 1) if info.scored_label else 1,
                level=lvl, evidence={"logs": [r for r, _i in over]})
