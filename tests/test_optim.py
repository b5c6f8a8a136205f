"""Optimizer set: parameter groups and LRs, momentum warm-up, LR schedule (both warm-down modes), clipping,
state_dict round trip, and the errors for a mis-grouped model."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from trainer.config import Hyperparameters
from trainer.distributed import DistContext
from trainer.errors import PgolfError
from trainer.optim import build_optimizers, lr_scale, muon_momentum_at

VOCAB, DIM = 40, 16


def hp(**kw) -> Hyperparameters:
    return dataclasses.replace(Hyperparameters.resolve(env={}), **kw)


class TinyLM(nn.Module):
    """Two 2-D matrices, one 3-D bank, scalars; tied or untied head (lm_head)."""

    def __init__(self, tied=True):
        super().__init__()
        torch.manual_seed(0)
        self.tok_emb = nn.Embedding(VOCAB, DIM)
        self.fc = nn.Parameter(torch.randn(2 * DIM, DIM) / DIM ** 0.5)
        self.proj = nn.Parameter(torch.randn(DIM, 2 * DIM) / (2 * DIM) ** 0.5)
        self.bank = nn.Parameter(torch.randn(2, DIM, DIM) / DIM ** 0.5)
        self.gain = nn.Parameter(torch.ones(DIM))
        self.lm_head = None if tied else nn.Linear(DIM, VOCAB, bias=False)

    def forward(self, ids, targets):
        x = self.tok_emb(ids)
        x = x + F.linear(F.relu(F.linear(x, self.fc)).square(), self.proj)
        for i in range(self.bank.shape[0]):
            x = x + torch.tanh(F.linear(x, self.bank[i]))
        x = F.rms_norm(x, (DIM,)) * self.gain
        w = self.tok_emb.weight if self.lm_head is None else self.lm_head.weight
        return F.cross_entropy(F.linear(x, w).reshape(-1, VOCAB), targets.reshape(-1))

    def matrix_params(self):
        return [self.fc, self.proj, self.bank]

    def embedding_params(self):
        return [self.tok_emb.weight] + ([] if self.lm_head is None else [self.lm_head.weight])

    def scalar_params(self):
        return [self.gain]


def _batch(gen, b=4, t=16):
    return torch.randint(0, VOCAB, (b, t), generator=gen), torch.randint(0, VOCAB, (b, t), generator=gen)


# ---------------------------------------------------------------------------------------------------------------
def test_momentum_warmup_values():
    h = hp(muon_momentum_warmup_start=0.85, muon_momentum=0.95, muon_momentum_warmup_steps=500)
    assert muon_momentum_at(0, h) == pytest.approx(0.85)
    assert muon_momentum_at(250, h) == pytest.approx(0.90)
    assert muon_momentum_at(500, h) == pytest.approx(0.95)
    assert muon_momentum_at(5000, h) == pytest.approx(0.95)
    assert muon_momentum_at(0, dataclasses.replace(h, muon_momentum_warmup_steps=0)) == pytest.approx(0.95)


def test_lr_scale_iteration_warmdown_and_warmup():
    h = hp(iterations=100, warmdown_iters=20, max_wallclock_seconds=0.0, lr_warmup_steps=0)
    assert [lr_scale(s, 0.0, h) for s in (0, 79, 80, 90, 99)] == pytest.approx([1.0, 1.0, 1.0, 0.5, 0.05])
    # the elapsed time is irrelevant without a wallclock cap
    assert lr_scale(90, 1e9, h) == pytest.approx(0.5)
    hw = dataclasses.replace(h, lr_warmup_steps=5)
    assert [lr_scale(s, 0.0, hw) for s in (0, 1, 4, 5, 50)] == pytest.approx([0.2, 0.4, 1.0, 1.0, 1.0])
    assert lr_scale(5, 0.0, dataclasses.replace(h, warmdown_iters=0)) == 1.0


def test_lr_scale_wallclock_warmdown_as_the_records():
    h = hp(max_wallclock_seconds=10.0, warmdown_iters=100, iterations=20000, lr_warmup_steps=0)
    # 100 ms/step so far -> warm-down lasts 100 * 100 ms = 10 s; 5 s remain -> 0.5
    assert lr_scale(50, 5000.0, h) == pytest.approx(0.5)
    # 10 ms/step -> warm-down lasts 1 s; 5 s remain -> full LR
    assert lr_scale(500, 5000.0, h) == 1.0
    # 10 ms/step, 0.5 s remain -> 0.5; out of time -> 0
    assert lr_scale(950, 9500.0, h) == pytest.approx(0.5)
    assert lr_scale(1000, 12000.0, h) == 0.0
    # step 0 divides by max(step, 1), like the records
    assert lr_scale(0, 0.0, h) == 1.0
    # ITERATIONS plays no role in the wallclock mode
    assert lr_scale(950, 9500.0, dataclasses.replace(h, iterations=960)) == pytest.approx(0.5)


def test_adam_groups_get_the_right_lrs_tied_and_untied():
    h = hp(tied_embed_lr=0.05, embed_lr=0.6, head_lr=0.008, scalar_lr=0.04, matrix_lr=0.03, beta1=0.8, beta2=0.9,
           adam_eps=1e-7, adam_wd=0.02, muon_wd=0.01, muon_momentum_warmup_steps=10,
           muon_momentum_warmup_start=0.85, muon_momentum=0.95)
    tied = build_optimizers(TinyLM(tied=True), h, DistContext())
    lrs = {g["name"]: g["lr"] for g in tied.adam.param_groups}
    assert lrs == {"embed": 0.05, "scalar": 0.04}
    g0 = tied.adam.param_groups[0]
    assert g0["betas"] == (0.8, 0.9) and g0["eps"] == 1e-7 and g0["weight_decay"] == 0.02
    assert tied.muon.param_groups[0]["lr"] == 0.03 and tied.muon.param_groups[0]["weight_decay"] == 0.01

    with pytest.raises(PgolfError, match="TIE_EMBEDDINGS=1 but the model has a separate output head lm_head.weight"):
        build_optimizers(TinyLM(tied=False), h, DistContext())
    model = TinyLM(tied=False)
    untied = build_optimizers(model, dataclasses.replace(h, tie_embeddings=0), DistContext())
    groups = {g["name"]: g for g in untied.adam.param_groups}
    assert {k: g["lr"] for k, g in groups.items()} == {"embed": 0.6, "head": 0.008, "scalar": 0.04}
    assert groups["head"]["params"] == [model.lm_head.weight]
    assert groups["embed"]["params"] == [model.tok_emb.weight]

    # step() scales every group's LR and applies the momentum warm-up
    x, y = _batch(torch.Generator().manual_seed(0))
    model(x, y).backward()
    untied.step(5, 0.5)
    assert {g["name"]: g["lr"] for g in untied.adam.param_groups} == pytest.approx({"embed": 0.3, "head": 0.004, "scalar": 0.02})
    assert untied.muon.param_groups[0]["lr"] == pytest.approx(0.015)
    assert untied.muon.param_groups[0]["momentum"] == pytest.approx(0.90)


def test_grouping_errors_are_one_line_pgolf_errors():
    class Dup(TinyLM):
        def scalar_params(self):
            return [self.gain, self.fc]

    class Missing(TinyLM):
        def scalar_params(self):
            return []

    with pytest.raises(PgolfError, match="fc is returned by both matrix_params"):
        build_optimizers(Dup(), hp(), DistContext())
    with pytest.raises(PgolfError, match="in no optimizer group: gain"):
        build_optimizers(Missing(), hp(), DistContext())
    with pytest.raises(PgolfError, match="must define matrix_params"):
        build_optimizers(nn.Linear(3, 3), hp(), DistContext())

    class Flat(TinyLM):
        def matrix_params(self):
            return [self.fc, self.proj]

        def scalar_params(self):
            return [self.gain, self.bank]

    with pytest.raises(PgolfError, match="DISTRIBUTED_MUON=1"):
        build_optimizers(Flat(), hp(distributed_muon=1), DistContext())


def _grad_norm(model) -> float:
    return math.sqrt(sum(float(p.grad.double().square().sum()) for p in model.parameters() if p.grad is not None))


@pytest.mark.parametrize("clip", [0.05, 1e6])
def test_clipping_bounds_the_global_norm(clip):
    model = TinyLM()
    opt = build_optimizers(model, hp(grad_clip_norm=clip), DistContext())
    x, y = _batch(torch.Generator().manual_seed(1))
    (model(x, y) * 10.0).backward()
    pre = _grad_norm(model)
    assert pre > 0.05
    before = [p.grad.clone() for p in model.parameters()]
    opt.step(0, 0.0)  # LR scale 0: only the (in-place) clipping acts, weights stay
    assert float(opt.last_grad_norm) == pytest.approx(pre, rel=1e-5)
    post = _grad_norm(model)
    assert post == pytest.approx(min(pre, clip), rel=1e-4)
    coef = post / pre
    for b, p in zip(before, model.parameters()):
        torch.testing.assert_close(p.grad, b * coef, rtol=1e-5, atol=1e-8)  # direction kept


def _run(model, opt, gen, steps, start):
    for s in range(start, start + steps):
        x, y = _batch(gen)
        opt.zero_grad()
        model(x, y).backward()
        opt.step(s, 1.0)


def test_state_dict_roundtrip_restores_the_exact_trajectory():
    h = hp(muon_wd=0.02, adam_wd=0.01, grad_clip_norm=1.0, muon_momentum_warmup_steps=6, tie_embeddings=0)
    model = TinyLM(tied=False)
    opt = build_optimizers(model, h, DistContext())
    _run(model, opt, torch.Generator().manual_seed(2), 3, 0)
    model_snap = {k: v.clone() for k, v in model.state_dict().items()}
    opt_snap = opt.state_dict()

    _run(model, opt, torch.Generator().manual_seed(3), 4, 3)
    first = {k: v.clone() for k, v in model.state_dict().items()}
    assert any(not torch.equal(first[k], model_snap[k]) for k in first)

    # The snapshot is independent of the live optimizer: restoring it and replaying the same batches must give
    # bit-identical weights (momentum buffers, Adam moments and step counts all restored).
    model.load_state_dict(model_snap)
    opt.load_state_dict(opt_snap)
    _run(model, opt, torch.Generator().manual_seed(3), 4, 3)
    for k, v in model.state_dict().items():
        assert torch.equal(v, first[k]), k

    # A fresh optimizer (no state) does not reproduce it: the round trip is what carried the state.
    model.load_state_dict(model_snap)
    fresh = build_optimizers(model, h, DistContext())
    _run(model, fresh, torch.Generator().manual_seed(3), 4, 3)
    assert any(not torch.equal(model.state_dict()[k], first[k]) for k in first)


def test_training_reduces_the_loss():
    model = TinyLM()
    opt = build_optimizers(model, hp(matrix_lr=0.02, tied_embed_lr=0.05, grad_clip_norm=1.0), DistContext())
    gen = torch.Generator().manual_seed(4)
    x, y = _batch(gen, b=8, t=16)
    y = (x * 7 + 3) % VOCAB  # a learnable mapping
    with torch.no_grad():
        first = float(model(x, y))
    for s in range(40):
        opt.zero_grad()
        model(x, y).backward()
        opt.step(s, 1.0)
    with torch.no_grad():
        assert float(model(x, y)) < 0.5 * first


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_step_has_no_host_sync_on_cuda():
    model = TinyLM().cuda()
    opt = build_optimizers(model, hp(grad_clip_norm=0.3, muon_wd=0.04, adam_wd=0.04), DistContext(device=torch.device("cuda")))
    x, y = (t.cuda() for t in _batch(torch.Generator().manual_seed(0)))
    for s in range(3):
        opt.zero_grad()
        model(x, y).backward()
        torch.cuda.synchronize()
        if s == 0:  # the first step creates optimizer state (scalar H2D copies); check the steady state
            opt.step(s, 0.9)
            continue
        torch.cuda.set_sync_debug_mode("error")
        try:
            opt.step(s, 0.9)
        finally:
            torch.cuda.set_sync_debug_mode("default")
