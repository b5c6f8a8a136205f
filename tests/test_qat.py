"""Fake quantizer: bit-exact with the exporter's round trip, straight-through gradient, name->bits mapping."""

import pytest
import torch

from trainer.config import Hyperparameters
from trainer.qat import fake_quantize, qat_clip_settings
from trainer.quantize import dequantize_rows, qat_bits_by_name, quantize_rows

# Tiny tensors: one intra-op thread avoids OpenMP spin-waits on the shared 2-core machine.
pytestmark = pytest.mark.usefixtures("single_torch_thread")



@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("bits,clip,search", [(4, None, None), (5, 99.9, None), (6, 99.99984, None),
                                              (8, 100.0, None), (6, None, [99.9, 99.99, 100.0])])
def test_forward_equals_round_trip_bit_for_bit(dtype, bits, clip, search):
    g = torch.Generator().manual_seed(bits)
    w = (torch.randn(48, 80, generator=g) * 0.05).to(dtype).requires_grad_(True)
    y = fake_quantize(w, bits, clip, search)
    q, s = quantize_rows(w, bits, clip, search)
    ref = dequantize_rows(q, s, dtype=dtype)
    assert y.dtype == dtype and torch.equal(y, ref)
    assert not torch.equal(y, w)  # it really quantizes


def test_straight_through_gradient_is_identity():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(16, 32, generator=g, requires_grad=True)
    x = torch.randn(5, 32, generator=g)
    up = torch.randn(5, 16, generator=g)
    (x @ fake_quantize(w, 4, 99.0).t() * up).sum().backward()
    torch.testing.assert_close(w.grad, up.t() @ x)  # d/dW of sum(up * x W^T) with W treated as identity-mapped


def test_qat_bits_by_name_uses_export_scheme():
    h = Hyperparameters.resolve(env={}, cli=dict(quant_scheme="mlp:int4,attn:int6,*:int8", passthrough_max_numel=100))
    params = {
        "tok_emb.weight": torch.zeros(64, 32), "blocks.0.attn.c_q.weight": torch.zeros(32, 32),
        "blocks.0.mlp.fc.weight": torch.zeros(64, 32), "blocks.0.attn_scale": torch.zeros(32),
        "blocks.0.mlp.proj.weight": torch.zeros(8, 8), "skip_weights": torch.zeros(4, 32),
    }
    assert qat_bits_by_name(params.items(), h) == {
        "tok_emb.weight": 8, "blocks.0.attn.c_q.weight": 6, "blocks.0.mlp.fc.weight": 4}


def test_clip_settings_follow_config():
    h = Hyperparameters.resolve(env={}, cli=dict(quant_clip_pct=99.5, quant_clip_search="99.9,100"))
    assert qat_clip_settings(h) == (99.5, [99.9, 100.0])
    assert qat_clip_settings(Hyperparameters.resolve(env={}))[1] is None


@pytest.mark.gpu
@pytest.mark.parametrize("bits,clip,search", [(4, 99.9, None), (6, None, [99.9, 99.99, 100.0]), (8, 99.99984, None)])
def test_cuda_matches_cpu_and_compiled_matches_eager(bits, clip, search):
    g = torch.Generator().manual_seed(bits)
    w = torch.randn(512, 1536, generator=g) * 0.03
    q_cpu, s_cpu = quantize_rows(w, bits, clip, search)
    q_gpu, s_gpu = quantize_rows(w.cuda(), bits, clip, search)
    assert torch.equal(q_gpu.cpu(), q_cpu) and torch.equal(s_gpu.cpu(), s_cpu)
    wc = w.cuda().requires_grad_(True)
    compiled = torch.compile(lambda t: fake_quantize(t, bits, clip, search))
    y = compiled(wc)
    assert torch.equal(y.detach().cpu(), dequantize_rows(q_cpu, s_cpu))
    y.sum().backward()
    assert torch.equal(wc.grad, torch.ones_like(wc))


def test_compiled_fake_quantizer_is_bit_exact_on_cpu():
    """torch.compile fuses the quantizer; the result must still equal the exporter's eager round trip."""
    g = torch.Generator().manual_seed(11)
    w = torch.randn(96, 160, generator=g) * 0.04
    search = [99.9, 99.99, 100.0]
    try:
        fn = torch.compile(lambda t: (fake_quantize(t, 6, 99.95), fake_quantize(t, 4, None, search)))
        y6, y4 = fn(w)
    except Exception as exc:  # no C++ toolchain for inductor on this machine
        pytest.skip(f"torch.compile unavailable on CPU: {type(exc).__name__}")
    assert torch.equal(y6, dequantize_rows(*quantize_rows(w, 6, 99.95)))
    assert torch.equal(y4, dequantize_rows(*quantize_rows(w, 4, None, search)))
