"""Full-Hessian GPTQ: calibration Hessians from activations and error-compensating per-row quantization.

For a linear map y = x Wᵀ the output error of a quantized Ŵ is tr((W−Ŵ) H (W−Ŵ)ᵀ) with H = E[xᵀx]. GPTQ quantizes
W one column at a time (columns with the largest diag(H) first) and pushes each column's rounding error onto the
columns not yet quantized through the upper Cholesky factor of H⁻¹, in blocks of GPTQ_BLOCK_SIZE columns.

Rows are independent, so the per-row scale is searched exactly: every candidate clip percentile runs through GPTQ in
one batched pass and each row keeps the candidate with its lowest Hessian-weighted error. The codes and fp16 scales
are the same kind quantize_rows produces, so dequantize_rows reads them back.

Hessian collection: a model that applies its matrices with F.linear on fetched weights (banks, QAT) exposes an
`activation_observer` attribute (None by default) and calls `self.activation_observer(weight_name, x)` with the
input of every matrix it applies (export names; the tied head reports `tok_emb.weight` with the final-norm output).
Other models are observed through forward hooks on their nn.Linear modules.
"""

from __future__ import annotations

import torch
from torch import nn

from trainer.errors import PgolfError
from trainer.quantize import clip_range, nearest_codes, row_scales
from trainer.runlog import Progress


def hessian_key(weight_name: str) -> str:
    """Key of the Hessian that quantizing matrix `weight_name` uses (its input activations)."""
    return weight_name


class _HessianAccumulator:
    def __init__(self, layer_filter):
        self.layer_filter = layer_filter
        self.sums = {}
        self.rows = {}

    def observe(self, weight_name: str, x: torch.Tensor) -> None:
        if self.layer_filter is not None and not self.layer_filter(weight_name):
            return
        key = hessian_key(weight_name)
        x2 = x.detach().reshape(-1, x.shape[-1]).float()
        if key not in self.sums:
            self.sums[key] = torch.zeros(x2.shape[1], x2.shape[1], dtype=torch.float32, device=x2.device)
            self.rows[key] = 0
        self.sums[key].addmm_(x2.t(), x2)
        self.rows[key] += x2.shape[0]


@torch.no_grad()
def collect_hessians(model: nn.Module, batches, layer_filter=None, all_reduce=None, log=None) -> dict:
    """{hessian_key(weight name): H = mean over tokens of xᵀx (fp32)} from running `model` on `batches`.

    `batches`: iterable of input id tensors [B, T] (or (x, y) pairs). `layer_filter(weight_name) -> bool` limits
    which matrices are observed. `all_reduce(tensor)` (e.g. a sum across ranks) is applied to each sum and count
    so every rank ends with the same Hessians. `log(line)` gets a `gptq_calibration_progress:` line every 10 s.
    """
    acc = _HessianAccumulator(layer_filter)
    handles = []
    uses_observer = hasattr(model, "activation_observer")
    if uses_observer:
        model.activation_observer = acc.observe
    else:
        for mod_name, mod in model.named_modules():
            if isinstance(mod, nn.Linear):
                wname = f"{mod_name}.weight" if mod_name else "weight"
                handles.append(mod.register_forward_hook(
                    lambda _m, inputs, _out, _n=wname: acc.observe(_n, inputs[0])))
    was_training = model.training
    model.eval()
    n_batches = 0
    progress = Progress(log, "gptq_calibration", len(batches) if hasattr(batches, "__len__") else 0, unit="batches") if log is not None else None
    try:
        for batch in batches:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            if hasattr(model, "forward_logits"):
                model.forward_logits(x)
            else:
                model(x)
            n_batches += 1
            if progress is not None:
                progress(n_batches)
    finally:
        for hd in handles:
            hd.remove()
        if uses_observer:
            model.activation_observer = None
        model.train(was_training)
    if n_batches == 0:
        raise PgolfError("GPTQ calibration: no batches given (GPTQ_CALIB_SEQS must be > 0)")
    if not acc.sums:
        raise PgolfError("GPTQ calibration: the model reported no matrix inputs (no nn.Linear and no activation_observer calls)")
    out = {}
    for key in sorted(acc.sums):
        total = acc.sums[key]
        count = torch.tensor([float(acc.rows[key])], device=total.device)
        if all_reduce is not None:
            all_reduce(total)
            all_reduce(count)
        out[key] = total / count.item()
    return out


@torch.no_grad()
def generate_calibration(model: nn.Module, n_seqs: int, seq_len: int, temperature: float = 0.8, bos_id: int = 1,
                         generator=None, batch_size: int = 32, log=None) -> torch.Tensor:
    """Self-generated calibration text: [n_seqs, seq_len] int64 sequences that start with BOS and are sampled
    autoregressively from `model.forward_logits` at `temperature` (no training data touched). `log(line)` gets a
    `gptq_generate_progress:` line every 10 s."""
    if n_seqs <= 0 or seq_len <= 1:
        raise PgolfError(f"generate_calibration: expected n_seqs > 0 and seq_len > 1, got {n_seqs} and {seq_len}")
    if temperature <= 0:
        raise PgolfError(f"generate_calibration: temperature must be > 0, got {temperature}")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    progress = Progress(log, "gptq_generate", n_seqs * (seq_len - 1)) if log is not None else None
    try:
        for start in range(0, n_seqs, batch_size):
            b = min(batch_size, n_seqs - start)
            ids = torch.full((b, 1), bos_id, dtype=torch.long, device=device)
            for t in range(seq_len - 1):
                if progress is not None:
                    progress(start * (seq_len - 1) + t * b)
                logits = model.forward_logits(ids)[:, -1, :].float()
                probs = torch.softmax(logits / temperature, dim=-1)
                if generator is not None and generator.device != probs.device:
                    # A CPU generator with a CUDA model (or the reverse): sample where the generator lives.
                    nxt = torch.multinomial(probs.to(generator.device), 1, generator=generator).to(device)
                else:
                    nxt = torch.multinomial(probs, 1, generator=generator)
                ids = torch.cat([ids, nxt], dim=1)
            out.append(ids)
    finally:
        model.train(was_training)
    return torch.cat(out, dim=0)


def gptq_hinv_upper(H: torch.Tensor, damp: float):
    """Upper Cholesky factor U of (H + damp·mean(diag H)·I)⁻¹ (H already permuted), retrying with more damping
    if H is not positive definite. Returns (U, damping fraction used)."""
    n = H.shape[0]
    eye = torch.eye(n, dtype=H.dtype, device=H.device)
    mean_diag = H.diagonal().mean().clamp_min(1e-12)
    frac = damp
    for _ in range(6):
        L, info = torch.linalg.cholesky_ex(H + frac * mean_diag * eye)
        if int(info) == 0:
            Hinv = torch.cholesky_inverse(L)
            U, info2 = torch.linalg.cholesky_ex(Hinv, upper=True)
            if int(info2) == 0:
                return U, frac
        frac = max(frac, 1e-4) * 10.0
    raise PgolfError(f"GPTQ: Hessian of size {n} is not positive definite even with damping {frac / 10:g}")


def _gptq_columns(W: torch.Tensor, U: torch.Tensor, scale: torch.Tensor, cr: int, block_size: int) -> torch.Tensor:
    """Core loop on permuted fp32 W [rows, cols] (modified in place) -> int8 codes [rows, cols]."""
    rows, cols = W.shape
    Q = torch.zeros(rows, cols, dtype=torch.float32, device=W.device)
    for i1 in range(0, cols, block_size):
        i2 = min(i1 + block_size, cols)
        W1 = W[:, i1:i2].clone()
        Err1 = torch.zeros_like(W1)
        U1 = U[i1:i2, i1:i2]
        for i in range(i2 - i1):
            w = W1[:, i]
            q = torch.clamp(nearest_codes(w, scale), -cr, cr)
            Q[:, i1 + i] = q
            err = (w - q * scale) / U1[i, i]
            W1[:, i:] -= err[:, None] * U1[i, i:][None, :]
            Err1[:, i] = err
        if i2 < cols:
            W[:, i2:] -= Err1 @ U[i1:i2, i2:]
    return Q.to(torch.int8)


@torch.no_grad()
def gptq_quantize(W: torch.Tensor, H: torch.Tensor, bits: int, clip_pcts=None, block_size: int = 128,
                  damp: float = 0.01):
    """GPTQ of W [out, in] against H [in, in] -> (q int8 [out, in], scale fp16 [out]).

    `clip_pcts`: candidate row-clip percentiles for the scale (None/empty: row max); each row keeps the candidate
    with the lowest Hessian-weighted output error.
    """
    if W.ndim != 2:
        raise PgolfError(f"gptq_quantize: expected a 2-D weight, got shape {tuple(W.shape)}")
    rows, cols = W.shape
    if tuple(H.shape) != (cols, cols):
        raise PgolfError(f"gptq_quantize: Hessian shape {tuple(H.shape)} does not match weight columns {cols}")
    if block_size <= 0:
        raise PgolfError(f"GPTQ_BLOCK_SIZE must be > 0, got {block_size}")
    cr = clip_range(bits)
    W32 = W.detach().float()
    H32 = H.detach().float().to(W32.device)
    if not torch.isfinite(H32).all():
        raise PgolfError("gptq_quantize: Hessian contains non-finite values")
    cands = list(clip_pcts) if clip_pcts else [None]
    sorted_abs = W32.abs().sort(dim=1).values if any(p is not None and p < 100.0 for p in cands) else None
    scales = torch.stack([row_scales(W32, bits, p, sorted_abs) for p in cands])  # [k, rows] fp16

    Hc = H32.clone()
    dead = Hc.diagonal() <= 0
    Hc[dead, dead] = 1.0
    Wd = W32.clone()
    Wd[:, dead] = 0.0  # inputs that never fire: the weight cannot matter, zero quantizes exactly
    perm = torch.argsort(Hc.diagonal(), descending=True, stable=True)
    invperm = torch.argsort(perm)
    U, _frac = gptq_hinv_upper(Hc[perm][:, perm], damp)

    k = len(cands)
    s_all = scales.reshape(-1).float()
    Wk = Wd.repeat(k, 1)[:, perm].contiguous()
    Q = _gptq_columns(Wk, U, s_all, cr, block_size)[:, invperm]
    E = Q.float() * s_all[:, None] - W32.repeat(k, 1)
    err = ((E @ H32) * E).sum(dim=1).reshape(k, rows)
    best = torch.argmin(err, dim=0)  # first minimum on ties
    idx = best * rows + torch.arange(rows, device=best.device)
    return Q[idx].contiguous(), scales.reshape(-1)[idx].contiguous()


def gptq_output_error(W: torch.Tensor, W_hat: torch.Tensor, H: torch.Tensor) -> float:
    """tr((W−Ŵ) H (W−Ŵ)ᵀ): the expected squared output error per token of using Ŵ for W."""
    E = (W_hat.float() - W.float())
    return float(((E @ H.float()) * E).sum().item())
