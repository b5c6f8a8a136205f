"""Dynamic audit verdicts on complete challenge-style fixture submissions, one per evaluation pattern.

Each fixture is a small train_gpt.py that assumes CUDA, FlashAttention, torch.compile and torchrun; the audit runs it
on CPU through the shims. Legal patterns must get none of PG4D*/PG5D*; each illegal one must get its rule."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from auditor.dynamic import run_dynamic

FIX = Path(__file__).resolve().parent / "fixtures" / "dynamic"

CASES = {
    "legal_score_first_ttt": None,
    "context_only_slot": None,
    "context_ttt_restored": None,  # context-only adaptation, weights restored per window, two sweeps
    "normalized_ngram_tilt": None,
    "pre_eval_ttt": "PG4D1",
    "pre_quant_ttt": "PG4D1",
    "multi_epoch_rescoring": "PG4D1",
    "min_over_passes": "PG4D1",
    "target_keyed_ngram": "PG4D3",
    "two_pass_cache": "PG4D2",
    "scored_region_slot": "PG4D2",
    "gptq_calibration_after_training": "PG5D1",
    "val_read_during_training": "PG5D2",
    # per-document TTT that skips documents under a hard-coded 512 tokens, switched on only by the logged run's
    # DOC_TTT=1 (recovered through the script's own f-string): needs the long-document second run to be observed
    "legal_per_document_ttt": None,
    "per_document_multi_epoch": "PG4D1",
}


@pytest.fixture(scope="session")
def dyn_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("dyncache")


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_fixture_verdict(name, dyn_cache):
    res = run_dynamic(FIX / name, timeout=240, cache_dir=dyn_cache)
    rules = {f.rule for f in res.findings}
    assert "PG900" not in rules, [f.message for f in res.findings if f.rule == "PG900"]
    # the probes really observed the run: validation positions scored, per-position scores captured
    assert res.metrics["ledger"]["scored"] >= 512
    assert res.metrics["captures"] > 0
    assert res.metrics["flip"]["compared"] > 0
    ph = res.metrics["phases"]
    assert ph["train_s"] > 0 and ph["eval_s"] > 0 and ph["calibration_serialization_s"] >= 0
    if name == "legal_score_first_ttt":  # the real-hardware phase times come from the submission's log
        assert res.metrics["log_times"]["train_ms"] == 600101.0 and res.metrics["log_times"]["eval_ms"] == 410012.0
        assert "logs report" in next(f for f in res.findings if f.rule == "PG9D0").message
    if "per_document" in name:
        note = next(f for f in res.findings if f.rule == "PG9D0")
        assert "long documents" in note.evidence["retry"] and note.evidence["val_doc_len"] >= 512
        assert res.metrics["ledger"]["val_train_backwards"] > 0  # the adaptation path really ran
    dyn = {r for r in rules if r.startswith(("PG4D", "PG5D"))}
    expected = CASES[name]
    if expected is None:
        assert dyn == set(), [f.message for f in res.findings]
    else:
        assert expected in dyn, [f.message for f in res.findings]
        f = next(f for f in res.findings if f.rule == expected)
        assert f.level == "error" and f.evidence and f.file == "train_gpt.py"


@pytest.mark.slow
def test_ledger_evidence_and_cache(dyn_cache):
    """PG4D1 carries counts and first offending positions; a second audit of the unchanged submission is cached."""
    first = run_dynamic(FIX / "multi_epoch_rescoring", timeout=240, cache_dir=dyn_cache)
    f = next(f for f in first.findings if f.rule == "PG4D1")
    # every chunk is rescored after training on it: half of all scoring events (the rescoring sweep) are tainted
    assert f.evidence["tainted"] == 512 and f.evidence["scored"] == 1024
    assert f.evidence["first_positions"][:3] == [1, 2, 3]
    off = f.evidence["first_offenders"][0]
    assert off["position"] == 1 and 0 <= off["trained_at_version"] < off["scored_at_version"]
    # the ledger covers every validation position: version that scored it, version whose update first used it
    led = first.metrics["ledger"]
    covered = sum(b - a + 1 for a, b, _ in led["score_versions"])
    assert covered == 512 and led["score_versions"][0][0] == 1
    assert sum(b - a + 1 for a, b, _ in led["train_versions"]) == led["trained_positions"] == 512
    again = run_dynamic(FIX / "multi_epoch_rescoring", timeout=240, cache_dir=dyn_cache)
    assert again.metrics["cached"] is True
    assert [x.to_dict() for x in again.findings] == [x.to_dict() for x in first.findings]


@pytest.mark.slow
def test_normalization_sum_reported(dyn_cache):
    res = run_dynamic(FIX / "target_keyed_ngram", timeout=240, cache_dir=dyn_cache)
    nc = res.metrics["normalization"]
    assert nc["observed"] == nc["candidates"] >= 8 and nc["sum_p"] > 1.001
    legal = run_dynamic(FIX / "normalized_ngram_tilt", timeout=240, cache_dir=dyn_cache)
    lc = legal.metrics["normalization"]
    assert lc["observed"] >= 8 and 0.0 < lc["sum_p"] <= 1.0 + 1e-3


# ---- what the machine lacks: notes that say what would run the script, never a crash --------------------------------
def _submission(tmp_path, code: str) -> Path:
    d = tmp_path / "sub"
    d.mkdir()
    (d / "train_gpt.py").write_text(code)
    return d


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="PEP 701 f-strings parse on this Python")
def test_newer_python_payload_is_a_note(tmp_path, dyn_cache):
    """A decoded payload with Python 3.12 f-string syntax under this (older) Python: PG902 names the version and the
    --python option, and the run is not a PG900 failure. A backslash inside a replacement field: re-quoting (the
    child's pgolf_pep701) cannot make that parse before 3.12."""
    payload = 'd = {"k": 1}\nprint(f"{\'\\n\'.join(d)}")\n'
    sub = _submission(tmp_path, f"import os\nexec(compile({payload!r}, '<payload>', 'exec'))\n")
    res = run_dynamic(sub, timeout=120, cache_dir=dyn_cache)
    rules = {f.rule: f for f in res.findings}
    assert "PG902" in rules and "PG900" not in rules, [f.message for f in res.findings]
    f = rules["PG902"]
    assert f.level == "note" and "3.12" in f.message and "--python" in f.message
    assert f.evidence["python_version"] == f"{sys.version_info[0]}.{sys.version_info[1]}"


def test_gpu_only_kernel_is_a_note_naming_it(tmp_path, dyn_cache):
    """A Triton kernel the CPU interpreter cannot execute (inline PTX) is PG901 naming the kernel."""
    code = '''import torch, triton, triton.language as tl


@triton.jit
def _ptx_kernel(x_ptr):
    tl.inline_asm_elementwise("mov.b32 $0, $1;", "=r,r", [tl.load(x_ptr)], dtype=tl.int32, is_pure=True, pack=1)


_ptx_kernel[(1,)](torch.ones(4, device="cuda"))
'''
    res = run_dynamic(_submission(tmp_path, code), timeout=120, cache_dir=dyn_cache)
    f = next((f for f in res.findings if f.rule == "PG901"), None)
    assert f is not None and f.level == "note", [x.message for x in res.findings]
    assert "_ptx_kernel" in f.message and "GPU" in f.message


def test_hard_coded_sizes_timeout_is_a_note(tmp_path, dyn_cache):
    """A script with no size knobs that outlives the limit: PG903 lists what is hard-coded (not a silent timeout)."""
    res = run_dynamic(_submission(tmp_path, "import time\nwhile True:\n    time.sleep(0.05)\n"), timeout=8,
                      cache_dir=dyn_cache)
    f = next((f for f in res.findings if f.rule == "PG903"), None)
    assert f is not None and f.level == "note", [x.message for x in res.findings]
    assert "width" in f.message and "depth (layers)" in f.evidence["hard_coded"]
    assert "PG900" not in {x.rule for x in res.findings}


def test_python_option_runs_the_named_interpreter(tmp_path, dyn_cache):
    """--python: the submission runs under the interpreter named (a venv of this Python, so no newer Python is
    needed); the script reports its sys.prefix through the failure message."""
    import subprocess

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(venv)], check=True,
                   timeout=120)
    sub = _submission(tmp_path, "import sys\nraise SystemExit('prefix=' + sys.prefix)\n")
    res = run_dynamic(sub, timeout=120, cache_dir=dyn_cache, python=venv / "bin" / "python")
    msg = next(f.message for f in res.findings if f.rule == "PG900")
    assert f"prefix={venv}" in msg, msg
    default = run_dynamic(sub, timeout=120, cache_dir=dyn_cache)
    assert f"prefix={sys.prefix}" in next(f.message for f in default.findings if f.rule == "PG900")


def test_python_option_bad_interpreter_is_a_usage_error(tmp_path):
    import subprocess

    repo = FIX.parents[2]
    out = subprocess.run([sys.executable, "-m", "pgolf", "audit", str(FIX / "pre_eval_ttt"), "--dynamic-only",
                          "--python", str(tmp_path / "no-such-python")], cwd=repo, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2 and "--python" in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
