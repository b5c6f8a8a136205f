"""The results channel without a sandbox: the child-side writer (shims/pgolf_channel.py) and the parent-side
decoder/validator (auditor/dynamic/channel.py) agree, and what does not fit the schema is refused, not trusted."""

from __future__ import annotations

import base64
import importlib.util
import json
import os
from dataclasses import dataclass, field

import numpy as np
import pytest

from auditor.dynamic import channel, sandbox


def _writer(monkeypatch, fd: int):
    monkeypatch.setenv("PGOLF_RESULTS_FD", str(fd))
    spec = importlib.util.spec_from_file_location("pgolf_channel_t", sandbox.SHIMS / "pgolf_channel.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@dataclass
class Child:
    channel: bytes
    timed_out: bool = False
    returncode: int = 0
    channel_overflow: bool = False
    results: dict | None = None
    captures: dict = field(default_factory=dict)
    channel_error: str | None = None


PROBE = {**{k: 0 for k in ("scored", "tainted", "sweeps", "version", "backwards", "opt_steps", "val_train_backwards",
                           "train_backwards", "trained_positions", "n_val")},
         **{k: None for k in ("t0", "t_first_train", "t_last_train", "t_first_score_after_train", "t_last_score")},
         **{k: [] for k in ("tainted_first", "tainted_versions", "first_trained_positions", "tainted_detail",
                            "score_versions", "train_versions", "train_segments")}}


def _run(name="main", **kw):
    rec = {"name": name, "ok": True, "error": None, "wall_s": 1.0, "t_start": 1.0, "t_end": 2.0, "probe": dict(PROBE),
           "captures": 1, "shard_reads": [{"split": "val", "path": "fineweb_val_000000.bin", "t": 1.5, "how": "open"}],
           "writes": [], "violations": []}
    rec.update(kw)
    return rec


def _roundtrip(monkeypatch, results, caps) -> Child:
    r, w = os.pipe()
    mod = _writer(monkeypatch, w)
    mod.send_results(results)
    sent = mod.send_captures("main", caps)
    os.close(w)
    data = b""
    while chunk := os.read(r, 1 << 16):
        data += chunk
    os.close(r)
    child = Child(data)
    channel.decode(child, ["main", "flip"])
    assert sent == len(caps)
    return child


def test_writer_and_reader_agree(monkeypatch):
    caps = [("nll", np.arange(5), np.linspace(0, 1, 5, dtype=np.float32)), ("logp", np.array([7, 8]),
                                                                          np.array([-0.5, np.nan], np.float32))]
    child = _roundtrip(monkeypatch, {"runs": [_run()], "secret_env": [], "started": 1.0}, caps)
    assert child.channel_error is None
    assert child.results["runs"][0]["shard_reads"][0]["split"] == "val"
    got = child.captures["main"]
    assert [k for k, _p, _v in got] == [0, 1]
    assert got[0][1].tolist() == [0, 1, 2, 3, 4] and got[0][2].dtype == np.float32
    assert got[1][1].tolist() == [7, 8] and np.isnan(got[1][2][1])


@pytest.mark.parametrize("mutate, why", [
    (lambda r: r["runs"][0].pop("probe"), "missing key 'probe'"),
    (lambda r: r["runs"][0].update(name="other"), "expected one of"),
    (lambda r: r["runs"][0].update(ok="yes"), "expected bool"),
    (lambda r: r["runs"][0].update(wall_s=float("inf")), "expected num"),
    (lambda r: r["runs"][0]["probe"].update(score_versions=[[1, 2]]), "exactly 3"),
    (lambda r: r["runs"][0].update(shard_reads=[{"split": "test", "path": "x", "t": 1, "how": "open"}]), "one of"),
    (lambda r: r.update(runs=[_run()] * 65), "at most 64"),
    (lambda r: r["runs"][0].update(error={"type": "X", "msg": "m" * 5000, "where": ""}), "expected str"),
])
def test_wrong_shapes_are_refused(monkeypatch, mutate, why):
    results = {"runs": [_run()], "secret_env": []}
    mutate(results)
    child = _roundtrip(monkeypatch, results, [])
    assert child.results is None and child.captures == {}
    assert why in child.channel_error


def _capmsg(**kw) -> bytes:
    msg = {"type": "captures", "run": "main", "kinds": [0], "offs": [0, 2],
           "pos": base64.b64encode(np.array([1, 2], "<i4").tobytes()).decode(),
           "val": base64.b64encode(np.array([0.1, 0.2], "<f4").tobytes()).decode()}
    msg.update(kw)
    return json.dumps(msg).encode() + b"\n"


RESULTS = json.dumps({"type": "results", "results": {"runs": [_run()], "secret_env": []}}).encode() + b"\n"


@pytest.mark.parametrize("raw, why", [
    (RESULTS + _capmsg(offs=[0, 10**12]), "over the"),
    (RESULTS + _capmsg(offs=[0, 3]), "2 values, expected 3"),
    (RESULTS + _capmsg(offs=[0, 2, 1], kinds=[0, 0]), "non-decreasing"),
    (RESULTS + _capmsg(kinds=[2]), "one of"),
    (RESULTS + _capmsg(pos="!!!"), "not base64"),
    (RESULTS + b"[" * 100000 + b"\n", "not JSON"),
    (RESULTS + b'{"type": "results"}', "cut short"),
    (b"", "wrote no results"),
])
def test_bad_messages_are_refused(raw, why):
    child = Child(raw)
    channel.decode(child, ["main"])
    assert child.results is None and why in child.channel_error


def test_timeout_tolerates_a_cut_message_and_overflow_is_an_error():
    child = Child(RESULTS + b'{"type": "resu', timed_out=True)
    channel.decode(child, ["main"])
    assert child.channel_error is None and child.results["runs"][0]["name"] == "main"
    child = Child(b"0" * 100, channel_overflow=True)
    channel.decode(child, ["main"])
    assert "100-byte channel cap" in child.channel_error
