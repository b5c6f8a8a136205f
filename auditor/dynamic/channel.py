"""The results channel from the sandboxed child to the auditor: what the child says is data, checked before use.

The child (shims/pgolf_channel.py) writes newline-terminated JSON messages to a pipe: `{"type": "results", ...}`
snapshots after every run and `{"type": "captures", ...}` per-run score captures whose arrays are base64 of
fixed-dtype little-endian bytes (int32 positions, float32 values; no pickle, no .npz, decoded size <= the bytes
received). The parent reads at most `Limits.results_bytes` (sandbox._drain), and here every message is parsed and
schema-checked; anything malformed, oversized or missing becomes `channel_error` (a PG9D1 error finding), never an
exception and never a silent pass.
"""

from __future__ import annotations

import base64
import binascii
import json
import math

import numpy as np

MAX_RUNS = 64
MAX_CAPTURES = 20000
MAX_CAPTURE_VALUES = 4_000_000
_STR = 4000


class Invalid(ValueError):
    pass


def _check(x, spec, where: str):
    """Tiny schema check. spec: "str" | "bool" | "int" | "num" | "num?" | ("list", item, max_len) |
    ("fixed", item, len) | ("obj", {key: spec}) (every listed key required; other keys are dropped) |
    ("enum", values) | ("opt", spec)."""
    if isinstance(spec, tuple):
        tag = spec[0]
        if tag == "opt":
            return None if x is None else _check(x, spec[1], where)
        if tag == "enum":
            if x not in spec[1]:
                raise Invalid(f"{where}: expected one of {list(spec[1])}, got {_short(x)}")
            return x
        if tag == "fixed":
            if not isinstance(x, list) or len(x) != spec[2]:
                raise Invalid(f"{where}: expected a list of exactly {spec[2]} items, got {_short(x)}")
            return [_check(v, spec[1], f"{where}[{i}]") for i, v in enumerate(x)]
        if tag == "list":
            if not isinstance(x, list) or len(x) > spec[2]:
                raise Invalid(f"{where}: expected a list of at most {spec[2]} items, got {_short(x)}")
            return [_check(v, spec[1], f"{where}[{i}]") for i, v in enumerate(x)]
        if tag == "obj":
            if not isinstance(x, dict):
                raise Invalid(f"{where}: expected an object, got {_short(x)}")
            out = {}
            for k, sub in spec[1].items():
                if k not in x:
                    raise Invalid(f"{where}: missing key {k!r}")
                out[k] = _check(x[k], sub, f"{where}.{k}")
            return out
        raise AssertionError(spec)
    ok = {
        "str": isinstance(x, str) and len(x) <= _STR,
        "bool": isinstance(x, bool),
        "int": isinstance(x, int) and not isinstance(x, bool) and abs(x) < 2**62,
        "num": isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x),
        "num?": x is None or (isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)),
    }[spec]
    if not ok:
        raise Invalid(f"{where}: expected {spec}, got {_short(x)}")
    return x


def _short(x) -> str:
    return f"{type(x).__name__} {str(x)[:60]!r}"


_TRIPLES = ("list", ("fixed", "int", 3), 2000)
PROBE = ("obj", {
    **{k: "int" for k in ("scored", "tainted", "sweeps", "version", "backwards", "opt_steps", "val_train_backwards",
                          "train_backwards", "trained_positions", "n_val")},
    **{k: "num?" for k in ("t0", "t_first_train", "t_last_train", "t_first_score_after_train", "t_last_score")},
    "tainted_first": ("list", "int", 10000), "tainted_versions": ("list", "int", 10000),
    "first_trained_positions": _TRIPLES, "tainted_detail": _TRIPLES, "score_versions": _TRIPLES,
    "train_versions": _TRIPLES, "train_segments": ("list", ("fixed", "num", 2), 2000),
})
ERROR = ("opt", ("obj", {"type": "str", "msg": "str", "where": "str"}))


def _run_spec(names) -> tuple:
    return ("obj", {
        "name": ("enum", tuple(names)), "ok": "bool", "error": ERROR, "wall_s": "num", "t_start": "num",
        "t_end": "num", "probe": PROBE, "captures": "int",
        "shard_reads": ("list", ("obj", {"split": ("enum", ("train", "val")), "path": "str", "t": "num", "how": "str"}),
                        200),
        "writes": ("list", ("obj", {"path": "str", "t": "num"}), 500),
        "violations": ("list", ("obj", {"kind": "str", "detail": "str", "t": "num"}), 200),
    })


def _results_spec(names) -> tuple:
    return ("obj", {"runs": ("list", _run_spec(names), MAX_RUNS), "secret_env": ("list", "str", 50)})


def _array(b64, dtype: str, n: int, where: str) -> np.ndarray:
    if not isinstance(b64, str):
        raise Invalid(f"{where}: expected base64 text")
    try:
        raw = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise Invalid(f"{where}: not base64") from None
    a = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"))
    if a.size != n:
        raise Invalid(f"{where}: {a.size} values, expected {n}")
    return a


def _captures(msg: dict) -> list[tuple[int, np.ndarray, np.ndarray]]:
    kinds = _check(msg.get("kinds"), ("list", ("enum", (0, 1)), MAX_CAPTURES), "captures.kinds")
    offs = _check(msg.get("offs"), ("list", "int", MAX_CAPTURES + 1), "captures.offs")
    if len(offs) != len(kinds) + 1 or offs[0] != 0 or any(b < a for a, b in zip(offs, offs[1:])):
        raise Invalid("captures.offs: expected len(kinds)+1 non-decreasing offsets from 0")
    n = offs[-1]
    if n > MAX_CAPTURE_VALUES:
        raise Invalid(f"captures: {n} values, over the {MAX_CAPTURE_VALUES} cap")
    pos = _array(msg.get("pos"), "i4", n, "captures.pos").astype(np.int64)
    val = _array(msg.get("val"), "f4", n, "captures.val").astype(np.float32)
    return [(int(k), pos[a:b], val[a:b]) for k, a, b in zip(kinds, offs, offs[1:])]


def decode(child, run_names) -> None:
    """Fill child.results / child.captures from child.channel, or child.channel_error with why not."""
    names = list(run_names)
    spec = _results_spec(names)
    child.results, child.captures, child.channel_error = None, {}, None
    if child.channel_overflow:
        child.channel_error = f"the child's results exceeded the {len(child.channel)}-byte channel cap"
        return
    lines = child.channel.split(b"\n")
    tail = lines.pop()  # after the last newline: empty, or a message cut short
    try:
        for i, line in enumerate(lines):
            try:
                msg = json.loads(line)
            except (ValueError, RecursionError):
                raise Invalid(f"message {i + 1} is not JSON ({len(line)} bytes)") from None
            if not isinstance(msg, dict) or msg.get("type") not in ("results", "captures"):
                raise Invalid(f"message {i + 1}: expected an object with type results|captures")
            if msg["type"] == "results":
                child.results = _check(msg.get("results"), spec, "results")
            else:
                run = _check(msg.get("run"), ("enum", tuple(names)), "captures.run")
                child.captures[run] = _captures(msg)
        if tail and not child.timed_out:
            raise Invalid(f"the last message is cut short ({len(tail)} bytes without a newline)")
        if child.results is None and not child.timed_out:
            raise Invalid(f"the child wrote no results (exit status {child.returncode})")
    except Invalid as exc:
        child.results, child.captures, child.channel_error = None, {}, str(exc)
