"""`pgolf build` on real tiny runs: equivalence of the built train_gpt.py (plain, minified, wrapped) with
`pgolf train`, the record folder's contents, determinism, --from-logs, and every refusal."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run_pgolf

# Small enough to train in a few seconds on one CPU thread, with validation points and per-step losses.
TINY_ARGS = ["--preset", "tiny", "--iterations", "3", "--train-batch-tokens", "1024", "--val-max-tokens", "4096",
             "--val-loss-every", "2", "--train-log-every", "1"]
# The same on short_val_data, whose whole validation split is 4,097 tokens: record-track builds need full validation.
RECORD_ARGS = [a for a in TINY_ARGS if a not in ("--val-max-tokens", "4096")]
SEEDS = (11, 12)
PGOLF_PACKAGES = ("trainer", "builder", "auditor", "pgolf")


@pytest.fixture(scope="module")
def runs(short_val_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("build_runs")
    out = {}
    for seed in SEEDS:
        d = root / f"seed{seed}"
        run_pgolf("train", *RECORD_ARGS, "--data", short_val_data["data"], "--tokenizer", short_val_data["tokenizer"],
                  "--out", d, "--seed", seed)
        out[seed] = d
    # A third seed for the record track: the same run relabelled (the builder only checks consistency).
    third = root / "seed13"
    shutil.copytree(out[SEEDS[0]], third)
    _edit_json(third / "metrics.json", seed=13, run_id="tiny_seed13")
    _edit_json(third / "config.json", seed=13, run_id="tiny_seed13", out_dir=str(third))
    out[13] = third
    return out


def _edit_json(path: Path, **changes):
    obj = json.loads(path.read_text())
    obj.update(changes)
    path.write_text(json.dumps(obj, indent=2, sort_keys=True))


def _build(runs_dirs, out, *extra, check=True):
    return run_pgolf("build", *runs_dirs, "--name", "Tiny test", "--author", "Test Author", "--github-id", "tester",
                     "--out", out, *extra, check=check)


def _folders(out: Path):
    return sorted(p for p in out.rglob("*") if p.is_dir() and p.name.startswith("20")) if out.exists() else []


# ------------------------------------------------------------------------------------------------- equivalence

def _run_built(script_text: str, tiny_data, workdir: Path, seed: int) -> tuple[dict, bytes, str]:
    workdir.mkdir(parents=True)
    (workdir / "train_gpt.py").write_text(script_text, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(DATA_PATH=str(tiny_data["data"]), TOKENIZER_PATH=str(tiny_data["tokenizer"]), SEED=str(seed),
               OUT_DIR=str(workdir / "run"), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-X", "importtime", "train_gpt.py"], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    imported = [ln.split("|")[-1].strip() for ln in proc.stderr.splitlines() if ln.startswith("import time:")]
    leaked = [m for m in imported if m.split(".")[0] in PGOLF_PACKAGES]
    assert not leaked, f"built train_gpt.py imported pgolf modules: {leaked}"
    assert "torch" in imported
    metrics = json.loads((workdir / "run" / "metrics.json").read_text())
    return metrics, (workdir / "run" / "final_model.ptz").read_bytes(), proc.stdout


# Brotli wrapping of the same source is covered by tests/test_build_wrap.py; one wrapped form keeps this file fast.
@pytest.mark.parametrize("form", ["plain", "minified+lzma"])
def test_built_script_reproduces_pgolf_train(runs, short_val_data, tmp_path, form):
    from builder.runs import load_run_dir
    from builder.ship import parse_form, shipped_source

    seed = SEEDS[0]
    run = load_run_dir(runs[seed])
    shipped = shipped_source(run.config, parse_form(form))
    code, sizes, baked = shipped.text, shipped.sizes, shipped.baked
    assert baked["iterations"] == 3 and "seed" not in baked and "data_path" not in baked
    if form == "plain":
        assert sizes["shipped"] == run.code_bytes and run.code_form == "plain"  # pgolf train reserved this file's size
    else:
        assert sizes["shipped"] < sizes["minified"] < sizes["plain"] and code.count("\n") <= 5
    got, blob, _ = _run_built(code, short_val_data, tmp_path / form.replace("+", "_"), seed)
    want = json.loads((runs[seed] / "metrics.json").read_text())
    assert got["history"]["train"] and [r[:2] for r in got["history"]["train"]] == [r[:2] for r in want["history"]["train"]]
    assert [r[:3] for r in got["history"]["val"]] == [r[:3] for r in want["history"]["val"]]
    for key in ("val_loss", "val_bpb", "pre_quant_val_loss", "post_quant_val_loss", "post_quant_val_bpb", "model_bytes", "steps"):
        assert got[key] == want[key], key
    assert blob == (runs[seed] / "final_model.ptz").read_bytes()
    assert got["code_bytes"] == len(code.encode("utf-8"))


# ------------------------------------------------------------------------------------------------ record folder

def test_record_folder_contents_and_determinism(runs, tmp_path):
    dirs = [runs[s] for s in (*SEEDS, 13)]
    _build(dirs, tmp_path / "a", "--sota-bpb", "3.6", "3.61", "3.62")
    _build(list(reversed(dirs)), tmp_path / "b", "--sota-bpb", "3.6", "3.61", "3.62")
    (fa,), (fb,) = _folders(tmp_path / "a"), _folders(tmp_path / "b")
    assert fa.parent.name == "track_10min_16mb" and fa.name.endswith("_Tiny_test")
    names = sorted(p.name for p in fa.iterdir())
    assert names == sorted(["README.md", "submission.json", "train_gpt.py", "loss_curve.png",
                            "train_seed11.log", "train_seed12.log", "train_seed13.log"])
    for n in names:  # byte-identical folders from the same inputs
        assert (fa / n).read_bytes() == (fb / n).read_bytes(), n
    sub = json.loads((fa / "submission.json").read_text())
    metrics = {s: json.loads((runs[s] / "metrics.json").read_text()) for s in (*SEEDS, 13)}
    code_bytes = (fa / "train_gpt.py").stat().st_size
    assert sub["bytes_code"] == code_bytes
    assert sub["seeds"] == [11, 12, 13]
    assert sub["val_bpb"] == pytest.approx(sum(m["val_bpb"] for m in metrics.values()) / 3, rel=1e-12)
    assert sub["bytes_total"] == max(m["model_bytes"] for m in metrics.values()) + code_bytes
    assert sub["seed_results"]["12"]["steps"] == 3
    assert sub["seed_results"]["12"]["artifact_bytes"] == metrics[12]["model_bytes"] + code_bytes
    assert sub["compliance"] == {"artifact_under_16mb": True, "train_under_600s": True, "eval_under_600s": True,
                                 "score_first_ttt": True, "three_seeds": True, "full_validation": True}
    assert sub["validation"] == {"scope": "full", "scored_tokens": 4096, "available_tokens": 4097}
    assert sub["track"] == "10min_16mb" and sub["author"] == "Test Author" and sub["github_id"] == "tester"
    for key in ("delta_bpb", "delta_nats", "p_value", "t_statistic", "welch_df"):
        assert key in sub
    assert sub["delta_bpb"] == pytest.approx(3.61 - sub["val_bpb"])
    readme = (fa / "README.md").read_text()
    assert f"val_bpb {sub['val_bpb']:.4f}" in readme.splitlines()[0]
    assert "(3-seed mean, std" in readme and "loss_curve.png" in readme
    for section in ("## Results", "## Significance", "## Architecture", "## Timing", "## Run command", "## Compliance", "## Requirements"):
        assert section in readme
    for cond in ("**Causal**", "**Normalized distribution**", "**Score before update**", "**Single pass**"):
        assert cond in readme
    assert "SEED=12 torchrun --standalone --nproc_per_node=8 train_gpt.py" in readme
    assert (fa / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (fa / "train_seed12.log").read_bytes() == (runs[12] / "train.log").read_bytes()
    assert "requirements.txt" not in names  # int8+zlib with no wrapper needs nothing extra


def test_build_refuses_a_form_the_runs_did_not_reserve(runs, tmp_path):
    """Plain-reserved runs built with --minify --wrap brotli: their logs count the plain file's bytes, so the folder
    would fail its audit (PG102); the build says exactly what differs instead. (Wrapped builds of runs that reserved
    the wrapped form are tested in test_build_forms_audit.py.)"""
    _refused([runs[s] for s in SEEDS], tmp_path / "out", "the runs reserved code form plain", "--track",
             "non_record_16mb", "--minify", "--wrap", "brotli")
    proc = _build([runs[s] for s in SEEDS], tmp_path / "out", "--track", "non_record_16mb", "--minify", "--wrap",
                  "brotli", check=False)
    assert "this build ships brotli" in proc.stderr and "specialize no -> yes, minify no -> yes, wrap none -> brotli" \
        in proc.stderr and "pgolf train --code-form brotli" in proc.stderr


def test_from_logs_packages_bare_logs(runs, tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    for s in SEEDS:
        shutil.copy(runs[s] / "train.log", logs / f"train_seed{s}.log")
    script = tmp_path / "their_train_gpt.py"
    script.write_text("print('a competitor script')\n")
    _build([logs / f"train_seed{s}.log" for s in SEEDS], tmp_path / "out", "--from-logs", "--script", script,
           "--track", "non_record_16mb")
    (f,) = _folders(tmp_path / "out")
    assert (f / "train_gpt.py").read_bytes() == script.read_bytes()
    sub = json.loads((f / "submission.json").read_text())
    for s in SEEDS:
        m = json.loads((runs[s] / "metrics.json").read_text())
        assert sub["seed_results"][str(s)]["val_bpb"] == pytest.approx(m["val_bpb"], abs=1e-8)
        assert sub["seed_results"][str(s)]["steps"] == 3
    assert "not verified" in (f / "README.md").read_text()


# ------------------------------------------------------------------------------------------------------ refusals

def _copy(runs, seed, tmp_path, name):
    d = tmp_path / name
    shutil.copytree(runs[seed], d)
    return d


def _refused(args_dirs, out, expect, *extra):
    proc = _build(args_dirs, out, *extra, check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    err = proc.stderr.strip().splitlines()
    assert err and err[-1].startswith("pgolf: error: ") and expect in err[-1], proc.stderr
    assert _folders(out) == [] and not any(p.name.startswith(".") for p in out.rglob("*")), "something was written"


def test_refuses_different_configuration(runs, tmp_path):
    d = _copy(runs, 12, tmp_path, "other")
    _edit_json(d / "config.json", matrix_lr=0.05)
    _refused([runs[11], d, runs[13]], tmp_path / "out", "differ in configuration other than seed: matrix_lr")


def test_refuses_run_without_final_metrics(runs, tmp_path):
    d = _copy(runs, 12, tmp_path, "unfinished")
    (d / "metrics.json").unlink()
    _refused([runs[11], d, runs[13]], tmp_path / "out", "run without final metrics")


def test_refuses_artifact_over_16mb(runs, tmp_path):
    d = _copy(runs, 12, tmp_path, "big")
    _edit_json(d / "metrics.json", model_bytes=15_999_000)
    _refused([runs[11], d, runs[13]], tmp_path / "out", "over the 16000000 byte cap")


def test_refuses_training_over_600s_on_record_track(runs, tmp_path):
    d = _copy(runs, 12, tmp_path, "slow")
    _edit_json(d / "metrics.json", train_time_ms=600_500.0)
    _refused([runs[11], d, runs[13]], tmp_path / "out", "trained 600.5 s, over the record track's 600 s")


def test_refuses_fewer_than_three_seeds_on_record_track(runs, tmp_path):
    _refused([runs[11], runs[12]], tmp_path / "out", "the record track needs at least 3 seeds, got 2")


def test_refuses_runs_from_other_code(runs, tmp_path):
    d = _copy(runs, 12, tmp_path, "oldcode")
    _edit_json(d / "metrics.json", code_bytes=12345)
    _refused([runs[11], d, runs[13]], tmp_path / "out", "runs come from different code: they measured different code sizes")
    # all seeds agree with each other but not with the trainer being packaged
    dirs = [_copy(runs, s, tmp_path, f"old{s}") for s in (11, 12, 13)]
    for x in dirs:
        _edit_json(x / "metrics.json", code_bytes=12345)
    _refused(dirs, tmp_path / "out2", "the runs come from different trainer code")
    dirs = [_copy(runs, s, tmp_path, f"sha{s}") for s in (11, 12, 13)]
    _edit_json(dirs[1] / "metrics.json", code_sha256="0" * 64)
    _refused(dirs, tmp_path / "out3", "runs come from different code: code_sha256 differs")


def test_refuses_duplicate_seed(runs, tmp_path):
    _refused([runs[11], runs[11], runs[12]], tmp_path / "out", "seed 11 appears in more than one run")


def test_refuses_existing_folder_without_force(runs, tmp_path):
    out = tmp_path / "out"
    _build([runs[s] for s in SEEDS], out, "--track", "non_record_16mb")
    (f,) = _folders(out)
    marker = f / "README.md"
    before = marker.read_bytes()
    proc = _build([runs[s] for s in SEEDS], out, "--track", "non_record_16mb", check=False)
    assert proc.returncode == 2 and "already exists (pass --force to replace it)" in proc.stderr
    assert marker.read_bytes() == before
    _build([runs[s] for s in SEEDS], out, "--track", "non_record_16mb", "--force", "--blurb", "second build")
    assert "second build" in (f / "README.md").read_text()
    assert [p.name for p in f.parent.iterdir()] == [f.name]  # no temp or old folders left behind


def test_from_logs_needs_the_script(runs, tmp_path):
    logs = [runs[s] / "train.log" for s in SEEDS]
    _refused(logs, tmp_path / "out", "--from-logs needs --script PATH", "--from-logs", "--track", "non_record_16mb")


def test_bare_log_without_from_logs_is_refused(runs, tmp_path):
    _refused([runs[11] / "train.log"], tmp_path / "out", "not a run directory", "--track", "non_record_16mb")


def test_from_logs_refuses_logs_with_different_hyperparameters(runs, tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    for s in SEEDS:
        text = (runs[s] / "train.log").read_text()
        if s == SEEDS[1]:
            assert "  MATRIX_LR=0.04\n" in text
            text = text.replace("  MATRIX_LR=0.04\n", "  MATRIX_LR=0.05\n")
        (logs / f"train_seed{s}.log").write_text(text)
    script = tmp_path / "t.py"
    script.write_text("pass\n")
    _refused([logs / f"train_seed{s}.log" for s in SEEDS], tmp_path / "out",
             "runs differ in configuration other than seed: MATRIX_LR=0.04", "--from-logs", "--script", script,
             "--track", "non_record_16mb")


@pytest.mark.slow
def test_record_stack_minified_and_wrapped_reproduces_pgolf_train(tiny_data, tmp_path):
    """The record preset scaled to CPU (int6 export, EMA, late QAT, sliding eval, legal TTT) through the
    minifier and the LZMA wrapper: identical losses, scores and artifact."""
    from builder.runs import load_run_dir
    from builder.ship import Form, shipped_source

    run_dir = tmp_path / "record_tiny"
    run_pgolf("train", "--preset", "record", "--scale", "tiny", "--iterations", "4", "--val-max-tokens", "8192",
              "--data", tiny_data["data"], "--tokenizer", tiny_data["tokenizer"], "--out", run_dir, "--seed", 5)
    run = load_run_dir(run_dir)
    shipped = shipped_source(run.config, Form(minify=True, wrap="lzma"))  # unspecialized: every code path kept
    code, baked = shipped.text, shipped.baked
    assert baked["ttt_enabled"] == 1 and baked.get("compressor", "zlib") == run.config["compressor"]
    assert shipped.sizes["plain"] == run.code_bytes
    got, blob, _ = _run_built(code, tiny_data, tmp_path / "built", 5)
    want = json.loads((run_dir / "metrics.json").read_text())
    assert [r[:2] for r in got["history"]["train"]] == [r[:2] for r in want["history"]["train"]]
    for key in ("pre_quant_val_loss", "post_quant_val_loss", "sliding_val_bpb", "ttt_val_loss", "ttt_val_bpb", "val_bpb", "model_bytes"):
        assert got[key] == want[key], key
    assert blob == (run_dir / "final_model.ptz").read_bytes()
