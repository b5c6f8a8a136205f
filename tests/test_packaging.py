"""pgolf works from a non-editable wheel install: console script, package data (templates, corpus), subcommands."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from conftest import REPO


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
    env_dir = tmp / "venv"
    # System site packages give the venv torch & co. without a download; pgolf itself comes only from the wheel.
    venv.EnvBuilder(system_site_packages=True, with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", str(wheels[0])],
                   check=True, capture_output=True)
    return {"python": py, "bin": env_dir / "bin", "wheel": wheels[0], "cwd": tmp}


def _run(wheel_env, *args, check=True):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([str(wheel_env["bin"] / "pgolf"), *map(str, args)], capture_output=True, text=True,
                          cwd=wheel_env["cwd"], env=env)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_wheel_contains_package_data(wheel_env):
    import zipfile

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
        capture_output=True, text=True, cwd=wheel_env["cwd"], env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    assert probe.returncode == 0, probe.stderr
    assert str(REPO) not in probe.stdout.splitlines()[0]  # imported from site-packages, not the checkout
    assert ".j2" in probe.stdout


def test_installed_data_build_uses_embedded_corpus(wheel_env, tmp_path):
    _run(wheel_env, "data", "build", "--vocab-size", "512", "--val-docs", "4", "--out", tmp_path / "d")
    assert (tmp_path / "d" / "fineweb_val_000000.bin").is_file()
    assert list((tmp_path / "d").glob("fineweb_train_*.bin"))
    assert (tmp_path / "d" / "manifest.json").is_file()
