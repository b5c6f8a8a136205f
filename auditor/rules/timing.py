"""PG3xx time limits from the logs: training, training + calibration + serialization, evaluation (600 s each)."""

from __future__ import annotations

from auditor.findings import Finding

RULES = {
    "PG301": ("error", "training longer than 600 s"),
    "PG302": ("error", "training + calibration + serialization longer than 600 s"),
    "PG303": ("error", "evaluation longer than 600 s"),
}
LIMIT_S = 600.0


def _non_record(sub) -> bool:
    js = sub.submission_json if isinstance(sub.submission_json, dict) else {}
    track = str(js.get("track", ""))
    return "non_record" in str(sub.root).replace("-", "_") or "non" in track.lower()


def check(ctx) -> list:
    sub = ctx.sub
    out = []
    level = "note" if _non_record(sub) else "error"
    tail = " (non-record track: informational)" if level == "note" else ""
    for rel, info in sorted(sub.logs.items()):
        tt = info.train_time_ms
        step_avg = info.steps[-1][4] if info.steps and info.steps[-1][4] else 0.0
        if tt is not None and tt > LIMIT_S * 1000 + max(step_avg or 0.0, 500.0):
            out.append(
                Finding(
                    "PG301",
                    level,
                    f"{rel}: training took {tt / 1000:.1f} s (seed {info.seed}), over the "
                    f"{LIMIT_S:.0f} s limit; set MAX_WALLCLOCK_SECONDS=600 so the loop stops in time.{tail}",
                    rel,
                    info.lines.get("stop", info.lines.get("last_step", 1)),
                    1,
                )
            )
            continue
        extra = (info.calibration_s or 0.0) + (info.serialize_s or 0.0)
        if tt is not None and extra > 0 and tt / 1000 + extra > LIMIT_S + 0.5:
            reserve = info.gptq_reserve_s
            out.append(
                Finding(
                    "PG302",
                    level,
                    f"{rel}: training {tt / 1000:.1f} s + calibration/serialization "
                    f"{extra:.1f} s = {tt / 1000 + extra:.1f} s, over {LIMIT_S:.0f} s"
                    f"{f' (reserved only {reserve:.1f} s)' if reserve else ''}; calibration on training data "
                    f"counts against the training budget. Reserve its time (e.g. GPTQ_RESERVE_SECONDS).{tail}",
                    rel,
                    info.lines.get("stop", 1),
                    1,
                )
            )
        ev = info.max_eval_time_ms
        if ev is not None and ev > LIMIT_S * 1000:
            out.append(
                Finding(
                    "PG303",
                    level,
                    f"{rel}: evaluation took {ev / 1000:.1f} s (sum of the timed evals"
                    f"{', incl. TTT' if info.ttt_elapsed_s or info.total_eval_time_s else ''}), over the "
                    f"{LIMIT_S:.0f} s evaluation limit. Drop passes or shorten TTT.{tail}",
                    rel,
                    info.final_lines.get(info.scored_label, 1) if info.scored_label else 1,
                    1,
                )
            )
    return out


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
LEGAL_EXAMPLES = [
    {
        "name": "within_limits",
        "files": {
            "train_gpt.py": _PY,
            "train_seed1.log": _log(600040, [("final_int6_sliding_window", 74000), ("legal_ttt", 410000)], 0.0),
        },
        "rules": ["PG301", "PG302", "PG303"],
    },
]
ILLEGAL_EXAMPLES = [
    {
        "name": "train_too_long",
        "files": {"train_gpt.py": _PY, "train_seed1.log": _log(640000, [("final_int6_roundtrip", 6000)])},
        "rules": ["PG301"],
    },
    {
        "name": "calibration_outside_budget",
        "files": {"train_gpt.py": _PY, "train_seed1.log": _log(599500, [("final_int6_roundtrip", 6000)], 12.5)},
        "rules": ["PG302"],
    },
    {
        "name": "eval_too_long",
        "files": {
            "train_gpt.py": _PY,
            "train_seed1.log": _log(590000, [("final_int6_sliding_window", 120000), ("legal_ttt", 530000)]),
        },
        "rules": ["PG303"],
    },
]
