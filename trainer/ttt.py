"""Legal score-first test-time training (challenge-spec §6.7).

The validation targets are cut into chunks of TTT_CHUNK_TOKENS. Scoring windows (sliding with EVAL_STRIDE when it is
> 0, else non-overlapping EVAL_SEQ_LEN windows) belong to the chunk holding their first scored target. For each chunk:

1. SCORE: its windows run under model.eval() and torch.no_grad() (not inference_mode, so caches a model builds while
   scoring stay usable by the training step that follows) and their NLL/bytes go into the reported sums;
2. TRAIN (every chunk but the last): TTT_EPOCHS passes over the chunk's targets, which are all scored by now — a
   target in chunk c is scored by a window whose first scored target is no later, i.e. by chunk <= c.

So the weights that score chunk c have only been trained on targets of chunks < c, and the NLL recorded for a token
depends only on the tokens before and including it (tests/test_ttt.py checks this bit-exactly).

Training: one optimizer (SGD with TTT_MOMENTUM, or AdamW without weight decay) lives across all chunks; its LR is
TTT_LR, cosine-decayed over chunks with TTT_COSINE (so it is 0 at the last chunk, which is never trained anyway).
TTT_BATCH_SEQS is the global number of sequences per step, split across ranks; gradients are averaged over ranks so
any world size takes the same steps. TTT_EMA_DECAY > 0 scores every chunk with an EMA of the trained weights.
"""

from __future__ import annotations

import math
import time

import torch

from trainer.distributed import all_reduce_mean_
from trainer.errors import PgolfError
from trainer.evaluate import (
    SlidingWindows,
    check_val_stream,
    eval_autocast,
    eval_lut_on,
    eval_rank_info,
    finish_bpb,
    score_windows,
)
from trainer.model import LAYER_MATRICES


def check_ttt_settings(h) -> None:
    bad = None
    if h.ttt_chunk_tokens < 1:
        bad = f"TTT_CHUNK_TOKENS: expected >= 1, got {h.ttt_chunk_tokens}"
    elif h.ttt_epochs < 0:
        bad = f"TTT_EPOCHS: expected >= 0, got {h.ttt_epochs}"
    elif h.ttt_batch_seqs < 1:
        bad = f"TTT_BATCH_SEQS: expected >= 1, got {h.ttt_batch_seqs}"
    elif h.ttt_lr < 0:
        bad = f"TTT_LR: expected >= 0, got {h.ttt_lr}"
    elif not 0.0 <= h.ttt_ema_decay < 1.0:
        bad = f"TTT_EMA_DECAY: expected 0 <= decay < 1, got {h.ttt_ema_decay}"
    elif h.ttt_freeze_blocks < 0:
        bad = f"TTT_FREEZE_BLOCKS: expected >= 0, got {h.ttt_freeze_blocks}"
    elif h.eval_batch_seqs < 1:
        bad = f"EVAL_BATCH_SEQS: expected >= 1, got {h.eval_batch_seqs}"
    if bad:
        raise PgolfError(bad)


def ttt_frozen_ids(model, h) -> set:
    """ids of the parameters TTT must not update: blocks[:TTT_FREEZE_BLOCKS] and, with TTT_FREEZE_EMBED, the
    embedding tables (the model's embedding_params(); with tied embeddings that includes the output head)."""
    frozen = set()
    n = int(h.ttt_freeze_blocks)
    if n > 0:
        blocks = getattr(model, "blocks", None)
        if blocks is None:
            raise PgolfError(f"TTT_FREEZE_BLOCKS={n}: the model has no `blocks` to freeze")
        if n > len(blocks):
            raise PgolfError(f"TTT_FREEZE_BLOCKS={n}: expected <= the model's {len(blocks)} blocks")
        for blk in list(blocks)[:n]:
            frozen.update(id(p) for p in blk.parameters())
    if h.ttt_freeze_embed:
        if hasattr(model, "embedding_params"):
            frozen.update(id(p) for p in model.embedding_params())
        else:
            frozen.update(id(p) for name, p in model.named_parameters() if "emb" in name)
    return frozen


def ttt_frozen_bank_rows(model, h) -> list:
    """[(bank parameter, row indices)] of blocks[:TTT_FREEZE_BLOCKS] when the model keeps its per-layer matrices in
    3-D banks (PARAM_BANKS): those rows get zero gradients, which leaves them exactly unchanged under SGD/AdamW
    (zero momentum and moments, no weight decay)."""
    n = int(h.ttt_freeze_blocks)
    if n <= 0 or not getattr(model, "banked", False):
        return []
    layers = int(model.num_layers)
    rows = {}
    for _suffix, bank, part in LAYER_MATRICES:
        rows.setdefault(bank, set()).update(part * layers + i for i in range(n))
    return [(getattr(model, bank), torch.tensor(sorted(r), dtype=torch.int64)) for bank, r in rows.items()]


def ttt_optimizer(params: list, h) -> torch.optim.Optimizer:
    if h.ttt_optimizer == "sgd":
        return torch.optim.SGD(params, lr=h.ttt_lr, momentum=h.ttt_momentum)
    if h.ttt_optimizer == "adamw":
        return torch.optim.AdamW(params, lr=h.ttt_lr, betas=(h.beta1, h.beta2), eps=h.adam_eps, weight_decay=0.0)
    raise PgolfError(f"TTT_OPTIMIZER: expected sgd or adamw, got {h.ttt_optimizer!r}")


def ttt_chunk_lr(h, ci: int, num_chunks: int) -> float:
    """TTT_LR, cosine-decayed from chunk 0 to the last chunk when TTT_COSINE (as PR #549)."""
    if not h.ttt_cosine or num_chunks <= 1:
        return float(h.ttt_lr)
    return float(h.ttt_lr) * 0.5 * (1.0 + math.cos(math.pi * ci / (num_chunks - 1)))


def ttt_train_chunk(model, tokens_dev: torch.Tensor, params: list, opt, h, seq_len: int, t0: int, t1: int,
                    rank: int, world: int, frozen_rows=()) -> None:
    """TTT_EPOCHS passes over targets [t0, t1) (already scored) in seq_len sequences.

    Each step takes TTT_BATCH_SEQS sequences (global), split across ranks; the loss is scaled so the rank-mean of the
    gradients equals the gradient of the global token-mean loss. A chunk shorter than seq_len is one short sequence;
    otherwise the tail that does not fill a sequence is not trained on (as the records).
    """
    n_tok = t1 - t0
    if n_tok <= 0:
        return
    length = min(seq_len, n_tok)
    nseq = n_tok // length
    device = tokens_dev.device
    ar = torch.arange(length, device=device, dtype=torch.int64)
    batch = int(h.ttt_batch_seqs)
    model.train()
    for _epoch in range(int(h.ttt_epochs)):
        for b0 in range(0, nseq, batch):
            nb = min(batch, nseq - b0)
            r0, r1 = b0 + nb * rank // world, b0 + nb * (rank + 1) // world
            opt.zero_grad(set_to_none=True)
            if r1 > r0:
                idx = (t0 + torch.arange(r0, r1, device=device, dtype=torch.int64) * length).unsqueeze(1) + ar
                x = tokens_dev[idx].long()
                y = tokens_dev[idx + 1].long()
                with eval_autocast(device):
                    loss = model(x, y)
                (loss * ((r1 - r0) * world / nb)).backward()
            if world > 1:
                for p in params:
                    if p.grad is None:
                        p.grad = torch.zeros_like(p)
                all_reduce_mean_([p.grad for p in params])
            for p, rows in frozen_rows:
                if p.grad is not None:
                    p.grad.index_fill_(0, rows, 0.0)
            if h.ttt_grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, h.ttt_grad_clip)
            opt.step()


def eval_ttt(model, val_tokens: torch.Tensor, lut, h, ctx=None, log=None, nll_sink=None) -> tuple:
    """Score the validation stream with legal score-first TTT; returns (val_loss, val_bpb) over every target.

    `log(line)` receives the challenge-grammar progress lines (rank 0 only). `nll_sink(positions, nll)` receives each
    scored target's index in val_tokens and its NLL when it is added to the sums (before any training on it).

    On return the model holds the TTT-adapted weights (the raw ones, not the EMA); its train/eval mode and every
    parameter's requires_grad are restored and .grad is None. Callers that need the pre-TTT weights keep a copy.
    """
    check_ttt_settings(h)
    rank, world, device = eval_rank_info(ctx, model)
    seq_len = int(h.eval_len)
    check_val_stream(val_tokens, seq_len, "eval_ttt")
    stride = int(h.eval_stride) if h.eval_stride > 0 else seq_len
    plan_cpu = SlidingWindows(val_tokens.numel() - 1, seq_len, stride)
    plan = plan_cpu.to(device)
    chunk = int(h.ttt_chunk_tokens)
    total = plan_cpu.total
    num_chunks = (total + chunk - 1) // chunk
    # windows are sorted by first scored target, so each chunk owns a contiguous range of them
    chunk_starts = torch.arange(num_chunks + 1, dtype=torch.int64) * chunk
    bounds = torch.searchsorted(plan_cpu.first_scored(), chunk_starts).tolist()
    bounds[-1] = len(plan_cpu)
    emit = log if (log is not None and rank == 0) else None

    frozen = ttt_frozen_ids(model, h)
    saved_flags = [(p, p.requires_grad) for p in model.parameters()]
    params = [p for p in model.parameters() if p.requires_grad and id(p) not in frozen]
    frozen_rows = [(p, rows.to(p.device)) for p, rows in ttt_frozen_bank_rows(model, h) if id(p) not in frozen]
    n_row_frozen = sum(p[0].numel() * rows.numel() for p, rows in frozen_rows)
    n_frozen = sum(p.numel() for p in model.parameters() if id(p) in frozen or not p.requires_grad) + n_row_frozen
    n_unfrozen = sum(p.numel() for p in params) - n_row_frozen
    if emit:
        emit(f"ttt_sliding:start chunks={num_chunks} chunk_tokens={chunk} total_windows={len(plan_cpu)} "
             f"stride={stride} "
             f"ttt_lr={h.ttt_lr} ttt_epochs={h.ttt_epochs} freeze_blocks={h.ttt_freeze_blocks}")
        emit(f"ttt_sliding:params unfrozen={n_unfrozen} frozen={n_frozen}")

    lut = eval_lut_on(lut, device)
    tokens_dev = val_tokens.to(device=device, dtype=torch.int32)
    sums = torch.zeros(3, dtype=torch.float64, device=device)
    was_training = model.training
    ema_decay = float(h.ttt_ema_decay)
    t_start = t_emit = time.perf_counter()
    try:
        for p, _flag in saved_flags:
            p.requires_grad_(id(p) not in frozen and _flag)
        opt = ttt_optimizer(params, h) if params else None
        ema = [p.detach().float().clone() for p in params] if ema_decay > 0 else None
        for ci in range(num_chunks):
            a, b = bounds[ci], bounds[ci + 1]
            lo, hi = a + (b - a) * rank // world, a + (b - a) * (rank + 1) // world
            # (1) score with weights trained on chunks < ci only
            model.eval()
            with torch.no_grad():
                raw = None
                if ema is not None:
                    raw = [p.detach().clone() for p in params]
                    for p, e in zip(params, ema):
                        p.copy_(e)
                score_windows(model, tokens_dev, plan, lo, hi, int(h.eval_batch_seqs), lut, sums, nll_sink)
                if raw is not None:
                    for p, r in zip(params, raw):
                        p.copy_(r)
            # (2) train on this chunk's (now scored) targets; never on the last chunk
            if ci < num_chunks - 1 and h.ttt_epochs > 0 and opt is not None:
                lr = ttt_chunk_lr(h, ci, num_chunks)
                for group in opt.param_groups:
                    group["lr"] = lr
                ttt_train_chunk(model, tokens_dev, params, opt, h, seq_len, ci * chunk, min((ci + 1) * chunk, total),
                                rank, world, frozen_rows)
                if ema is not None:
                    with torch.no_grad():
                        for e, p in zip(ema, params):
                            e.mul_(ema_decay).add_(p.detach().float(), alpha=1.0 - ema_decay)
            # every 10th chunk, and at least every 10 s so a slow TTT is never silent
            if emit and (ci % 10 == 0 or ci == num_chunks - 1 or time.perf_counter() - t_emit >= 10.0):
                t_emit = time.perf_counter()
                loss_sum, tokens, nbytes = sums.tolist()
                bpb = loss_sum / max(tokens, 1.0) / math.log(2.0) * tokens / max(nbytes, 1.0)
                emit(f"  ttt_chunk [{ci + 1}/{num_chunks}] bpb={bpb:.6f} time={time.perf_counter() - t_start:.1f}s")
    finally:
        for p, flag in saved_flags:
            p.requires_grad_(flag)
            p.grad = None
        model.train(was_training)
    val_loss, val_bpb = finish_bpb(sums)
    if emit:
        elapsed = time.perf_counter() - t_start
        emit(f"ttt_sliding:done val_loss={val_loss:.6f} val_bpb={val_bpb:.6f} elapsed={elapsed:.1f}s")
    return val_loss, val_bpb
