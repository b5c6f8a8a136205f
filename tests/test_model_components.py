"""Model components in isolation: SmearGate, BigramHash, XSA, partial/NTK RoPE, GQA, LN scale, U-Net skips,
value embeddings, gated attention, value residual, MLP activation, init."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from trainer.attention import causal_attention, xsa_project
from trainer.layers import BIGRAM_HASH_A, BIGRAM_HASH_B, SmearGate, bigram_hash, mlp_activation
from trainer.model import GPT
from trainer.rotary import Rotary, apply_rotary, rope_base_for, rope_tables


from test_model import BOS, V, build, everything_on, make_h  # the model tests' builders

# Tiny tensors: one intra-op thread avoids OpenMP spin-waits on the shared 2-core machine.
pytestmark = pytest.mark.usefixtures("single_torch_thread")


def rand_ids(b, t, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, V, (b, t), generator=g)
    ids[:, 0] = BOS
    return ids


# ---------------------------------------------------------------- SmearGate
def test_smeargate_bos_position_takes_nothing_from_previous_token():
    torch.manual_seed(0)
    sg = SmearGate(8)
    with torch.no_grad():
        sg.gate.copy_(torch.randn(8))
    ids = torch.tensor([[BOS, 5, 6, BOS, 7, 8]])
    x = torch.randn(1, 6, 8)
    out = sg(x, ids, BOS)
    g = torch.sigmoid(sg.gate)
    # BOS positions (0 and 3) equal (1-g) x_t, exactly what a sequence start gets
    torch.testing.assert_close(out[0, 3], (1 - g) * x[0, 3])
    torch.testing.assert_close(out[0, 0], (1 - g) * x[0, 0])
    torch.testing.assert_close(out[0, 4], (1 - g) * x[0, 4] + g * x[0, 3])
    # changing everything before the BOS leaves the new document's outputs untouched
    x2 = x.clone()
    x2[0, :3] = torch.randn(3, 8) * 10
    torch.testing.assert_close(sg(x2, ids, BOS)[0, 3:], out[0, 3:], rtol=0, atol=0)
    # and a document embeds the same at position 0 as after a boundary
    torch.testing.assert_close(sg(x[:, 3:], ids[:, 3:], BOS), out[:, 3:], rtol=0, atol=0)


def test_model_document_start_is_isolated_in_embedding_path():
    """With SmearGate and BigramHash on, the embedding-path output at a BOS does not depend on the previous doc."""
    m = build(make_h("seed347"))
    seen = []
    m.activation_observer = lambda name, x: seen.append(x) if name == "blocks.0.attn.c_q.weight" else None
    ids = rand_ids(1, 20)
    ids[0, 10] = BOS
    m.forward_logits(ids)
    other = ids.clone()
    other[0, 1:10] = rand_ids(1, 20, seed=7)[0, 1:10]
    m.forward_logits(other)
    m.activation_observer = None
    a, b = seen
    torch.testing.assert_close(a[0, 10:], b[0, 10:], rtol=0, atol=0)  # layer-0 attention input (pre-mixing)
    assert not torch.allclose(a[0, 1:10], b[0, 1:10])


# ---------------------------------------------------------------- BigramHash
def test_bigram_hash_formula_and_resets():
    ids = torch.tensor([[BOS, 10, 20, 30, BOS, 40]])
    buckets = 64
    h = bigram_hash(ids, buckets, BOS)
    assert h[0, 0] == buckets - 1 and h[0, 4] == buckets - 1
    for t in (1, 2, 3, 5):
        cur, prev = int(ids[0, t]), int(ids[0, t - 1])
        assert h[0, t] == ((BIGRAM_HASH_A * cur) ^ (BIGRAM_HASH_B * prev)) % (buckets - 1)
    assert int(h.max()) < buckets and int(h.min()) >= 0


def test_bigram_uses_only_current_and_previous_input_tokens():
    ids = rand_ids(3, 40)
    h = bigram_hash(ids, 256, BOS)
    for t in (5, 17, 33):
        changed = ids.clone()
        changed[:, t] = (changed[:, t] + 1) % V + (changed[:, t] + 1 == BOS).long()
        h2 = bigram_hash(changed, 256, BOS)
        diff = (h2 != h).any(0).nonzero().flatten().tolist()
        assert set(diff) <= {t, t + 1} and t in diff


# ---------------------------------------------------------------- XSA / GQA
def test_xsa_output_is_orthogonal_to_own_value_per_group():
    torch.manual_seed(0)
    y = torch.randn(2, 7, 8, 16)
    v = torch.randn(2, 7, 2, 16)
    out = xsa_project(y, v)
    vn = F.normalize(v, dim=-1).repeat_interleave(4, dim=2)
    assert (out * vn).sum(-1).abs().max() < 1e-5
    # the orthogonal part is kept unchanged
    torch.testing.assert_close(out, y - (y * vn).sum(-1, keepdim=True) * vn, rtol=1e-6, atol=1e-6)


def test_xsa_layers_are_the_last_n():
    m = GPT(make_h("tiny", num_layers=5, xsa_last_n=2))
    assert [b.attn.use_xsa for b in m.blocks] == [False, False, False, True, True]
    m = GPT(make_h("tiny", num_layers=3, xsa_last_n=-1))
    assert all(b.attn.use_xsa for b in m.blocks)


@pytest.mark.parametrize("backend", ["default", "math"])
def test_gqa_equals_repeat_interleave_reference(backend):
    torch.manual_seed(1)
    B, T, H, Hkv, D = 2, 11, 6, 2, 8
    q, k, v = torch.randn(B, T, H, D), torch.randn(B, T, Hkv, D), torch.randn(B, T, Hkv, D)
    got = causal_attention(q, k, v, backend)
    kr, vr = k.repeat_interleave(H // Hkv, dim=2), v.repeat_interleave(H // Hkv, dim=2)
    scores = torch.einsum("bthd,bshd->bhts", q, kr) / math.sqrt(D)
    scores = scores.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), float("-inf"))
    ref = torch.einsum("bhts,bshd->bthd", scores.softmax(-1), vr)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- RoPE
def test_partial_rope_leaves_unrotated_dims_position_independent():
    D, rd, T = 16, 8, 12
    cos, sin = rope_tables(T, rd, 10000.0)
    x = torch.randn(1, 1, 1, D).expand(1, T, 1, D)  # the same vector at every position
    out = apply_rotary(x, cos, sin)
    torch.testing.assert_close(out[..., rd:], x[..., rd:], rtol=0, atol=0)
    assert not torch.allclose(out[0, 0, 0, :rd], out[0, 5, 0, :rd])
    # rotated part: norms preserved, and q_m . k_n depends only on m - n
    torch.testing.assert_close(out[..., :rd].norm(dim=-1), x[..., :rd].norm(dim=-1))
    q, k = torch.randn(D), torch.randn(D)
    qs = apply_rotary(q.expand(1, T, 1, D), cos, sin)[0, :, 0]
    ks = apply_rotary(k.expand(1, T, 1, D), cos, sin)[0, :, 0]
    torch.testing.assert_close(qs[7] @ ks[4], qs[5] @ ks[2], rtol=1e-5, atol=1e-5)


def test_ntk_scaling_changes_the_base_only_past_the_reference_length():
    assert rope_base_for(1024, 10000.0, 16, 1024) == 10000.0
    assert rope_base_for(512, 10000.0, 16, 1024) == 10000.0
    assert rope_base_for(2048, 10000.0, 16, 1024) == pytest.approx(10000.0 * 2 ** (16 / 14))
    rot = Rotary(16, 10000.0, 64, cache_lens=(32, 128))
    c32, _ = rot(32, "cpu")
    c64, _ = rot(64, "cpu")
    c128, s128 = rot(128, "cpu")
    c96, _ = rot(96, "cpu")  # not cached: computed on the fly
    torch.testing.assert_close(c32, c64[:32], rtol=0, atol=0)  # same unscaled base up to the reference length
    ref128 = rope_tables(128, 16, rope_base_for(128, 10000.0, 16, 64))
    torch.testing.assert_close((c128, s128), ref128, rtol=0, atol=0)
    assert not torch.allclose(c128[:64], c64)  # longer sequence: different (scaled) base
    torch.testing.assert_close(c96, rope_tables(96, 16, rope_base_for(96, 10000.0, 16, 64))[0])
    # non-persistent: tables never enter the state dict
    assert not rot.state_dict()


def test_model_uses_ntk_tables_for_long_sequences():
    h = make_h("tiny", rope_ref_seq_len=16, train_seq_len=32, rope_dims=8)
    m = build(h)
    ids = rand_ids(1, 32)
    base = m.forward_logits(ids)
    # prefix of a long sequence sees a different (scaled) RoPE than the same prefix on its own at <= ref length
    short = m.forward_logits(ids[:, :16])
    assert not torch.allclose(base[:, :16], short, atol=1e-5)
    m2 = build(make_h("tiny", rope_ref_seq_len=0, train_seq_len=32, rope_dims=8))
    torch.testing.assert_close(m2.forward_logits(ids)[:, :16], m2.forward_logits(ids[:, :16]), rtol=0, atol=1e-5)


# ---------------------------------------------------------------- LN scale, skips, VE, gates, residual
def test_ln_scale_scales_block_inputs_by_inverse_sqrt_depth():
    for ln in (0, 1):
        m = build(make_h("tiny", num_layers=4, ln_scale=ln))
        rms = {}
        m.activation_observer = lambda n, x: rms.setdefault(n, x.pow(2).mean(-1).sqrt().mean().item())
        m.forward_logits(rand_ids(2, 16))
        for i in range(4):
            want = 1 / math.sqrt(i + 1) if ln else 1.0
            assert rms[f"blocks.{i}.attn.c_q.weight"] == pytest.approx(want, rel=1e-3)
            assert rms[f"blocks.{i}.mlp.fc.weight"] == pytest.approx(want, rel=1e-3)


def test_unet_skips_are_used_and_optional():
    m = build(make_h("tiny", num_layers=5))
    assert m.num_encoder == 2 and m.num_skips == 2 and m.skip_weights.shape == (2 * 64,)
    ids, tgt = rand_ids(2, 16), rand_ids(2, 16, seed=1)
    ref = m.forward_logits(ids)
    loss = m(ids, tgt)
    loss.backward()
    g = m.skip_weights.grad.view(2, 64)
    assert (g.abs().sum(-1) > 0).all()  # both skips carry gradient
    with torch.no_grad():
        m.skip_weights.zero_()
    assert not torch.allclose(m.forward_logits(ids), ref)
    off = GPT(make_h("tiny", num_layers=5, unet_skips=0))
    assert off.skip_weights is None and not any("skip" in n for n, _ in off.named_parameters())


def test_value_embeddings_reach_only_chosen_layers():
    m = build(make_h("seed347", ve_layers="1,-1"))
    assert m.ve_layers == (1, 3)
    ids = rand_ids(1, 16)
    ref = m.forward_logits(ids)
    with torch.no_grad():
        m.ve_layer_scales[1] = 0.0  # remove layer 3's value embedding
    assert not torch.allclose(m.forward_logits(ids), ref)
    ids2 = rand_ids(1, 16)
    with torch.no_grad():
        m.ve.scale.zero_()
    # VE off entirely equals a model whose VE table is zero
    z = m.forward_logits(ids2)
    with torch.no_grad():
        m.ve.scale.fill_(1.0)
        m.ve.embed.weight.zero_()
    torch.testing.assert_close(m.forward_logits(ids2), z, rtol=0, atol=0)


def test_gated_attention_and_value_residual_parameters_work():
    m = build(everything_on(), perturb=0)
    b0, b1 = m.blocks[0].attn, m.blocks[1].attn
    assert not hasattr(b0, "vr_lambda") and b1.vr_lambda.tolist() == [0.5, 0.5]
    assert torch.all(b0.attn_gate_w == 0) and torch.all(b0.attn_gate_b == 4.0)
    m = build(everything_on())
    ids, tgt = rand_ids(2, 16), rand_ids(2, 16, seed=2)
    ref = m.forward_logits(ids)
    m(ids, tgt).backward()
    assert m.blocks[2].attn.vr_lambda.grad.abs().sum() > 0
    assert m.blocks[0].attn.attn_gate_w.grad.abs().sum() > 0
    with torch.no_grad():  # closing layer 1's gates removes its attention output
        m.blocks[1].attn.attn_gate_b.fill_(-1e4)
        m.blocks[2].attn.vr_lambda.copy_(torch.tensor([0.0, 1.0]))
    assert not torch.allclose(m.forward_logits(ids), ref)


def test_mlp_activations():
    u = torch.tensor([-2.0, -0.5, 0.0, 1.5])
    torch.testing.assert_close(mlp_activation(u, "relu2", 0.5), torch.tensor([0.0, 0.0, 0.0, 2.25]))
    torch.testing.assert_close(mlp_activation(u, "leaky_relu2", 0.5), torch.tensor([1.0, 0.0625, 0.0, 2.25]))
    h = make_h("tiny", mlp_hidden=72)
    assert GPT(h).blocks[0].mlp.fc.weight.shape == (72, 64)
    assert GPT(make_h("tiny", mlp_mult=2.5)).blocks[0].mlp.fc.weight.shape == (160, 64)


def test_init_follows_the_records():
    m = GPT(make_h("seed347", tie_embeddings=1))
    L = m.num_layers
    for b in m.blocks:
        assert torch.all(b.attn.proj.weight == 0) and torch.all(b.mlp.proj.weight == 0)
        w = b.attn.c_q.weight
        torch.testing.assert_close(w @ w.T, torch.eye(w.shape[0]), rtol=1e-4, atol=1e-4)  # orthogonal
        assert torch.all(b.attn.q_gain == 1.5) and torch.all(b.resid_mix[:64] == 1) and torch.all(b.resid_mix[64:] == 0)
    assert m.tok_emb.weight.std().item() == pytest.approx(0.005, rel=0.05)
    assert torch.all(m.bigram.embed.weight == 0) and m.bigram.scale.item() == pytest.approx(0.05)
    p = m.bigram.proj.weight  # orthogonal (columns) scaled by 1/sqrt(2L)
    torch.testing.assert_close(p.T @ p, torch.eye(p.shape[1]) / (2 * L), rtol=1e-4, atol=1e-4)
    assert torch.all(m.smear.gate == 0) and m.ve.scale.item() == pytest.approx(0.1)
    # the baseline (no ortho init) uses nn.Linear's uniform bound for inputs and zero output projections
    mb = GPT(make_h("tiny", tie_embeddings=0))
    w = mb.blocks[0].attn.c_k.weight
    assert w.abs().max() <= 1 / math.sqrt(64) and w.std() > 0.5 / math.sqrt(3 * 64)
    assert torch.all(mb.lm_head.weight == 0)
