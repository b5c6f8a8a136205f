"""Dynamic audit verdicts on complete challenge-style fixture submissions, one per evaluation pattern.

Each fixture is a small train_gpt.py that assumes CUDA, FlashAttention, torch.compile and torchrun; the audit runs it
on CPU through the shims. Legal patterns must get none of PG4D*/PG5D*; each illegal one must get its rule."""

from __future__ import annotations

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
