"""Tiny data a submission can read: official-format shards and a SentencePiece tokenizer of the vocabulary size the
script expects (trained once per size and cached). The validation stream is random with every token trigram unique
and absent from the training stream, so the child's probes can map any slice of it back to stream positions."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np

from trainer.errors import PgolfError

MAGIC, VERSION, HEADER_INTS = 20240520, 1, 256
BOS = 1
FIRST_ORDINARY = 4  # pad/bos/eos/unk are 0..3 in the challenge tokenizers


def write_shard(path: Path, tokens: np.ndarray) -> None:
    toks = np.asarray(tokens)
    if toks.size and (toks.min() < 0 or toks.max() >= 65536):
        raise PgolfError(f"shard {path}: token ids must fit uint16, got range [{toks.min()}, {toks.max()}]")
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[0], header[1], header[2] = MAGIC, VERSION, toks.size
    tmp = Path(f"{path}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(header.tobytes())
        f.write(toks.astype("<u2").tobytes())
    os.replace(tmp, path)


def _trigram_keys(t: np.ndarray, base: int) -> np.ndarray:
    t = t.astype(np.int64)
    return t[:-2] * base * base + t[1:-1] * base + t[2:]


def make_streams(vocab: int, n_val: int, n_train: int, seed: int = 0, doc_len: int = 97,
                 val_doc_len: int | None = None):
    """(train, val): random ordinary tokens with a BOS every `doc_len` (`val_doc_len` in val); val trigrams unique and
    not in train."""
    if vocab < 64:
        raise PgolfError(f"dynamic audit: vocabulary size {vocab} is too small for tagged streams (expected >= 64)")
    rng = np.random.default_rng(seed)
    train = rng.integers(FIRST_ORDINARY, vocab, size=n_train, dtype=np.int64)
    train[::doc_len] = BOS
    val = rng.integers(FIRST_ORDINARY, vocab, size=n_val, dtype=np.int64)
    val[::val_doc_len or doc_len] = BOS
    val = make_unique(val, vocab, rng, forbidden=set(_trigram_keys(train, vocab).tolist()))
    return train, val


def make_unique(val: np.ndarray, vocab: int, rng, forbidden=frozenset(), keep_prefix: int = 0) -> np.ndarray:
    """Resample tokens (after `keep_prefix`) until every trigram of `val` is unique and not in `forbidden`."""
    val = val.copy()
    for _ in range(200):
        keys = _trigram_keys(val, vocab)
        seen, bad = set(), []
        for i, k in enumerate(keys.tolist()):
            if k in seen or k in forbidden:
                bad.append(i + 2)
            seen.add(k)
        bad = [b for b in bad if b >= keep_prefix and val[b] != BOS]
        if not bad:
            return val
        val[bad] = rng.integers(FIRST_ORDINARY, vocab, size=len(bad))
    raise PgolfError("dynamic audit: could not build a validation stream with unique trigrams")


def flip_variant(val: np.ndarray, j: int, vocab: int, seed: int = 1) -> np.ndarray:
    """A stream equal to `val` up to and including position j and different at every ordinary position after it."""
    rng = np.random.default_rng(seed)
    out = val.copy()
    tail = rng.integers(FIRST_ORDINARY, vocab, size=len(val) - j - 1)
    same = tail == val[j + 1:]
    tail[same] = FIRST_ORDINARY + (tail[same] - FIRST_ORDINARY + 1) % (vocab - FIRST_ORDINARY)
    out[j + 1:] = tail
    out[j + 1:][val[j + 1:] == BOS] = BOS  # keep document boundaries where they were
    out = make_unique(out, vocab, rng, keep_prefix=j + 1)
    return out


def _corpus_text(n_words: int, seed: int) -> str:
    """Deterministic pseudo-English (letters, digits, punctuation, some non-ASCII) for tokenizer training."""
    rnd = random.Random(seed)
    letters = "etaoinshrdlcumwfgypbvkjxqz"
    weights = [12, 9, 8, 8, 7, 7, 6, 6, 4, 4, 3, 3, 2, 2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1]
    syll = ["".join(rnd.choices(letters, weights, k=rnd.randint(1, 3))) for _ in range(600)]
    words = ["".join(rnd.choices(syll, k=rnd.randint(1, 3))) for _ in range(6000)]
    words += [str(i) for i in range(100)] + ["café", "naïve", "über", "—", "€", "日本", "ß"]
    out = []
    for i in range(n_words):
        w = rnd.choice(words)
        if i % 13 == 0:
            w = w.capitalize()
        out.append(w + rnd.choice(["", "", "", "", ",", ".", "!", "?", ";"]))
        if i % 17 == 16:
            out.append("\n")
    return " ".join(out)


def tokenizer_for(vocab: int, cache_dir: Path) -> Path:
    """A SentencePiece BPE model with exactly `vocab` pieces in the challenge layout, cached per size."""
    import sentencepiece as spm

    cache_dir.mkdir(parents=True, exist_ok=True)
    model = cache_dir / f"pgolf_dyn_sp{vocab}.model"
    if model.exists():
        return model
    if vocab < 300 or vocab > 65536:
        raise PgolfError(f"dynamic audit: tokenizer vocabulary {vocab} is outside the supported range [300, 65536]")
    text_path = cache_dir / f"corpus-{os.getpid()}.txt"
    text_path.write_text(_corpus_text(max(60_000, vocab * 40), seed=vocab), encoding="utf-8")
    prefix = cache_dir / f"tmp-{os.getpid()}-sp{vocab}"
    kwargs = dict(
        input=str(text_path), model_prefix=str(prefix), model_type="bpe", vocab_size=vocab, character_coverage=0.999,
        byte_fallback=True, split_digits=True, normalization_rule_name="nmt_nfkc", add_dummy_prefix=False,
        pad_id=0, bos_id=1, eos_id=2, unk_id=3, hard_vocab_limit=False, minloglevel=2, num_threads=2,
        input_sentence_size=0, max_sentencepiece_length=16,
    )
    try:
        spm.SentencePieceTrainer.train(**kwargs)
        sp = spm.SentencePieceProcessor(model_file=f"{prefix}.model")
        short = vocab - sp.get_piece_size()
        if short > 0:  # not enough merges in the corpus: pad with user-defined pieces to hit the size exactly
            kwargs["user_defined_symbols"] = [f"<pgolf_pad_{i}>" for i in range(short)]
            spm.SentencePieceTrainer.train(**kwargs)
            sp = spm.SentencePieceProcessor(model_file=f"{prefix}.model")
        if sp.get_piece_size() != vocab:
            raise PgolfError(f"dynamic audit: trained tokenizer has {sp.get_piece_size()} pieces, expected {vocab}")
        os.replace(f"{prefix}.model", model)
    finally:
        for p in (text_path, Path(f"{prefix}.model"), Path(f"{prefix}.vocab")):
            if p.exists():
                p.unlink()
    return model


def piece_bytes(model: Path) -> np.ndarray:
    """UTF-8 bytes each token id stands for (▁ = a space, byte-fallback pieces 1, control pieces 0): the per-token
    byte sidecar some scripts read next to the validation shard."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(model))
    out = np.zeros(sp.get_piece_size(), dtype=np.int64)
    for i in range(sp.get_piece_size()):
        if sp.is_control(i) or sp.is_unknown(i):
            continue
        piece = sp.id_to_piece(i)
        out[i] = 1 if sp.is_byte(i) else len(piece.replace("\u2581", " ").encode("utf-8"))
    return out
