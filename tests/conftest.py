"""Shared fixtures: the real reference data (skipped when absent) and a tiny dataset built from the embedded corpus."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("PGOLF_SHARED_DATA", REPO.parent / "shared" / "data"))


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def single_torch_thread():
    """Run a test with one intra-op torch thread (tiny tensors gain nothing from more; spin-waits cost a lot)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"reference data folder {SHARED_DATA} is absent")
    return SHARED_DATA


def run_pgolf(*args, env=None, cwd=None, timeout=600, check=True) -> subprocess.CompletedProcess:
    """Run `python -m pgolf ARGS` (the `pgolf` console script) in a subprocess."""
    full_env = dict(os.environ)
    full_env.pop("RANK", None)
    full_env.pop("WORLD_SIZE", None)
    full_env["PYTHONPATH"] = str(REPO) + os.pathsep + full_env.get("PYTHONPATH", "")
    full_env.setdefault("OMP_NUM_THREADS", "1")
    if env:
        full_env.update(env)
    proc = subprocess.run(
        [sys.executable, "-m", "pgolf", *map(str, args)], capture_output=True, text=True, env=full_env,
        cwd=cwd or REPO, timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"pgolf {' '.join(map(str, args))} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> dict:
    """A dataset built from the embedded corpus with a freshly trained 1024-piece tokenizer (as `pgolf demo` does)."""
    out = tmp_path_factory.mktemp("tiny_data")
    run_pgolf("data", "build", "--vocab-size", "1024", "--val-docs", "8", "--out", out)
    models = sorted(glob.glob(str(out / "*.model")))
    assert models, f"data build wrote no tokenizer model in {out}"
    return {"data": out, "tokenizer": Path(models[0])}


@pytest.fixture(scope="session")
def short_val_data(tiny_data, tmp_path_factory) -> dict:
    """tiny_data whose validation split is only its first 4,097 tokens, so a run scores the *full* split in a blink
    (record-track builds refuse partial validation, VAL_MAX_TOKENS)."""
    import shutil

    from trainer.shards import read_shard, shard_paths, write_shard

    out = tmp_path_factory.mktemp("short_val_data")
    for f in shard_paths(tiny_data["data"], "train"):
        shutil.copy(f, out)
    write_shard(out / "fineweb_val_000000.bin", read_shard(shard_paths(tiny_data["data"], "val")[0])[:4097])
    return {"data": out, "tokenizer": tiny_data["tokenizer"]}
