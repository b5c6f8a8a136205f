"""The challenge's tokenizer-agnostic metric: bits per byte of the validation text.

Bytes of a target token (the challenge rule):
  UTF-8 length of its piece without a leading "▁" (1 for a byte-fallback piece, 0 for control/unknown/unused),
  plus 1 when the piece starts with "▁" and the previous token is not control/unknown/unused.
val_bpb = (mean NLL in nats / ln 2) * (target tokens / bytes).
"""

from __future__ import annotations

import math
import os

import numpy as np
import sentencepiece as spm
import torch

from trainer.errors import PgolfError

BPB_SPACE_MARK = "\u2581"


class ByteLUT:
    """Per-token-id lookup tables for the byte count, sized max(tokenizer vocab, model vocab).

    `base_bytes` int16: bytes of the piece without its leading "▁"; `has_leading_space` bool: the piece starts
    with "▁"; `is_boundary` bool: control/unknown/unused ids and ids beyond the tokenizer (no byte for a following "▁").
    """

    def __init__(self, base_bytes: torch.Tensor, has_leading_space: torch.Tensor, is_boundary: torch.Tensor):
        if not (base_bytes.shape == has_leading_space.shape == is_boundary.shape) or base_bytes.dim() != 1:
            raise PgolfError(
                f"byte LUT tensors must be 1-D of one length, got {tuple(base_bytes.shape)}, "
                f"{tuple(has_leading_space.shape)}, {tuple(is_boundary.shape)}"
            )
        self.base_bytes = base_bytes
        self.has_leading_space = has_leading_space
        self.is_boundary = is_boundary

    @property
    def size(self) -> int:
        return int(self.base_bytes.numel())

    def to(self, device) -> "ByteLUT":
        return ByteLUT(self.base_bytes.to(device), self.has_leading_space.to(device), self.is_boundary.to(device))


def load_tokenizer(path, vocab_size: int) -> spm.SentencePieceProcessor:
    """Load a SentencePiece model; its vocabulary must equal `vocab_size` (the model's VOCAB_SIZE)."""
    path = os.fspath(path)
    if not path or not os.path.exists(path):
        raise PgolfError(f"tokenizer {path or '(empty path)'}: no such file (expected a SentencePiece .model)")
    if not os.path.isfile(path):
        raise PgolfError(f"tokenizer {path}: not a regular file (expected a SentencePiece .model)")
    sp = spm.SentencePieceProcessor()
    try:
        sp.Load(path)
    except (OSError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PgolfError(f"tokenizer {path}: not a valid SentencePiece model ({first})") from None
    if vocab_size and int(sp.vocab_size()) != int(vocab_size):
        raise PgolfError(
            f"tokenizer {path}: vocabulary has {int(sp.vocab_size())} pieces, expected VOCAB_SIZE={int(vocab_size)}"
        )
    return sp


def build_byte_lut(sp_or_path, vocab_size: int, device="cpu") -> ByteLUT:
    """The challenge's lookup tables (`build_sentencepiece_luts`) for a tokenizer or the path of one."""
    if isinstance(sp_or_path, spm.SentencePieceProcessor):
        sp = sp_or_path
    else:
        sp = load_tokenizer(sp_or_path, 0)
    sp_vocab = int(sp.vocab_size())
    size = max(sp_vocab, int(vocab_size))
    base = np.zeros(size, dtype=np.int16)
    lead = np.zeros(size, dtype=np.bool_)
    boundary = np.ones(size, dtype=np.bool_)
    for i in range(sp_vocab):
        if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
            continue
        boundary[i] = False
        if sp.is_byte(i):
            base[i] = 1
            continue
        piece = sp.id_to_piece(i)
        if piece.startswith(BPB_SPACE_MARK):
            lead[i] = True
            piece = piece[1:]
        base[i] = len(piece.encode("utf-8"))
    return ByteLUT(
        torch.from_numpy(base).to(device),
        torch.from_numpy(lead).to(device),
        torch.from_numpy(boundary).to(device),
    )


def target_bytes(prev_ids: torch.Tensor, tgt_ids: torch.Tensor, lut: ByteLUT) -> torch.Tensor:
    """Bytes of each target token given the token before it (same shapes; int32 result)."""
    if prev_ids.shape != tgt_ids.shape:
        raise PgolfError(f"target_bytes: prev_ids shape {tuple(prev_ids.shape)} != tgt_ids shape {tuple(tgt_ids.shape)}")
    tgt = tgt_ids.long()
    prev = prev_ids.long()
    out = lut.base_bytes[tgt].to(torch.int32)
    out += (lut.has_leading_space[tgt] & ~lut.is_boundary[prev]).to(torch.int32)
    return out


def bits_per_byte(loss_sum_nats, token_count, byte_count) -> float:
    """val_bpb = (loss_sum / token_count / ln 2) * (token_count / byte_count), as the challenge computes it."""
    loss_sum, tokens, nbytes = (float(v.item() if torch.is_tensor(v) else v) for v in (loss_sum_nats, token_count, byte_count))
    if tokens <= 0:
        raise PgolfError(f"bits_per_byte: token count must be positive, got {tokens:g}")
    if nbytes <= 0:
        raise PgolfError(f"bits_per_byte: byte count must be positive, got {nbytes:g}")
    val_loss = loss_sum / tokens
    return (val_loss / math.log(2.0)) * (tokens / nbytes)
