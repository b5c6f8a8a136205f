"""GPTQ: beats round-to-nearest on correlated inputs, matches an OBS reference, Hessian collection, calibration."""

import numpy as np
import pytest
import torch
from torch import nn

from trainer.errors import PgolfError
from trainer.gptq import (
    collect_hessians, generate_calibration, gptq_hinv_upper, gptq_output_error, gptq_quantize, hessian_key,
)
from trainer.quantize import clip_range, dequantize_rows, quantize_rows, row_scales

# Tiny tensors: one intra-op thread avoids OpenMP spin-waits on the shared 2-core machine.
pytestmark = pytest.mark.usefixtures("single_torch_thread")



def _correlated_inputs(n=4096, cols=192, seed=0):
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(cols, cols, generator=g) / cols ** 0.5
    X = torch.randn(n, cols, generator=g) @ mix + 0.1 * torch.randn(n, cols, generator=g)
    return X * torch.linspace(0.2, 3.0, cols), g


@pytest.mark.parametrize("bits", [4, 6])
def test_gptq_beats_round_to_nearest(bits):
    X, g = _correlated_inputs()
    W = torch.randn(96, X.shape[1], generator=g) * 0.05
    H = X.T @ X / X.shape[0]
    cands = [99.0, 99.9, 100.0]
    q, s = gptq_quantize(W, H, bits, cands, block_size=64)
    qr, sr = quantize_rows(W, bits, search=cands)
    err_gptq = (X @ (dequantize_rows(q, s) - W).T).square().mean().item()
    err_rtn = (X @ (dequantize_rows(qr, sr) - W).T).square().mean().item()
    assert err_gptq < 0.7 * err_rtn
    assert q.dtype == torch.int8 and q.abs().max().item() <= clip_range(bits)
    assert s.dtype == torch.float16 and s.shape == (96,)
    # The Hessian-weighted error is the per-token output error.
    assert gptq_output_error(W, dequantize_rows(q, s), H) == pytest.approx(err_gptq * W.shape[0], rel=1e-3)


def test_identity_hessian_reduces_to_round_to_nearest():
    g = torch.Generator().manual_seed(1)
    W = torch.randn(32, 70, generator=g)
    q, s = gptq_quantize(W, torch.eye(70), 5, [99.9], block_size=16)
    qr, sr = quantize_rows(W, 5, 99.9)
    assert torch.equal(q, qr) and torch.equal(s, sr)


def _obs_reference(W, H, scale, cr, damp):
    """Unblocked optimal-brain-surgeon GPTQ in float64: invert the remaining Hessian at every column."""
    W = W.astype(np.float64).copy()
    H = H.astype(np.float64) + damp * np.mean(np.diag(H)) * np.eye(H.shape[0])
    perm = np.argsort(-np.diag(H), kind="stable")
    W, H = W[:, perm], H[perm][:, perm]
    Q = np.zeros_like(W)
    for j in range(W.shape[1]):
        Hinv = np.linalg.inv(H[j:, j:])
        q = np.clip(np.round(W[:, j] / scale), -cr, cr)
        Q[:, j] = q
        err = (W[:, j] - q * scale) / Hinv[0, 0]
        W[:, j:] -= np.outer(err, Hinv[0, :])
    return Q[:, np.argsort(perm)]


def test_matches_unblocked_obs_reference():
    X, g = _correlated_inputs(n=2048, cols=40, seed=2)
    W = torch.randn(24, 40, generator=g)
    H = X.T @ X / X.shape[0]
    q, s = gptq_quantize(W, H, 4, None, block_size=8, damp=0.01)
    ref = _obs_reference(W.numpy(), H.double().numpy(), s.float().numpy().astype(np.float64), 7, 0.01)
    agree = (q.numpy() == ref).mean()
    assert agree > 0.97  # fp32 vs fp64 may flip a rounding that then propagates
    e_ours = gptq_output_error(W, dequantize_rows(q, s), H)
    e_ref = gptq_output_error(W, torch.from_numpy(ref).float() * s.float()[:, None], H)
    assert e_ours == pytest.approx(e_ref, rel=0.05)


def test_cholesky_factor_matches_scipy():
    scipy_linalg = pytest.importorskip("scipy.linalg")
    X, _ = _correlated_inputs(n=512, cols=24, seed=3)
    H = X.T @ X / X.shape[0]
    U, frac = gptq_hinv_upper(H.double(), 0.01)
    Hd = H.double().numpy() + 0.01 * np.mean(np.diag(H.double().numpy())) * np.eye(24)
    ref = scipy_linalg.cholesky(np.linalg.inv(Hd), lower=False)
    assert frac == 0.01
    np.testing.assert_allclose(U.numpy(), ref, rtol=1e-8, atol=1e-10)


def test_dead_columns_quantize_to_zero_and_singular_hessian_is_damped():
    X, g = _correlated_inputs(n=1024, cols=32, seed=4)
    X[:, 5] = 0
    X[:, 9] = X[:, 8]  # rank deficient
    W = torch.randn(16, 32, generator=g)
    q, s = gptq_quantize(W, X.T @ X / 1024, 6, [100.0])
    assert (q[:, 5] == 0).all()


def test_bad_shapes():
    with pytest.raises(PgolfError, match="does not match"):
        gptq_quantize(torch.zeros(4, 8), torch.eye(7), 6)
    with pytest.raises(PgolfError, match="2-D"):
        gptq_quantize(torch.zeros(8), torch.eye(8), 6)


class _TinyLM(nn.Module):
    def __init__(self, vocab=16, dim=8, observer=False):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.fc = nn.Linear(dim, 12, bias=False)
        self.head = nn.Linear(12, vocab, bias=False)
        if observer:
            self.activation_observer = None

    def forward_logits(self, ids):
        x = self.emb(ids)
        if getattr(self, "activation_observer", None) is not None:
            self.activation_observer("blocks.0.fc.weight", x)
        h = torch.relu(self.fc(x))
        return self.head(h)


def test_collect_hessians_hooks_and_observer():
    torch.manual_seed(0)
    model = _TinyLM()
    batches = [torch.randint(0, 16, (2, 10)) for _ in range(3)]
    Hs = collect_hessians(model, batches)
    assert set(Hs) == {"fc.weight", "head.weight"}
    X = torch.cat([model.emb(b).reshape(-1, 8) for b in batches]).detach()
    torch.testing.assert_close(Hs[hessian_key("fc.weight")], X.T @ X / X.shape[0], rtol=1e-5, atol=1e-6)
    assert collect_hessians(model, batches, layer_filter=lambda n: n.startswith("head")).keys() == {"head.weight"}
    obs = _TinyLM(observer=True)
    obs.load_state_dict(model.state_dict())
    Ho = collect_hessians(obs, [(b, b) for b in batches])
    assert set(Ho) == {"blocks.0.fc.weight"} and obs.activation_observer is None
    torch.testing.assert_close(Ho["blocks.0.fc.weight"], Hs["fc.weight"])
    with pytest.raises(PgolfError, match="no batches"):
        collect_hessians(model, [])


def test_generate_calibration_shape_bos_determinism():
    torch.manual_seed(0)
    model = _TinyLM()
    a = generate_calibration(model, 5, 12, temperature=0.8, bos_id=1, generator=torch.Generator().manual_seed(7), batch_size=2)
    b = generate_calibration(model, 5, 12, temperature=0.8, bos_id=1, generator=torch.Generator().manual_seed(7), batch_size=2)
    assert a.shape == (5, 12) and a.dtype == torch.long and (a[:, 0] == 1).all()
    assert torch.equal(a, b)
    assert ((a >= 0) & (a < 16)).all()
    with pytest.raises(PgolfError):
        generate_calibration(model, 0, 12)


def test_low_temperature_follows_the_model():
    class Cycle(nn.Module):  # always predicts (last token + 1) % 16 with a big margin
        def __init__(self):
            super().__init__()
            self.p = nn.Parameter(torch.zeros(1))

        def forward_logits(self, ids):
            return 20.0 * nn.functional.one_hot((ids + 1) % 16, 16).float()

    seq = generate_calibration(Cycle(), 2, 8, temperature=0.05, bos_id=3, generator=torch.Generator().manual_seed(0))
    assert seq[0].tolist() == [3, 4, 5, 6, 7, 8, 9, 10]


def test_scale_candidates_are_row_scales():
    g = torch.Generator().manual_seed(5)
    W = torch.randn(8, 64, generator=g)
    _, s = gptq_quantize(W, torch.eye(64), 6, [99.0, 100.0])
    allowed = torch.stack([row_scales(W, 6, 99.0), row_scales(W, 6, 100.0)])
    assert ((s[None, :] == allowed).any(dim=0)).all()


def test_collect_hessians_on_the_gpt_uses_export_names():
    from trainer import model as model_mod
    from trainer.config import Hyperparameters
    from trainer.presets import PRESETS, scale_tiny
    h = Hyperparameters.resolve(preset=scale_tiny(PRESETS["seed1216"]), env={}, cli=dict(num_layers=2, ve_layers="1"))
    torch.manual_seed(0)
    model = model_mod.GPT(h)
    sd = model.export_state_dict()
    batches = [torch.randint(0, h.vocab_size, (1, 32), generator=torch.Generator().manual_seed(i)) for i in range(2)]
    Hs = collect_hessians(model, batches)
    assert "blocks.0.mlp.fc.weight" in Hs and "blocks.1.attn.proj.weight" in Hs and "tok_emb.weight" in Hs
    for key, H in Hs.items():
        assert key in sd and sd[key].ndim == 2
        assert H.shape == (sd[key].shape[1], sd[key].shape[1])
        torch.testing.assert_close(H, H.T)
        assert torch.isfinite(H).all() and (H.diagonal() >= 0).all()
    assert model.activation_observer is None
    calib = generate_calibration(model, 2, 6, generator=torch.Generator().manual_seed(0))
    assert calib.shape == (2, 6) and (calib[:, 0] == 1).all()


@pytest.mark.gpu
def test_gptq_on_cuda_beats_rtn_and_agrees_with_cpu():
    X, g = _correlated_inputs(n=8192, cols=512, seed=7)
    W = torch.randn(1536, 512, generator=g) * 0.03
    H = X.T @ X / X.shape[0]
    cands = [99.9, 99.99, 100.0]
    q, s = gptq_quantize(W.cuda(), H.cuda(), 6, cands)
    qr, sr = quantize_rows(W, 6, search=cands)
    e_gptq = gptq_output_error(W, dequantize_rows(q.cpu(), s.cpu()), H)
    assert e_gptq < 0.7 * gptq_output_error(W, dequantize_rows(qr, sr), H)
    qc, sc = gptq_quantize(W[:64], H, 6, cands)
    qg, sg = gptq_quantize(W[:64].cuda(), H.cuda(), 6, cands)
    assert (qg.cpu() == qc).float().mean().item() > 0.97  # TF32/reduction order may flip a few roundings


@pytest.mark.gpu
def test_generate_calibration_cuda_model_with_cpu_generator():
    torch.manual_seed(0)
    model = _TinyLM().cuda()
    a = generate_calibration(model, 3, 10, generator=torch.Generator().manual_seed(3))
    b = generate_calibration(model, 3, 10, generator=torch.Generator().manual_seed(3))
    assert a.is_cuda and a.shape == (3, 10) and torch.equal(a, b)
