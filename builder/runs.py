"""Load and check the runs a record folder is built from.

A run is either a pgolf run directory (`train.log`, `config.json`, `metrics.json`, `final_model.ptz`) or, with
--from-logs, a challenge-style log (a file, or a directory holding one) made by any script: its step lines, final
`*_exact` lines and `Total submission size ... N bytes` are parsed by `auditor.logs.parse_log`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from auditor.logs import parse_log
from trainer.errors import PgolfError

MAX_ARTIFACT_BYTES = 16_000_000
MAX_TRAIN_SECONDS = 600.0
MAX_EVAL_SECONDS = 600.0
RECORD_MIN_SEEDS = 3
TRACKS = ("10min_16mb", "non_record_16mb")
# Keys that legitimately differ between the seeds of one submission.
PER_RUN_KEYS = ("seed", "run_id", "out_dir")


class RunError(PgolfError):
    """A run cannot be packaged (missing files or metrics, inconsistent seeds, over a limit)."""


@dataclass
class SeedRun:
    source: str  # the directory or log file given on the command line
    seed: int
    log_text: str
    config: dict | None  # None for --from-logs runs
    val_loss: float
    val_bpb: float
    model_bytes: int
    code_bytes: int | None  # as measured by the run itself
    steps: int
    train_time_ms: float
    eval_time_ms: float | None
    step_avg_ms: float | None
    pre_quant_val_bpb: float | None = None
    post_quant_val_bpb: float | None = None
    sliding_val_bpb: float | None = None
    ttt_val_bpb: float | None = None
    scored_label: str | None = None
    code_sha256: str | None = None
    torch_version: str = ""
    cuda_version: str = ""
    hardware: str = ""
    stopped_early: bool = False
    train_curve: list = field(default_factory=list)  # [(step, loss)]
    val_curve: list = field(default_factory=list)  # [(step, val_loss, train_time_ms|None)]
    step_ms: float | None = None  # ms per step, for placing the 600 s mark on the curve
    log_env: dict = field(default_factory=dict)  # --from-logs: hyperparameters the log prints (ENV_NAME -> value)
    code_form: str | None = None  # the train_gpt.py form the run reserved (`pgolf train --code-form`)
    val_tokens: int | None = None  # validation targets scored
    val_tokens_available: int | None = None  # tokens in the validation split

    def validation_scope(self) -> dict | None:
        """{'partial', 'scored_tokens', 'available_tokens', 'val_max_tokens'}; None when not recorded (bare logs)."""
        if self.config is None:
            return None
        max_tokens = int(self.config.get("val_max_tokens") or 0)
        if self.val_tokens_available is not None and self.val_tokens is not None:
            partial = max_tokens > 0 and max_tokens + 1 < self.val_tokens_available
        else:  # a run from before pgolf recorded the counts: any VAL_MAX_TOKENS may have cut the split
            partial = max_tokens > 0
        return {"partial": partial, "scored_tokens": self.val_tokens if self.val_tokens is not None else max_tokens,
                "available_tokens": self.val_tokens_available, "val_max_tokens": max_tokens}


def _read_json(path: Path) -> dict:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RunError(f"{path}: cannot read JSON ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise RunError(f"{path}: expected a JSON object, got {type(obj).__name__}")
    return obj


def _need(metrics: dict, key: str, where: Path, types=(int, float)):
    v = metrics.get(key)
    if not isinstance(v, types) or isinstance(v, bool):
        raise RunError(f"{where}: run without final metrics: {key!r} missing or not a number (did the run finish?)")
    return v


def load_run_dir(path) -> SeedRun:
    """A pgolf run directory with final metrics."""
    d = Path(path)
    if not d.is_dir():
        raise RunError(f"{d}: not a run directory (expected train.log, config.json, metrics.json); pass --from-logs for a bare log")
    for name in ("train.log", "config.json"):
        if not (d / name).is_file():
            raise RunError(f"{d}: missing {name} (expected a pgolf run directory)")
    if not (d / "metrics.json").is_file():
        raise RunError(f"{d}: run without final metrics: metrics.json missing (did the run finish?)")
    m = _read_json(d / "metrics.json")
    where = d / "metrics.json"
    hist = m.get("history") or {}
    train_curve = [(int(r[0]), float(r[1])) for r in hist.get("train", []) if len(r) >= 2]
    val_curve = [(int(r[0]), float(r[1]), float(r[3]) if len(r) > 3 else None) for r in hist.get("val", []) if len(r) >= 3]
    steps = int(_need(m, "steps", where))
    train_ms = float(_need(m, "train_time_ms", where)) + float(m.get("calibration_ms") or 0.0)
    return SeedRun(
        source=str(d),
        seed=int(_need(m, "seed", where, (int,))),
        log_text=(d / "train.log").read_text(encoding="utf-8", errors="replace"),
        config=_read_json(d / "config.json"),
        val_loss=float(_need(m, "val_loss", where)),
        val_bpb=float(_need(m, "val_bpb", where)),
        model_bytes=int(_need(m, "model_bytes", where)),
        code_bytes=int(m["code_bytes"]) if isinstance(m.get("code_bytes"), int) else None,
        steps=steps,
        train_time_ms=train_ms,
        eval_time_ms=float(_need(m, "eval_time_ms", where)),
        step_avg_ms=float(m["step_avg_ms"]) if m.get("step_avg_ms") is not None else None,
        pre_quant_val_bpb=m.get("pre_quant_val_bpb"),
        post_quant_val_bpb=m.get("post_quant_val_bpb"),
        sliding_val_bpb=m.get("sliding_val_bpb"),
        ttt_val_bpb=m.get("ttt_val_bpb"),
        scored_label=m.get("scored_label"),
        code_sha256=m.get("code_sha256"),
        torch_version=str(m.get("torch_version", "")),
        cuda_version=str(m.get("cuda_version", "")),
        hardware=str(m.get("hardware", "")),
        stopped_early=bool(m.get("stopped_early", False)),
        train_curve=train_curve,
        val_curve=val_curve,
        step_ms=float(m["step_avg_ms"]) if m.get("step_avg_ms") else None,
        code_form=m.get("code_form") if isinstance(m.get("code_form"), str) else None,
        val_tokens=m.get("val_tokens") if isinstance(m.get("val_tokens"), int) else None,
        val_tokens_available=m.get("val_tokens_available") if isinstance(m.get("val_tokens_available"), int) else None,
    )


def load_log_run(path) -> SeedRun:
    """A challenge-style log (a file, or a directory with train.log / one *.log / *.txt) from any script."""
    p = Path(path)
    if p.is_dir():
        cands = [p / "train.log"] if (p / "train.log").is_file() else sorted(list(p.glob("*.log")) + list(p.glob("*.txt")))
        if len(cands) != 1:
            raise RunError(f"{p}: expected one log file (train.log, *.log or *.txt), found {len(cands)}")
        p = cands[0]
    if not p.is_file():
        raise RunError(f"{p}: no such log file")
    text = p.read_text(encoding="utf-8", errors="replace")
    info = parse_log(text, name=p.name)
    where = p
    if info.scored_val_bpb is None or info.scored_val_loss is None:
        raise RunError(f"{where}: run without final metrics: no final `*val_loss:X val_bpb:Y` line found")
    if info.seed is None:
        raise RunError(f"{where}: no seed in the log (`seed:N`) or file name (train_seed42.log)")
    if info.total_size_bytes is None and info.model_bytes is None:
        raise RunError(f"{where}: no `Total submission size ... N bytes` or `Serialized model ... N bytes` line")
    model_bytes = info.model_bytes
    code_bytes = info.code_bytes
    if model_bytes is None:
        model_bytes = info.total_size_bytes - (code_bytes or 0)
    steps_done = info.stop_step or max([s[0] for s in info.steps] + [v[0] for v in info.vals] + [0])
    train_ms = info.train_time_ms
    if train_ms is None:
        raise RunError(f"{where}: no training time in the log (step lines with train_time)")
    eval_ms = sum(info.eval_times_ms.values()) if info.eval_times_ms else None
    if info.total_eval_time_s is not None:
        eval_ms = info.total_eval_time_s * 1000.0
    avgs = [s[4] for s in info.steps if s[4] is not None]
    finals = info.finals

    def final_bpb(*patterns):
        import re

        for lb, (_l, b, _t) in reversed(list(finals.items())):
            if any(re.search(pt, lb) for pt in patterns):
                return b
        return None

    res = info.result or {}
    return SeedRun(
        source=str(path),
        seed=int(info.seed),
        log_text=text,
        config=None,
        val_loss=float(info.scored_val_loss),
        val_bpb=float(info.scored_val_bpb),
        model_bytes=int(model_bytes),
        code_bytes=code_bytes,
        steps=int(steps_done),
        train_time_ms=float(train_ms) + 1000.0 * float(info.calibration_s or 0.0),
        eval_time_ms=eval_ms,
        step_avg_ms=avgs[-1] if avgs else None,
        pre_quant_val_bpb=final_bpb(r"(?i)post_ema|pre-?quant"),
        post_quant_val_bpb=final_bpb(r"roundtrip", r"^quantized$"),
        sliding_val_bpb=final_bpb(r"sliding"),
        ttt_val_bpb=final_bpb(r"ttt"),
        scored_label=info.scored_label,
        torch_version=str(res.get("torch_version", "")),
        cuda_version=str(res.get("cuda_version", "")),
        hardware=str(res.get("hardware", "")),
        stopped_early=bool(info.stopped_early),
        train_curve=[(int(s[0]), float(s[2])) for s in info.steps if s[2] is not None],
        val_curve=[(int(v[0]), float(v[2]), v[4]) for v in info.vals],
        step_ms=avgs[-1] if avgs else None,
        log_env=dict(info.env),
    )


def comparable_config(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in PER_RUN_KEYS}


def check_runs(runs: list[SeedRun], track: str) -> None:
    """Refuse inconsistent or out-of-bounds runs (the shipped code's size is checked by builder.submission)."""
    if track not in TRACKS:
        raise RunError(f"unknown track {track!r}: expected one of {', '.join(TRACKS)}")
    if not runs:
        raise RunError("no runs given")
    seeds = [r.seed for r in runs]
    dup = sorted({s for s in seeds if seeds.count(s) > 1})
    if dup:
        raise RunError(f"seed {dup[0]} appears in more than one run ({', '.join(r.source for r in runs if r.seed == dup[0])})")
    first = runs[0]
    if first.config is not None:
        ref = comparable_config(first.config)
        for r in runs[1:]:
            if r.config is None:
                raise RunError(f"{r.source}: cannot mix run directories and bare logs")
            other = comparable_config(r.config)
            diff = sorted(k for k in set(ref) | set(other) if ref.get(k) != other.get(k))
            if diff:
                k = diff[0]
                raise RunError(
                    f"runs differ in configuration other than seed: {k} is {ref.get(k)!r} in {first.source} "
                    f"but {other.get(k)!r} in {r.source}" + (f" (and {len(diff) - 1} more keys)" if len(diff) > 1 else "")
                )
    if first.config is None and all(r.log_env for r in runs):
        # Logs that print their hyperparameters must agree on everything but the per-run keys.
        skip = {"SEED", "RUN_ID", "OUT_DIR"}
        ref = {k: v for k, v in first.log_env.items() if k not in skip}
        for r in runs[1:]:
            other = {k: v for k, v in r.log_env.items() if k not in skip}
            diff = sorted(k for k in set(ref) | set(other) if ref.get(k) != other.get(k))
            if diff:
                k = diff[0]
                raise RunError(f"runs differ in configuration other than seed: {k}={ref.get(k)} in {first.source} "
                               f"but {k}={other.get(k)} in {r.source}")
    shas = {r.code_sha256 for r in runs}
    if len(shas) > 1:
        listing = ", ".join(f"{r.seed}:{(r.code_sha256 or 'none')[:12]}" for r in runs)
        raise RunError(f"runs come from different code: code_sha256 differs ({listing})")
    forms = {r.code_form for r in runs}
    if len(forms) > 1:
        listing = ", ".join(f"seed {r.seed}: {r.code_form or 'not recorded'}" for r in runs)
        raise RunError(f"runs reserved different train_gpt.py forms ({listing}); train every seed with the same "
                       f"`pgolf train --code-form`")
    sizes = {r.code_bytes for r in runs if r.code_bytes is not None}
    if len(sizes) > 1:
        listing = ", ".join(f"{r.code_bytes} (seed {r.seed})" for r in runs)
        raise RunError(f"runs come from different code: they measured different code sizes: {listing} (trainer "
                       f"source changed between runs, or they were trained with different `--code-form`)")
    if track == "10min_16mb":
        for r in runs:
            scope = r.validation_scope()
            if scope is not None and scope["partial"]:
                raise RunError(
                    f"{r.source}: seed {r.seed} scored only {scope['scored_tokens']:,} validation tokens"
                    + (f" of {scope['available_tokens']:,}" if scope["available_tokens"] else "")
                    + f" (VAL_MAX_TOKENS={scope['val_max_tokens']}): the record track needs the full validation "
                    f"split; retrain without --val-max-tokens or use --track non_record_16mb"
                )
    if track == "10min_16mb" and len(runs) < RECORD_MIN_SEEDS:
        raise RunError(f"the record track needs at least {RECORD_MIN_SEEDS} seeds, got {len(runs)} (use --track non_record_16mb)")
    if track == "10min_16mb":
        for r in runs:
            if r.train_time_ms > MAX_TRAIN_SECONDS * 1000.0:
                raise RunError(f"{r.source}: seed {r.seed} trained {r.train_time_ms / 1000:.1f} s, over the record track's {MAX_TRAIN_SECONDS:.0f} s")
            if r.eval_time_ms is not None and r.eval_time_ms > MAX_EVAL_SECONDS * 1000.0:
                raise RunError(f"{r.source}: seed {r.seed} evaluated for {r.eval_time_ms / 1000:.1f} s, over the record track's {MAX_EVAL_SECONDS:.0f} s")


def check_sizes(runs: list[SeedRun], shipped_code_bytes: int) -> None:
    for r in runs:
        total = r.model_bytes + shipped_code_bytes
        if total > MAX_ARTIFACT_BYTES:
            raise RunError(
                f"{r.source}: seed {r.seed} artifact is {total} bytes ({r.model_bytes} model + {shipped_code_bytes} code), "
                f"over the {MAX_ARTIFACT_BYTES} byte cap"
            )
