"""End-to-end `pgolf train` on CPU: loss falls, run directory, int8+zlib roundtrip, torchrun/gloo, bad inputs."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import REPO, run_pgolf

# Small enough for seconds on 2 cores: the tiny preset on a 16k-token validation prefix.
FAST_ENV = {"VAL_MAX_TOKENS": "16384"}


def train(tiny_data, out, *extra, env=None, check=True):
    e = dict(FAST_ENV)
    e.update(env or {})
    return run_pgolf(
        "train", "--preset", "tiny", "--data", tiny_data["data"], "--tokenizer", tiny_data["tokenizer"],
        "--out", out, *extra, env=e, check=check,
    )


@pytest.fixture(scope="module")
def tiny_run(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "tiny_seed1"
    proc = train(tiny_data, out, "--seed", "1", env={"SAVE_RAW_MODEL": "1"})
    return out, proc


def test_run_directory_contents(tiny_run):
    out, _ = tiny_run
    for name in ("train.log", "final_model.ptz", "config.json", "metrics.json", "final_model.pt"):
        assert (out / name).is_file(), name
    assert not [p for p in os.listdir(out) if ".tmp-" in p], "temporary files left behind"
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("seed", "steps", "step_avg_ms", "train_time_ms", "eval_time_ms", "tokens_per_s", "pre_quant_val_loss",
                "pre_quant_val_bpb", "post_quant_val_loss", "post_quant_val_bpb", "artifact_bytes", "code_bytes",
                "torch_version", "cuda_version", "gpu_name"):
        assert key in metrics, key
    assert metrics["seed"] == 1 and metrics["steps"] == 60
    assert metrics["artifact_bytes"] == metrics["model_bytes"] + metrics["code_bytes"]
    assert metrics["model_bytes"] == (out / "final_model.ptz").stat().st_size
    config = json.loads((out / "config.json").read_text())
    assert config["num_layers"] == 2 and config["seed"] == 1 and config["quant_scheme"] == "*:int8"


def test_log_grammar(tiny_run):
    out, _ = tiny_run
    text = (out / "train.log").read_text()
    lines = text.splitlines()
    assert lines[0].startswith("run_started:") and any(l.startswith("python:") and "torch:" in l for l in lines[:5])
    assert "  TRAIN_SEQ_LEN=128" in lines and "  NUM_LAYERS=2" in lines  # full resolved config in the header
    assert re.search(r"^step:10/60 train_loss:\d+\.\d{4} train_time:\d+ms step_avg:\d+\.\d{2}ms$", text, re.M)
    assert re.search(r"^step:60/60 val_loss:\d+\.\d{4} val_bpb:\d+\.\d{4} train_time:\d+ms step_avg:\d+\.\d{2}ms$", text, re.M)
    m_model = re.search(r"^Serialized model int8\+zlib: (\d+) bytes$", text, re.M)
    m_code = re.search(r"^Code size: (\d+) bytes$", text, re.M)
    m_total = re.search(r"^Total submission size int8\+zlib: (\d+) bytes$", text, re.M)
    assert m_model and m_code and m_total
    assert int(m_total.group(1)) == int(m_model.group(1)) + int(m_code.group(1))
    assert int(m_code.group(1)) > 10_000  # the single-file program that would ship
    assert re.search(r"^final_int8_zlib_roundtrip val_loss:\d+\.\d{4} val_bpb:\d+\.\d{4} eval_time:\d+ms$", text, re.M)
    assert re.search(r"^final_int8_zlib_roundtrip_exact val_loss:\d+\.\d{8} val_bpb:\d+\.\d{8}$", text, re.M)
    assert lines[-1].startswith("RESULT ")
    result = json.loads(lines[-1][len("RESULT "):])
    metrics = json.loads((out / "metrics.json").read_text())
    assert result["val_bpb"] == metrics["val_bpb"] and result["artifact_bytes"] == metrics["artifact_bytes"]


def test_validation_loss_falls(tiny_run):
    out, _ = tiny_run
    metrics = json.loads((out / "metrics.json").read_text())
    vals = metrics["history"]["val"]
    assert len(vals) >= 3
    first, last = vals[0][1], vals[-1][1]
    assert first > 6.5  # ~ln(1024) at init
    assert last < first - 1.0, (first, last)
    # the reported score is the reloaded int8 artifact, close to the pre-quant model
    assert abs(metrics["post_quant_val_loss"] - metrics["pre_quant_val_loss"]) < 0.05


def test_int8_zlib_roundtrip_reproduces_reported_score(tiny_run, tiny_data):
    """Reload the artifact from disk in a fresh model and re-evaluate: the logged exact value comes back."""
    from trainer.artifact import load_artifact
    from trainer.bpb import build_byte_lut, load_tokenizer
    from trainer.config import Hyperparameters
    from trainer.distributed import init_distributed
    from trainer.evaluate import eval_full
    from trainer.loader import load_validation_tokens
    from trainer.model import GPT

    out, _ = tiny_run
    cfg = json.loads((out / "config.json").read_text())
    h = Hyperparameters(**cfg)
    model = GPT(h)
    sd = load_artifact((out / "final_model.ptz").read_bytes())
    model.load_export_state_dict(sd)
    for name, t in model.export_state_dict().items():
        assert torch.equal(t.float(), sd[name].float()), name  # the model holds exactly the dequantized weights
    ctx = init_distributed(h)
    lut = build_byte_lut(load_tokenizer(str(tiny_data["tokenizer"]), h.vocab_size), h.vocab_size)
    val = load_validation_tokens(str(tiny_data["data"]), h.train_seq_len, h.val_max_tokens)
    loss, bpb = eval_full(model, val, lut, h, ctx)
    metrics = json.loads((out / "metrics.json").read_text())
    assert loss == pytest.approx(metrics["post_quant_val_loss"], abs=1e-6)
    assert bpb == pytest.approx(metrics["post_quant_val_bpb"], abs=1e-6)


# Golden first losses of the tiny preset at seed 1 on the embedded-corpus dataset (torch 2.13 CPU). The loss at
# step 1 is the untrained model's; steps 2-3 follow the first updates.
GOLDEN_TINY_SEED1 = [6.9326, 6.8633, 6.56]


def test_same_seed_is_deterministic(tiny_data, tmp_path):
    runs = []
    for name in ("a", "b"):
        train(tiny_data, tmp_path / name, "--seed", "1", "--iterations", "6", "--warmdown-iters", "2",
              "--val-loss-every", "0")
        runs.append(json.loads((tmp_path / name / "metrics.json").read_text()))
    a, b = runs
    assert [x[1] for x in a["history"]["train"]] == [x[1] for x in b["history"]["train"]]
    assert a["val_loss"] == b["val_loss"] and a["model_bytes"] == b["model_bytes"]
    assert (tmp_path / "a" / "final_model.ptz").read_bytes() == (tmp_path / "b" / "final_model.ptz").read_bytes()
    if GOLDEN_TINY_SEED1 is not None:
        assert [round(x[1], 4) for x in a["history"]["train"][:3]] == GOLDEN_TINY_SEED1


@pytest.mark.slow
def test_two_process_gloo_matches_single_process(tiny_data, tmp_path, tiny_run):
    torchrun = shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun not on PATH")
    one, two = tmp_path / "one", tmp_path / "two"
    common = ["--preset", "tiny", "--data", str(tiny_data["data"]), "--tokenizer", str(tiny_data["tokenizer"]),
              "--seed", "3", "--iterations", "8", "--val-loss-every", "0", "--warmdown-iters", "4"]
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", SAVE_RAW_MODEL="1", **FAST_ENV)
    # Same global batch and the same sequences: 1 process x 2 micro-batches vs 2 processes x 1 micro-batch.
    subprocess.run([sys.executable, "-m", "pgolf", "train", *common, "--grad-accum-steps", "2", "--out", str(one)],
                   env=env, check=True, capture_output=True, timeout=600)
    proc = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node=2", "-m", "pgolf", "train", *common, "--grad-accum-steps", "1",
         "--out", str(two)],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = torch.load(two / "final_model.rank0.pt", map_location="cpu")
    r1 = torch.load(two / "final_model.rank1.pt", map_location="cpu")
    single = torch.load(one / "final_model.pt", map_location="cpu")
    for name in r0:
        assert torch.equal(r0[name], r1[name]), f"ranks disagree on {name}"
        assert torch.allclose(r0[name], single[name], atol=2e-4, rtol=1e-3), name
    m1 = json.loads((one / "metrics.json").read_text())
    m2 = json.loads((two / "metrics.json").read_text())
    assert m2["world_size"] == 2
    assert m2["pre_quant_val_loss"] == pytest.approx(m1["pre_quant_val_loss"], abs=2e-3)
    for (s1, l1, _), (s2, l2, _) in zip(m1["history"]["train"], m2["history"]["train"]):
        assert s1 == s2 and l1 == pytest.approx(l2, abs=2e-3)


# ---- bad input: one clear line, exit code 2 ----

def _error_line(proc):
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    errs = [l for l in proc.stderr.splitlines() if l.startswith("pgolf: error:")]
    assert len(errs) == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    return errs[0]


def _train_in_process(tiny_data, out, *extra, env=None):
    """`pgolf train` in a fresh interpreter that reports whether torch got imported: (exit code, stderr, torch?)."""
    code = ("import sys; from pgolf.cli import main; rc = main(sys.argv[1:]); "
            "print('TORCH_IMPORTED' if 'torch' in sys.modules else 'NO_TORCH'); sys.exit(rc)")
    full = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    full.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", **(env or {}))
    args = ["train", "--preset", "tiny", "--data", tiny_data["data"], "--tokenizer", tiny_data["tokenizer"],
            "--out", out, *extra]
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, env=full,
                          timeout=120)


def _bad_shard_data(tiny_data, tmp_path, bad_id):
    """A copy of tiny_data whose first train shard holds one token id >= the vocabulary."""
    from trainer.shards import read_shard, shard_paths, write_shard

    d = tmp_path / "bad_data"
    d.mkdir()
    for split in ("train", "val"):
        for f in shard_paths(tiny_data["data"], split):
            tokens = read_shard(f).copy()
            if split == "train":
                tokens[len(tokens) // 2] = bad_id
            write_shard(d / os.path.basename(f), tokens)
    return {"data": d, "tokenizer": tiny_data["tokenizer"]}


@pytest.mark.parametrize("case", ["missing_data", "missing_tokenizer", "token_id_range", "num_layers_inf",
                                  "num_layers_fraction", "flag_fraction", "short_validation", "bad_code_form"])
def test_bad_input_is_one_line_before_torch_and_before_any_file(tiny_data, tmp_path, case):
    """Each bad input: exit 2, one `pgolf: error:` line naming what and where, torch never imported, no run directory."""
    data, extra, env = tiny_data, [], {}
    if case == "missing_data":
        data, expect = dict(tiny_data, data=tmp_path / "nonexistent"), ["nonexistent", "does not exist"]
    elif case == "missing_tokenizer":
        data, expect = dict(tiny_data, tokenizer=tmp_path / "no.model"), ["no.model", "SentencePiece"]
    elif case == "token_id_range":
        data, expect = _bad_shard_data(tiny_data, tmp_path, 1500), ["token id 1500", "VOCAB_SIZE=1024", "fineweb_train_000000.bin"]
    elif case == "num_layers_inf":
        env, expect = {"NUM_LAYERS": "inf"}, ["NUM_LAYERS expects an integer, got 'inf'", "environment variable"]
    elif case == "num_layers_fraction":
        env, expect = {"NUM_LAYERS": "2.7"}, ["NUM_LAYERS expects an integer, got '2.7'"]
    elif case == "flag_fraction":
        extra, expect = ["--num-layers", "2.7"], ["--num-layers", "NUM_LAYERS expects an integer, got '2.7'"]
    elif case == "short_validation":
        env, expect = {"VAL_MAX_TOKENS": "100"}, ["validation split", "VAL_MAX_TOKENS=100", "expected at least"]
    else:
        extra, expect = ["--code-form", "zip"], ["--code-form 'zip'"]
    out = tmp_path / "runs" / "x"
    proc = _train_in_process(data, out, *extra, env=env)
    line = _error_line(proc)
    for part in expect:
        assert part in line, (part, line)
    assert "NO_TORCH" in proc.stdout, "torch was imported before the input was checked"
    assert not (tmp_path / "runs").exists(), "a file was written before the input was checked"


def test_error_missing_data_path(tiny_data, tmp_path):
    proc = run_pgolf("train", "--preset", "tiny", "--data", tmp_path / "nope", "--tokenizer", tiny_data["tokenizer"],
                     "--out", tmp_path / "r", check=False)
    assert "nope" in _error_line(proc)


def test_error_empty_data_path(tiny_data, tmp_path):
    (tmp_path / "empty").mkdir()
    proc = run_pgolf("train", "--preset", "tiny", "--data", tmp_path / "empty", "--tokenizer", tiny_data["tokenizer"],
                     "--out", tmp_path / "r", check=False)
    assert "empty" in _error_line(proc)


def test_error_vocab_mismatch(tiny_data, tmp_path):
    proc = train(tiny_data, tmp_path / "r", "--vocab-size", "512", check=False)
    line = _error_line(proc)
    assert "512" in line and "1024" in line


def test_error_validation_shorter_than_one_sequence(tiny_data, tmp_path):
    proc = train(tiny_data, tmp_path / "r", env={"VAL_MAX_TOKENS": "100"}, check=False)
    assert "validation" in _error_line(proc).lower()


def test_error_batch_not_divisible(tiny_data, tmp_path):
    proc = train(tiny_data, tmp_path / "r", "--train-batch-tokens", "5000", check=False)
    line = _error_line(proc)
    assert "TRAIN_BATCH_TOKENS=5000" in line


def test_error_non_finite_loss(tiny_data, tmp_path):
    proc = train(tiny_data, tmp_path / "r", "--tied-embed-lr", "1e30", "--matrix-lr", "1e30", "--iterations", "12",
                 check=False)
    line = _error_line(proc)
    assert "non-finite" in line and re.search(r"step \d+", line)


def test_error_bad_env_value(tiny_data, tmp_path):
    proc = train(tiny_data, tmp_path / "r", env={"NUM_LAYERS": "eleven"}, check=False)
    line = _error_line(proc)
    assert "NUM_LAYERS" in line and "eleven" in line


def test_list_presets_and_help():
    proc = run_pgolf("train", "--list-presets")
    for name in ("baseline", "tiny", "seed347", "seed578", "seed107", "seed910", "seed1216", "record"):
        assert re.search(rf"^{name}\s", proc.stdout, re.M), name
    help_text = run_pgolf("train", "--help", env={"COLUMNS": "200"}).stdout
    for flag in ("--preset", "--data", "--tokenizer", "--out", "--seed", "--num-layers", "--matrix-lr", "--ttt-enabled",
                 "--code-form", "--threads"):
        assert flag in help_text, flag
    assert "(default: None)" not in help_text
    # each hyperparameter once, with its environment variable and default, in its group
    from trainer.config import Hyperparameters

    for name, _t, _d, meta in Hyperparameters.fields_meta():
        flag = f"--{name.replace('_', '-')}"
        assert len(re.findall(rf"(?<![\w-]){re.escape(flag)} {meta['env']}\b", help_text)) == 1, flag
        assert f"[env {meta['env']}, default " in help_text, name
    assert "--data DATA_PATH, --data-path DATA_PATH" in help_text
    assert "model hyperparameters:" in help_text and "ttt hyperparameters:" in help_text


def test_wallclock_cap_stops_early(tiny_data, tmp_path):
    train(tiny_data, tmp_path / "r", "--iterations", "100000", "--max-wallclock-seconds", "3", "--val-loss-every", "0",
          "--warmdown-iters", "5")
    text = (tmp_path / "r" / "train.log").read_text()
    m = re.search(r"^stopping_early: wallclock_cap train_time:(\d+)ms step:(\d+)/100000$", text, re.M)
    assert m, text[-2000:]
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["stopped_early"] and metrics["steps"] == int(m.group(2)) < 100000
    assert 3000 <= int(m.group(1)) < 60000
    assert re.search(rf"^step:{m.group(2)}/100000 val_loss:", text, re.M)  # final validation at the stop step


def test_code_form_reserves_the_shipped_wrapper_and_builds(tiny_data, tmp_path):
    """`--code-form lzma` reserves the bytes of the minified+lzma train_gpt.py; pgolf build ships exactly that size."""
    run = tmp_path / "run"
    train(tiny_data, run, "--seed", "5", "--iterations", "2", "--warmdown-iters", "1", "--val-loss-every", "0",
          "--code-form", "lzma")
    metrics = json.loads((run / "metrics.json").read_text())
    out = tmp_path / "records"
    run_pgolf("build", run, "--name", "CodeForm", "--author", "t", "--github-id", "t", "--track", "non_record_16mb",
              "--out", out, "--minify", "--wrap", "lzma", "--date", "2026-01-01")
    shipped = (out / "track_non_record_16mb" / "2026-01-01_CodeForm" / "train_gpt.py").stat().st_size
    assert metrics["code_bytes"] == shipped < 60_000
    assert metrics["artifact_bytes"] == metrics["model_bytes"] + shipped


def test_cpu_runs_use_one_thread_unless_told(monkeypatch):
    from pgolf.train_cmd import set_cpu_threads
    from trainer.config import Hyperparameters

    n = torch.get_num_threads()
    h = Hyperparameters.resolve(env={}, cli={"device": "cpu"})
    try:
        torch.set_num_threads(2)
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        set_cpu_threads(h, None)
        assert torch.get_num_threads() == 1  # the default on CPU
        torch.set_num_threads(2)
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        set_cpu_threads(h, None)
        assert torch.get_num_threads() == 2  # the user's OMP_NUM_THREADS is left alone
        set_cpu_threads(h, 3)
        assert torch.get_num_threads() == 3  # --threads wins
    finally:
        torch.set_num_threads(n)


def test_long_phases_log_progress_lines(tiny_data, single_torch_thread, monkeypatch):
    """Sliding-window eval reports `eval_progress: P% windows:done/total elapsed:Ns` (here every batch), never a
    carriage return, and the score does not depend on it."""
    from trainer.bpb import build_byte_lut, load_tokenizer
    from trainer.config import Hyperparameters
    from trainer.evaluate import eval_sliding
    from trainer.loader import load_validation_tokens
    from trainer.model import GPT
    from trainer.presets import get_preset
    from trainer.runlog import Progress

    lines = []
    p = Progress(lines.append, "eval", 10, unit="windows", every_s=0.0)
    p(5)
    assert lines == ["eval_progress: 50% windows:5/10 elapsed:0s"]
    h = Hyperparameters.resolve(preset=get_preset("tiny"), env={}, cli={"eval_stride": 64, "eval_batch_seqs": 4})
    torch.manual_seed(0)
    model = GPT(h)
    lut = build_byte_lut(load_tokenizer(str(tiny_data["tokenizer"]), h.vocab_size), h.vocab_size)
    val = load_validation_tokens(str(tiny_data["data"]), 1, 2048)
    lines.clear()
    monkeypatch.setattr("trainer.runlog.PROGRESS_EVERY_S", 0.0)  # a line per batch for this test
    got = eval_sliding(model, val, lut, h, log=lines.append)
    assert got == eval_sliding(model, val, lut, h)
    assert lines and all(re.fullmatch(r"eval_progress: \d+% windows:\d+/\d+ elapsed:\d+s", ln) for ln in lines), lines
    assert lines[-1].startswith("eval_progress: 100% ") and not any("\r" in ln for ln in lines)
