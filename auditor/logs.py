"""Parse Parameter Golf training logs (challenge-spec §4.4-4.6) into one `LogInfo`.

Both log families are understood: family A (baseline / PR #549 `step:S/N train_loss:X train_time:Tms step_avg:Ams`,
`final_* val_loss:X val_bpb:Y eval_time:Tms`), family B (PR #1394 `S/N train_loss: X train_time: Mm tok/s: T`,
`timed_eval` labels, `Code size (compressed)`), family C (ternary/binary `step:S/N loss:X t:Tms avg:Ams`,
`budget:N/16000000`), optional unix-timestamp prefixes, and pgolf's own logs (`  ENV=value` header, `RESULT {json}`).

Logs of baseline-derived scripts start with the full source of the script; those lines are skipped: everything
before the first `=====` separator when the log opens with Python source, and anywhere any line carrying source
markers (`{`, `}`, `f"`, `log0(`, `print(`). The numeric regexes never match f-string source lines anyway.

Pure standard library: the auditor must start fast and never import torch.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

# Lines longer than this are skipped (the corpus's longest log line is < 1,000 chars); several patterns below
# backtrack over runs of spaces, so an unbounded line would cost time quadratic in its length.
MAX_LINE_CHARS = 4096
MAX_MESSAGES = 4000  # free-form lines kept per log for template matching
_TS = r"^(?:\d{9,}\.\d+\s+)?"
_RE_TS = re.compile(r"^\d{9,}\.\d+ ")
_RE_STEP_OLD = re.compile(
    _TS + r"step:(?P<step>\d+)/(?P<total>\d+)\s+(?:\[[^\]]*\]\s+)?(?P<mid>(?:[A-Za-z_]+:[-\d.e+naif]+\s+)*?)"
    r"(?:train_time|t):(?P<ms>[\d.]+)ms\s+(?:step_)?avg:(?P<avg>[\d.]+)ms"
)
_RE_STEP_NEW = re.compile(
    _TS
    + r"(?P<step>\d+)/(?P<total>\d+) train_loss: (?P<loss>[-\d.e+naif]+) train_time: (?P<min>[\d.]+)m tok/s: (?P<tps>\d+)"
)
_RE_VAL_OLD = re.compile(
    _TS + r"step:(?P<step>\d+)/(?P<total>\d+) val_loss:(?P<loss>[-\d.e+naif]+) val_bpb:(?P<bpb>[-\d.e+naif]+)"
    r"(?: train_time:(?P<ms>[\d.]+)ms)?(?: step_avg:(?P<avg>[\d.]+)ms)?"
)
_RE_VAL_NEW = re.compile(
    _TS + r"(?P<step>\d+)/(?P<total>\d+) val_loss: (?P<loss>[-\d.e+naif]+) val_bpb: (?P<bpb>[-\d.e+naif]+)"
)
_RE_FINAL = re.compile(
    _TS
    + r"(?P<label>[A-Za-z][\w\-. ]*?)\s+(?:stride:(?P<stride_pre>\d+)\s+)?(?:sliding )?val_loss[:=]\s?(?P<loss>\d+\.\d+)"
    r"\s+(?:sliding )?val_bpb[:=]\s?(?P<bpb>\d+\.\d+)(?P<rest>.*)$"
)
_RE_EVAL_TIME = re.compile(r"(?:eval_time|time|elapsed)[:=]\s?(?P<v>[\d.]+)(?P<u>ms|s)\b")
_RE_TOTAL_SIZE = re.compile(_TS + r"Total submission size(?: (?P<fmt>[^:]+))?: (?P<bytes>\d+) bytes")
_RE_MODEL_SIZE = re.compile(_TS + r"Serialized model(?: (?P<fmt>[^:]+))?: (?P<bytes>\d+) bytes")
_RE_CODE_SIZE = re.compile(_TS + r"Code size(?: \((?P<kind>compressed|uncompressed)\))?: (?P<bytes>\d+) bytes")
_RE_BUDGET = re.compile(
    _TS + r"(?:budget:(?P<b1>\d+)/\d+|artifact_bytes:\s+(?P<b2>\d+)|.*Total submission: (?P<b3>\d+) bytes"
    r"|.*\+ [\d.]+MB code = (?P<mb>[\d.]+)/16\.00MB)"
)
_RE_STOP = re.compile(
    _TS + r"stopping_early: wallclock_cap train_time: ?(?P<ms>[\d.]+)ms(?: step: ?(?P<step>\d+)/(?P<total>\d+))?"
)
_RE_TOTAL_EVAL = re.compile(_TS + r"total_eval_time:\s?(?P<s>[\d.]+)s")
_RE_TTT_DONE = re.compile(
    _TS + r"ttt_sliding:done val_loss=(?P<loss>[\d.]+) val_bpb=(?P<bpb>[\d.]+) elapsed=(?P<s>[\d.]+)s"
)
_RE_GPTQ_RESERVE = re.compile(_TS + r"gptq:reserving (?P<s>[\d.]+)s, effective=(?P<ms>\d+)ms")
_RE_SERIALIZE = re.compile(_TS + r"serialize_wallclock: ?(?P<s>[\d.]+)s")
_RE_ARTIFACT_WALL = re.compile(_TS + r"artifact_production_wallclock: ?(?P<s>[\d.]+)s")
# Calibration / quantization timings: `GPTQ:quantized in 3.5s`, `gptq:hessians collected in 3512ms`,
# pgolf's `calibration_time:3512ms`, `gptq_time:...`.
_RE_CALIB = re.compile(
    _TS
    + r"(?i:(?P<what>gptq|hessian|calib)[\w:+ ]*?)(?:\s+in\s+|_time[:=]\s?|\s+time[:=]\s?|took\s+)(?P<v>[\d.]+)(?P<u>ms|s)\b"
)
_RE_SEED = re.compile(_TS + r"seed[:=]\s?(?P<seed>\d+)\s*$")
_RE_SEED_NAME = re.compile(r"seed[_-]?(\d+)", re.IGNORECASE)
# the value excludes `,()[]{}`: `    MODEL_DIM=args.model_dim,` is echoed source (a keyword argument), not a setting
_RE_ENV_ASSIGN = re.compile(r"^\s*(?:export\s+)?(?P<k>[A-Z][A-Z0-9_]*)=(?P<v>[^\s,()\[\]{}]*)\s*$")
_RE_ENV_INLINE = re.compile(r"(?:(?<=\s)|^)(?P<k>[A-Z][A-Z0-9_]{2,})=(?P<v>[^\s;&|]+)")
_RE_HP_HEADER = re.compile(_TS + r"(?i:hyperparameters):?\s*$")
_RE_HP_ITEM = re.compile(_TS + r"\s{1,8}(?P<k>[A-Za-z_][\w.]*)\s*[:=]\s?(?P<v>.*?)\s*$")
_RE_KV_TOKEN = re.compile(r"^(?P<k>[a-z][a-z0-9_]*)[:=](?P<v>[^\s:=]+)$")
_RE_MARKER = re.compile(r"^([A-Za-z][A-Za-z0-9_]*)[: ]")
_RE_SEPARATOR = re.compile(r"^={20,}\s*$")
_SOURCE_MARKERS = ("{", "}", 'f"', "f'", "log0(", "print(")
_PY_START = re.compile(r"^(?:import |from \S+ import |\"\"\"|'''|#|class |def |@)")

# Labels that are diagnostics, never the scored number.
_DIAGNOSTIC = re.compile(r"(?i)^(?:diagnostic|pre-?quant|post_ema|prequant|pre_quant)")
# Scored-number preference (challenge-spec §4.6), best first. Each entry is a regex on the label.
_SCORED_TIERS = [
    r"quantized_ttt_phased(?:_exact)?",
    r"(?:quantized|final|final_int8)_ttt_lora(?:_exact)?",
    r"legal_ttt(?:_exact)?",
    r"quantized_ttt(?:_exact)?",
    r"quantized_sliding_window(?:_exact)?",
    r"final_int\d+_sliding_window(?:_exact)?",
    r"final_sliding_window_eval(?:_exact)?",
    r"final_sliding_window(?:_exact)?",
    r"final_sliding(?:_exact)?",
    r".*sliding.*",
    r"final_int8_zlib_roundtrip(?:_exact)?",
    r"final_\w*roundtrip(?:_exact)?",
    r"quantized(?:_exact)?",
    r"final_\w+",
    r".+",
]
_SCORED_TIER_RES = [re.compile(r"^(?:" + t + r")$", re.IGNORECASE) for t in _SCORED_TIERS]


@dataclass
class LogInfo:
    """Everything the auditor and `pgolf build --from-logs` need from one log. Times in ms unless named `_s`."""

    steps: list = field(default_factory=list)  # [(step, total, train_loss|None, train_time_ms|None, step_avg_ms|None)]
    vals: list = field(default_factory=list)  # [(step, total, val_loss, val_bpb, train_time_ms|None)]
    finals: dict = field(
        default_factory=dict
    )  # {label: (val_loss, val_bpb, eval_time_ms|None)}, first-seen order, last value
    final_lines: dict = field(default_factory=dict)  # {label: 1-based line of the last occurrence}
    scored_label: str | None = None
    scored_val_loss: float | None = None
    scored_val_bpb: float | None = None
    total_size_bytes: int | None = None  # the counted artifact total (last formatted `Total submission size`)
    total_sizes: list = field(default_factory=list)  # every total printed [(fmt, bytes, line)]
    model_bytes: int | None = None
    code_bytes: int | None = None  # code bytes that entered the total (compressed one when both are printed)
    code_bytes_compressed: int | None = None
    code_bytes_uncompressed: int | None = None
    code_bytes_plain: int | None = None  # `Code size: N bytes`
    stopped_early: bool = False
    stop_step: int | None = None
    seed: int | None = None
    train_time_ms: float | None = None
    eval_times_ms: dict = field(default_factory=dict)  # {label: ms}
    total_eval_time_s: float | None = None
    ttt_elapsed_s: float | None = None
    gptq_reserve_s: float | None = None
    gptq_effective_ms: int | None = None
    calibration_s: float | None = None  # sum of GPTQ/Hessian/calibration timings printed
    serialize_s: float | None = None
    artifact_production_s: float | None = None
    env: dict = field(default_factory=dict)  # ENV_NAME -> value as printed (upper-cased keys)
    hyperparameters: dict = field(default_factory=dict)  # key as printed -> value
    result: dict | None = None  # last `RESULT {json}`
    line_count: int = 0
    markers: set = field(default_factory=set)  # `name:`/`name ` prefixes of log lines (features the run printed)
    lines: dict = field(default_factory=dict)  # {"total_size": n, "code_size": n, "stop": n, ...} 1-based
    setting_lines: dict = field(default_factory=dict)  # {printed key or ENV name: 1-based line that printed it}
    # [(1-based line, stripped text)] of the free-form lines (not step/val/final metrics), for matching against the
    # script's own format strings (auditor.logtemplates); capped, and left out of to_dict
    messages: list = field(default_factory=list)

    @property
    def is_training_log(self) -> bool:
        return bool(self.steps or self.vals or self.finals or self.result)

    @property
    def max_eval_time_ms(self) -> float | None:
        """Evaluation time of the whole post-training evaluation: the sum of timed evals, or the larger of the
        explicit totals (`total_eval_time`, TTT elapsed) when those are printed."""
        parts = [v for k, v in self.eval_times_ms.items() if v is not None and not _DIAGNOSTIC.match(k)]
        total = sum(parts) if parts else None
        extra = [x * 1000.0 for x in (self.total_eval_time_s, self.ttt_elapsed_s) if x is not None]
        cands = [t for t in [total, *extra] if t is not None]
        return max(cands) if cands else None

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["finals"] = {k: list(v) for k, v in self.finals.items()}
        d["markers"] = sorted(self.markers)
        d.pop("messages", None)
        return d


def _num(s: str | None) -> float | None:
    if s is None:
        return None
    try:
        return float(s)
    except ValueError:
        return None


def _strip_ts(line: str) -> str:
    return _RE_TS.sub("", line, count=1)


def _looks_like_source(line: str) -> bool:
    return any(m in line for m in _SOURCE_MARKERS)


def _echo_end(lines: list[str]) -> int:
    """Index of the first line after an echoed source block at the top of the log (0 when none)."""
    first = next((ln for ln in lines if ln.strip()), "")
    if not _PY_START.match(_strip_ts(first).lstrip()) and not first.startswith("#!"):
        return 0
    for i, ln in enumerate(lines):
        if _RE_SEPARATOR.match(_strip_ts(ln)):
            return i + 1
    return 0


def pick_scored(finals: dict) -> str | None:
    """The label whose value is the scored number (challenge-spec §4.6): best tier wins, within a tier the last
    printed label wins, `_exact` lines preferred over their rounded twins."""
    labels = [lb for lb in finals if not _DIAGNOSTIC.match(lb)]
    if not labels:
        return None
    for tier in _SCORED_TIER_RES:
        hits = [lb for lb in labels if tier.match(lb)]
        if hits:
            exact = [lb for lb in hits if lb.endswith("_exact")]
            return (exact or hits)[-1]
    return labels[-1]


def parse_log(text: str, name: str | None = None) -> LogInfo:
    """Parse one log's text. Never raises on malformed content: unknown lines are ignored.

    `name` (the file name) supplies the seed when the log does not print one (`train_seed42.log`)."""
    info = LogInfo()
    if not isinstance(text, str):
        text = text.decode("utf-8", errors="replace")
    lines = text.splitlines()
    info.line_count = len(lines)
    start = _echo_end(lines)
    in_hp = False
    calib_total = 0.0
    calib_seen = False
    quant_total = 0.0
    quant_seen = False
    for idx in range(start, len(lines)):
        raw = lines[idx]
        lineno = idx + 1
        if len(raw) > MAX_LINE_CHARS:
            continue  # no real log line is this long; bounding it keeps every regex below linear in the file size
        line = _strip_ts(raw.rstrip("\r"))
        stripped = line.strip()
        if not stripped:
            in_hp = False
            continue
        if stripped.startswith("RESULT {") or stripped.startswith("RESULT{"):
            try:
                obj = json.loads(stripped[len("RESULT") :].strip())
            except ValueError:
                obj = None
            if isinstance(obj, dict):
                info.result = obj
                info.lines["result"] = lineno
            continue
        if _looks_like_source(line):
            continue
        mk = _RE_MARKER.match(stripped)
        if mk:
            info.markers.add(mk.group(1).lower())
        # Hyperparameter block: `Hyperparameters:` / `hyperparameters:` followed by indented key: value lines.
        if _RE_HP_HEADER.match(line):
            in_hp = True
            continue
        if in_hp:
            m = _RE_HP_ITEM.match(line)
            if m and line[:1].isspace():
                _record_hparam(info, m.group("k"), m.group("v"), lineno)
                continue
            in_hp = False
        m = _RE_ENV_ASSIGN.match(line)
        if m:
            info.env[m.group("k")] = m.group("v")
            info.setting_lines.setdefault(m.group("k"), lineno)
            continue
        if _parse_metrics_line(info, line, stripped, lineno):
            continue
        m = _RE_CALIB.match(line)
        if m:
            v = float(m.group("v")) / (1000.0 if m.group("u") == "ms" else 1.0)
            low = line.lower()
            if "hessian" not in low and "calib" not in low and re.search(r"quantiz|compress|save|serializ", low):
                quant_total += v  # quantize/compress/save: serialization, not calibration
                quant_seen = True
            else:
                calib_total += v
                calib_seen = True
                info.lines["calibration"] = lineno
            continue
        m = _RE_SEED.match(line)
        if m:
            info.seed = int(m.group("seed"))
            continue
        if len(info.messages) < MAX_MESSAGES:
            info.messages.append((lineno, stripped))
        _parse_kv_line(info, stripped, lineno)
    if calib_seen:
        info.calibration_s = calib_total
    if info.serialize_s is None and quant_seen:
        info.serialize_s = quant_total
    _finish(info, name)
    return info


def _record_hparam(info: LogInfo, key: str, value: str, lineno: int = 1) -> None:
    info.hyperparameters[key] = value
    info.setting_lines.setdefault(key, lineno)
    info.setting_lines.setdefault(key.upper(), lineno)
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
        # `  TTT_ENABLED=1` (pgolf) is the env name itself; `  ttt_enabled: True` (family B) is its attribute.
        info.env[key.upper()] = value


def _parse_kv_line(info: LogInfo, stripped: str, lineno: int = 1) -> None:
    """`train_batch_tokens:786432 train_seq_len:2048 iterations:20000` style lines: every token is key:value."""
    tokens = stripped.split()
    if not tokens or len(tokens) > 24:
        return
    pairs = []
    for tok in tokens:
        m = _RE_KV_TOKEN.match(tok)
        if not m:
            return
        pairs.append((m.group("k"), m.group("v")))
    for k, v in pairs:
        info.hyperparameters.setdefault(k, v)
        info.env.setdefault(k.upper(), v)
        info.setting_lines.setdefault(k, lineno)
        info.setting_lines.setdefault(k.upper(), lineno)
        if k == "seed" and v.isdigit():
            info.seed = int(v)


def _parse_metrics_line(info: LogInfo, line: str, stripped: str, lineno: int) -> bool:
    m = _RE_VAL_OLD.match(line)
    if m:
        info.vals.append((int(m["step"]), int(m["total"]), _num(m["loss"]), _num(m["bpb"]), _num(m["ms"])))
        return True
    m = _RE_VAL_NEW.match(line)
    if m:
        info.vals.append((int(m["step"]), int(m["total"]), _num(m["loss"]), _num(m["bpb"]), None))
        return True
    m = _RE_STEP_OLD.match(line)
    if m:
        loss = None
        for tok in (m["mid"] or "").split():
            k, _, v = tok.partition(":")
            if k in ("train_loss", "loss"):
                loss = _num(v)
        info.steps.append((int(m["step"]), int(m["total"]), loss, _num(m["ms"]), _num(m["avg"])))
        info.lines["last_step"] = lineno
        return True
    m = _RE_STEP_NEW.match(line)
    if m:
        step = int(m["step"])
        ms = float(m["min"]) * 60000.0
        info.steps.append((step, int(m["total"]), _num(m["loss"]), ms, ms / step if step else None))
        info.lines["last_step"] = lineno
        return True
    m = _RE_STOP.match(line)
    if m:
        info.stopped_early = True
        info.train_time_ms = float(m["ms"])
        if m["step"]:
            info.stop_step = int(m["step"])
        info.lines["stop"] = lineno
        return True
    m = _RE_TOTAL_SIZE.match(line)
    if m:
        info.total_sizes.append(((m["fmt"] or "").strip(), int(m["bytes"]), lineno))
        return True
    m = _RE_MODEL_SIZE.match(line)
    if m:
        fmt = (m["fmt"] or "").strip()
        if fmt or info.model_bytes is None:
            info.model_bytes = int(m["bytes"])
            info.lines["model_size"] = lineno
        return True
    m = _RE_CODE_SIZE.match(line)
    if m:
        kind = m["kind"]
        if kind == "compressed":
            info.code_bytes_compressed = int(m["bytes"])
        elif kind == "uncompressed":
            info.code_bytes_uncompressed = int(m["bytes"])
        else:
            info.code_bytes_plain = int(m["bytes"])
        info.lines["code_size_" + (kind or "plain")] = lineno
        return True
    m = _RE_TTT_DONE.match(line)
    if m:
        info.ttt_elapsed_s = float(m["s"])
        return True
    m = _RE_FINAL.match(line)
    if m:
        label = m["label"].strip()
        rest = m["rest"] or ""
        t = _RE_EVAL_TIME.search(rest)
        ms = None
        if t:
            ms = float(t["v"]) * (1.0 if t["u"] == "ms" else 1000.0)
        info.finals[label] = (float(m["loss"]), float(m["bpb"]), ms)
        info.final_lines[label] = lineno
        if ms is not None:
            info.eval_times_ms[label] = ms
        return True
    m = _RE_TOTAL_EVAL.match(line)
    if m:
        info.total_eval_time_s = float(m["s"])
        return True
    m = _RE_GPTQ_RESERVE.match(line)
    if m:
        info.gptq_reserve_s = float(m["s"])
        info.gptq_effective_ms = int(m["ms"])
        return True
    m = _RE_SERIALIZE.match(line)
    if m:
        info.serialize_s = float(m["s"])
        return True
    m = _RE_ARTIFACT_WALL.match(line)
    if m:
        info.artifact_production_s = float(m["s"])
        return True
    m = _RE_BUDGET.match(line)
    if m:
        if m["b1"] or m["b2"] or m["b3"]:
            info.total_sizes.append(("budget", int(m["b1"] or m["b2"] or m["b3"]), lineno))
        elif m["mb"]:
            info.total_sizes.append(("budget_mb", int(round(float(m["mb"]) * 1_000_000)), lineno))
        return True
    return False


def _finish(info: LogInfo, name: str | None) -> None:
    # Counted total: the last total that names a format (the bare `Total submission size:` of the baseline is the
    # raw fp checkpoint, informational), else the last total of any kind.
    if info.total_sizes:
        formatted = [t for t in info.total_sizes if t[0]]
        chosen = (formatted or info.total_sizes)[-1]
        info.total_size_bytes = chosen[1]
        info.lines["total_size"] = chosen[2]
    if info.code_bytes_compressed is not None:
        info.code_bytes = info.code_bytes_compressed
        info.lines["code_size"] = info.lines.get("code_size_compressed", 1)
    elif info.code_bytes_plain is not None:
        info.code_bytes = info.code_bytes_plain
        info.lines["code_size"] = info.lines.get("code_size_plain", 1)
    elif info.code_bytes_uncompressed is not None:
        info.code_bytes = info.code_bytes_uncompressed
        info.lines["code_size"] = info.lines.get("code_size_uncompressed", 1)
    if info.train_time_ms is None and info.steps:
        info.train_time_ms = info.steps[-1][3]
    if info.train_time_ms is None and info.vals and info.vals[-1][4] is not None:
        info.train_time_ms = info.vals[-1][4]
    label = pick_scored(info.finals)
    if label is not None:
        info.scored_label = label
        info.scored_val_loss, info.scored_val_bpb = info.finals[label][0], info.finals[label][1]
    elif info.result and isinstance(info.result.get("val_bpb"), (int, float)):
        info.scored_label = "RESULT"
        info.scored_val_bpb = float(info.result["val_bpb"])
        vl = info.result.get("val_loss")
        info.scored_val_loss = float(vl) if isinstance(vl, (int, float)) else None
    r = info.result or {}
    for key, attr in (("calibration_ms", "calibration_s"), ("serialize_ms", "serialize_s")):
        v = r.get(key)
        if getattr(info, attr) is None and isinstance(v, (int, float)) and not isinstance(v, bool):
            setattr(info, attr, float(v) / 1000.0)
    if info.seed is None:
        for key in ("seed", "SEED"):
            if isinstance(r.get(key), int):
                info.seed = r[key]
        if info.seed is None:
            for key in ("SEED", "seed"):
                v = info.env.get(key) or info.hyperparameters.get(key)
                if v is not None and str(v).isdigit():
                    info.seed = int(v)
                    break
        if info.seed is None and name:
            m = _RE_SEED_NAME.search(name)
            if m:
                info.seed = int(m.group(1))
    if info.total_size_bytes is None:
        for key in ("bytes_total", "total_bytes", "artifact_bytes", "total_submission_bytes"):
            if isinstance(r.get(key), int):
                info.total_size_bytes = r[key]
                break
    if info.code_bytes is None:
        for key in ("bytes_code", "code_bytes"):
            if isinstance(r.get(key), int):
                info.code_bytes = r[key]
                break
    if info.model_bytes is None:
        for key in ("bytes_model", "model_bytes"):
            if isinstance(r.get(key), int):
                info.model_bytes = r[key]
                break


def env_assignments(text: str) -> dict:
    """`NAME=value` assignments in a shell command or README (`TTT_ENABLED=1 torchrun ...`, `export X=1`)."""
    out: dict = {}
    for raw in text.splitlines():
        line = raw.strip().lstrip("$").strip()
        if line.startswith("#"):
            continue
        for m in _RE_ENV_INLINE.finditer(line):
            v = m.group("v").strip("\"'`")
            out[m.group("k")] = v
    return out
