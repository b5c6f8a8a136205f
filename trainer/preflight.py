"""Checks `pgolf train` runs before importing torch and before creating the run directory.

Each failure is one line (what, where, expected vs got) so bad input costs a second, not a model build, and
leaves no half-made run directory behind. Not part of the shipped train_gpt.py (CLI side only; no torch).
"""

from __future__ import annotations

import os

import numpy as np

from trainer.errors import PgolfError
from trainer.shards import SHARD_HEADER_BYTES, ShardError, shard_paths, shard_token_count

# Token ids are checked on the first SCAN_HEAD tokens of each split's first shard and on an even sample of about
# SCAN_SAMPLE more: a vocabulary mismatch shows up everywhere, so this finds it without reading 200 MB shards.
SCAN_HEAD = 1 << 20
SCAN_SAMPLE = 1 << 20


class PreflightError(PgolfError):
    """An input `pgolf train` would fail on later."""


def check_token_range(path: str, vocab_size: int) -> None:
    """Raise when a sampled token id of shard `path` is >= vocab_size (the embedding lookup would crash)."""
    count = shard_token_count(path)
    if count == 0:
        return
    tokens = np.memmap(path, dtype="<u2", mode="r", offset=SHARD_HEADER_BYTES, shape=(count,))
    step = max(1, count // SCAN_SAMPLE)
    for offset, part in ((0, tokens[:SCAN_HEAD]), (None, tokens[::step])):
        if int(part.max()) >= vocab_size:
            idx = int(np.argmax(part >= vocab_size))
            pos = idx if offset == 0 else idx * step
            raise PreflightError(
                f"{path}: token id {int(part[idx])} at position {pos} is outside the vocabulary: expected ids < "
                f"VOCAB_SIZE={vocab_size} (data and tokenizer/VOCAB_SIZE do not match; `pgolf data stats` shows the range)"
            )


def check_tokenizer(path: str, vocab_size: int) -> None:
    if not path:
        raise PreflightError("TOKENIZER_PATH is empty: expected a SentencePiece .model file (--tokenizer)")
    if not os.path.isfile(path):
        what = "is a directory" if os.path.isdir(path) else "does not exist"
        raise PreflightError(f"tokenizer {path} {what}: expected a SentencePiece .model file (--tokenizer)")
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor()
    try:
        ok = sp.Load(path)
    except (OSError, RuntimeError) as exc:
        raise PreflightError(f"tokenizer {path}: not a SentencePiece model ({str(exc).splitlines()[0][:120]})") from None
    if not ok:
        raise PreflightError(f"tokenizer {path}: not a SentencePiece model")
    if int(sp.vocab_size()) != vocab_size:
        raise PreflightError(
            f"tokenizer {path} has {sp.vocab_size()} pieces but VOCAB_SIZE={vocab_size}: expected them equal "
            f"(pass --vocab-size {sp.vocab_size()} or the matching tokenizer)"
        )


def check_out_dir(path: str) -> None:
    if path and os.path.exists(path) and not os.path.isdir(path):
        raise PreflightError(f"run directory {path} exists and is not a directory (--out)")
    parent = os.path.dirname(os.path.abspath(path or "runs")) or "."
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.access(parent, os.W_OK):
        raise PreflightError(f"run directory {path or 'runs/'}: {parent} is not writable (--out)")


def check_validation_length(val_files: list, h) -> None:
    """The scored validation stream must hold at least one full sequence (trainer.loader truncates to whole ones)."""
    total = sum(shard_token_count(f) for f in val_files)
    usable = min(total, h.val_max_tokens + 1) if h.val_max_tokens > 0 else total
    if usable < h.train_seq_len + 1:
        cut = f" (after VAL_MAX_TOKENS={h.val_max_tokens})" if h.val_max_tokens > 0 else ""
        raise PreflightError(
            f"validation split in {h.data_path} has {usable} tokens{cut}, expected at least TRAIN_SEQ_LEN + 1 = "
            f"{h.train_seq_len + 1}"
        )


def check_run_inputs(h) -> None:
    """Every input `trainer.train.run(h)` reads: data shards (headers, token-id range), tokenizer, run directory."""
    try:
        splits = {split: shard_paths(h.data_path, split) for split in ("train", "val")}
        for files in splits.values():
            for f in files:
                shard_token_count(f)  # header and size of every shard: cheap, no token read
    except ShardError as exc:
        raise PreflightError(f"{exc} (DATA_PATH / --data)") from None
    check_tokenizer(h.tokenizer_path, h.vocab_size)  # first: a VOCAB_SIZE that disagrees with it says so plainly
    for files in splits.values():
        check_token_range(files[0], h.vocab_size)
    check_validation_length(splits["val"], h)
    check_out_dir(h.out_dir)
