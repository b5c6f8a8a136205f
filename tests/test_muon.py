"""Muon: Newton-Schulz orthogonalization and the update rules (scale, Nesterov momentum, decoupled weight decay)."""

from __future__ import annotations

import pytest
import torch

from trainer.errors import PgolfError
from trainer.muon import Muon, muon_update_scale, newton_schulz5


def _polar(G: torch.Tensor) -> torch.Tensor:
    U, _S, Vh = torch.linalg.svd(G.double(), full_matrices=False)
    return (U @ Vh).float()


@pytest.mark.parametrize("shape", [(64, 32), (32, 64), (4, 48, 24), (3, 24, 48)], ids=["tall", "wide", "bank_tall", "bank_wide"])
def test_newton_schulz_singular_values_near_one(shape):
    g = torch.Generator().manual_seed(0)
    G = torch.randn(*shape, generator=g)
    X = newton_schulz5(G, steps=5)
    assert X.shape == G.shape and X.dtype == torch.float32
    s_in = torch.linalg.svdvals(G / G.norm(dim=(-2, -1), keepdim=True))
    s_out = torch.linalg.svdvals(X)
    assert s_in.max() / s_in.min() > 2.5  # the input really is not orthogonal
    # NS5 with the tuned quintic lands every singular value in roughly [0.68, 1.13].
    assert s_out.min() > 0.6 and s_out.max() < 1.2, (s_out.min().item(), s_out.max().item())
    # And it approximates the polar factor U V^T, not just any matrix with flat spectrum.
    cos = (X * _polar(G)).sum(dim=(-2, -1)) / (X.norm(dim=(-2, -1)) * _polar(G).norm(dim=(-2, -1)))
    assert cos.min() > 0.98


def test_newton_schulz_batched_equals_per_matrix_and_is_scale_invariant():
    G = torch.randn(5, 24, 40, generator=torch.Generator().manual_seed(1))
    X = newton_schulz5(G)
    for i in range(5):
        torch.testing.assert_close(X[i], newton_schulz5(G[i]), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(newton_schulz5(G * 1000.0), X, rtol=1e-4, atol=1e-5)
    with pytest.raises(PgolfError, match="newton_schulz5"):
        newton_schulz5(torch.randn(7))


def test_update_scale_rule():
    assert muon_update_scale((64, 32)) == pytest.approx(2 ** 0.5)
    assert muon_update_scale((32, 64)) == 1.0
    assert muon_update_scale((3, 96, 24)) == 2.0
    assert muon_update_scale((16, 16)) == 1.0


@pytest.mark.parametrize("shape", [(48, 12), (12, 48)])
def test_first_step_is_lr_times_scale_times_orthogonalized_grad(shape):
    p = torch.nn.Parameter(torch.randn(*shape))
    p0 = p.detach().clone()
    opt = Muon([p], lr=0.1, momentum=0.9, nesterov=True, backend_steps=5)
    p.grad = torch.randn(*shape)
    opt.step()
    # First step: buffer = g, Nesterov update = g + 0.9 g; NS is scale-invariant so the update is NS(g).
    expected = p0 - 0.1 * muon_update_scale(shape) * newton_schulz5(p.grad)
    torch.testing.assert_close(p.detach(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("nesterov", [True, False])
def test_momentum_second_step(nesterov):
    p = torch.nn.Parameter(torch.randn(16, 24))
    opt = Muon([p], lr=0.05, momentum=0.8, nesterov=nesterov)
    g1, g2 = torch.randn(16, 24), torch.randn(16, 24)
    p.grad = g1
    opt.step()
    mid = p.detach().clone()
    p.grad = g2
    opt.step()
    buf = 0.8 * g1 + g2
    direction = g2 + 0.8 * buf if nesterov else buf
    torch.testing.assert_close(p.detach(), mid - 0.05 * newton_schulz5(direction), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(opt.state[p]["momentum_buffer"], buf)


def test_weight_decay_is_decoupled():
    p = torch.nn.Parameter(torch.randn(8, 8))
    p0 = p.detach().clone()
    opt = Muon([p], lr=0.1, momentum=0.9, weight_decay=0.5)
    for _ in range(3):
        p.grad = torch.zeros(8, 8)
        opt.step()
    # Decoupled: the decay never enters the momentum/NS path, so zero gradients give pure shrinkage (1 - lr*wd)^3.
    torch.testing.assert_close(p.detach(), p0 * (1 - 0.1 * 0.5) ** 3)
    g = torch.randn(8, 8)
    before = p.detach().clone()
    p.grad = g
    opt.step()
    buf = opt.state[p]["momentum_buffer"]
    torch.testing.assert_close(p.detach(), before * 0.95 - 0.1 * newton_schulz5(g + 0.9 * buf), rtol=1e-5, atol=1e-6)


def test_bank_step_equals_per_layer_matrices_and_same_shape_batching():
    torch.manual_seed(3)
    bank = torch.nn.Parameter(torch.randn(3, 20, 10))
    mats = [torch.nn.Parameter(bank.detach()[i].clone()) for i in range(3)]
    opt_bank = Muon([bank], lr=0.02, momentum=0.95, weight_decay=0.1)
    opt_mats = Muon(mats, lr=0.02, momentum=0.95, weight_decay=0.1)  # same shape: batched internally
    solo = [Muon([m], lr=0.02, momentum=0.95, weight_decay=0.1) for m in (torch.nn.Parameter(x.detach().clone()) for x in mats)]
    solo_params = [o.param_groups[0]["params"][0] for o in solo]
    for _ in range(3):
        grad = torch.randn(3, 20, 10)
        bank.grad = grad.clone()
        for i in range(3):
            mats[i].grad = grad[i].clone()
            solo_params[i].grad = grad[i].clone()
        opt_bank.step()
        opt_mats.step()
        for o in solo:
            o.step()
    for i in range(3):
        torch.testing.assert_close(bank.detach()[i], mats[i].detach(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(mats[i].detach(), solo_params[i].detach(), rtol=1e-5, atol=1e-6)
    assert muon_update_scale(bank.shape) == pytest.approx(2 ** 0.5)


def test_rejects_bad_params_and_settings():
    with pytest.raises(PgolfError, match="2-D matrices or 3-D banks"):
        Muon([torch.nn.Parameter(torch.ones(4))], lr=0.1)
    with pytest.raises(PgolfError, match="momentum"):
        Muon([torch.nn.Parameter(torch.ones(4, 4))], lr=0.1, momentum=1.5)


def test_params_without_grad_are_left_alone():
    a, b = torch.nn.Parameter(torch.randn(6, 6)), torch.nn.Parameter(torch.randn(6, 6))
    b0 = b.detach().clone()
    opt = Muon([a, b], lr=0.1, weight_decay=0.1)
    a.grad = torch.randn(6, 6)
    opt.step()
    assert torch.equal(b.detach(), b0) and b not in opt.state


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_newton_schulz_bf16_on_cuda():
    G = torch.randn(4, 256, 128, device="cuda")
    X = newton_schulz5(G)
    assert X.dtype == torch.bfloat16
    s = torch.linalg.svdvals(X.float())
    assert s.min() > 0.55 and s.max() < 1.25
