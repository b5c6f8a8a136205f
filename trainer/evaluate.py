"""Validation scoring: the challenge's full-window eval_val and the sliding-window variant.

Both return (val_loss in nats per target token, val_bpb) with the challenge's byte rule (trainer.bpb).
Sums are float64 on the device and all-reduced once at the end; there is no host sync per batch.

Positions: target index j (0-based) predicts val_tokens[j + 1] from val_tokens[:j + 1]; a stream of N tokens has
N - 1 targets. `nll_sink(positions, nll)` callbacks receive the index of the target token in val_tokens (j + 1).
"""

from __future__ import annotations

import torch

from trainer.bpb import bits_per_byte, target_bytes
from trainer.distributed import all_reduce_sum
from trainer.errors import PgolfError
from trainer.runlog import Progress


def eval_autocast(device: torch.device):
    """bf16 autocast on CUDA (as the challenge evaluates), plain fp32 elsewhere."""
    return torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


def eval_rank_info(ctx, model) -> tuple:
    """(rank, world_size, device) from a DistContext; a missing ctx means one process on the model's device."""
    if ctx is None:
        p = next(model.parameters(), None)
        return 0, 1, (p.device if p is not None else torch.device("cpu"))
    return int(ctx.rank), int(ctx.world_size), torch.device(ctx.device)


def eval_lut_on(lut, device: torch.device):
    return lut if lut.base_bytes.device == device else lut.to(device)


def check_val_stream(val_tokens: torch.Tensor, seq_len: int, what: str) -> None:
    if not torch.is_tensor(val_tokens) or val_tokens.dim() != 1:
        shape = tuple(val_tokens.shape) if torch.is_tensor(val_tokens) else type(val_tokens).__name__
        raise PgolfError(f"{what}: validation tokens must be a 1-D tensor, got {shape}")
    if seq_len < 1:
        raise PgolfError(f"{what}: sequence length must be >= 1, got {seq_len}")
    if val_tokens.numel() < 2:
        raise PgolfError(f"{what}: validation stream has {val_tokens.numel()} tokens, expected at least 2")


def finish_bpb(sums: torch.Tensor) -> tuple:
    """All-reduce [loss_sum, token_count, byte_count] (float64) and return (val_loss, val_bpb)."""
    all_reduce_sum(sums)
    loss_sum, tokens, nbytes = (float(v) for v in sums.tolist())
    if tokens <= 0:
        raise PgolfError("evaluation scored no tokens (validation stream too short for the window settings)")
    return loss_sum / tokens, bits_per_byte(loss_sum, tokens, nbytes)


def eval_full(model, val_tokens: torch.Tensor, lut, h, ctx=None) -> tuple:
    """The challenge's eval_val: non-overlapping EVAL_SEQ_LEN windows (TRAIN_SEQ_LEN when unset), split by rank.

    The stream is truncated to a multiple of the window length plus one. Each rank runs
    VAL_BATCH_SIZE // (world_size * grad_accum) tokens per forward pass (grad_accum as in training:
    GRAD_ACCUM_STEPS, or 8 // world_size), and the loss sum is the model's mean loss times the token count.
    """
    rank, world, device = eval_rank_info(ctx, model)
    seq_len = int(h.eval_len)
    check_val_stream(val_tokens, seq_len, "eval_full")
    total_seqs = (val_tokens.numel() - 1) // seq_len
    if total_seqs < 1:
        raise PgolfError(
            f"eval_full: validation stream has {val_tokens.numel()} tokens, expected at least seq_len+1 = {seq_len + 1}"
        )
    accum = h.grad_accum_steps if h.grad_accum_steps > 0 else (8 // world if 8 % world == 0 else 1)
    local_batch_seqs = h.val_batch_size // (world * accum) // seq_len
    if local_batch_seqs < 1:
        raise PgolfError(
            f"VAL_BATCH_SIZE={h.val_batch_size} must provide at least one sequence per rank: expected >= "
            f"world_size x grad_accum x seq_len = {world} x {accum} x {seq_len} = {world * accum * seq_len}"
        )
    seq_start = total_seqs * rank // world
    seq_end = total_seqs * (rank + 1) // world
    lut = eval_lut_on(lut, device)
    sums = torch.zeros(3, dtype=torch.float64, device=device)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), eval_autocast(device):
            for bs in range(seq_start, seq_end, local_batch_seqs):
                be = min(bs + local_batch_seqs, seq_end)
                local = val_tokens[bs * seq_len: be * seq_len + 1].to(device=device, dtype=torch.int64)
                x = local[:-1].reshape(-1, seq_len)
                y = local[1:].reshape(-1, seq_len)
                n = float(y.numel())
                loss = model(x, y).detach()
                sums[0] += loss.to(torch.float64) * n
                sums[1] += n
                sums[2] += target_bytes(x, y, lut).to(torch.float64).sum()
    finally:
        model.train(was_training)
    return finish_bpb(sums)


class SlidingWindows:
    """Window plan over T targets: starts every `stride`, each window scores [score_from, length) of itself.

    The first window scores all its positions; later full windows score their last `stride` positions
    (s = seq_len - stride, the challenge's max(wlen - stride, 0) for full windows). The last window may be
    partial: it still starts scoring at seq_len - stride, so every target is scored exactly once (the
    challenge's formula would re-score tail targets in every partial window). Windows are kept while
    start + seq_len - stride < T. With stride == seq_len this is the full-window split, partial tail included.
    """

    def __init__(self, total_targets: int, seq_len: int, stride: int):
        if not 0 < stride <= seq_len:
            raise PgolfError(
                f"sliding-window eval: expected 0 < EVAL_STRIDE <= EVAL_SEQ_LEN={seq_len}, got EVAL_STRIDE={stride}"
            )
        if total_targets < 1:
            raise PgolfError(f"sliding-window eval: validation stream has {total_targets} targets, expected >= 1")
        self.total = int(total_targets)
        self.seq_len = int(seq_len)
        self.stride = int(stride)
        self.starts = torch.arange(0, max(self.total - seq_len + stride, 1), stride, dtype=torch.int64)
        self.lengths = torch.clamp(self.total - self.starts, max=seq_len)
        self.score_from = torch.full_like(self.starts, seq_len - stride)
        self.score_from[0] = 0

    def to(self, device) -> "SlidingWindows":
        """The same plan with its index tensors on `device` (move once, score many slices)."""
        out = SlidingWindows.__new__(SlidingWindows)
        out.total, out.seq_len, out.stride = self.total, self.seq_len, self.stride
        out.starts, out.lengths, out.score_from = (t.to(device) for t in (self.starts, self.lengths, self.score_from))
        return out

    def __len__(self) -> int:
        return int(self.starts.numel())

    def first_scored(self) -> torch.Tensor:
        """Target index of each window's first scored position (non-decreasing)."""
        return self.starts + self.score_from


def score_windows(model, tokens_dev: torch.Tensor, plan: SlidingWindows, lo: int, hi: int, batch_seqs: int, lut,
                  sums: torch.Tensor, nll_sink=None, progress=None) -> None:
    """Add NLL, token and byte sums of windows [lo, hi) of `plan` into `sums` (float64 [3]).

    `tokens_dev` is the whole stream on the scoring device. Every batch has the same [B, seq_len] shape (the last
    one is padded with masked copies), so compiled models see one shape. The caller sets eval mode and the grad
    context (inference_mode or no_grad). `progress(windows_done)` is called after each batch (rank-0 log lines).
    """
    if hi <= lo:
        return
    device = tokens_dev.device
    seq_len = plan.seq_len
    last_index = tokens_dev.numel() - 1
    ar = torch.arange(seq_len, device=device, dtype=torch.int64)
    starts = plan.starts[lo:hi].to(device)
    lengths = plan.lengths[lo:hi].to(device)
    score_from = plan.score_from[lo:hi].to(device)
    count = hi - lo
    bsz = min(batch_seqs, count)
    with eval_autocast(device):
        for b0 in range(0, count, bsz):
            sel = torch.arange(b0, b0 + bsz, device=device).clamp_(max=count - 1)
            ws = starts[sel]
            real = (torch.arange(b0, b0 + bsz, device=device) < count).unsqueeze(1)
            idx = ws.unsqueeze(1) + ar
            x = tokens_dev[idx.clamp(max=last_index - 1)].long()
            y = tokens_dev[(idx + 1).clamp(max=last_index)].long()
            mask = (ar >= score_from[sel].unsqueeze(1)) & (ar < lengths[sel].unsqueeze(1)) & real
            nll = model.token_nll(x, y).float()
            maskd = mask.to(torch.float64)
            sums[0] += (nll.to(torch.float64) * maskd).sum()
            sums[1] += maskd.sum()
            sums[2] += (target_bytes(x, y, lut).to(torch.float64) * maskd).sum()
            if nll_sink is not None:
                nll_sink((idx + 1)[mask], nll[mask])
            if progress is not None:
                progress(min(b0 + bsz, count))


def eval_sliding(model, val_tokens: torch.Tensor, lut, h, ctx=None, nll_sink=None, log=None) -> tuple:
    """Sliding-window eval: EVAL_SEQ_LEN windows every EVAL_STRIDE tokens, each target scored exactly once with
    the most context the plan gives it; EVAL_BATCH_SEQS windows per forward pass; windows split across ranks.
    `log(line)` gets an `eval_progress:` line every 10 s (this rank's share of the windows).
    """
    rank, world, device = eval_rank_info(ctx, model)
    seq_len = int(h.eval_len)
    check_val_stream(val_tokens, seq_len, "eval_sliding")
    plan = SlidingWindows(val_tokens.numel() - 1, seq_len, int(h.eval_stride))
    if h.eval_batch_seqs < 1:
        raise PgolfError(f"EVAL_BATCH_SEQS: expected >= 1, got {h.eval_batch_seqs}")
    n = len(plan)
    lo, hi = n * rank // world, n * (rank + 1) // world
    lut = eval_lut_on(lut, device)
    tokens_dev = val_tokens.to(device=device, dtype=torch.int32)
    sums = torch.zeros(3, dtype=torch.float64, device=device)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            score_windows(model, tokens_dev, plan, lo, hi, int(h.eval_batch_seqs), lut, sums, nll_sink,
                          Progress(log, "eval", hi - lo, unit="windows") if log is not None else None)
    finally:
        model.train(was_training)
    return finish_bpb(sums)
