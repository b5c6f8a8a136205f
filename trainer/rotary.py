"""Rotary position embedding: partial RoPE (first ROPE_DIMS dims of each head) with NTK-aware base scaling.

For a sequence longer than the reference length the base grows as base * (T / ref) ** (rd / (rd - 2)), so the
lowest frequency stretches to cover the longer context while the highest stays put (NTK-aware scaling). At or below
the reference length the base is unchanged, which is why one unscaled table serves every T <= ref by slicing.
"""

from __future__ import annotations

import torch
from torch import nn


def rope_base_for(seq_len: int, base: float, rope_dims: int, ref_len: int) -> float:
    """The RoPE base used for a sequence of `seq_len` tokens (NTK-scaled past `ref_len`)."""
    if ref_len > 0 and seq_len > ref_len:
        return base * (seq_len / ref_len) ** (rope_dims / (rope_dims - 2))
    return base


def rope_tables(seq_len: int, rope_dims: int, base: float, device=None):
    """(cos, sin), each fp32 [seq_len, rope_dims // 2], for positions 0..seq_len-1 at this base."""
    inv_freq = 1.0 / (base ** (torch.arange(0, rope_dims, 2, dtype=torch.float64, device=device) / rope_dims))
    t = torch.arange(seq_len, dtype=torch.float64, device=device)
    freqs = torch.outer(t, inv_freq)
    return freqs.cos().float(), freqs.sin().float()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first 2*cos.shape[-1] dims of x [B, T, H, D] (half-split pairing); the rest pass through."""
    half = cos.shape[-1]
    rd = 2 * half
    c = cos[None, :, None, :].to(x.dtype)
    s = sin[None, :, None, :].to(x.dtype)
    x1 = x[..., :half]
    x2 = x[..., half:rd]
    rotated = torch.cat((x1 * c + x2 * s, x2 * c - x1 * s), dim=-1)
    if rd == x.shape[-1]:
        return rotated
    return torch.cat((rotated, x[..., rd:]), dim=-1)


class Rotary(nn.Module):
    """Caches cos/sin tables as non-persistent buffers (they move with .to(device) and never enter state_dict).

    One unscaled table of length max(ref_len, every cached T <= ref) serves all T <= ref_len by slicing; each T in
    `cache_lens` beyond ref_len gets its own NTK-scaled table. Any other length is computed on the fly.
    """

    def __init__(self, rope_dims: int, base: float, ref_len: int, cache_lens=()):
        super().__init__()
        self.rope_dims = rope_dims
        self.base = float(base)
        self.ref_len = int(ref_len)
        lens = sorted({int(n) for n in cache_lens if int(n) > 0})
        # Without NTK scaling (ref_len <= 0) one table covers every cached length.
        self.short_len = self.ref_len if self.ref_len > 0 else max(lens + [0])
        if self.short_len > 0:
            cos, sin = rope_tables(self.short_len, rope_dims, self.base)
            self.register_buffer("cos_short", cos, persistent=False)
            self.register_buffer("sin_short", sin, persistent=False)
        self.long_lens = tuple(n for n in lens if self.ref_len > 0 and n > self.ref_len)
        for n in self.long_lens:
            cos, sin = rope_tables(n, rope_dims, rope_base_for(n, self.base, rope_dims, self.ref_len))
            self.register_buffer(f"cos_{n}", cos, persistent=False)
            self.register_buffer(f"sin_{n}", sin, persistent=False)

    def forward(self, seq_len: int, device):
        if seq_len in self.long_lens:
            return getattr(self, f"cos_{seq_len}"), getattr(self, f"sin_{seq_len}")
        if seq_len <= self.short_len:
            return self.cos_short[:seq_len], self.sin_short[:seq_len]
        base = rope_base_for(seq_len, self.base, self.rope_dims, self.ref_len)
        return rope_tables(seq_len, self.rope_dims, base, device=device)

