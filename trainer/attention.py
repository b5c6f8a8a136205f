"""Causal self-attention: GQA, q/k RMS-norm, partial RoPE, learnable q-gain, XSA, gated output, value residual.

Kernel choice (SDPA_BACKEND): FlashAttention-3 (`flash_attn_interface.flash_attn_func`) when importable and asked for
(or auto), else torch SDPA with GQA via enable_gqa (K/V are never repeated in memory). On CUDA, "auto" prefers cuDNN
on Hopper; a preferred backend that cannot run the given shapes falls back down the priority list instead of failing.
On CPU every choice but "math" uses torch's default CPU kernel (deterministic).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trainer.config import ConfigError
from trainer.layers import LinearWeight, empty_param, rms_norm
from trainer.rotary import apply_rotary

try:  # FlashAttention-3 (Hopper); optional
    from flash_attn_interface import flash_attn_func as _fa3_func
except ImportError:  # pragma: no cover - depends on the machine
    _fa3_func = None

try:
    from torch.nn.attention import SDPBackend, sdpa_kernel
except ImportError:  # pragma: no cover - torch too old for backend selection
    SDPBackend = None
    sdpa_kernel = None


def fa3_available() -> bool:
    return _fa3_func is not None


def resolve_attention_backend(name: str) -> str:
    """Validate SDPA_BACKEND and fix "auto" once, at model construction (never inside a traced forward):
    "fa3" when importable, else "cudnn" on Hopper or newer (measured faster than flash there), else "default"."""
    if name == "auto":
        if fa3_available():
            return "fa3"
        return "cudnn" if _cuda_prefers_cudnn() else "default"
    if name == "fa3" and not fa3_available():
        raise ConfigError("SDPA_BACKEND=fa3: expected flash_attn_interface to be importable, got ImportError")
    if name not in ("fa3", "cudnn", "flash", "efficient", "math"):
        raise ConfigError(f"SDPA_BACKEND: expected auto, fa3, cudnn, flash, efficient or math, got {name!r}")
    return name


def _cuda_prefers_cudnn() -> bool:
    try:
        return torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 9
    except (RuntimeError, AssertionError):  # pragma: no cover - broken driver
        return False


def _sdpa_priority(backend: str, is_cuda: bool):
    """Ordered SDPBackend list for sdpa_kernel (a preferred kernel that rejects the shapes falls through to the
    next), or None for torch's default choice."""
    if SDPBackend is None or backend == "default":
        return None
    if not is_cuda:  # CPU: only the math kernel can be forced; fa3/cudnn/flash requests use the default CPU kernel
        return [SDPBackend.MATH] if backend == "math" else None
    order = {
        "cudnn": [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH],
        "fa3": [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH],
        "flash": [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH],
        "efficient": [SDPBackend.EFFICIENT_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.MATH],
        "math": [SDPBackend.MATH],
    }
    return order[backend]


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str) -> torch.Tensor:
    """Causal attention. q [B, T, H, D]; k, v [B, T, Hkv, D] with H % Hkv == 0. Returns [B, T, H, D]."""
    if backend == "fa3" and _fa3_func is not None and q.is_cuda:
        out = _fa3_func(q, k, v, causal=True)
        return out[0] if isinstance(out, tuple) else out
    qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    gqa = q.shape[2] != k.shape[2]
    order = _sdpa_priority(backend, q.is_cuda)
    if order is None:
        y = F.scaled_dot_product_attention(qt, kt, vt, is_causal=True, enable_gqa=gqa)
    else:
        with sdpa_kernel(order, set_priority=True):
            y = F.scaled_dot_product_attention(qt, kt, vt, is_causal=True, enable_gqa=gqa)
    return y.transpose(1, 2)


def xsa_project(y: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Exclusive self-attention: remove from each head's output its component along the token's own normalized
    value vector, y <- y - (y . v_hat) v_hat, per GQA group (v is [B, T, Hkv, D]; nothing is repeated)."""
    B, T, H, D = y.shape
    hkv = v.shape[2]
    yg = y.reshape(B, T, hkv, H // hkv, D)
    vn = F.normalize(v, dim=-1).unsqueeze(3)
    yg = yg - (yg * vn).sum(dim=-1, keepdim=True) * vn
    return yg.reshape(B, T, H, D)


class CausalSelfAttention(nn.Module):
    """Parameters: q_gain [H] (QK_GAIN_INIT), plus attn_gate_w [H, dim] / attn_gate_b [H] with GATED_ATTENTION and
    vr_lambda [2] with VALUE_RESIDUAL. Matrices c_q/c_k/c_v/proj live here unless the GPT banks them."""

    def __init__(self, dim, num_heads, num_kv_heads, use_xsa, gated, value_residual, banked):
        super().__init__()
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = dim // num_heads
        self.use_xsa = use_xsa
        self.gated = gated
        self.value_residual = value_residual
        kv_dim = num_kv_heads * self.head_dim
        if not banked:
            self.c_q = LinearWeight(dim, dim)
            self.c_k = LinearWeight(dim, kv_dim)
            self.c_v = LinearWeight(dim, kv_dim)
            self.proj = LinearWeight(dim, dim)
        self.q_gain = empty_param(num_heads)
        if gated:
            self.attn_gate_w = empty_param(num_heads, dim)
            self.attn_gate_b = empty_param(num_heads)
        if value_residual:
            self.vr_lambda = empty_param(2)

    def forward(self, x, wq, wk, wv, wo, cos, sin, backend, ve=None, v0=None, names=None, observe=None):
        """x [B, T, dim] (already normed). Returns (output [B, T, dim], raw values [B, T, Hkv, D] for v0).

        `observe(weight_name, input)` (GPTQ calibration) is called with the input of each matrix named in `names`
        (c_q, c_k, c_v, proj export names).
        """
        if observe is not None:
            for name in names[:3]:
                observe(name, x)
        B, T, _ = x.shape
        H, Hkv, D = self.num_heads, self.num_kv_heads, self.head_dim
        dt = x.dtype
        # One fused projection: the narrow K/V matmuls are slow on their own.
        qkv = F.linear(x, torch.cat((wq.to(dt), wk.to(dt), wv.to(dt)), dim=0))
        q, k, v = qkv.split((H * D, Hkv * D, Hkv * D), dim=-1)
        if ve is not None:
            v = v + ve.to(v.dtype)
        q = rms_norm(q.reshape(B, T, H, D))
        k = rms_norm(k.reshape(B, T, Hkv, D))
        v = v.reshape(B, T, Hkv, D)
        raw_v = v
        if self.value_residual and v0 is not None:
            lam = self.vr_lambda.to(v.dtype)
            v = lam[0] * v0 + lam[1] * v
        q = apply_rotary(q, cos, sin)
        k = apply_rotary(k, cos, sin)
        q = q * self.q_gain.to(q.dtype)[None, None, :, None]
        cdt = v.dtype
        y = causal_attention(q.to(cdt), k.to(cdt), v, backend)
        if self.use_xsa:
            y = xsa_project(y, v)
        if self.gated:
            gate = torch.sigmoid(F.linear(x, self.attn_gate_w.to(dt), self.attn_gate_b.to(dt)))
            y = y * gate.unsqueeze(-1).to(y.dtype)
        y = y.reshape(B, T, H * D)
        if observe is not None:
            observe(names[3], y)
        return F.linear(y, wo.to(y.dtype)), raw_v
