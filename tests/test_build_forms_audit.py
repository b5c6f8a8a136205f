"""The README's real-submission flow end to end: `pgolf train --code-form F` -> `pgolf build` -> `pgolf audit`, for
every --minify/--wrap combination, and the validation scope a record states.

Runs are tiny (2 steps on short_val_data, whose whole validation split is 4,097 tokens, so scores are on the full
split) and trained once per module, in-process."""

from __future__ import annotations

import json

import pytest
from conftest import run_pgolf

pytestmark = pytest.mark.slow  # ~10 tiny trainings and a dozen builds and audits

RUN_ARGS = ["--preset", "tiny", "--iterations", "2", "--warmdown-iters", "1", "--train-batch-tokens", "1024",
            "--val-loss-every", "0", "--train-log-every", "1"]
# (pgolf build flags, the --code-form pgolf train reserves for them): every --minify/--wrap combination
FORMS = {
    "plain": ([], "plain"),
    "minified": (["--minify"], "minified"),
    "lzma": (["--minify", "--wrap", "lzma"], "lzma"),
    "brotli": (["--minify", "--wrap", "brotli"], "brotli"),
    "specialized+lzma": (["--wrap", "lzma"], "specialized+lzma"),
    "specialized+brotli": (["--wrap", "brotli"], "specialized+brotli"),
}
RECORD_SEEDS = (1, 2, 3)


def _train(data, out, seed, form, *extra):
    from pgolf.cli import main

    rc = main(["train", *RUN_ARGS, "--data", str(data["data"]), "--tokenizer", str(data["tokenizer"]), "--out",
               str(out), "--seed", str(seed), "--code-form", form, *extra])
    assert rc == 0, f"pgolf train --code-form {form} (seed {seed}) exited {rc}"
    return out


@pytest.fixture(scope="module")
def runs(short_val_data, tmp_path_factory):
    import torch

    threads = torch.get_num_threads()
    root = tmp_path_factory.mktemp("form_runs")
    out = {("lzma", s): _train(short_val_data, root / f"lzma_{s}", s, "lzma") for s in RECORD_SEEDS}
    for name, (_flags, form) in FORMS.items():
        if name != "lzma":
            out[(name, 1)] = _train(short_val_data, root / f"{name.replace('+', '_')}_1", 1, form)
    out[("partial", 1)] = _train(short_val_data, root / "partial_1", 1, "plain", "--val-max-tokens", "1024")
    torch.set_num_threads(threads)  # pgolf train set one thread for this CPU process
    return out


def _build(run_dirs, out, *flags, track="non_record_16mb", check=True):
    proc = run_pgolf("build", *run_dirs, "--name", "Form test", "--author", "Test", "--github-id", "tester",
                     "--track", track, "--out", out, "--date", "2026-01-01", *flags, check=check)
    return proc, out / f"track_{track}" / "2026-01-01_Form_test"


def _audit(folder, *extra):
    proc = run_pgolf("audit", folder, "--format", "json", "--no-progress", *extra, check=False, timeout=900)
    report = json.loads(proc.stdout)
    (sub,) = report["submissions"]
    errors = [f for f in sub["findings"] if f["level"] == "error"]
    assert proc.returncode == 0 and sub["verdict"] == "pass" and not errors, json.dumps(sub["findings"], indent=1)[:4000]
    return sub


def _one_error_line(proc) -> str:
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pgolf: error: "), proc.stderr
    return lines[0]


def test_readme_flow_three_lzma_seeds_record_track_passes_the_audit(runs, tmp_path):
    """README: train 3 seeds with --code-form lzma, build --minify --wrap lzma on the record track, audit."""
    dirs = [runs[("lzma", s)] for s in RECORD_SEEDS]
    _proc, folder = _build(dirs, tmp_path, "--minify", "--wrap", "lzma", track="10min_16mb")
    text = (folder / "train_gpt.py").read_text()
    assert text.startswith("import lzma")
    sub = json.loads((folder / "submission.json").read_text())
    logged = {json.loads((d / "metrics.json").read_text())["code_bytes"] for d in dirs}
    assert logged == {sub["bytes_code"]} == {len(text.encode())}
    assert sub["validation"]["scope"] == "full" and sub["compliance"]["full_validation"] is True
    _audit(folder)


@pytest.mark.parametrize("name", list(FORMS))
def test_every_form_builds_into_a_folder_that_passes_the_audit(runs, tmp_path, name):
    flags, form = FORMS[name]
    run_dir = runs[(name, 1)]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["code_form"] == form
    _proc, folder = _build([run_dir], tmp_path, *flags)
    shipped = (folder / "train_gpt.py").read_bytes()
    assert metrics["code_bytes"] == len(shipped)  # what training reserved is what ships
    sub = json.loads((folder / "submission.json").read_text())
    assert sub["bytes_code"] == len(shipped) and sub["bytes_total"] == metrics["artifact_bytes"]
    wrap = flags[flags.index("--wrap") + 1] if "--wrap" in flags else "none"
    head = shipped.split(b",", 1)[0]
    assert head == {"none": head if not head.startswith(b"import lzma") else b"", "lzma": b"import lzma as L",
                    "brotli": b"import brotli"}[wrap], head
    req = folder / "requirements.txt"
    assert (req.read_text() if req.exists() else "") == ("brotli\n" if wrap == "brotli" else "")
    assert f"form `{form}`" in (folder / "README.md").read_text()
    _audit(folder)


def test_build_ships_the_form_the_runs_reserved_without_flags(runs, tmp_path):
    _proc, folder = _build([runs[("brotli", 1)]], tmp_path)
    assert (folder / "train_gpt.py").read_bytes().startswith(b"import brotli")


def test_runs_with_different_forms_are_refused_naming_code_form(runs, tmp_path):
    proc, _folder = _build([runs[("plain", 1)], runs[("lzma", 2)]], tmp_path, check=False)
    line = _one_error_line(proc)
    assert "seed 1: plain, seed 2: lzma" in line and "pgolf train --code-form" in line
    assert not tmp_path.joinpath("track_non_record_16mb").exists()


def test_partial_validation_is_refused_on_the_record_track_and_labelled_elsewhere(runs, tmp_path):
    run_dir = runs[("partial", 1)]
    proc, _ = _build([run_dir], tmp_path / "rec", "--sota-bpb", "3.5", track="10min_16mb", check=False)
    line = _one_error_line(proc)
    assert "scored only 1,024 validation tokens of 4,097 (VAL_MAX_TOKENS=1024)" in line and "non_record_16mb" in line
    assert not (tmp_path / "rec").exists()
    _proc, folder = _build([run_dir], tmp_path / "nonrec")
    sub = json.loads((folder / "submission.json").read_text())
    assert sub["validation"] == {"scope": "partial", "scored_tokens": 1024, "available_tokens": 4097,
                                 "val_max_tokens": 1024,
                                 "note": "scored on a prefix of the validation split (VAL_MAX_TOKENS): not a challenge score"}
    assert sub["compliance"]["full_validation"] is False
    readme = (folder / "README.md").read_text()
    assert "**Partial validation — not a challenge score.**" in readme.split("## Results")[0]
    assert "| Full validation split | NO (partial validation) |" in readme


def test_readme_flow_record_passes_the_dynamic_audit(runs, tmp_path):
    """The wrapped record really runs in the sandbox (PG9D0) with no legality or data-access finding."""
    _proc, folder = _build([runs[("lzma", s)] for s in RECORD_SEEDS], tmp_path, "--minify", "--wrap", "lzma",
                           track="10min_16mb")
    sub = _audit(folder, "--dynamic")
    rules = {f["rule"] for f in sub["findings"]}
    assert "PG9D0" in rules
    assert not {r for r in rules if r.startswith(("PG4D", "PG900"))}
