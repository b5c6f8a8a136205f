"""`pgolf data stats`: exact challenge byte count on the real FineWeb prefix, streams across shards, errors."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from pgolf.cli import main
from trainer.data_stats import data_stats, format_stats
from trainer.errors import PgolfError
from trainer.shards import read_shard, write_shard

SHARED = Path(os.environ.get("PGOLF_SHARED_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data")
SP1024 = SHARED / "tokenizers" / "fineweb_1024_bpe.model"
SP8192 = SHARED / "tokenizers" / "fineweb_8192_bpe.model"
VAL = SHARED / "fineweb" / "fineweb_val_000000.bin"
DOCS = SHARED / "fineweb" / "fineweb_val_prefix_docs.jsonl"


@pytest.fixture
def shared():
    for p in (SP1024, VAL, DOCS):
        if not p.exists():
            pytest.skip(f"shared data not present: {p}")


def test_real_fineweb_prefix_byte_count_is_exact(shared, capsys):
    rc = main(["data", "stats", str(VAL), "--tokenizer", str(SP1024), "--json"])
    assert rc == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    stats = json.loads(out)
    utf8 = sum(len(json.loads(line)["text"].encode("utf-8")) for line in DOCS.read_text().splitlines())
    assert stats["bytes"] == utf8 == 315257
    assert stats["tokens"] == 131072
    assert stats["documents"] == len(DOCS.read_text().splitlines()) == 109
    assert stats["bytes_per_token"] == pytest.approx(315257 / 131072, abs=1e-6)


def test_split_across_shards_is_one_stream(shared, tmp_path):
    toks = read_shard(VAL)
    # cut in the middle of a document, right before a piece with a leading space: the byte must still count
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(SP1024))
    cut = next(i for i in range(50_000, 60_000) if sp.id_to_piece(int(toks[i])).startswith("\u2581") and toks[i - 1] != 1)
    write_shard(tmp_path / "fineweb_val_000000.bin", toks[:cut])
    write_shard(tmp_path / "fineweb_val_000001.bin", toks[cut:])
    write_shard(tmp_path / "fineweb_train_000000.bin", toks[:1000])
    stats = data_stats(tmp_path, SP1024)
    assert stats["splits"]["val"] == {"tokens": 131072, "documents": 109, "bytes": 315257,
                                      "bytes_per_token": round(315257 / 131072, 6), "shards": 2}
    assert stats["splits"]["train"]["tokens"] == 1000 and stats["splits"]["train"]["shards"] == 1
    assert stats["tokens"] == 132072 and stats["shards"] == 3
    assert stats["bytes"] == 315257 + stats["splits"]["train"]["bytes"]
    table = format_stats(stats)
    assert "315,257" in table and "total" in table and table.count("\n") == 4


def test_sp8192_tokens_count_their_utf8_bytes(tmp_path):
    if not (SP8192.exists() and DOCS.exists()):
        pytest.skip("shared data not present")
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(SP8192))
    texts = [json.loads(line)["text"] for line in DOCS.read_text().splitlines()[:30]]
    ids = sum(([1] + sp.encode(t) for t in texts), [])
    write_shard(tmp_path / "fineweb_val_000000.bin", ids)
    stats = data_stats(tmp_path / "fineweb_val_000000.bin", SP8192)
    assert stats["bytes"] == sum(len(sp.decode(sp.encode(t)).encode("utf-8")) for t in texts)
    assert stats["documents"] == 30 and stats["tokens"] == len(ids)


def test_errors(shared, tmp_path):
    with pytest.raises(PgolfError, match=r"no such shard or directory"):
        data_stats(tmp_path / "missing.bin", SP1024)
    with pytest.raises(PgolfError, match=r"no shards in .*: expected fineweb_train"):
        data_stats(tmp_path, SP1024)
    write_shard(tmp_path / "big.bin", [1, 5, 2000])
    with pytest.raises(PgolfError, match=r"big.bin: token id 2000 \(first out-of-range id at position 2\) is outside the tokenizer's 1024 pieces"):
        data_stats(tmp_path / "big.bin", SP1024)
    (tmp_path / "junk.bin").write_bytes(b"\0" * 1030)
    with pytest.raises(PgolfError, match=r"junk.bin: bad magic 0"):
        data_stats(tmp_path / "junk.bin", SP1024)
    with pytest.raises(PgolfError, match=r"tokenizer .*none.model: no such file"):
        data_stats(tmp_path / "big.bin", tmp_path / "none.model")


def test_tokenizer_must_match_the_build_manifest(shared, tmp_path):
    shutil.copy(VAL, tmp_path / "fineweb_val_000000.bin")
    (tmp_path / "manifest.json").write_text(json.dumps({"tokenizer": {"path": "x.model", "sha256": "ab" * 32}}))
    with pytest.raises(PgolfError, match=r"is not the one these shards were built with: .*manifest.json records x.model"):
        data_stats(tmp_path, SP1024)
    with pytest.raises(PgolfError, match=r"not the one these shards were built with"):
        data_stats(tmp_path / "fineweb_val_000000.bin", SP1024)
    # the challenge's own manifest records no hash: nothing to compare
    (tmp_path / "manifest.json").write_text(json.dumps({"tokenizers": [{"name": "sp_bpe_1024"}]}))
    assert data_stats(tmp_path, SP1024)["bytes"] == 315257


def test_cli_error_is_one_line(tmp_path, capsys):
    rc = main(["data", "stats", str(tmp_path / "nothing"), "--tokenizer", str(tmp_path / "t.model")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("pgolf: error: tokenizer ") and err.count("\n") == 1
