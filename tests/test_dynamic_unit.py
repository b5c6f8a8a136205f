"""Unit tests of the dynamic audit's pieces: env scanning and shrinking, tagged data, tokenizer cache, the flip and
normalization decisions, config recovery, and that the auditor process never imports torch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from auditor.dynamic import analyze, datagen, envscan
from trainer.errors import PgolfError

REPO = Path(__file__).resolve().parents[1]

SCRIPT = '''
import os
class Hyperparameters:
    vocab_size = int(os.environ.get("VOCAB_SIZE", 8192))
    num_layers = int(os.environ.get("NUM_LAYERS", "11"))
    model_dim = int(os.getenv("MODEL_DIM", 512))
    eval_stride = int(os.environ.get("EVAL_STRIDE", 64))
    rope_dims = int(os.environ.get("ROPE_DIMS", 0))
    lr = float(os.environ.get("MATRIX_LR", -0.5))
    data = os.environ["DATA_PATH"]
    out_dir = os.environ.get("OUT_DIR", "/home/author/runs/seed42")
    bigram = int(os.environ.get("BIGRAM_VOCAB_SIZE", str(3072)))
'''


def test_scan_env_names_and_defaults():
    names = envscan.scan_env(SCRIPT)
    assert names == {"VOCAB_SIZE": "8192", "NUM_LAYERS": "11", "MODEL_DIM": "512", "EVAL_STRIDE": "64",
                     "ROPE_DIMS": "0", "MATRIX_LR": "-0.5", "DATA_PATH": None, "OUT_DIR": "/home/author/runs/seed42",
                     "BIGRAM_VOCAB_SIZE": "3072"}


def test_shrink_plan_keeps_switches():
    plan = envscan.shrink_plan(envscan.scan_env(SCRIPT))
    assert plan["NUM_LAYERS"] == "2" and plan["MODEL_DIM"] == "32" and plan["EVAL_STRIDE"] == "8"
    assert plan["ROPE_DIMS"] == "0"  # off stays off: shrinking must not switch paths
    assert plan["BIGRAM_VOCAB_SIZE"] == "64"
    assert "MATRIX_LR" not in plan and "VOCAB_SIZE" not in plan


def test_build_env_shrinks_effective_values(tmp_path):
    from auditor.dynamic.harness import build_env

    names = envscan.scan_env(SCRIPT)
    env = build_env(names, {"EVAL_STRIDE": "64", "ROPE_DIMS": "16", "TTT_ENABLED": "1", "UNRELATED": "x"}, 1024,
                    tmp_path, tmp_path / "d", tmp_path / "t.model")
    assert env["EVAL_STRIDE"] == "8" and env["ROPE_DIMS"] == "8"  # switched on by the run: kept on, made tiny
    assert env["TTT_ENABLED"] == "1" and "UNRELATED" not in env
    assert env["DATA_PATH"] == str(tmp_path / "d") and env["VOCAB_SIZE"] == "1024"
    assert env["OUT_DIR"] == str(tmp_path / "out")  # an author's baked output path is redirected into the sandbox


def test_scan_env_falls_back_to_text_when_unparsable():
    """Code the parser rejects (newer syntax, or broken) still yields the plain `os.environ.get` knobs."""
    src = 'import os\nn = int(os.environ.get("NUM_LAYERS", 11))\nd = os.getenv("DATA_PATH")\ndef (:\n'
    assert envscan.scan_env(src, "x.py") == {"NUM_LAYERS": "11", "DATA_PATH": None}


def test_recover_config_from_readme(tmp_path):
    (tmp_path / "train_gpt.py").write_text(SCRIPT)
    (tmp_path / "README.md").write_text("Run:\n\n```\nTTT_ENABLED=1 EVAL_STRIDE=64 torchrun --nproc_per_node=8 train_gpt.py\n```\n")
    env = envscan.recover_config(tmp_path, tmp_path / "train_gpt.py")
    assert env.get("TTT_ENABLED") == "1" and env.get("EVAL_STRIDE") == "64"


def test_streams_are_tagged_and_shards_official(tmp_path):
    train, val = datagen.make_streams(1024, 513, 20000, seed=3)
    keys = val[:-2] * 1024 * 1024 + val[1:-1] * 1024 + val[2:]
    assert len(set(keys.tolist())) == len(keys)
    tkeys = set((train[:-2] * 1024 * 1024 + train[1:-1] * 1024 + train[2:]).tolist())
    assert not tkeys & set(keys.tolist())
    assert val[0] == datagen.BOS and val.min() >= 1 and val.max() < 1024
    p = tmp_path / "fineweb_val_000000.bin"
    datagen.write_shard(p, val)
    header = np.fromfile(p, dtype="<i4", count=256)
    assert (header[0], header[1], header[2]) == (20240520, 1, 513)
    assert np.array_equal(np.fromfile(p, dtype="<u2", offset=1024), val)
    assert p.stat().st_size == 1024 + 2 * 513


def test_flip_variant_agrees_then_differs():
    _, val = datagen.make_streams(1024, 513, 1000)
    f = datagen.flip_variant(val, 261, 1024)
    assert np.array_equal(f[:262], val[:262])
    ordinary = val[262:] != datagen.BOS
    assert (f[262:][ordinary] != val[262:][ordinary]).all()


def test_tokenizer_exact_vocab_and_cached(tmp_path):
    import sentencepiece as spm

    m = datagen.tokenizer_for(1024, tmp_path)
    sp = spm.SentencePieceProcessor(model_file=str(m))
    assert sp.get_piece_size() == 1024
    assert [sp.id_to_piece(i) for i in range(4)] == ["<pad>", "<s>", "</s>", "<unk>"]
    assert sp.is_byte(4) and sp.id_to_piece(4) == "<0x00>"
    mtime = m.stat().st_mtime_ns
    assert datagen.tokenizer_for(1024, tmp_path).stat().st_mtime_ns == mtime


def _caps(*items):
    return [(k, np.array(p), np.array(v, dtype=np.float32)) for k, p, v in items]


def test_flip_check_flags_only_prefix_changes():
    a = _caps((0, [1, 2, 3, 4], [1.0, 2.0, 3.0, 4.0]))
    same_prefix = _caps((0, [1, 2, 3, 4], [1.0, 2.0, 3.0, 9.0]))  # only position 4 > j changed
    assert analyze.flip_check(a, same_prefix, j=3)["leaks"] == 0
    leak = _caps((0, [1, 2, 3, 4], [1.0, 2.5, 3.0, 9.0]))
    r = analyze.flip_check(a, leak, j=3)
    assert r["leaks"] == 1 and r["first_positions"] == [2] and r["max_abs_diff"] == pytest.approx(0.5)
    noise = _caps((0, [1, 2, 3, 4], [1.0, 2.0 + 5e-5, 3.0, 4.0]))
    assert analyze.flip_check(a, noise, j=3)["leaks"] == 0


def test_norm_check_sums_scores():
    # kind 0 = NLL, kind 1 = log p; the last capture holding the position wins
    by = {7: _caps((0, [10], [np.log(4.0)])), 8: _caps((1, [10], [np.log(0.5)])), 9: _caps((1, [10], [np.log(0.5)]))}
    r = analyze.norm_check(by, 10, vocab=1024)
    assert r["sum_p"] == pytest.approx(1.25, rel=1e-5) and r["violation"]
    ok = {7: _caps((0, [10], [np.log(4.0)])), 8: _caps((1, [10], [np.log(0.25)]))}
    assert not analyze.norm_check(ok, 10, vocab=1024)["violation"]
    full = {0: _caps((1, [10], [np.log(0.3)])), 1: _caps((1, [10], [np.log(0.3)]))}
    assert analyze.norm_check(full, 10, vocab=2)["violation"]  # full vocabulary must sum to 1, not 0.6


def test_auditor_does_not_import_torch():
    code = "import sys, auditor.dynamic, auditor.dynamic.harness, auditor.dynamic.analyze; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.stdout.strip() == "False", out.stderr


# ---- running real records: configuration, shrinking, what cannot run ------------------------------------------------
def test_shrink_keeps_layer_indices_and_switches():
    plan = envscan.shrink_plan({"NUM_LAYERS": "11", "LOOP_START": "3", "LOOP_END": "5", "PARALLEL_START_LAYER": "8",
                                "SWA_EVERY": "0", "TTT_EPOCHS": "3", "TTT_BATCH_SIZE": "64", "TTT_CHUNK_SIZE": "32",
                                "TTT_EVAL_SEQ_LEN": "2048", "LOCAL_SEQ_LEN": "0", "TTT_LORA_RANK": "96",
                                "GPTQ_CALIBRATION_BATCHES": "64", "EMBEDDING_DIM": "512"})
    assert plan["NUM_LAYERS"] == "9"  # a looped segment and the parallel lanes' start still exist
    assert plan["SWA_EVERY"] == "0" and plan["LOCAL_SEQ_LEN"] == "0"  # off stays off
    assert plan["TTT_EPOCHS"] == "2"  # a second epoch that rescores stays observable
    assert (plan["TTT_BATCH_SIZE"], plan["TTT_CHUNK_SIZE"], plan["TTT_EVAL_SEQ_LEN"]) == ("4", "16", "32")
    assert (plan["TTT_LORA_RANK"], plan["GPTQ_CALIBRATION_BATCHES"], plan["EMBEDDING_DIM"]) == ("4", "2", "32")
    assert envscan.shrink_plan({"NUM_LAYERS": "11", "PARALLEL_START_LAYER": "99"})["NUM_LAYERS"] == "2"  # sentinel
    assert envscan.shrink_plan({"NUM_LAYERS": "11", "RECUR_LAYERS": "4,5", "VE_LAYERS": "9,10"})["NUM_LAYERS"] == "6"


def test_build_env_drops_launch_shell_and_unparsable_values(tmp_path):
    from auditor.dynamic.harness import build_env

    names = {"WORLD_SIZE": "1", "SEED": "1337", "LOCAL_SEQS_PER_GPU": "0", "TIE_EMBEDDINGS": "1", "DATA_DIR": "./data/",
             "DATA_PATH": "./data/datasets/fineweb10B_sp1024", "RUN_NAME": "x"}
    names["VE_LAYERS"] = "9,10"
    env = build_env(names, {"WORLD_SIZE": "8", "SEED": "$SEED", "LOCAL_SEQS_PER_GPU": "36,36,10", "VE_LAYERS": "args.ve_layers,",
                            "TIE_EMBEDDINGS": "1", "RUN_NAME": "a b"}, 1024, tmp_path, tmp_path / "data" / "datasets" / "d",
                    tmp_path / "t.model")
    assert "WORLD_SIZE" not in env  # the sandbox is one rank
    assert env["SEED"] == "1337" and "LOCAL_SEQS_PER_GPU" not in env  # the script's own default is kept
    assert "VE_LAYERS" not in env  # an expression printed instead of its value
    assert env["TIE_EMBEDDINGS"] == "1" and env["RUN_NAME"] == "a b"
    assert env["DATA_DIR"] == str(tmp_path / "data") and env["DATA_PATH"] == str(tmp_path / "data" / "datasets" / "d")


def test_configure_reads_decoded_payload_and_reports_shrink(tmp_path):
    from auditor.dynamic.harness import configure

    script = tmp_path / "train_gpt.py"
    script.write_text("import lzma\nexec(lzma.decompress(b'...'))\n")
    payload = 'import os\nL = int(os.environ.get("NUM_LAYERS", 11))\nS = int(os.environ.get("TRAIN_SEQ_LEN", 2048))\n'
    cfg = configure(tmp_path, script, {"env": {"NUM_LAYERS": "12"}, "decoded_sources": {"train_gpt.py#decoded1": payload}})
    assert cfg["env"]["NUM_LAYERS"] == "2" and cfg["env"]["TRAIN_SEQ_LEN"] == "32"
    assert cfg["shrunk"] == {"NUM_LAYERS": ["12", "2"], "TRAIN_SEQ_LEN": ["2048", "32"]}
    assert cfg["hard_coded"] == ["width", "iterations", "batch"]
    assert "NUM_LAYERS 12->2" in analyze.shrink_text(cfg) and "hard-coded (not shrunk): width" in analyze.shrink_text(cfg)


def test_cannot_run_on_cpu_notes():
    gpu = analyze._cannot_run_on_cpu({"type": "PgolfNeedsGPU", "msg": "triton kernel _k needs a GPU (...)",
                                      "where": "train_gpt.py:9 in f: _k[(1,)](x)"}, {}, "train_gpt.py", "")
    assert gpu.rule == "PG901" and gpu.level == "note" and "_k" in gpu.message
    py = analyze._cannot_run_on_cpu({"type": "SyntaxError", "msg": "f-string: expecting '}' (<string>, line 3)",
                                     "where": "train_gpt.py:2"}, {"python_version": "3.11"}, "train_gpt.py", "")
    assert py.rule == "PG902" and "Python 3.11" in py.message and ">= 3.12" in py.message and "--python" in py.message
    assert analyze._cannot_run_on_cpu({"type": "ValueError", "msg": "x", "where": ""}, {}, "t.py", "") is None
    cuda = analyze._cannot_run_on_cpu({"type": "ValueError", "msg": "softcapped_cross_entropy requires CUDA tensors",
                                       "where": "train_gpt.py:106 in f"}, {}, "train_gpt.py", "")
    assert cuda.rule == "PG901" and "requires CUDA" in cuda.message


def test_piece_bytes_sidecar(tmp_path):
    m = datagen.tokenizer_for(1024, tmp_path)
    b = datagen.piece_bytes(m)
    assert b.shape == (1024,) and b[:4].tolist() == [0, 0, 0, 0] and b[4] == 1 and b.max() >= 2


def test_hard_coded_vocab_size_decides_the_data(tmp_path):
    from auditor.dynamic.harness import configure

    script = tmp_path / "train_gpt.py"
    script.write_text("import os\nclass H:\n    vocab_size = 4096\n    seed = int(os.environ.get('SEED', 1))\n")
    assert configure(tmp_path, script, {"env": {}})["vocab"] == 4096


def test_out_of_memory_with_hard_coded_sizes_is_a_note():
    f = analyze._too_big({"timeout": 10}, {"hard_coded": ["width", "batch"]}, "t.py", "", why="ran out of memory at x:1")
    assert f.rule == "PG903" and f.level == "note" and "ran out of memory" in f.message and "width, batch" in f.message


def _child_with(probe: dict, ok: bool = True):
    from types import SimpleNamespace

    run = {"name": "main", "ok": ok, "probe": probe, "error": None}
    return SimpleNamespace(channel_error=None, results={"runs": [run]})


def test_one_update_ttt_retries_when_a_single_update_covered_the_whole_stream():
    """A TTT chunk at least as long as the tiny stream trains on every position in one update: the order of scoring
    and training across chunks (a later chunk's training reaching an earlier chunk's score) cannot be seen."""
    from auditor.dynamic.harness import _one_update_ttt

    one = {"val_train_backwards": 2, "n_val": 513, "train_versions": [[1, 512, 34]]}
    assert _one_update_ttt(_child_with(one))
    chunked = {"val_train_backwards": 4, "n_val": 513, "train_versions": [[1, 256, 34], [257, 512, 36]]}
    assert not _one_update_ttt(_child_with(chunked))  # chunk order observable already
    partial = {"val_train_backwards": 1, "n_val": 513, "train_versions": [[1, 128, 34]]}
    assert not _one_update_ttt(_child_with(partial))
    assert not _one_update_ttt(_child_with({"val_train_backwards": 0, "n_val": 513, "train_versions": []}))
    assert not _one_update_ttt(_child_with(one, ok=False))
    assert not _one_update_ttt(_child_with(dict(one, tainted=512)))  # trained before scoring: seen already


def test_adaptation_not_run_asks_for_long_documents():
    from auditor.dynamic.harness import _adaptation_not_run

    assert _adaptation_not_run(_child_with({"val_train_backwards": 0, "n_val": 513}))
    assert not _adaptation_not_run(_child_with({"val_train_backwards": 3, "n_val": 513}))  # it did train
    assert not _adaptation_not_run(_child_with({"val_train_backwards": 0, "tainted": 5}))  # a verdict already
    assert not _adaptation_not_run(_child_with({}, ok=False))


def test_dataset_and_tokenizer_variants_named_in_the_code_get_the_tiny_data(tmp_path):
    """A script that downloads `fineweb10B_sp10240_casefold` unless it is already there finds it (same shards)."""
    from auditor.dynamic.harness import configure, prepare

    script = tmp_path / "train_gpt.py"
    script.write_text(
        "import os\nVOCAB_SIZE = int(os.environ.get('VOCAB_SIZE', 1024))\n"
        "ds = os.path.join('./data/', 'datasets', 'fineweb10B_sp1024_casefold')\n"
        "tp = './data/tokenizers/fineweb_1024_casefold_bpe.model'\nother = 'fineweb10B_sp4096_x'\n")
    cfg = configure(tmp_path, script, {"env": {}})
    assert cfg["data_variants"] == {"datasets": ["fineweb10B_sp1024_casefold"],
                                    "tokenizers": ["fineweb_1024_casefold_bpe.model"]}
    work = tmp_path / "work"
    (work / ".pgolf").mkdir(parents=True)
    prep = prepare(cfg, work, tmp_path / "cache")
    variant = work / "data" / "datasets" / "fineweb10B_sp1024_casefold"
    assert (variant / "fineweb_train_000000.bin").read_bytes() == (prep["datadir"] / "fineweb_train_000000.bin").read_bytes()
    assert os.readlink(variant) == "fineweb10B_sp1024"  # a link inside the work dir: the per-run val swap reaches it
    assert (work / "data" / "tokenizers" / "fineweb_1024_casefold_bpe.model").is_file()


def test_gpu_only_failure_retries_with_the_scripts_own_fused_kernel_switches_off():
    from types import SimpleNamespace

    from auditor.dynamic.harness import _fused_switches, _gpu_only_failure

    def failed(typ, msg):
        run = {"name": "main", "ok": False, "probe": {}, "error": {"type": typ, "msg": msg, "where": "x.py:1"}}
        return SimpleNamespace(channel_error=None, results={"runs": [run]})

    assert _gpu_only_failure(failed("ValueError", "softcapped_cross_entropy requires CUDA tensors"))
    assert _gpu_only_failure(failed("PgolfNeedsGPU", "kernel _fwd uses inline PTX"))
    assert not _gpu_only_failure(failed("ValueError", "bad shape"))
    cfg = {"names": {"FUSED_CE_ENABLED": "1", "USE_TRITON_MLP": "0", "TRITON_ATTN": None, "NUM_LAYERS": "11"},
           "recovered": {"TRITON_ATTN": "true"}}
    # on switches are turned off; one already off, or a size knob, is left alone
    assert _fused_switches(cfg) == {"FUSED_CE_ENABLED": "0", "TRITON_ATTN": "0"}
