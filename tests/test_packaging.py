"""pgolf works from a non-editable wheel install: console script, package data (templates, corpus), subcommands;
and `pip install pgolf` without extras audits a folder without torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import REPO

# A stand-in `torch` that fails like a missing package and leaves a marker, so a test can prove torch was never
# even attempted (a caught ImportError would otherwise hide it).
_NO_TORCH = (
    "import os\n"
    "open(os.environ['PGOLF_TORCH_MARKER'], 'w').close()\n"
    "raise ModuleNotFoundError(\"No module named 'torch'\", name='torch')\n"
)


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    dist = tmp / "dist"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(REPO)],
        capture_output=True, text=True,
    )
    if proc.returncode != 0:
        pytest.fail(f"building the wheel failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    wheels = list(dist.glob("pgolf-*.whl"))
    assert len(wheels) == 1
    # Installed into a plain folder put first on PYTHONPATH: works from the system Python and from inside any
    # virtualenv alike (a venv with system site packages would not see an outer venv's torch & co.).
    site = tmp / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "--target", str(site),
                    str(wheels[0])], check=True, capture_output=True)
    return {"python": Path(sys.executable), "site": site, "bin": site / "bin", "wheel": wheels[0], "cwd": tmp}


def _env(wheel_env, **extra):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    env["PYTHONPATH"] = str(wheel_env["site"])
    env.update(extra)
    return env


def _run(wheel_env, *args, check=True, env=None):
    proc = subprocess.run([str(wheel_env["bin"] / "pgolf"), *map(str, args)], capture_output=True, text=True,
                          cwd=wheel_env["cwd"], env=env or _env(wheel_env))
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_wheel_contains_package_data(wheel_env):
    names = zipfile.ZipFile(wheel_env["wheel"]).namelist()
    assert any(n.startswith("builder/templates/") and n.endswith(".j2") for n in names), "templates missing"
    assert any(n.startswith("trainer/corpus/") and not n.endswith(".py") for n in names), "embedded corpus missing"
    assert not any(n.startswith("tests/") for n in names)


def test_installed_pgolf_runs_outside_the_repo(wheel_env):
    out = _run(wheel_env, "--help").stdout
    for sub in ("data", "train", "build", "audit", "demo"):
        assert sub in out
    probe = subprocess.run(
        [str(wheel_env["python"]), "-c",
         "import trainer, builder, importlib.resources as r; print(trainer.__file__); "
         "print(sorted(p.name for p in r.files('builder.templates').iterdir()))"],
        capture_output=True, text=True, cwd=wheel_env["cwd"], env=_env(wheel_env),
    )
    assert probe.returncode == 0, probe.stderr
    assert str(REPO) not in probe.stdout.splitlines()[0]  # imported from site-packages, not the checkout
    assert ".j2" in probe.stdout


def test_installed_data_build_uses_embedded_corpus(wheel_env, tmp_path):
    _run(wheel_env, "data", "build", "--vocab-size", "512", "--val-docs", "4", "--out", tmp_path / "d")
    assert (tmp_path / "d" / "fineweb_val_000000.bin").is_file()
    assert list((tmp_path / "d").glob("fineweb_train_*.bin"))
    assert (tmp_path / "d" / "manifest.json").is_file()


def test_torch_is_only_in_the_train_extra(wheel_env):
    meta = zipfile.ZipFile(wheel_env["wheel"]).read(
        next(n for n in zipfile.ZipFile(wheel_env["wheel"]).namelist() if n.endswith("METADATA"))).decode()
    requires = [ln.split(":", 1)[1].strip() for ln in meta.splitlines() if ln.startswith("Requires-Dist:")]
    base = [r for r in requires if "extra ==" not in r]
    assert base and not [r for r in base if r.lower().startswith(("torch", "sentencepiece"))], base
    assert any(r.startswith("torch") and 'extra == "train"' in r for r in requires), requires


def test_audit_and_build_help_work_without_torch(wheel_env, tmp_path, tiny_data):
    """`pip install pgolf` (no extras): a static audit runs and torch is never imported; `pgolf train` says which
    extra it needs, in one line."""
    blocked = tmp_path / "blocked"
    (blocked / "torch").mkdir(parents=True)
    (blocked / "torch" / "__init__.py").write_text(_NO_TORCH)
    marker = tmp_path / "torch_was_imported"
    env = _env(wheel_env, PYTHONPATH=f"{blocked}{os.pathsep}{wheel_env['site']}", PGOLF_TORCH_MARKER=str(marker))
    folder = REPO / "tests" / "fixtures" / "dynamic" / "legal_score_first_ttt"
    proc = _run(wheel_env, "audit", folder, "--format", "json", "--no-progress", check=False, env=env)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]  # pass or findings; 2 would be an auditor failure
    (sub,) = json.loads(proc.stdout)["submissions"]
    assert sub["verdict"] in ("pass", "fail"), sub  # "error" would mean it could not be analysed
    assert _run(wheel_env, "build", "--help", env=env).returncode == 0
    assert not marker.exists(), "torch was imported"
    proc = _run(wheel_env, "train", "--preset", "tiny", "--data", tiny_data["data"], "--tokenizer",
                tiny_data["tokenizer"], "--out", tmp_path / "run", check=False, env=env)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "pgolf: error: pgolf train needs PyTorch: pip install 'pgolf[train]' (CPU-only machines: first pip install "
        "torch --index-url https://download.pytorch.org/whl/cpu)"], proc.stderr
    assert not (tmp_path / "run").exists()
    proc = _run(wheel_env, "data", "stats", tiny_data["data"], "--tokenizer", tiny_data["tokenizer"], check=False, env=env)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "pgolf: error: pgolf data needs torch, which is not installed: pip install 'pgolf[train]'"], proc.stderr
