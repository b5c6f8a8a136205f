"""`pgolf data build`: deterministic shards + tokenizer + manifest from the embedded corpus and from files."""

from __future__ import annotations

import gzip
import hashlib
import json
import lzma
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm

from trainer.corpus import CORPUS_VAL_DOCS, corpus_path
from trainer.data_build import build_dataset, iter_documents, sample_sentences
from trainer.data_stats import data_stats
from trainer.errors import PgolfError
from trainer.shards import read_shard, shard_paths

SHARED = Path(os.environ.get("PGOLF_SHARED_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data")
SP1024 = SHARED / "tokenizers" / "fineweb_1024_bpe.model"


def _quiet(_line):
    pass


def _tree(d: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    out = tmp_path_factory.mktemp("embedded")
    manifest = build_dataset(out, log=_quiet)
    return out, manifest


def test_embedded_corpus_is_small_and_readable():
    p = corpus_path()
    assert p.is_file() and p.stat().st_size <= 5_000_000
    docs = [json.loads(line) for line in lzma.open(p, "rt", encoding="utf-8")]
    assert len(docs) == 413
    assert {d["source"] for d in docs} == {"austen", "moby_dick"}
    # the validation documents mix both books
    assert {d["source"] for d in docs[:CORPUS_VAL_DOCS]} == {"austen", "moby_dick"}


def test_embedded_build_is_deterministic(embedded, tmp_path):
    out, _ = embedded
    build_dataset(tmp_path, log=_quiet)
    assert _tree(tmp_path) == _tree(out)
    assert sorted(_tree(out)) == ["fineweb_1024_bpe.model", "fineweb_train_000000.bin", "fineweb_val_000000.bin", "manifest.json"]


def test_embedded_manifest_matches_files(embedded):
    out, manifest = embedded
    assert json.loads((out / "manifest.json").read_text()) == manifest
    tok = out / manifest["tokenizer"]["path"]
    assert manifest["tokenizer"]["sha256"] == hashlib.sha256(tok.read_bytes()).hexdigest()
    assert manifest["tokenizer"]["vocab_size"] == 1024 and manifest["tokenizer"]["trained"] is True
    val = read_shard(out / "fineweb_val_000000.bin")
    train = read_shard(out / "fineweb_train_000000.bin")
    sv, st = manifest["splits"]["val"], manifest["splits"]["train"]
    assert sv["documents"] == CORPUS_VAL_DOCS == int((val == 1).sum()) and val[0] == 1
    assert st["documents"] == 413 - CORPUS_VAL_DOCS == int((train == 1).sum()) and train[0] == 1
    assert sv["tokens"] == val.size and st["tokens"] == train.size
    assert manifest["stats"]["tokens_total"] == val.size + train.size
    assert not (val == 2).any()  # no EOS
    # the byte counts agree with `pgolf data stats` and bytes/token is consistent
    stats = data_stats(out, tok)
    assert stats["splits"]["val"]["bytes"] == sv["bytes"] and stats["splits"]["train"]["bytes"] == st["bytes"]
    assert sv["bytes_per_token"] == pytest.approx(sv["bytes"] / sv["tokens"], abs=1e-6)
    assert 2.0 < sv["bytes_per_token"] < 4.0
    # the first val document is BOS + the tokenizer's encoding of the first corpus document
    sp = spm.SentencePieceProcessor(model_file=str(tok))
    first = next(iter_documents([corpus_path()]))
    ids = sp.encode(first)
    assert val[1 : len(ids) + 1].tolist() == ids and val[len(ids) + 1] == 1


def test_trained_tokenizer_has_challenge_settings(embedded):
    out, manifest = embedded
    sp = spm.SentencePieceProcessor(model_file=str(out / manifest["tokenizer"]["path"]))
    assert (sp.pad_id(), sp.bos_id(), sp.eos_id(), sp.unk_id()) == (0, 1, 2, 3)
    assert sp.id_to_piece(4) == "<0x00>" and sp.is_byte(259)  # byte_fallback
    ids = sp.encode("in 1811 and 1812, 100 men")
    pieces = [sp.id_to_piece(i) for i in ids if not sp.is_byte(i)]
    assert pieces and all(sum(c.isdigit() for c in p) <= 1 for p in pieces)  # split_digits
    assert not sp.encode("hello world", out_type=str)[0].startswith("\u2581")  # add_dummy_prefix off
    assert sp.decode(sp.encode("\ufb01ne")) == "fine"  # nmt_nfkc folds the ligature
    assert sp.encode("\u4e2d") and all(sp.is_byte(i) for i in sp.encode("\u4e2d"))  # unseen char -> bytes


def test_files_with_given_tokenizer_split_exactly(tmp_path):
    if not SP1024.exists():
        pytest.skip("shared data not present")
    texts = [f"Document number {i}: " + "the quick brown fox jumps over the lazy dog. " * (i % 7 + 1) for i in range(40)]
    jl = tmp_path / "a.jsonl"
    jl.write_text("".join(json.dumps({"text": t, "id": i}) + "\n" + ("\n" if i == 3 else "") for i, t in enumerate(texts[:30])))
    gz = tmp_path / "b.jsonl.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as f:
        for t in texts[30:39]:
            f.write(json.dumps({"text": t}) + "\n")
    txt = tmp_path / "c.txt"
    txt.write_text(texts[39])
    out = tmp_path / "out"
    m = build_dataset(out, texts=[jl, gz, txt], tokenizer=SP1024, val_docs=5, shard_tokens=200, log=_quiet)
    assert (out / "fineweb_1024_bpe.model").read_bytes() == SP1024.read_bytes()
    assert m["tokenizer"]["trained"] is False
    sp = spm.SentencePieceProcessor(model_file=str(SP1024))
    docs = [[1] + sp.encode(t) for t in texts]
    want_val = sum(docs[:5], [])
    want_train = sum(docs[5:], [])
    val_files = shard_paths(out, "val")
    train_files = shard_paths(out, "train")
    assert np.concatenate([read_shard(f) for f in val_files]).tolist() == want_val
    assert np.concatenate([read_shard(f) for f in train_files]).tolist() == want_train
    # every shard but the last of a split holds exactly --shard-tokens; val and train never share one
    for files, total in ((val_files, len(want_val)), (train_files, len(want_train))):
        sizes = [read_shard(f).size for f in files]
        assert all(s == 200 for s in sizes[:-1]) and 0 < sizes[-1] <= 200 and sum(sizes) == total
    assert len(train_files) > 3
    assert m["splits"]["val"]["documents"] == 5 and m["splits"]["train"]["documents"] == 35
    assert m["stats"]["files_train"] == len(train_files) and m["splits"]["train"]["files"] == [Path(f).name for f in train_files]
    assert [s["name"] for s in m["sources"]] == ["a.jsonl", "b.jsonl.gz", "c.txt"]
    # rebuilding with fewer shards removes the stale ones
    build_dataset(out, texts=[jl, gz, txt], tokenizer=SP1024, val_docs=5, shard_tokens=10**6, log=_quiet)
    assert [Path(f).name for f in shard_paths(out, "train")] == ["fineweb_train_000000.bin"]


def test_sample_sentences_is_seeded_and_bounded():
    texts = [f"line {i}\n\nsecond {i}\n" + "word " * 1000 for i in range(50)]
    a = sample_sentences(texts, 30)
    assert a == sample_sentences(texts, 30) and len(a) == 30
    everything = sample_sentences(texts, 10**6)
    assert everything[:2] == ["line 0", "second 0"]
    assert max(len(s) for s in everything) <= 2048  # long lines are cut, not dropped


def _docs_file(tmp_path, n=3):
    p = tmp_path / "d.jsonl"
    p.write_text("".join(json.dumps({"text": f"doc {i} " * 50}) + "\n" for i in range(n)))
    return p


@pytest.mark.parametrize(
    "content, suffix, pattern",
    [
        ('{"text": "ok"}\n{"text": 3}\n', ".jsonl", r"bad.jsonl:2: expected a JSON object with a string 'text' field"),
        ('{"text": "ok"}\nnot json\n', ".jsonl", r"bad.jsonl:2: invalid JSON"),
        ('["text"]\n', ".jsonl", r"bad.jsonl:1: expected a JSON object"),
        (b'\xff\xfe bad', ".txt", r"bad.txt: not UTF-8 text"),
        ("x", ".csv", r"bad.csv: unsupported file type, expected .jsonl or .txt"),
    ],
)
def test_bad_inputs(tmp_path, content, suffix, pattern):
    p = tmp_path / f"bad{suffix}"
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(PgolfError, match=pattern) as info:
        build_dataset(tmp_path / "out", texts=[_docs_file(tmp_path), p], val_docs=1, log=_quiet)
    assert "\n" not in str(info.value)


def test_bad_options(tmp_path):
    docs = _docs_file(tmp_path)
    with pytest.raises(PgolfError, match=r"--val-docs 3 leaves no training documents: the input has 3 documents"):
        build_dataset(tmp_path / "o", texts=[docs], val_docs=3, log=_quiet)
    with pytest.raises(PgolfError, match=r"--val-docs 0: expected at least 1"):
        build_dataset(tmp_path / "o", texts=[docs], val_docs=0, log=_quiet)
    with pytest.raises(PgolfError, match=r"--shard-tokens 0"):
        build_dataset(tmp_path / "o", texts=[docs], val_docs=1, shard_tokens=0, log=_quiet)
    with pytest.raises(PgolfError, match=r"--vocab-size 100: expected 261..65536"):
        build_dataset(tmp_path / "o", texts=[docs], val_docs=1, vocab_size=100, log=_quiet)
    with pytest.raises(PgolfError, match=r"input .*missing.jsonl: no such file"):
        build_dataset(tmp_path / "o", texts=[tmp_path / "missing.jsonl"], log=_quiet)
    with pytest.raises(PgolfError, match=r"tokenizer .*nope.model: no such file"):
        build_dataset(tmp_path / "o", texts=[docs], val_docs=1, tokenizer=tmp_path / "nope.model", log=_quiet)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(PgolfError, match=r"--out .*afile: exists and is not a directory"):
        build_dataset(tmp_path / "afile", texts=[docs], val_docs=1, log=_quiet)
    assert not (tmp_path / "o").exists()  # nothing written when the options are wrong
