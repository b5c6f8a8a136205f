"""Quantization-aware training: a straight-through fake quantizer identical to the exporter's round trip.

The forward value is exactly dequantize_rows(quantize_rows(w, bits, clip_pct)) cast to w's dtype (an autograd
Function returns it directly; `w + (wq - w).detach()` would differ from wq by float rounding). The backward pass is
the identity, so the optimizer keeps updating the full-precision weight.
"""

from __future__ import annotations

import torch

from trainer.quantize import dequantize_rows, parse_clip_search, quantize_rows


class _FakeQuantSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w, bits, clip_pct, search):
        q, scale = quantize_rows(w, bits, clip_pct, search)
        return dequantize_rows(q, scale, dtype=w.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        return grad_out, None, None, None


def fake_quantize(w: torch.Tensor, bits: int, clip_pct=None, search=None) -> torch.Tensor:
    """Fake-quantized copy of `w` (per-row symmetric, `bits` bits) with an identity gradient.

    Pass the exporter's settings (QUANT_CLIP_PCT, and QUANT_CLIP_SEARCH as a list if used) to train against the
    exact weights the artifact will hold. clip_pct None/100 uses the row max, the cheapest variant.
    """
    return _FakeQuantSTE.apply(w, int(bits), clip_pct, tuple(search) if search else None)


def qat_clip_settings(h):
    """(clip_pct, search list or None) the exporter uses for round-to-nearest, for set_qat / fake_quantize."""
    return h.quant_clip_pct, (parse_clip_search(h.quant_clip_search) or None)
