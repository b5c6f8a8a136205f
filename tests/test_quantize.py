"""Per-row quantizer: error ordering, clip search, scheme parsing and precision selection."""

import pytest
import torch

from trainer.config import Hyperparameters
from trainer.errors import PgolfError
from trainer.quantize import (
    clip_range, dequantize_rows, fp16_grid, nearest_codes, parse_clip_search, parse_quant_scheme, precision_for,
    quant_mse, quantize_rows, quantize_rows_search, row_clip_values, scheme_matches,
)

# Tiny tensors: one intra-op thread avoids OpenMP spin-waits on the shared 2-core machine.
pytestmark = pytest.mark.usefixtures("single_torch_thread")



def _weights(rows=96, cols=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    # Heavy-tailed like trained matrices so clipping matters.
    return torch.randn(rows, cols, generator=g) * (1 + 3 * torch.rand(rows, 1, generator=g)) \
        + 0.5 * torch.randn(rows, cols, generator=g) ** 3


def test_clip_ranges():
    assert [clip_range(b) for b in (4, 5, 6, 8)] == [7, 15, 31, 127]
    with pytest.raises(PgolfError, match="bits"):
        clip_range(9)


@pytest.mark.parametrize("bits", [4, 5, 6, 8])
def test_codes_in_range_and_dtypes(bits):
    w = _weights()
    q, scale = quantize_rows(w, bits, 99.9)
    assert q.dtype == torch.int8 and q.shape == w.shape
    assert scale.dtype == torch.float16 and scale.shape == (w.shape[0],)
    cr = clip_range(bits)
    assert q.abs().max().item() == cr  # the clipped tail saturates
    # Row max clip: every row reaches +-clip_range exactly at its largest |w| (up to the fp16 scale rounding).
    q100, s100 = quantize_rows(w, bits)
    assert (q100.abs().amax(dim=1) >= cr - 1).all()


def test_error_ordering_of_bits():
    w = _weights()
    errs = [quant_mse(w, b, 99.99) for b in (4, 5, 6, 8)]
    assert errs[0] > errs[1] > errs[2] > errs[3] > 0


def test_clip_search_no_worse_than_any_fixed_candidate():
    w = _weights(seed=3)
    cands = [99.0, 99.9, 99.99, 100.0]
    for bits in (4, 6):
        searched = quant_mse(w, bits, search=cands)
        fixed = [quant_mse(w, bits, p) for p in cands]
        assert searched == min(fixed)
        assert searched <= quant_mse(w, bits, 100.0)
        _, _, pct = quantize_rows_search(w, bits, search=cands)
        assert pct == cands[fixed.index(min(fixed))]


def test_row_clip_is_nearest_rank_percentile():
    w = _weights(rows=8, cols=333)
    for pct in (50.0, 99.0, 99.99984):
        ours = row_clip_values(w, pct)
        ref = torch.quantile(w.abs(), pct / 100.0, dim=1, interpolation="nearest")
        assert torch.equal(ours, ref)
    assert torch.equal(row_clip_values(w, 100.0), w.abs().amax(dim=1))


def test_fp16_grid_equals_ieee_conversion():
    g = torch.Generator().manual_seed(8)
    x = torch.exp(torch.empty(300000).uniform_(-16.6, 11.09, generator=g)).clamp(2 ** -24, 65504.0)
    edges = torch.tensor([2 ** -24, 1.5 * 2 ** -24, 2 ** -14, 2 ** -14 * (1 - 2 ** -12), 1 + 2 ** -11, 1 + 3 * 2 ** -11,
                          65504.0])
    x = torch.cat([x, edges])
    assert torch.equal(fp16_grid(x), x.half().float())


def test_nearest_codes_exact_with_ties_to_even():
    g = torch.Generator().manual_seed(9)
    w = torch.randn(200000, generator=g) * 0.05
    s = (torch.rand(200000, generator=g) * 0.01 + 1e-4).half().float()
    exact = torch.round(w.double() / s.double()).float()  # the float64 quotient decides every fp32 case
    assert torch.equal(nearest_codes(w, s), exact)
    half = torch.full((5,), 0.5)
    assert nearest_codes(torch.tensor([0.25, 0.75, -0.25, -0.75, 1.25]), half).tolist() == [0, 2, 0, -2, 2]


def test_nd_bank_quantizes_like_separate_matrices():
    bank = _weights(rows=3 * 40, cols=64).reshape(3, 40, 64)
    qb, sb = quantize_rows(bank, 6, 99.9)
    for i in range(3):
        qi, si = quantize_rows(bank[i], 6, 99.9)
        assert torch.equal(qb[i], qi) and torch.equal(sb[i * 40:(i + 1) * 40], si)
    assert torch.equal(dequantize_rows(qb, sb)[1], dequantize_rows(*quantize_rows(bank[1], 6, 99.9)))


def test_zero_rows_and_bf16_input():
    w = _weights(rows=4, cols=32)
    w[1] = 0
    q, s = quantize_rows(w.bfloat16(), 8)
    assert (q[1] == 0).all() and torch.isfinite(s.float()).all()
    assert dequantize_rows(q, s, torch.bfloat16).dtype == torch.bfloat16


def test_parse_quant_scheme_and_errors():
    assert parse_quant_scheme("mlp:int4, attn:INT6,tok_emb:int8,*:fp16") == [
        ("mlp", "int4"), ("attn", "int6"), ("tok_emb", "int8"), ("*", "fp16")]
    for bad in ("", "mlp", "mlp:int9", ":int8", "mlp:float8"):
        with pytest.raises(PgolfError):
            parse_quant_scheme(bad)
    assert parse_clip_search("99.9, 100") == [99.9, 100.0]
    with pytest.raises(PgolfError, match="QUANT_CLIP_SEARCH"):
        parse_clip_search("99,abc")
    with pytest.raises(PgolfError):
        parse_clip_search("101")


def test_scheme_matching_components():
    assert scheme_matches("mlp", "blocks.0.mlp.fc.weight")
    assert scheme_matches("attn.c_q", "blocks.3.attn.c_q.weight")
    assert not scheme_matches("proj", "blocks.0.attn.c_proj.weight")
    assert scheme_matches("blocks.1*", "blocks.10.mlp.fc.weight")
    assert scheme_matches("*", "anything")


def test_precision_for_first_match_passthrough_and_control():
    h = Hyperparameters.resolve(env={}, cli=dict(quant_scheme="mlp:int4,attn:int6,tok_emb:int8,*:int8",
                                                 passthrough_max_numel=1000))
    assert precision_for("blocks.0.mlp.fc.weight", 4096, h) == "int4"
    assert precision_for("blocks.0.attn.c_k.weight", 4096, h) == "int6"
    assert precision_for("tok_emb.weight", 4096, h) == "int8"
    assert precision_for("bigram.embed.weight", 4096, h) == "int8"
    assert precision_for("blocks.0.mlp.fc.weight", 1000, h) == "fp16"  # numel <= PASSTHROUGH_MAX_NUMEL
    assert precision_for("blocks.0.attn_scale", 4096, h, ndim=1) == "fp32"  # control vector
    assert precision_for("skip_weights", 5000, h) == "fp32"
    assert precision_for("some.vector", 5000, h, ndim=1) == "fp16"
    assert precision_for("counts", 5000, h, is_float=False) == "raw"
    h2 = Hyperparameters.resolve(env={}, cli=dict(quant_scheme="mlp:int6"))
    with pytest.raises(PgolfError, match="no rule matches"):
        precision_for("tok_emb.weight", 10 ** 6, h2)


def test_tiny_rows_keep_resolution():
    g = torch.Generator().manual_seed(4)
    w = torch.randn(4, 100, generator=g) * 1e-4
    q, s = quantize_rows(w, 8)
    assert (q.abs().amax(dim=1) >= 100).all()  # scale follows the row, not a fixed floor
    rel = (dequantize_rows(q, s) - w).abs().max() / w.abs().max()
    assert rel < 0.01
