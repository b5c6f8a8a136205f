"""auditor.logs.parse_log on the three log families (fixtures written in the challenge's grammar)."""

from pathlib import Path

import pytest

from auditor.logs import env_assignments, parse_log, pick_scored

LOGS = Path(__file__).parent / "fixtures" / "audit" / "logs"


def _load(name):
    return parse_log((LOGS / name).read_text(), name)


def test_family_a_skips_echoed_source_and_picks_legal_ttt():
    info = _load("family_a_seed1337.log")
    assert info.seed == 1337
    assert info.steps == [(1, 20000, 6.9318, 145.0, 145.2)]
    assert [v[0] for v in info.vals] == [0, 7179]
    assert info.stopped_early and info.stop_step == 7179 and info.train_time_ms == 600089.0
    # the bare "Total submission size:" is the raw checkpoint; the formatted one counts
    assert info.total_size_bytes == 15977386 and info.model_bytes == 15887928 and info.code_bytes == 89458
    assert info.scored_label == "legal_ttt_exact" and info.scored_val_bpb == pytest.approx(1.1194)
    assert list(info.finals)[:2] == ["final_int6_roundtrip", "final_int6_roundtrip_exact"]
    assert info.env["TRAIN_SEQ_LEN"] == "2048"
    assert info.ttt_elapsed_s == 410.2


def test_family_b_timestamps_hparams_compressed_code():
    info = _load("family_b_ts.log")
    assert info.env == {"TTT_ENABLED": "True", "SEED": "42"}
    assert info.seed == 42
    assert info.gptq_reserve_s == 12.0 and info.gptq_effective_ms == 588000
    assert info.code_bytes == 31385 and info.code_bytes_uncompressed == 152661
    assert info.total_size_bytes == 15949701
    assert info.scored_label == "quantized_ttt_phased"
    assert info.steps[0][3] == pytest.approx(5.1 * 60000)
    assert info.calibration_s is None and info.serialize_s == pytest.approx(3.5)  # quantization time, not calibration
    assert info.max_eval_time_ms == pytest.approx(519500.0)


def test_pgolf_log_env_header_and_result():
    info = _load("pgolf_seed7.log")
    assert info.env["TTT_ENABLED"] == "1" and info.seed == 7
    assert info.result["bytes_total"] == 171234
    assert info.scored_label == "final_int8_zlib_roundtrip_exact"
    assert info.train_time_ms == 4800.0 and not info.stopped_early


def test_scored_label_failed_ttt_after_sliding_is_not_scored():
    finals = {
        "final_int6_roundtrip": (1, 1.1, None),
        "final_int6_sliding_window": (1, 1.08939, 1),
        "final_int6_ttt": (1, 1.336, 1),
    }
    assert pick_scored(finals) == "final_int6_sliding_window"
    assert pick_scored({"diagnostic quantized": (1, 1, 1)}) is None


def test_family_c_and_garbage_never_raise():
    text = (
        "step:100/500 loss:3.2100 t:5000ms avg:50.0ms\nbudget:15993853/16000000 (15.99/16.00MB) FITS\n"
        "final_sliding val_loss:2.0 val_bpb:1.2000 (stride=16, T=0.90) eval_time:1000ms\n\x00\xff garbage {"
    )
    info = parse_log(text)
    assert info.steps == [(100, 500, 3.21, 5000.0, 50.0)]
    assert info.total_size_bytes == 15993853 and info.scored_label == "final_sliding"
    assert parse_log("").is_training_log is False


def test_env_assignments_from_run_command():
    cmd = 'SEED=42 TTT_ENABLED=1 NGRAM_TILT="1" torchrun --standalone --nproc_per_node=8 train_gpt.py\nexport X_Y=3'
    assert env_assignments(cmd) == {"SEED": "42", "TTT_ENABLED": "1", "NGRAM_TILT": "1", "X_Y": "3"}


def test_calibration_vs_serialization_timings():
    text = ("stopping_early: wallclock_cap train_time: 592054ms step: 4600/20000\n"
            "gptq:hessians collected in 3512ms\nGPTQ:quantized in 6.0s\nGPTQ:compressed+saved in 4.5s\n")
    info = parse_log(text)
    assert info.calibration_s == pytest.approx(3.512) and info.serialize_s == pytest.approx(10.5)
    info = parse_log('RESULT {"calibration_ms": 2500.0, "serialize_ms": 1200}\n')
    assert info.calibration_s == 2.5 and info.serialize_s == 1.2
