"""Building blocks of the GPT: norms, MLP activation, SmearGate, BigramHash and value embeddings.

Modules here own parameters but take their large matrices as forward arguments: the GPT fetches every matrix
through one accessor (bank slice or plain weight, fake-quantized when QAT is on), so banked and unbanked models and
QAT share one code path. Parameters are created with torch.empty and initialized by GPT in a fixed order, so module
construction never consumes random numbers (same seed -> same weights, banked or not).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Multipliers of the BigramHash hash (the records' constants): h_t = (A*t_t XOR B*t_{t-1}) mod (buckets-1).
BIGRAM_HASH_A = 36313
BIGRAM_HASH_B = 27191


def rms_norm(x: torch.Tensor) -> torch.Tensor:
    """Parameter-free RMSNorm over the last dim (eps = dtype epsilon, as F.rms_norm's default)."""
    return F.rms_norm(x, (x.shape[-1],))


def mlp_activation(u: torch.Tensor, kind: str, slope: float) -> torch.Tensor:
    """relu(u)^2 or leaky_relu(u, slope)^2."""
    if kind == "leaky_relu2":
        return F.leaky_relu(u, slope).square()
    return F.relu(u).square()


def empty_param(*shape) -> nn.Parameter:
    return nn.Parameter(torch.empty(*shape))


class LinearWeight(nn.Module):
    """A weight holder ([out, in], fp32 master copy); the GPT applies it with F.linear under autocast."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.weight = empty_param(out_features, in_features)


class EmbeddingWeight(nn.Module):
    """An embedding-table holder ([num, dim]); looked up with F.embedding on the (maybe fake-quantized) weight."""

    def __init__(self, num: int, dim: int):
        super().__init__()
        self.weight = empty_param(num, dim)


def prev_token_mask(input_ids: torch.Tensor, bos_id: int) -> torch.Tensor:
    """bool [B, T]: True where position t may use token t-1 (t > 0 and token t is not a BOS)."""
    has_prev = input_ids != bos_id
    first = torch.arange(input_ids.shape[1], device=input_ids.device) == 0
    return has_prev & ~first[None, :]


class SmearGate(nn.Module):
    """x_t <- (1-g) x_t + g x_{t-1} with g = sigmoid(gate) per channel (zero init: g = 0.5).

    A position whose token is BOS (a document start) takes nothing from the previous position, exactly like
    position 0 does, so a document is embedded the same wherever it starts in a packed sequence.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.gate = empty_param(dim)

    def forward(self, x: torch.Tensor, input_ids: torch.Tensor, bos_id: int) -> torch.Tensor:
        g = torch.sigmoid(self.gate).to(x.dtype)
        prev = F.pad(x[:, :-1], (0, 0, 1, 0))
        prev = prev * prev_token_mask(input_ids, bos_id).unsqueeze(-1).to(x.dtype)
        return (1 - g) * x + g * prev


def bigram_hash(input_ids: torch.Tensor, buckets: int, bos_id: int) -> torch.Tensor:
    """Bucket ids [B, T] of (previous, current) INPUT token pairs; positions without a previous token in the same
    document (position 0 and every BOS) get the reserved bucket `buckets - 1`."""
    t = input_ids.long()
    prev = F.pad(t[:, :-1], (1, 0))
    h = torch.bitwise_xor(BIGRAM_HASH_A * t, BIGRAM_HASH_B * prev) % (buckets - 1)
    return torch.where(prev_token_mask(input_ids, bos_id), h, torch.full_like(h, buckets - 1))


class BigramHash(nn.Module):
    """Hashed bigram embedding: table [buckets, bigram_dim] (zero init) -> proj to model_dim (zero init) * scale."""

    def __init__(self, buckets: int, bigram_dim: int, model_dim: int):
        super().__init__()
        self.buckets = buckets
        self.embed = EmbeddingWeight(buckets, bigram_dim)
        self.proj = LinearWeight(bigram_dim, model_dim)
        self.scale = empty_param(1)

    def forward(self, input_ids, embed_w, proj_w, bos_id: int, dtype, observe=None):
        e = F.embedding(bigram_hash(input_ids, self.buckets, bos_id), embed_w).to(dtype)
        if observe is not None:
            observe("bigram.proj.weight", e)
        return F.linear(e, proj_w.to(dtype)) * self.scale.to(dtype)


class ValueEmbedding(nn.Module):
    """Shared token -> value embedding: Embedding(V, ve_dim) (std 0.01) -> proj to kv_dim (zero init) * scale.
    Each receiving layer multiplies it by its own entry of GPT.ve_layer_scales and adds it to V."""

    def __init__(self, vocab_size: int, ve_dim: int, kv_dim: int):
        super().__init__()
        self.embed = EmbeddingWeight(vocab_size, ve_dim)
        self.proj = LinearWeight(ve_dim, kv_dim)
        self.scale = empty_param(1)

    def forward(self, input_ids, embed_w, proj_w, dtype, observe=None):
        e = F.embedding(input_ids, embed_w).to(dtype)
        if observe is not None:
            observe("ve.proj.weight", e)
        return F.linear(e, proj_w.to(dtype)) * self.scale.to(dtype)
