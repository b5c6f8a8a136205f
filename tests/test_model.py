"""GPT as a whole: causality, banking, export/load, parameter groups, training signal, determinism, QAT, GPTQ hook."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainer.config import ConfigError, Hyperparameters
from trainer.errors import PgolfError
from trainer.model import GPT, LAYER_MATRICES
from trainer.presets import get_preset, scale_tiny

V = 1024
BOS = 1


# Tiny tensors: one intra-op thread avoids OpenMP spin-waits on the shared 2-core machine.
pytestmark = pytest.mark.usefixtures("single_torch_thread")


def make_h(preset="tiny", **over):
    p = get_preset(preset)
    if preset != "tiny":
        p = scale_tiny(p)
    p.update(over)
    return Hyperparameters.resolve(preset=p, env={})


def everything_on(**over):
    """Every model feature switched on (record stack + gated attention, value residual, untied head, banks)."""
    base = dict(gated_attention=1, value_residual=1, tie_embeddings=0, param_banks=1, mlp_hidden=80,
                sdpa_backend="math")
    base.update(over)
    return make_h("seed347", **base)


def build(h, seed=0, perturb=0.05):
    """A model whose zero-initialized parts are perturbed so every path carries signal."""
    torch.manual_seed(seed)
    m = GPT(h, bos_id=BOS)
    if perturb:
        g = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for p in m.parameters():
                p.add_(torch.randn(p.shape, generator=g) * perturb)
    return m


def real_tokens(shared_data, n):
    raw = np.fromfile(shared_data / "fineweb" / "fineweb_val_000000.bin", dtype=np.uint16, offset=256 * 4)
    return torch.from_numpy(raw[:n].astype(np.int64))


def rand_ids(b, t, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, V, (b, t), generator=g)
    ids[:, 0] = BOS
    return ids


@pytest.mark.parametrize("cfg", ["baseline", "everything"])
def test_causality_future_tokens_never_change_earlier_logits(cfg):
    h = make_h("tiny") if cfg == "baseline" else everything_on()
    m = build(h)
    ids = rand_ids(2, 48)
    ids[1, 20] = BOS  # a document boundary inside the sequence (SmearGate/BigramHash reset path)
    ref = m.forward_logits(ids)
    for cut in (1, 17, 30, 47):
        changed = ids.clone()
        changed[:, cut:] = rand_ids(2, 48, seed=cut)[:, cut:]
        out = m.forward_logits(changed)
        torch.testing.assert_close(out[:, :cut], ref[:, :cut], rtol=0, atol=1e-5)
        assert not torch.allclose(out[:, cut:], ref[:, cut:], atol=1e-4), "later logits must see the change"


def test_banked_and_unbanked_same_seed_identical_init_outputs_and_export():
    hb, hu = everything_on(param_banks=1), everything_on(param_banks=0)
    torch.manual_seed(3)
    mb = GPT(hb)
    torch.manual_seed(3)
    mu = GPT(hu)
    sb, su = mb.export_state_dict(), mu.export_state_dict()
    assert list(sb) == list(su)
    for k in sb:
        assert torch.equal(sb[k], su[k]), k
    # Now random weights everywhere: load the same export into both and compare outputs and gradients.
    src = build(hu, seed=9).export_state_dict()
    mb.load_export_state_dict(src)
    mu.load_export_state_dict(src)
    ids = rand_ids(2, 40)
    tgt = rand_ids(2, 40, seed=5)
    lb, lu = mb(ids, tgt), mu(ids, tgt)
    assert torch.equal(lb, lu)
    lb.backward()
    lu.backward()
    L = hb.num_layers
    for i in range(L):
        for suffix, bank, part in LAYER_MATRICES:
            gb = getattr(mb, bank).grad[part * L + i]
            gu = dict(mu.named_parameters())[f"blocks.{i}.{suffix}"].grad
            torch.testing.assert_close(gb, gu, rtol=0, atol=0)
    sb, su = mb.export_state_dict(), mu.export_state_dict()
    assert list(sb) == list(su) and all(torch.equal(sb[k], su[k]) for k in sb)


def test_export_names_are_the_standard_per_layer_names():
    sd = build(everything_on(), perturb=0).export_state_dict()
    for i in range(4):
        for s in ("attn.c_q.weight", "attn.c_k.weight", "attn.c_v.weight", "attn.proj.weight", "mlp.fc.weight",
                  "mlp.proj.weight", "attn_scale", "mlp_scale", "resid_mix", "attn.q_gain"):
            assert f"blocks.{i}.{s}" in sd
    for k in ("tok_emb.weight", "lm_head.weight", "bigram.embed.weight", "bigram.proj.weight", "bigram.scale",
              "ve.embed.weight", "ve.proj.weight", "ve.scale", "ve_layer_scales", "skip_weights", "smear.gate"):
        assert k in sd, k
    assert not any("bank" in k for k in sd)
    # Control tensors are vectors.
    for k, v in sd.items():
        if any(s in k for s in ("scale", "gate", "q_gain", "resid_mix", "skip", "vr_lambda")) and "attn_gate_w" not in k:
            assert v.ndim == 1, (k, v.shape)


def test_export_load_roundtrip_and_bad_input():
    h = everything_on(param_banks=0)
    a, b = build(h, seed=1), build(h, seed=2)
    ids = rand_ids(2, 32)
    assert not torch.equal(a.forward_logits(ids), b.forward_logits(ids))
    sd = a.export_state_dict()
    b.load_export_state_dict(sd)
    assert torch.equal(a.forward_logits(ids), b.forward_logits(ids))
    # export returns copies: mutating them does not touch the model
    sd["tok_emb.weight"].zero_()
    assert a.tok_emb.weight.abs().sum() > 0
    bad = a.export_state_dict()
    del bad["blocks.0.attn.c_q.weight"]
    with pytest.raises(PgolfError, match="missing.*blocks.0.attn.c_q.weight"):
        b.load_export_state_dict(bad)
    bad = a.export_state_dict()
    bad["blocks.1.mlp.fc.weight"] = torch.zeros(3, 3)
    with pytest.raises(PgolfError, match=r"blocks.1.mlp.fc.weight expected shape \(80, 64\), got \(3, 3\)"):
        b.load_export_state_dict(bad)


@pytest.mark.parametrize("banks", [0, 1])
def test_param_groups_partition_all_params(banks):
    m = build(everything_on(param_banks=banks), perturb=0)
    groups = [m.matrix_params(), m.embedding_params(), m.scalar_params()]
    ids = [id(p) for g in groups for p in g]
    assert len(ids) == len(set(ids)) == len(list(m.parameters()))
    names = {id(p): n for n, p in m.named_parameters()}
    mat = {names[id(p)] for p in groups[0]}
    emb = {names[id(p)] for p in groups[1]}
    assert emb == {"tok_emb.weight", "lm_head.weight", "bigram.embed.weight", "ve.embed.weight"}
    assert {"bigram.proj.weight", "ve.proj.weight"} <= mat
    if banks:
        assert {"qo_bank", "kv_bank", "mlp_up_bank", "mlp_down_bank"} <= mat
    assert all(p.ndim <= 1 or "attn_gate_w" in names[id(p)] for p in groups[2])


def test_adam_steps_reduce_loss_on_repeated_real_batch(shared_data):
    tok = real_tokens(shared_data, 4 * 64 + 1)
    x, y = tok[:-1].view(4, 64), tok[1:].view(4, 64)
    m = build(everything_on(), perturb=0)
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        loss = m(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(np.log(V), abs=0.1)  # zero-init outputs: near-uniform start
    assert losses[-1] < losses[0] - 0.5, losses


def test_determinism_same_seed_identical_logits_and_loss():
    h = everything_on()
    ids = rand_ids(2, 32)
    outs = []
    for _ in range(2):
        m = build(h, seed=4)
        outs.append((m.forward_logits(ids), m(ids, rand_ids(2, 32, seed=1))))
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])
    other = build(h, seed=5).forward_logits(ids)
    assert not torch.equal(other, outs[0][0])


def test_loss_token_nll_and_logits_agree_and_softcap_bounds():
    h = make_h("tiny", logit_softcap=2.0)
    m = build(h, perturb=0.5)
    ids, tgt = rand_ids(2, 24), rand_ids(2, 24, seed=2)
    logits = m.forward_logits(ids)
    assert logits.dtype == torch.float32 and logits.shape == (2, 24, V)
    assert logits.abs().max() <= 2.0
    nll = m.token_nll(ids, tgt)
    assert nll.shape == (2, 24) and nll.dtype == torch.float32
    ref = -torch.log_softmax(logits, -1).gather(-1, tgt.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(nll, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(m(ids, tgt), nll.mean(), rtol=1e-6, atol=1e-6)


def test_qat_changes_forward_keeps_gradients_and_turns_off():
    m = build(everything_on())
    ids, tgt = rand_ids(2, 32), rand_ids(2, 32, seed=3)
    base = m(ids, tgt)
    sd = m.export_state_dict()
    bits = {k: 4 for k, v in sd.items() if v.ndim == 2 and ("mlp" in k or "attn.c_" in k)}
    bits["tok_emb.weight"] = 6
    m.set_qat(bits, 100.0)
    assert m.qat_active
    q = m(ids, tgt)
    assert not torch.equal(q, base)
    q.backward()
    for n, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), n
    assert m.mlp_up_bank.grad[0].abs().sum() > 0  # STE: the banked master weight receives the gradient
    m.set_qat(None)
    assert not m.qat_active and torch.equal(m(ids, tgt), base)
    with pytest.raises(PgolfError, match="expected 2-D matrices named as in export_state_dict"):
        m.set_qat({"blocks.0.attn_scale": 6})
    with pytest.raises(PgolfError, match="expected 0 or 2..8"):
        m.set_qat({"blocks.0.mlp.fc.weight": 9})


def test_qat_forward_equals_model_with_quantized_weights():
    from trainer.qat import fake_quantize

    m = build(everything_on(param_banks=1))
    sd = m.export_state_dict()
    bits = {"blocks.1.mlp.fc.weight": 4, "blocks.2.attn.c_v.weight": 6, "bigram.proj.weight": 5}
    m.set_qat(bits, 99.9)
    ids = rand_ids(2, 32)
    got = m.forward_logits(ids)
    for k, b in bits.items():
        sd[k] = fake_quantize(sd[k], b, 99.9)
    ref_model = build(everything_on(param_banks=0), perturb=0)
    ref_model.load_export_state_dict(sd)
    torch.testing.assert_close(got, ref_model.forward_logits(ids), rtol=0, atol=1e-6)


def test_qat_switch_is_seen_by_compiled_model():
    """torch.compile must not constant-fold QAT away: switching it on recompiles once and changes the output."""
    import torch._dynamo.testing

    torch._dynamo.reset()
    m = build(everything_on())
    counter = torch._dynamo.testing.CompileCounter()
    cm = torch.compile(m, backend=counter, dynamic=False)
    ids, tgt = rand_ids(2, 32), rand_ids(2, 32, seed=3)
    with torch.no_grad():
        off = cm(ids, tgt)
        assert counter.frame_count == 1
        m.set_qat({k: 4 for k in m.export_state_dict() if ".mlp.fc" in k}, 100.0)
        on = cm(ids, tgt)
        assert counter.frame_count == 2 and not torch.equal(on, off)
        torch.testing.assert_close(on, m(ids, tgt), rtol=0, atol=1e-6)
        m.set_qat(None)
        assert torch.equal(cm(ids, tgt), off) and counter.frame_count == 2
    torch._dynamo.reset()


def test_activation_observer_reports_every_matrix_input():
    m = build(everything_on())
    seen = {}
    m.activation_observer = lambda name, x: seen.setdefault(name, x.shape[-1])
    m.forward_logits(rand_ids(1, 16))
    m.activation_observer = None
    sd = m.export_state_dict()
    tables = {"tok_emb.weight", "bigram.embed.weight", "ve.embed.weight"}
    matrices = {k for k, v in sd.items() if v.ndim == 2 and k not in tables and "attn_gate_w" not in k}
    assert set(seen) == matrices
    for k in matrices:
        assert seen[k] == sd[k].shape[1], k  # the observed input width is the matrix's input dim


def test_config_errors_are_one_line():
    for over, pat in (
        (dict(num_kv_heads=3), "NUM_KV_HEADS: expected a divisor of NUM_HEADS=4, got 3"),
        (dict(rope_dims=6, model_dim=64, num_heads=16), "ROPE_DIMS"),
        (dict(xsa_last_n=7), "XSA_LAST_N: expected -1"),
        (dict(ve_enabled=1, ve_layers=""), "VE_LAYERS: expected at least one layer"),
        (dict(ve_enabled=1, ve_layers="9"), "VE_LAYERS: expected layers in"),
        (dict(bigram_vocab_size=1), "BIGRAM_VOCAB_SIZE"),
    ):
        with pytest.raises(ConfigError, match=pat) as e:
            GPT(make_h("tiny", **over))
        assert "\n" not in str(e.value)
    with pytest.raises(PgolfError, match="expected token ids of shape"):
        GPT(make_h("tiny")).forward_logits(torch.zeros(5, dtype=torch.long))


@pytest.mark.gpu
def test_cuda_bf16_forward_close_to_cpu_fp32_and_compiles():
    h = everything_on(sdpa_backend="auto")
    ids, tgt = rand_ids(4, 256), rand_ids(4, 256, seed=6)
    ref = build(h)(ids, tgt).item()
    m = build(h).cuda()
    got = m(ids.cuda(), tgt.cuda())
    assert got.dtype == torch.float32 and abs(got.item() - ref) < 0.02 * ref
    cm = torch.compile(m, dynamic=False)
    loss = cm(ids.cuda(), tgt.cuda())
    loss.backward()
    assert abs(loss.item() - got.item()) < 0.02 * ref
    assert all(torch.isfinite(p.grad).all() for p in m.parameters())


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cudnn", "flash", "efficient", "default"])
def test_cuda_attention_backends_match_math(backend):
    from trainer.attention import causal_attention

    g = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(2, 256, 8, 64, device="cuda", dtype=torch.bfloat16, generator=g)
    k = torch.randn(2, 256, 4, 64, device="cuda", dtype=torch.bfloat16, generator=g)
    v = torch.randn(2, 256, 4, 64, device="cuda", dtype=torch.bfloat16, generator=g)
    ref = causal_attention(q.float(), k.float(), v.float(), "math")
    got = causal_attention(q, k, v, backend)
    assert (got.float() - ref).abs().max() < 0.05
