"""The byte rule and val_bpb, checked against real tokenizers and the real FineWeb validation prefix."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import sentencepiece as spm
import torch

from trainer.bpb import ByteLUT, bits_per_byte, build_byte_lut, load_tokenizer, target_bytes
from trainer.errors import PgolfError
from trainer.shards import read_shard

SHARED = Path(os.environ.get("PGOLF_SHARED_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data")
SP1024 = SHARED / "tokenizers" / "fineweb_1024_bpe.model"
SP8192 = SHARED / "tokenizers" / "fineweb_8192_bpe.model"
VAL = SHARED / "fineweb" / "fineweb_val_000000.bin"
DOCS = SHARED / "fineweb" / "fineweb_val_prefix_docs.jsonl"


def _need(*paths):
    for p in paths:
        if not p.exists():
            pytest.skip(f"shared data not present: {p}")


@pytest.mark.parametrize("model, vocab", [(SP1024, 1024), (SP8192, 8192)])
def test_lut_matches_piece_definitions(model, vocab):
    _need(model)
    sp = spm.SentencePieceProcessor(model_file=str(model))
    lut = build_byte_lut(str(model), vocab)
    assert lut.size == vocab and lut.base_bytes.dtype == torch.int16
    assert lut.has_leading_space.dtype == torch.bool and lut.is_boundary.dtype == torch.bool
    # pad/bos/eos/unk: boundaries with no bytes
    for i in range(4):
        assert lut.is_boundary[i] and lut.base_bytes[i] == 0 and not lut.has_leading_space[i]
    # byte-fallback pieces <0x00>..<0xFF> are ids 4..259 and cost one byte each
    assert sp.id_to_piece(4) == "<0x00>" and sp.id_to_piece(259) == "<0xFF>"
    assert (lut.base_bytes[4:260] == 1).all() and not lut.is_boundary[4:260].any()
    # the standalone "▁" piece: a leading space and nothing else
    space = sp.piece_to_id("\u2581")
    assert sp.id_to_piece(space) == "\u2581"
    assert lut.has_leading_space[space] and lut.base_bytes[space] == 0
    # every ordinary piece: UTF-8 bytes of the piece without the mark
    for i in range(260, vocab):
        piece = sp.id_to_piece(i)
        stripped = piece[1:] if piece.startswith("\u2581") else piece
        assert lut.base_bytes[i] == len(stripped.encode("utf-8")), piece
        assert bool(lut.has_leading_space[i]) == piece.startswith("\u2581")


def test_lut_pads_to_model_vocab():
    _need(SP1024)
    lut = build_byte_lut(str(SP1024), 1100)
    assert lut.size == 1100
    assert lut.is_boundary[1024:].all() and (lut.base_bytes[1024:] == 0).all()


def test_target_bytes_rule_on_handmade_ids():
    _need(SP1024)
    sp = load_tokenizer(str(SP1024), 1024)
    lut = build_byte_lut(sp, 1024)
    the = sp.piece_to_id("\u2581the")
    assert the != sp.unk_id()
    prev = torch.tensor([1, 4, the, 3, 2])
    tgt = torch.tensor([the, the, the, the, the])
    # after BOS / UNK / EOS no space byte; after an ordinary or byte piece the space counts
    assert target_bytes(prev, tgt, lut).tolist() == [3, 4, 4, 3, 3]
    with pytest.raises(PgolfError, match="shape"):
        target_bytes(prev[:2], tgt, lut)


def test_exact_byte_count_on_real_fineweb_prefix():
    _need(SP1024, VAL, DOCS)
    toks = torch.from_numpy(read_shard(VAL).astype("int64"))
    lut = build_byte_lut(str(SP1024), 1024)
    per_target = target_bytes(toks[:-1], toks[1:], lut)
    docs = [json.loads(line) for line in DOCS.read_text().splitlines()]
    utf8 = sum(len(d["text"].encode("utf-8")) for d in docs)
    assert int(per_target.sum()) == utf8 == 315257
    # the decoded text of each document agrees with the per-document byte count
    bos = (toks == 1).nonzero().flatten().tolist() + [toks.numel()]
    first = toks[bos[0] : bos[1]]
    sp = spm.SentencePieceProcessor(model_file=str(SP1024))
    text = sp.decode(first[1:].tolist())
    assert text == docs[0]["text"]
    assert int(target_bytes(first[:-1], first[1:], lut).sum()) == len(text.encode("utf-8"))


def test_sp8192_bytes_equal_utf8_of_encoded_text():
    _need(SP8192, DOCS)
    sp = spm.SentencePieceProcessor(model_file=str(SP8192))
    lut = build_byte_lut(sp, 8192)
    total = utf8 = 0
    for line in DOCS.read_text().splitlines()[:40]:
        text = json.loads(line)["text"]
        ids = torch.tensor([1] + sp.encode(text))
        total += int(target_bytes(ids[:-1], ids[1:], lut).sum())
        utf8 += len(sp.decode(ids[1:].tolist()).encode("utf-8"))
    assert total == utf8 > 10000


def test_bits_per_byte_formula():
    # 1000 tokens, mean loss 2 nats, over 2500 bytes
    got = bits_per_byte(2000.0, 1000, 2500)
    assert got == pytest.approx((2.0 / math.log(2)) * (1000 / 2500), rel=1e-15)
    assert bits_per_byte(torch.tensor(2000.0, dtype=torch.float64), torch.tensor(1000.0), torch.tensor(2500.0)) == got
    with pytest.raises(PgolfError, match="byte count must be positive, got 0"):
        bits_per_byte(1.0, 10, 0)
    with pytest.raises(PgolfError, match="token count must be positive"):
        bits_per_byte(1.0, 0, 10)


def test_load_tokenizer_errors(tmp_path):
    with pytest.raises(PgolfError, match=r"tokenizer .*missing.model: no such file"):
        load_tokenizer(tmp_path / "missing.model", 1024)
    with pytest.raises(PgolfError, match="not a regular file"):
        load_tokenizer(tmp_path, 1024)
    bad = tmp_path / "bad.model"
    bad.write_bytes(b"this is not a protobuf")
    with pytest.raises(PgolfError, match=r"bad.model: not a valid SentencePiece model") as info:
        load_tokenizer(bad, 1024)
    assert "\n" not in str(info.value)
    _need(SP1024)
    with pytest.raises(PgolfError, match=r"vocabulary has 1024 pieces, expected VOCAB_SIZE=8192"):
        load_tokenizer(SP1024, 8192)
    assert load_tokenizer(SP1024, 1024).vocab_size() == 1024


def test_bytelut_validates_shapes():
    with pytest.raises(PgolfError, match="1-D of one length"):
        ByteLUT(torch.zeros(3, dtype=torch.int16), torch.zeros(2, dtype=torch.bool), torch.zeros(3, dtype=torch.bool))


@pytest.mark.gpu
def test_cuda_lut_matches_cpu(tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    from trainer.data_build import build_dataset

    # the embedded corpus: no shared data needed on the GPU machine
    m = build_dataset(tmp_path, log=lambda line: None)
    toks = torch.from_numpy(read_shard(tmp_path / "fineweb_val_000000.bin").astype("int64"))
    cpu = build_byte_lut(str(tmp_path / m["tokenizer"]["path"]), 1024)
    lut = build_byte_lut(str(tmp_path / m["tokenizer"]["path"]), 1024, device="cuda")
    assert lut.base_bytes.is_cuda and lut.to("cpu").base_bytes.device.type == "cpu"
    t = toks.cuda()
    got = target_bytes(t[:-1], t[1:], lut)
    assert got.is_cuda and torch.equal(got.cpu(), target_bytes(toks[:-1], toks[1:], cpu))
    assert int(got.sum()) == m["splits"]["val"]["bytes"]
