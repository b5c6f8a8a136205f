"""Per-row symmetric integer quantization and the name-pattern precision scheme.

One code path serves both QAT (trainer/qat.py fake-quantizes with it every step) and export (trainer/artifact.py
stores its q/scale), so the weight seen in training equals the weight reloaded from the artifact bit for bit:

- the row clip is a percentile of |w| by nearest rank (a selection, no arithmetic; 100 = row max);
- the scale clip/(2^(bits-1)-1) is rounded to fp16 *before* quantizing (with integer bit operations, which no
  compiler fuses away), and q = clamp(nearest(w/scale)) uses that fp16 scale, so dequantize(q, scale) = q * scale
  needs nothing that was not stored;
- nearest(w/scale) is corrected with exact arithmetic after the division, so approximate GPU division, FMA
  contraction or torch.compile rewrites cannot change a code: eager, compiled, CPU and CUDA give the same bits.

Tensors with more than two dims are quantized per row of their last dimension (a [L, R, C] bank quantizes exactly
like its L separate [R, C] matrices).
"""

from __future__ import annotations

import fnmatch

import numpy as np
import torch

from trainer.errors import PgolfError

# Names of per-channel control vectors kept in fp32 regardless of size (the records' CONTROL_TENSOR_NAME_PATTERNS).
CONTROL_TENSOR_PATTERNS = (
    "attn_scale", "attn_scales", "mlp_scale", "mlp_scales", "resid_mix", "resid_mixes", "q_gain", "skip_weight",
    "skip_weights", "smear", "dtg_gate", "ve_layer_scales", "ve_shared.scale", "attn_gate", "vr_lambda",
)
QUANT_MIN_BITS = 2
QUANT_MAX_BITS = 8
FLOAT_PRECISIONS = ("fp16", "fp32")
# fp16 limits for the per-row scale: the smallest subnormal (an all-zero row still gets a nonzero scale, tiny rows
# keep resolution) and the largest finite value.
_QSCALE_MIN = 2.0 ** -24
_QSCALE_MAX = 65504.0
_QSCALE_NORMAL_MIN = 2.0 ** -14


def clip_range(bits: int) -> int:
    """Largest code magnitude of a symmetric `bits`-bit quantizer: 7, 15, 31, 127 for int4/5/6/8."""
    if not isinstance(bits, int) or not QUANT_MIN_BITS <= bits <= QUANT_MAX_BITS:
        raise PgolfError(f"quantizer bits: expected an integer in {QUANT_MIN_BITS}..{QUANT_MAX_BITS}, got {bits!r}")
    return (1 << (bits - 1)) - 1


def precision_bits(precision: str) -> int:
    """'int6' -> 6, 'fp16' -> 16, 'fp32' -> 32."""
    if precision == "fp16":
        return 16
    if precision == "fp32":
        return 32
    if precision.startswith("int") and precision[3:].isdigit():
        bits = int(precision[3:])
        if QUANT_MIN_BITS <= bits <= QUANT_MAX_BITS:
            return bits
    raise PgolfError(
        f"precision {precision!r}: expected int{QUANT_MIN_BITS}..int{QUANT_MAX_BITS}, fp16 or fp32"
    )


def parse_quant_scheme(scheme: str) -> list:
    """'mlp:int4,attn:int6,*:int8' -> [('mlp', 'int4'), ('attn', 'int6'), ('*', 'int8')]; first match wins."""
    if not isinstance(scheme, str) or not scheme.strip():
        raise PgolfError(f"QUANT_SCHEME: expected 'pattern:precision,...' (e.g. 'mlp:int6,*:int8'), got {scheme!r}")
    rules = []
    for part in scheme.split(","):
        part = part.strip()
        if not part:
            continue
        pattern, sep, precision = part.rpartition(":")
        pattern, precision = pattern.strip(), precision.strip().lower()
        if not sep or not pattern:
            raise PgolfError(f"QUANT_SCHEME entry {part!r}: expected 'pattern:precision' in {scheme!r}")
        precision_bits(precision)  # validates, raising a one-line error naming the precision
        rules.append((pattern, precision))
    if not rules:
        raise PgolfError(f"QUANT_SCHEME: no 'pattern:precision' entries in {scheme!r}")
    return rules


def scheme_matches(pattern: str, name: str) -> bool:
    """Does a scheme pattern select tensor `name`?

    '*' matches everything; a pattern with glob characters is matched against the whole name (fnmatch); otherwise the
    pattern must equal a run of whole dot-separated components ('mlp' selects 'blocks.0.mlp.fc.weight', 'attn.c_q'
    selects 'blocks.3.attn.c_q.weight', but 'proj' does not select 'c_proj').
    """
    if pattern == "*":
        return True
    if any(c in pattern for c in "*?["):
        return fnmatch.fnmatchcase(name, pattern)
    parts, want = name.split("."), pattern.split(".")
    n = len(want)
    return any(parts[i:i + n] == want for i in range(len(parts) - n + 1))


def is_control_tensor(name: str) -> bool:
    return any(p in name for p in CONTROL_TENSOR_PATTERNS)


def precision_for(name: str, numel: int, h, ndim: int = 2, is_float: bool = True, rules=None) -> str:
    """Storage precision of one tensor: 'raw' (non-float, stored as is), 'fp32' (control vectors), 'fp16'
    (small or 1-D tensors), else the first QUANT_SCHEME rule matching `name` (int2..int8, fp16 or fp32)."""
    if not is_float:
        return "raw"
    if is_control_tensor(name):
        return "fp32"
    if ndim < 2 or numel <= h.passthrough_max_numel:
        return "fp16"
    for pattern, precision in rules if rules is not None else parse_quant_scheme(h.quant_scheme):
        if scheme_matches(pattern, name):
            return precision
    raise PgolfError(
        f"QUANT_SCHEME {h.quant_scheme!r}: no rule matches tensor {name!r}; end the scheme with '*:int8' (or another default)"
    )


def parse_clip_search(text: str) -> list:
    """QUANT_CLIP_SEARCH '99.9,99.99,100' -> [99.9, 99.99, 100.0] (empty -> [])."""
    out = []
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            pct = float(part)
        except ValueError:
            raise PgolfError(f"QUANT_CLIP_SEARCH: expected comma-separated percentiles in (0, 100], got {part!r}") from None
        out.append(_check_pct(pct, "QUANT_CLIP_SEARCH"))
    return out


def _check_pct(pct, where: str) -> float:
    pct = float(pct)
    if not 0.0 < pct <= 100.0:
        raise PgolfError(f"{where}: clip percentile must be in (0, 100], got {pct}")
    return pct


def _rows_view(w: torch.Tensor) -> torch.Tensor:
    """fp32 [rows, cols] view of a weight (1-D: one row; N-D: rows over all leading dims)."""
    if w.ndim == 0:
        raise PgolfError("quantize_rows: expected a tensor with at least one dimension, got a scalar")
    if not torch.is_floating_point(w):
        raise PgolfError(f"quantize_rows: expected a floating-point tensor, got {w.dtype}")
    w32 = w.detach().float()
    return w32.reshape(1, -1) if w32.ndim == 1 else w32.reshape(-1, w32.shape[-1])


def row_clip_values(w2: torch.Tensor, clip_pct, sorted_abs=None) -> torch.Tensor:
    """Per-row clip magnitude: the `clip_pct` percentile of |w| by nearest rank (the sorted value at position
    round(pct/100·(cols−1)); a pure selection, so compiled and eager code agree); None or 100 gives the row max.
    `sorted_abs`: |w2| sorted along rows, if already known."""
    if clip_pct is None or float(clip_pct) >= 100.0:
        return w2.abs().amax(dim=1)
    rank = int(round(float(clip_pct) / 100.0 * (w2.shape[1] - 1)))
    s = w2.abs().sort(dim=1).values if sorted_abs is None else sorted_abs
    return s[:, rank]


def fp16_grid(x: torch.Tensor) -> torch.Tensor:
    """Round positive fp32 values in [2^-24, 65504] to the nearest fp16 value (ties to even), staying fp32.

    Done with integer bit operations because torch.compile may fuse away a `.half().float()` round trip; the
    result equals IEEE fp32 -> fp16 conversion, so storing it as fp16 is exact."""
    bits = x.view(torch.int32)
    bits = (bits + (0x0FFF + ((bits >> 13) & 1))) & -8192  # keep 10 mantissa bits, round half to even
    normal = bits.view(torch.float32)
    subnormal = torch.round(x * 16777216.0) * (1.0 / 16777216.0)  # fp16 subnormals: multiples of 2^-24
    return torch.where(x < _QSCALE_NORMAL_MIN, subnormal, normal)


def row_scales(w2: torch.Tensor, bits: int, clip_pct, sorted_abs=None) -> torch.Tensor:
    """fp16 per-row scale = clip / clip_range (as clip × fp32(1/clip_range)), within fp16's finite range."""
    recip = float(np.float32(1.0 / clip_range(bits)))  # an fp32 constant: fp32 and fp64 products then agree
    clip = row_clip_values(w2, clip_pct, sorted_abs)
    return fp16_grid((clip * recip).clamp(_QSCALE_MIN, _QSCALE_MAX)).to(torch.float16)


def nearest_codes(w: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """round(w / s) to the nearest integer, ties to even, exactly, as fp32 (unclamped); s broadcasts against w.

    The division only gives a first guess (GPU division may be approximate and compilers may rewrite it); the
    guess is then corrected with exact arithmetic: q·s is exact in fp32 (≤ 8-bit q times an 11-bit fp16 scale)
    and the residual w − q·s is exact near a rounding boundary (Sterbenz), so every backend picks the same code."""
    q = torch.round(w / s)
    r = w - q * s
    half = s * 0.5
    q = q + (r > half).to(q.dtype) - (r < -half).to(q.dtype)
    odd = torch.fmod(q, 2.0) != 0
    q = q + ((r == half) & odd).to(q.dtype) - ((r == -half) & odd).to(q.dtype)
    return q


def quantize_with_scale(w2: torch.Tensor, scale: torch.Tensor, bits: int) -> torch.Tensor:
    """int8 codes q = clamp(nearest(w / scale), -clip_range, clip_range) for fp32 [rows, cols] and fp16 [rows]."""
    cr = clip_range(bits)
    return torch.clamp(nearest_codes(w2, scale.float()[:, None]), -cr, cr).to(torch.int8)


def quantize_rows(w: torch.Tensor, bits: int, clip_pct=None, search=None):
    """Per-row symmetric quantization -> (q int8 shaped like w, scale fp16 [rows]).

    `clip_pct`: row clip percentile (None/100: row max). `search`: a list of percentiles (GPTQ-lite): each is tried
    and the one with the lowest whole-matrix MSE wins (ties: the earliest); it overrides `clip_pct`.
    """
    q, scale, _idx, _cands = _quantize_rows_pick(w, bits, clip_pct, search)
    return q, scale


def quantize_rows_search(w: torch.Tensor, bits: int, clip_pct=None, search=None):
    """quantize_rows plus the chosen clip percentile (third element; None means row max)."""
    q, scale, idx, cands = _quantize_rows_pick(w, bits, clip_pct, search)
    return q, scale, cands[int(idx)]


def _quantize_rows_pick(w: torch.Tensor, bits: int, clip_pct, search):
    # No host synchronisation (no .item()): QAT calls this every step, possibly under torch.compile.
    w2 = _rows_view(w)
    cands = [None if clip_pct is None else _check_pct(clip_pct, "quant clip_pct")]
    if search:
        cands = [_check_pct(p, "quant clip search") for p in search]
    if len(cands) == 1:
        scale = row_scales(w2, bits, cands[0])
        return quantize_with_scale(w2, scale, bits).reshape(w.shape), scale, 0, cands
    need_sort = any(p is not None and p < 100.0 for p in cands)
    sorted_abs = w2.abs().sort(dim=1).values if need_sort else None  # one sort serves every candidate
    scales = torch.stack([row_scales(w2, bits, p, sorted_abs) for p in cands])
    qs = torch.stack([quantize_with_scale(w2, s, bits) for s in scales])
    # q·s is exact and the subtraction rounds once; fp64 sums make near-ties between backends practically moot.
    errs = (qs.float() * scales.float()[:, :, None] - w2[None]).double().square().sum(dim=(1, 2))
    idx = torch.argmin(errs).reshape(1)  # first minimum on ties; index_select keeps it on device
    return qs.index_select(0, idx)[0].reshape(w.shape), scales.index_select(0, idx)[0], idx, cands


def dequantize_rows(q: torch.Tensor, scale: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """q * scale per row (computed in fp32, returned in `dtype`), shaped like q."""
    q2 = q.reshape(1, -1) if q.ndim == 1 else q.reshape(-1, q.shape[-1])
    if scale.numel() != q2.shape[0]:
        raise PgolfError(f"dequantize_rows: {q2.shape[0]} rows but {scale.numel()} scales")
    out = q2.float() * scale.float().reshape(-1, 1)
    return out.reshape(q.shape).to(dtype)


def quant_mse(w: torch.Tensor, bits: int, clip_pct=None, search=None) -> float:
    """Mean squared error of the round trip (a diagnostic for logs and tests)."""
    q, scale = quantize_rows(w, bits, clip_pct, search)
    return (dequantize_rows(q, scale) - w.detach().float()).square().mean().item()


def qat_bits_by_name(named_params, h) -> dict:
    """{export name: bits} for every parameter the export scheme stores as int2..int8 (same rules as export).

    `named_params`: iterable of (name, tensor) using the model's export names (model.export_state_dict() items or
    named_parameters() when they coincide).
    """
    rules = parse_quant_scheme(h.quant_scheme)
    out = {}
    for name, p in named_params:
        precision = precision_for(name, p.numel(), h, ndim=p.ndim, is_float=torch.is_floating_point(p), rules=rules)
        if precision.startswith("int"):
            out[name] = precision_bits(precision)
    return out
