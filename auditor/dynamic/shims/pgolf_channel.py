"""Child side of the results channel (see auditor/dynamic/channel.py): newline-terminated JSON messages written to
the pipe whose descriptor the sandbox passes in PGOLF_RESULTS_FD. Arrays travel as base64 of little-endian int32/
float32 bytes (no pickle, no .npz), so the parent's decoded size is bounded by the bytes it chose to read."""

from __future__ import annotations

import base64
import json
import os

import numpy as np

MAX_CAPTURES = 20000
MAX_CAPTURE_VALUES = 4_000_000
KINDS = {"nll": 0, "logp": 1}


_FD = int(os.environ.get("PGOLF_RESULTS_FD", "-1"))  # read at import: the runner hides PGOLF_* from the script


def _send(msg: dict) -> None:
    fd = _FD
    if fd < 0:
        return
    view = memoryview((json.dumps(msg, separators=(",", ":")) + "\n").encode())
    while view:
        view = view[os.write(fd, view):]


def send_results(results: dict) -> None:
    _send({"type": "results", "results": results})


def send_captures(run: str, caps: list) -> int:
    """Send [(kind, positions, values)]; stops at the caps the parent enforces. Returns the number sent."""
    kinds, offs, pos, val, n = [], [0], [], [], 0
    for kind, p, v in caps[:MAX_CAPTURES]:
        p, v = np.asarray(p).reshape(-1), np.asarray(v).reshape(-1)
        if p.size != v.size or n + p.size > MAX_CAPTURE_VALUES:
            break
        kinds.append(KINDS[kind])
        pos.append(p.astype("<i4"))
        val.append(v.astype("<f4"))
        n += p.size
        offs.append(n)
    cat = (lambda xs, dt: np.concatenate(xs).astype(dt) if xs else np.zeros(0, dt))
    _send({"type": "captures", "run": run, "kinds": kinds, "offs": offs,
           "pos": base64.b64encode(cat(pos, "<i4").tobytes()).decode(),
           "val": base64.b64encode(cat(val, "<f4").tobytes()).decode()})
    return len(kinds)
