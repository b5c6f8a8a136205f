"""trainer.evaluate: the challenge's full-window eval and the sliding-window eval.

Small causal models defined here (same interface as trainer.model.GPT: forward(x, y) -> mean loss,
token_nll(x, y) -> [B, T] fp32) plus the real GPT at a tiny size; real FineWeb validation tokens and the real SP1024
tokenizer when the shared data folder is present.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from trainer import evaluate as ev
from trainer.bpb import ByteLUT, build_byte_lut
from trainer.config import Hyperparameters
from trainer.distributed import DistContext
from trainer.errors import PgolfError
from trainer.evaluate import SlidingWindows, eval_full, eval_sliding

VOCAB = 1024
CPU = torch.device("cpu")


# Tiny tensors: one intra-op thread avoids OpenMP spin-waits on the shared 2-core machine.
pytestmark = pytest.mark.usefixtures("single_torch_thread")


# ---------------------------------------------------------------------------------------------------------------
# test models and helpers (test_ttt.py imports these)


class TinyBlock(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.mix = nn.Linear(dim, dim)
        self.fc = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(2 * dim, dim)

    def forward(self, h):
        # causal prefix mean: the output depends on how much context the window holds
        count = torch.arange(1, h.shape[1] + 1, device=h.device, dtype=h.dtype).view(1, -1, 1)
        h = h + self.mix(h.cumsum(1) / count)
        return h + self.proj(torch.relu(self.fc(h)))


class TinyLM(nn.Module):
    """A causal LM with the GPT interface: tok_emb, `blocks`, head, embedding_params()."""

    def __init__(self, vocab: int = VOCAB, dim: int = 16, n_blocks: int = 2, seed: int = 0):
        super().__init__()
        self.tok_emb = nn.Embedding(vocab, dim)
        self.blocks = nn.ModuleList([TinyBlock(dim) for _ in range(n_blocks)])
        self.head = nn.Linear(dim, vocab, bias=False)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)

    def token_nll(self, input_ids, target_ids):
        h = self.tok_emb(input_ids)
        for blk in self.blocks:
            h = blk(h)
        logits = self.head(h).float()
        return F.cross_entropy(logits.flatten(0, 1), target_ids.flatten(), reduction="none").view_as(target_ids)

    def forward(self, input_ids, target_ids):
        return self.token_nll(input_ids, target_ids).mean()

    def embedding_params(self):
        return [self.tok_emb.weight]


class CopyModel(nn.Module):
    """Oracle for a stream with period P: predicts x[t+1] = x[t+1-P] when that token is inside the window,
    else the uniform distribution. Its loss falls with context length, so smaller strides must score better."""

    def __init__(self, period: int, vocab: int = VOCAB, confidence: float = 8.0):
        super().__init__()
        self.period, self.vocab, self.confidence = period, vocab, confidence
        self.dummy = nn.Parameter(torch.zeros(()))  # so the module has a device

    def token_nll(self, input_ids, target_ids):
        B, T = input_ids.shape
        logits = torch.zeros(B, T, self.vocab)
        src = torch.arange(T) + 1 - self.period
        ok = src >= 0
        guess = input_ids[:, src.clamp(min=0)]
        bonus = torch.where(ok, self.confidence, 0.0).expand(B, T).contiguous()
        logits.scatter_add_(2, guess.unsqueeze(-1), bonus.unsqueeze(-1))
        return F.cross_entropy(logits.flatten(0, 1), target_ids.flatten(), reduction="none").view(B, T)

    def forward(self, input_ids, target_ids):
        return self.token_nll(input_ids, target_ids).mean()


def synthetic_lut(vocab: int = VOCAB) -> ByteLUT:
    ids = torch.arange(vocab)
    return ByteLUT((ids % 5 + 1).to(torch.int16), ids % 3 == 0, ids < 4)


def make_h(**kw) -> Hyperparameters:
    base = dict(vocab_size=VOCAB, train_seq_len=64, eval_seq_len=64, eval_stride=16, eval_batch_seqs=4,
                val_batch_size=64 * 8 * 4, grad_accum_steps=0, ttt_chunk_tokens=256, ttt_epochs=1, ttt_batch_seqs=2)
    base.update(kw)
    return Hyperparameters.resolve(preset=base, env={})


def random_stream(n: int, seed: int = 0, vocab: int = VOCAB) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (n,), generator=g)


def ctx_of(rank: int = 0, world: int = 1) -> DistContext:
    return DistContext(rank, world, rank, CPU, "")


def per_rank_sums(monkeypatch, fn, world: int):
    """Run fn(ctx) for every rank of a simulated world (no process group) and return the summed [loss, tok, bytes]."""
    seen = []

    def capture(t):
        seen.append(t.clone())
        return t

    monkeypatch.setattr(ev, "all_reduce_sum", capture)
    for r in range(world):
        fn(ctx_of(r, world))
    assert len(seen) == world
    return torch.stack(seen).sum(0)


def collect_sink():
    rec = {"pos": [], "nll": []}

    def sink(pos, nll):
        rec["pos"].append(pos.detach().cpu().clone())
        rec["nll"].append(nll.detach().cpu().clone())

    return rec, sink


def sink_arrays(rec):
    pos = torch.cat(rec["pos"]).numpy()
    nll = torch.cat(rec["nll"]).numpy()
    return pos, nll


@pytest.fixture(scope="module")
def fineweb(request):
    """(val tokens, real SP1024 LUT, sentencepiece processor) from the shared data, or skip."""
    import os
    from pathlib import Path

    root = Path(os.environ.get("PGOLF_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    shard = root / "fineweb" / "fineweb_val_000000.bin"
    model = root / "tokenizers" / "fineweb_1024_bpe.model"
    if not shard.is_file() or not model.is_file():
        pytest.skip(f"shared FineWeb data absent under {root}")
    import sentencepiece as spm

    header = np.fromfile(shard, dtype="<i4", count=256)
    toks = np.fromfile(shard, dtype="<u2", offset=256 * 4, count=int(header[2]))
    sp = spm.SentencePieceProcessor()
    sp.Load(str(model))
    return torch.from_numpy(toks.astype(np.int64)), build_byte_lut(sp, VOCAB), sp


# ---------------------------------------------------------------------------------------------------------------
# eval_full


def reference_bytes(sp, prev: int, tgt: int) -> int:
    """The challenge rule written out directly from sentencepiece (independent of trainer.bpb's tables)."""
    special = lambda i: sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i)  # noqa: E731
    if special(tgt):
        return 0
    if sp.is_byte(tgt):
        return 1
    piece = sp.id_to_piece(tgt)
    if piece.startswith("\u2581"):
        return len(piece[1:].encode("utf-8")) + (0 if special(prev) else 1)
    return len(piece.encode("utf-8"))


def test_eval_full_matches_reference_on_fineweb(fineweb):
    toks, lut, sp = fineweb
    seq_len = 64
    stream = toks[: 40 * seq_len + 7]  # not a multiple: eval_full truncates to 40 windows + 1
    h = make_h(eval_seq_len=seq_len, val_batch_size=seq_len * 8 * 3)  # 3 windows per pass, uneven last pass
    model = TinyLM()
    val_loss, val_bpb = eval_full(model, stream, lut, h, ctx_of())
    n = 40 * seq_len
    x = stream[:n].view(-1, seq_len)
    y = stream[1: n + 1].view(-1, seq_len)
    with torch.no_grad():
        nll = model.token_nll(x, y).double()
    ids = stream[: n + 1].tolist()
    nbytes = sum(reference_bytes(sp, ids[i], ids[i + 1]) for i in range(n))
    ref_loss = nll.mean().item()
    ref_bpb = ref_loss / math.log(2) * n / nbytes
    assert val_loss == pytest.approx(ref_loss, rel=1e-6)
    assert val_bpb == pytest.approx(ref_bpb, rel=1e-6)
    assert 2.0 < nbytes / n < 3.0  # SP1024 on FineWeb is ~2.4 bytes per token


def test_eval_full_rank_split_sums_to_single_process(monkeypatch):
    stream = random_stream(23 * 64 + 1, seed=3)
    h = make_h(val_batch_size=64 * 8 * 2)
    model = TinyLM()
    one = per_rank_sums(monkeypatch, lambda c: eval_full(model, stream, synthetic_lut(), h, c), 1)
    three = per_rank_sums(monkeypatch, lambda c: eval_full(model, stream, synthetic_lut(), h, c), 3)
    assert one[1].item() == three[1].item() == 23 * 64
    assert one[2].item() == three[2].item()
    assert three[0].item() == pytest.approx(one[0].item(), rel=1e-6)


def test_eval_full_restores_mode_and_rejects_bad_input():
    model = TinyLM().train()
    eval_full(model, random_stream(129), synthetic_lut(), make_h(), ctx_of())
    assert model.training
    with pytest.raises(PgolfError, match="at least seq_len"):
        eval_full(model, random_stream(50), synthetic_lut(), make_h(), ctx_of())
    with pytest.raises(PgolfError, match="VAL_BATCH_SIZE"):
        eval_full(model, random_stream(129), synthetic_lut(), make_h(val_batch_size=64), ctx_of())
    with pytest.raises(PgolfError, match="1-D"):
        eval_full(model, random_stream(129).view(1, -1), synthetic_lut(), make_h(), ctx_of())


# ---------------------------------------------------------------------------------------------------------------
# sliding windows


@settings(max_examples=200, deadline=None)
@given(total=st.integers(1, 400), seq_len=st.integers(1, 70), data=st.data())
def test_window_plan_scores_every_target_exactly_once(total, seq_len, data):
    stride = data.draw(st.integers(1, seq_len))
    plan = SlidingWindows(total, seq_len, stride)
    counts = np.zeros(total, dtype=np.int64)
    for ws, wlen, s in zip(plan.starts.tolist(), plan.lengths.tolist(), plan.score_from.tolist()):
        assert 1 <= wlen <= seq_len and 0 <= s < wlen and ws + wlen <= total
        assert s == 0 or s == seq_len - stride  # later windows score at most their last `stride` positions
        counts[ws + s: ws + wlen] += 1
    assert (counts == 1).all()
    assert (np.diff(plan.first_scored().numpy()) > 0).all()


def test_window_plan_rejects_bad_stride():
    with pytest.raises(PgolfError, match="EVAL_STRIDE"):
        SlidingWindows(100, 64, 65)
    with pytest.raises(PgolfError, match="EVAL_STRIDE"):
        SlidingWindows(100, 64, 0)


@pytest.mark.parametrize("n_tokens,stride", [(23 * 64 + 1, 16), (1000, 24), (1000, 64), (40, 16)])
def test_sliding_scores_each_target_once(n_tokens, stride):
    stream = random_stream(n_tokens, seed=n_tokens)
    rec, sink = collect_sink()
    model = TinyLM()
    loss, bpb = eval_sliding(model, stream, synthetic_lut(), make_h(eval_stride=stride), ctx_of(), nll_sink=sink)
    pos, nll = sink_arrays(rec)
    assert np.array_equal(np.sort(pos), np.arange(1, n_tokens))
    assert loss == pytest.approx(float(np.sum(nll, dtype=np.float64)) / (n_tokens - 1), rel=1e-9)
    assert bpb > 0


def test_sliding_with_stride_equal_seq_len_is_eval_full():
    stream = random_stream(17 * 64 + 1, seed=5)
    model = TinyLM()
    full = eval_full(model, stream, synthetic_lut(), make_h(), ctx_of())
    slide = eval_sliding(model, stream, synthetic_lut(), make_h(eval_stride=64, eval_batch_seqs=5), ctx_of())
    assert slide[0] == pytest.approx(full[0], rel=1e-6)
    assert slide[1] == pytest.approx(full[1], rel=1e-6)


def test_sliding_smaller_stride_scores_better_with_context_dependent_model():
    period = 48  # a target needs 47 tokens of in-window context to be predicted
    pattern = random_stream(period, seed=9)
    stream = pattern.repeat(30)[: 1400]
    model = CopyModel(period)
    bpbs = [eval_sliding(model, stream, synthetic_lut(), make_h(eval_stride=s), ctx_of())[1] for s in (64, 48, 32, 16)]
    assert all(a > b for a, b in zip(bpbs, bpbs[1:])), bpbs
    # stride 64 leaves 47 of every 64 targets without the copy source, 48 leaves 31, 32 leaves 15, 16 none
    assert bpbs[0] > 2 * bpbs[-1]


def test_sliding_rank_split_and_batch_size_invariant(monkeypatch):
    stream = random_stream(1111, seed=11)
    model = TinyLM()
    h1 = make_h(eval_stride=24, eval_batch_seqs=7)
    one = per_rank_sums(monkeypatch, lambda c: eval_sliding(model, stream, synthetic_lut(), h1, c), 1)
    h4 = make_h(eval_stride=24, eval_batch_seqs=3)
    four = per_rank_sums(monkeypatch, lambda c: eval_sliding(model, stream, synthetic_lut(), h4, c), 4)
    assert one[1].item() == four[1].item() == 1110
    assert one[2].item() == four[2].item()
    assert four[0].item() == pytest.approx(one[0].item(), rel=1e-6)


def test_sliding_real_bytes_equal_full_bytes_on_fineweb(fineweb, monkeypatch):
    toks, lut, _sp = fineweb
    stream = toks[: 30 * 64 + 1]
    model = TinyLM()
    full = per_rank_sums(monkeypatch, lambda c: eval_full(model, stream, lut, make_h(), c), 1)
    slide = per_rank_sums(monkeypatch, lambda c: eval_sliding(model, stream, lut, make_h(eval_stride=32), c), 1)
    assert slide[1].item() == full[1].item()
    assert slide[2].item() == full[2].item()
    assert slide[0].item() < full[0].item() * 1.05  # more context never costs much on a random model


# ---------------------------------------------------------------------------------------------------------------
# the real GPT at a tiny size


def tiny_gpt(**overrides):
    from trainer import model as model_mod
    from trainer.presets import get_preset, scale_tiny

    preset = scale_tiny(get_preset("seed347"))
    preset.update(overrides)
    h = Hyperparameters.resolve(preset=preset, env={})
    torch.manual_seed(0)
    return model_mod.GPT(h), h


def test_real_gpt_full_and_sliding(fineweb):
    toks, lut, _sp = fineweb
    model, h = tiny_gpt(eval_batch_seqs=4)
    seq_len = h.eval_len
    stream = toks[: 6 * seq_len + 1]
    full_loss, full_bpb = eval_full(model, stream, lut, h, ctx_of())
    x, y = stream[:-1].view(-1, seq_len), stream[1:].view(-1, seq_len)
    with torch.no_grad():
        ref = model.token_nll(x, y).double().mean().item()
    assert full_loss == pytest.approx(ref, rel=1e-5)
    assert math.log(VOCAB) * 0.8 < full_loss < math.log(VOCAB) * 1.2  # untrained: near uniform
    h_same = Hyperparameters.resolve(preset=dict(h.to_dict(), eval_stride=seq_len), env={})
    same = eval_sliding(model, stream, lut, h_same, ctx_of())
    assert same[0] == pytest.approx(full_loss, rel=1e-5) and same[1] == pytest.approx(full_bpb, rel=1e-5)
    rec, sink = collect_sink()
    slide = eval_sliding(model, stream, lut, h, ctx_of(), nll_sink=sink)
    pos, _ = sink_arrays(rec)
    assert np.array_equal(np.sort(pos), np.arange(1, stream.numel()))
    assert math.isfinite(slide[1])


# ---------------------------------------------------------------------------------------------------------------
# CUDA (skipped without a GPU)


@pytest.mark.gpu
def test_cuda_scoring_loop_has_no_host_sync_and_matches_cpu():
    dev = torch.device("cuda")
    stream = random_stream(2000, seed=21)
    cpu_model = TinyLM()
    h = make_h(eval_stride=24, eval_batch_seqs=8)
    cpu = eval_sliding(cpu_model, stream, synthetic_lut(), h, ctx_of())
    model = copy_model_to(cpu_model, dev)
    gpu = eval_sliding(model, stream, synthetic_lut(), h, DistContext(0, 1, 0, dev, ""))
    assert gpu[1] == pytest.approx(cpu[1], rel=2e-2)  # bf16 autocast on CUDA
    plan = SlidingWindows(stream.numel() - 1, 64, 24).to(dev)
    tokens_dev = stream.to(device=dev, dtype=torch.int32)
    lut = synthetic_lut().to(dev)
    sums = torch.zeros(3, dtype=torch.float64, device=dev)
    model.eval()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with torch.inference_mode():
            ev.score_windows(model, tokens_dev, plan, 0, len(plan), 8, lut, sums)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert sums[1].item() == stream.numel() - 1


def copy_model_to(model, device):
    import copy

    return copy.deepcopy(model).to(device)
