"""`pgolf data fetch` against a fake hub laid out like the challenge's dataset repo; never touches the network."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import huggingface_hub
import numpy as np
import pytest
from huggingface_hub import errors as hf_errors

from trainer.data_fetch import FetchError, fetch_dataset
from trainer.shards import read_shard, write_shard

ROOT = Path(__file__).resolve().parents[1]


def _quiet(_line):
    pass


def make_hub(base: Path, variant="sp1024", train=3, val=1, manifest=True, vocab_file=True) -> Path:
    hub = base / "hub"
    vocab = variant[2:]
    shard_dir = hub / "datasets" / "datasets" / f"fineweb10B_{variant}"
    for i in range(val):
        write_shard(shard_dir / f"fineweb_val_{i:06d}.bin", np.arange(100 * i, 100 * i + 50) % 1024)
    for i in range(train):
        write_shard(shard_dir / f"fineweb_train_{i:06d}.bin", np.full(20 + i, i + 1))
    tok_dir = hub / "datasets" / "tokenizers"
    tok_dir.mkdir(parents=True)
    (tok_dir / f"fineweb_{vocab}_bpe.model").write_bytes(b"model-" + vocab.encode())
    if vocab_file:
        (tok_dir / f"fineweb_{vocab}_bpe.vocab").write_text("<pad>\t0\n")
    if manifest:
        (hub / "datasets" / "manifest.json").write_text(json.dumps({
            "version": "10B",
            "datasets": [{"name": f"fineweb10B_{variant}", "tokenizer_name": f"sp_bpe_{vocab}",
                          "stats": {"files_train": train, "files_val": val, "docs_val": 50000}}],
            "tokenizers": [{"name": f"sp_bpe_{vocab}", "kind": "sentencepiece_bpe", "vocab_size": int(vocab),
                            "model_path": f"tokenizers/fineweb_{vocab}_bpe.model",
                            "vocab_path": f"tokenizers/fineweb_{vocab}_bpe.vocab"}],
        }))
    return hub


class FakeHub:
    """Stands in for huggingface_hub.hf_hub_download, serving files of a local hub folder and recording calls."""

    def __init__(self, hub: Path):
        self.hub, self.calls = hub, []

    def __call__(self, repo_id, filename, *, subfolder=None, repo_type=None, **kw):
        self.calls.append((repo_id, subfolder, filename, repo_type))
        path = self.hub / (subfolder or "") / filename
        if not path.is_file():
            raise hf_errors.EntryNotFoundError(f"404: {subfolder}/{filename}")
        return str(path)


def test_fetch_from_local_hub_layout_and_progress(tmp_path):
    hub = make_hub(tmp_path)
    out = tmp_path / "data"
    lines = []
    res = fetch_dataset("sp1024", 2, out, repo_id=str(hub), log=lines.append)
    d = out / "datasets" / "fineweb10B_sp1024"
    assert res["data_path"] == str(d) and res["tokenizer_path"] == str(out / "tokenizers" / "fineweb_1024_bpe.model")
    assert sorted(p.name for p in d.iterdir()) == ["fineweb_train_000000.bin", "fineweb_train_000001.bin", "fineweb_val_000000.bin"]
    for p in d.iterdir():
        assert p.read_bytes() == (hub / "datasets" / "datasets" / "fineweb10B_sp1024" / p.name).read_bytes()
    assert (out / "manifest.json").is_file() and (out / "tokenizers" / "fineweb_1024_bpe.vocab").is_file()
    assert res["downloaded"] == 5 and res["kept"] == 0
    assert any(line.startswith("fetch: [1/5] ") for line in lines) and any("[5/5]" in line for line in lines)
    assert "DATA_PATH=" in lines[-1]
    assert not list(out.rglob("*.tmp-*"))


def test_fetch_resumes_and_repairs(tmp_path):
    hub = make_hub(tmp_path)
    out = tmp_path / "data"
    fetch_dataset("sp1024", 3, out, repo_id=str(hub), log=_quiet)
    again = fetch_dataset("sp1024", 3, out, repo_id=str(hub), log=_quiet)
    assert again["downloaded"] == 0 and again["kept"] == 6
    bad = out / "datasets" / "fineweb10B_sp1024" / "fineweb_train_000001.bin"
    os.remove(bad)  # the link shares the hub file; replace it with a truncated copy
    bad.write_bytes((hub / "datasets" / "datasets" / "fineweb10B_sp1024" / bad.name).read_bytes()[:-2])
    lines = []
    res = fetch_dataset("sp1024", 3, out, repo_id=str(hub), log=lines.append)
    assert res["downloaded"] == 1 and read_shard(bad).tolist() == [2] * 21
    assert any("is not a valid shard; downloading it again" in line for line in lines)


def test_fetch_errors_from_local_hub(tmp_path):
    hub = make_hub(tmp_path)
    with pytest.raises(FetchError, match=r"--train-shards 4: .* has only 3 train shards for sp1024"):
        fetch_dataset("sp1024", 4, tmp_path / "o", repo_id=str(hub), log=_quiet)
    with pytest.raises(FetchError, match=r"manifest.json of .* has no dataset fineweb10B_sp8192 \(it lists: fineweb10B_sp1024\)"):
        fetch_dataset("sp8192", 1, tmp_path / "o", repo_id=str(hub), log=_quiet)
    with pytest.raises(FetchError, match=r"--variant 'byte260': expected sp<vocab>"):
        fetch_dataset("byte260", 1, tmp_path / "o", repo_id=str(hub), log=_quiet)
    with pytest.raises(FetchError, match=r"--train-shards -1"):
        fetch_dataset("sp1024", -1, tmp_path / "o", repo_id=str(hub), log=_quiet)
    with pytest.raises(FetchError, match=r"looks like a local hub directory, but no such directory exists"):
        fetch_dataset("sp1024", 1, tmp_path / "o", repo_id=str(tmp_path / "nohub"), log=_quiet)
    shard = hub / "datasets" / "datasets" / "fineweb10B_sp1024" / "fineweb_train_000002.bin"
    shard.write_bytes(b"\x00" * 1100)
    with pytest.raises(FetchError, match=r"downloaded datasets/datasets/fineweb10B_sp1024/fineweb_train_000002.bin .* is not a valid shard: .*bad magic 0"):
        fetch_dataset("sp1024", 3, tmp_path / "o", repo_id=str(hub), log=_quiet)
    assert not (tmp_path / "o" / "datasets" / "fineweb10B_sp1024" / shard.name).exists()
    (hub / "datasets" / "manifest.json").write_text("{not json")
    with pytest.raises(FetchError, match=r"manifest.json of .* is not valid JSON"):
        fetch_dataset("sp1024", 1, tmp_path / "o", repo_id=str(hub), log=_quiet)


def test_fetch_without_manifest_uses_standard_layout(tmp_path):
    hub = make_hub(tmp_path, train=2, val=2, manifest=False, vocab_file=False)
    out = tmp_path / "data"
    res = fetch_dataset("sp1024", 2, out, repo_id=str(hub), log=_quiet)
    names = sorted(p.name for p in (out / "datasets" / "fineweb10B_sp1024").iterdir())
    assert names == ["fineweb_train_000000.bin", "fineweb_train_000001.bin", "fineweb_val_000000.bin"]
    res = fetch_dataset("sp1024", 2, out, repo_id=str(hub), val_shards=2, log=_quiet)
    assert res["downloaded"] == 1 and (out / "datasets" / "fineweb10B_sp1024" / "fineweb_val_000001.bin").is_file()
    with pytest.raises(FetchError, match=r"local hub .* has no file datasets/datasets/fineweb10B_sp1024/fineweb_train_000002.bin"):
        fetch_dataset("sp1024", 3, out, repo_id=str(hub), log=_quiet)


def test_fetch_through_hf_hub_download(tmp_path, monkeypatch):
    hub = make_hub(tmp_path, variant="sp8192", train=2)
    fake = FakeHub(hub)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake)
    monkeypatch.delenv("MATCHED_FINEWEB_REPO_ID", raising=False)
    monkeypatch.delenv("MATCHED_FINEWEB_REMOTE_ROOT_PREFIX", raising=False)
    res = fetch_dataset("sp8192", 1, tmp_path / "data", log=_quiet)
    assert {c[0] for c in fake.calls} == {"kevclark/parameter-golf"} and {c[3] for c in fake.calls} == {"dataset"}
    assert fake.calls[0][1:3] == ("datasets", "manifest.json")
    assert ("kevclark/parameter-golf", "datasets/datasets/fineweb10B_sp8192", "fineweb_train_000000.bin", "dataset") in fake.calls
    assert ("kevclark/parameter-golf", "datasets/tokenizers", "fineweb_8192_bpe.model", "dataset") in fake.calls
    assert Path(res["tokenizer_path"]).read_bytes() == b"model-8192"
    # the environment override of the challenge's downloader
    fake.calls.clear()
    monkeypatch.setenv("MATCHED_FINEWEB_REPO_ID", "someone/mirror")
    fetch_dataset("sp8192", 1, tmp_path / "data2", log=_quiet)
    assert {c[0] for c in fake.calls} == {"someone/mirror"}
    # --repo-id wins over the environment
    fake.calls.clear()
    fetch_dataset("sp8192", 1, tmp_path / "data3", repo_id="me/other", log=_quiet)
    assert {c[0] for c in fake.calls} == {"me/other"}
    # sp1024's default repo is the challenge's
    monkeypatch.delenv("MATCHED_FINEWEB_REPO_ID")
    fake.calls.clear()
    with pytest.raises(FetchError, match=r"manifest.json of willdepueoai/parameter-golf has no dataset fineweb10B_sp1024"):
        fetch_dataset("sp1024", 1, tmp_path / "data4", log=_quiet)
    assert fake.calls == [("willdepueoai/parameter-golf", "datasets", "manifest.json", "dataset")]


def test_offline_gives_a_clear_error(tmp_path, monkeypatch):
    def offline(*a, **kw):
        raise hf_errors.LocalEntryNotFoundError("An error happened while trying to locate the file on the Hub ...")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(FetchError, match=r"cannot download datasets/manifest.json from dataset repo willdepueoai/parameter-golf: "
                                         r"the Hugging Face hub is unreachable"):
        fetch_dataset("sp1024", 1, tmp_path / "data", log=_quiet)

    def http_down(*a, **kw):
        raise ConnectionError("Name or service not known")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", http_down)
    with pytest.raises(FetchError, match=r"cannot download .*: ConnectionError: Name or service not known"):
        fetch_dataset("sp1024", 1, tmp_path / "data", log=_quiet)


def test_offline_cli_with_real_hub_library(tmp_path):
    # HF_HUB_OFFLINE makes the real huggingface_hub refuse the network: no request leaves this machine.
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), PYTHONPATH=str(ROOT))
    env.pop("MATCHED_FINEWEB_REPO_ID", None)
    r = subprocess.run([sys.executable, "-m", "pgolf", "data", "fetch", "--train-shards", "1", "--out", str(tmp_path / "d")],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert r.returncode == 2, r.stderr
    err_lines = [line for line in r.stderr.splitlines() if line.startswith("pgolf: error:")]
    assert len(err_lines) == 1 and "unreachable" in err_lines[0] and "Traceback" not in r.stderr


def test_missing_vocab_file_is_skipped(tmp_path):
    hub = make_hub(tmp_path, train=1, vocab_file=False)
    lines = []
    res = fetch_dataset("sp1024", 1, tmp_path / "data", repo_id=str(hub), log=lines.append)
    assert res["downloaded"] == 3 and Path(res["tokenizer_path"]).is_file()
    assert any("fineweb_1024_bpe.vocab not in the repo; skipped" in line for line in lines)
