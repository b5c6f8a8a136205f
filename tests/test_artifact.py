"""Artifact: exact round trip for every scheme, determinism, QAT/export bit-exactness, GPTQ path, budget fitter,
size bound for every preset."""

import hashlib
import os
import subprocess
import sys

import pytest
import torch

from trainer.artifact import (
    artifact_label, artifact_size_bound, compress_bound, export_artifact, load_artifact,
)
from trainer.compress import compress, decompress
from trainer.config import Hyperparameters
from trainer.errors import PgolfError
from trainer.gptq import gptq_quantize
from trainer.presets import PRESETS, scale_tiny
from trainer.qat import fake_quantize, qat_clip_settings
from trainer.quantize import dequantize_rows, qat_bits_by_name, quantize_rows

# Tiny tensors: one intra-op thread avoids OpenMP spin-waits on the shared 2-core machine.
pytestmark = pytest.mark.usefixtures("single_torch_thread")



def _h(**kw):
    base = dict(passthrough_max_numel=256, quant_scheme="mlp:int4,attn:int6,tok_emb:int8,*:int8")
    base.update(kw)
    return Hyperparameters.resolve(env={}, cli=base)


def _state_dict(seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    sd = {
        "tok_emb.weight": torch.randn(200, 48, generator=g) * 0.02,
        "blocks.0.attn.c_q.weight": torch.randn(48, 48, generator=g) * 0.05,
        "blocks.0.attn.c_k.weight": torch.randn(24, 48, generator=g) * 0.05,
        "blocks.0.mlp.fc.weight": torch.randn(96, 48, generator=g) * 0.05,
        "blocks.0.mlp.proj.weight": torch.randn(48, 96, generator=g) * 0.05,
        "bigram.embed.weight": torch.randn(64, 16, generator=g) * 0.01,
        "blocks.0.attn_scale": torch.rand(48, generator=g),
        "skip_weights": torch.rand(96, generator=g),
        "bigram.scale": torch.tensor([0.05]),
        "small.matrix": torch.randn(8, 8, generator=g),
    }
    sd = {k: v.to(dtype) for k, v in sd.items()}
    sd["step_count"] = torch.tensor([7, 11], dtype=torch.int64)
    return sd


def _expected(name, t, h):
    """What the artifact must hold for a tensor: the exact round trip of its precision."""
    bits = qat_bits_by_name([(name, t)], h).get(name)
    if bits is None:
        return None
    clip, search = qat_clip_settings(h)
    return dequantize_rows(*quantize_rows(t, bits, clip, search), dtype=t.dtype)


@pytest.mark.parametrize("scheme", ["*:int8", "mlp:int4,attn:int6,*:int8", "mlp:int5,attn:int6,*:int7",
                                    "attn.c_q:int4,mlp:fp16,*:int6", "*:fp32"])
@pytest.mark.parametrize("bit_pack", [0, 1])
def test_roundtrip_exact_for_every_scheme(scheme, bit_pack):
    h = _h(quant_scheme=scheme, bit_pack=bit_pack, quant_clip_search="99.9,99.99,100" if bit_pack else "")
    sd = _state_dict()
    blob, report = export_artifact(sd, h, 0, lambda s: None)
    out = load_artifact(blob)
    assert list(out) == list(sd)
    for name, t in sd.items():
        assert out[name].dtype == t.dtype and out[name].shape == t.shape
        exp = _expected(name, t, h)
        if exp is not None:
            assert torch.equal(out[name], exp), name
        elif report["precisions"][name] == "fp16":
            assert torch.equal(out[name], t.half().to(t.dtype))
        else:  # fp32, control vectors and raw tensors are stored exactly
            assert torch.equal(out[name], t)
    assert report["raw_bytes"] == len(decompress(blob))


@pytest.mark.parametrize("method", ["zlib", "zstd", "lzma", "brotli"])
def test_each_compressor_and_bf16(method):
    h = _h(compressor=method, byte_shuffle=2, bit_pack=1)
    sd = _state_dict(seed=1, dtype=torch.bfloat16)
    blob, _ = export_artifact(sd, h, 0, lambda s: None)
    out = load_artifact(blob)
    for name, t in sd.items():
        exp = _expected(name, t, h)
        if exp is not None:
            assert torch.equal(out[name], exp)


def test_deterministic_in_process_and_across_processes():
    h = _h(compressor="lzma", bit_pack=1)
    a, _ = export_artifact(_state_dict(), h, 0, lambda s: None)
    b, _ = export_artifact(_state_dict(), h, 0, lambda s: None)
    assert a == b
    code = (
        "import hashlib, sys; sys.path.insert(0, 'tests'); import test_artifact as t; "
        "from trainer.artifact import export_artifact; "
        "blob, _ = export_artifact(t._state_dict(), t._h(compressor='lzma', bit_pack=1), 0, lambda s: None); "
        "print(hashlib.sha256(blob).hexdigest())"
    )
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, env=env, check=True)
    assert res.stdout.strip() == hashlib.sha256(a).hexdigest()


def test_qat_forward_weight_equals_reloaded_weight():
    h = _h(quant_scheme="mlp:int4,attn:int6,*:int8", quant_clip_pct=99.95, quant_clip_search="99.9,99.99,100")
    sd = _state_dict(seed=2)
    bits = qat_bits_by_name(sd.items(), h)
    assert bits["blocks.0.mlp.fc.weight"] == 4 and bits["tok_emb.weight"] == 8
    clip, search = qat_clip_settings(h)
    out = load_artifact(export_artifact(sd, h, 0, lambda s: None)[0])
    for name, b in bits.items():
        w = sd[name].clone().requires_grad_(True)
        assert torch.equal(fake_quantize(w, b, clip, search).detach(), out[name]), name


def test_qat_model_matches_artifact_model():
    from trainer import model as model_mod
    h = Hyperparameters.resolve(preset=scale_tiny(PRESETS["seed910"]), env={},
                                cli=dict(passthrough_max_numel=0, quant_scheme="mlp:int4,attn:int6,*:int8", num_layers=2,
                                         ve_layers="1"))
    torch.manual_seed(0)
    model = model_mod.GPT(h)
    sd = model.export_state_dict()
    clip, search = qat_clip_settings(h)
    bits = qat_bits_by_name(sd.items(), h)
    model.set_qat(bits, clip, search)
    out = load_artifact(export_artifact(sd, h, 0, lambda s: None)[0])
    for name, b in bits.items():
        assert torch.equal(model._q(name, sd[name]), out[name]), name
    # Only float passthrough (control vectors kept fp32, others fp16) can differ; with every matrix QAT'd and
    # control vectors exact, the QAT model and the reloaded model agree on everything but the fp16 vectors.
    ids = torch.randint(0, h.vocab_size, (1, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        qat_logits = model.forward_logits(ids)
        model.set_qat(None)
        model.load_export_state_dict(out)
        diff = (model.forward_logits(ids) - qat_logits).abs().max().item()
    assert diff < 1e-2


def test_gptq_path_stores_gptq_codes():
    h = _h(quant_clip_search="99.9,100")
    sd = _state_dict(seed=3)
    g = torch.Generator().manual_seed(4)
    X = torch.randn(512, 48, generator=g) @ torch.randn(48, 48, generator=g)
    H = X.T @ X / 512
    name = "blocks.0.attn.c_q.weight"
    blob, report = export_artifact(sd, h, 0, lambda s: None, hessians={name: H})
    assert report["gptq_tensors"] == 1
    q, s = gptq_quantize(sd[name], H, 6, [99.9, 100.0], h.gptq_block_size, h.gptq_damp)
    out = load_artifact(blob)
    assert torch.equal(out[name], dequantize_rows(q, s))
    assert not torch.equal(out[name], _expected(name, sd[name], h))


def _big_state_dict():
    g = torch.Generator().manual_seed(9)
    # Trained-like weights: mostly small with a heavy tail, so low codes dominate and pruning has material.
    return {f"blocks.{i}.mlp.fc.weight": torch.randn(256, 128, generator=g) ** 3 * 0.01 for i in range(3)} | {
        "tok_emb.weight": torch.randn(512, 128, generator=g) * 0.02}


def test_budget_fitter_prunes_under_a_tight_cap_and_logs():
    h = _h(quant_scheme="mlp:int6,*:int8", compressor="zstd")
    sd = _big_state_dict()
    blob0, rep0 = export_artifact(sd, h, 5000, lambda s: None)
    cap = rep0["total_bytes"] - 2000
    lines = []
    h2 = _h(quant_scheme="mlp:int6,*:int8", compressor="zstd", max_artifact_bytes=cap)
    blob, rep = export_artifact(sd, h2, 5000, lines.append)
    assert rep["total_bytes"] <= cap and len(blob) + 5000 <= cap
    assert rep["pruned_codes"] > 0 and rep["precision_steps"] == []
    assert lines and all(line.startswith("budget: ") for line in lines)
    assert any("selective pruning" in line for line in lines)
    out = load_artifact(blob)
    base = load_artifact(blob0)
    changed = sum(int((out[k] != base[k]).sum()) for k in sd)
    assert changed == rep["pruned_codes"]  # each pruned code changed exactly one weight (to zero)
    assert all(int(((out[k] != base[k]) & (out[k] != 0)).sum()) == 0 for k in sd)


def test_budget_fitter_steps_precision_down():
    sd = _big_state_dict()
    h = _h(quant_scheme="*:int8", compressor="zlib")
    _, rep0 = export_artifact(sd, h, 0, lambda s: None)
    cap = int(rep0["total_bytes"] * 0.7)
    lines = []
    blob, rep = export_artifact(sd, _h(quant_scheme="*:int8", compressor="zlib", max_artifact_bytes=cap), 0,
                                lines.append)
    assert rep["total_bytes"] <= cap and rep["precision_steps"]
    assert any("step int8 -> int7" in line for line in lines)
    assert set(load_artifact(blob)) == set(sd)


def test_budget_impossible_raises_with_numbers():
    sd = _state_dict()
    with pytest.raises(PgolfError, match=r"exceeds MAX_ARTIFACT_BYTES 9000 even with every matrix at int4"):
        export_artifact(sd, _h(max_artifact_bytes=9000), 1000, lambda s: None)
    with pytest.raises(PgolfError, match="code alone is 20000 bytes"):
        export_artifact(sd, _h(max_artifact_bytes=20000), 20000, lambda s: None)


def test_labels():
    lab = lambda scheme, comp: artifact_label(_h(quant_scheme=scheme, compressor=comp))
    assert lab("*:int8", "zlib") == "int8+zlib"
    assert lab("mlp:int6,attn:int6,*:int8", "lzma") == "int6+lzma"
    assert lab("mlp:int4,attn:int6,*:int8", "zstd") == "mixed_int4_int6+zstd"
    assert lab("*:fp16", "brotli") == "fp16+brotli"


def test_corrupt_artifact():
    with pytest.raises(PgolfError):
        load_artifact(compress(b"not an artifact at all", "zlib"))
    blob, _ = export_artifact(_state_dict(), _h(), 0, lambda s: None)
    with pytest.raises(PgolfError):
        load_artifact(blob[:-50])


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_size_bound_for_every_preset_at_full_size(preset):
    from trainer import model as model_mod
    h = Hyperparameters.resolve(preset=PRESETS[preset], env={})
    with torch.device("meta"):
        model = model_mod.GPT(h)
    shapes = {k: tuple(v.shape) for k, v in model.export_state_dict().items()}
    b = artifact_size_bound(h, shapes, code_bytes=60000)
    n_params = sum(torch.Size(s).numel() for s in shapes.values())
    assert sum(g["numel"] for g in b["groups"].values()) == n_params
    assert sum(g["numel"] for g in b["floor_groups"].values()) == n_params
    assert b["floor_raw_total"] <= b["raw_total"]
    assert b["fit_guaranteed"] == (compress_bound(b["floor_raw_total"]) + 60000 <= h.max_artifact_bytes)
    if preset == "seed347":  # 26,993,756 params (spec §6.2); the bulk is int6 in int8 containers
        assert n_params == 26993756 and b["groups"]["int6"]["raw_bytes"] > 25_000_000 and b["fit_guaranteed"]


@pytest.mark.parametrize("preset", ["seed910", "seed1216"])
def test_size_bound_equals_real_container_size(preset):
    from trainer import model as model_mod
    h = Hyperparameters.resolve(preset=scale_tiny(PRESETS[preset]), env={}, cli=dict(passthrough_max_numel=2048))
    torch.manual_seed(0)
    sd = model_mod.GPT(h).export_state_dict()
    b = artifact_size_bound(h, {k: v.shape for k, v in sd.items()})
    blob, rep = export_artifact(sd, h, 0, lambda s: None)
    assert rep["raw_bytes"] == b["raw_total"] == len(decompress(blob))
    assert len(blob) <= compress_bound(b["raw_total"])
    assert {k: v["raw_bytes"] for k, v in rep["groups"].items()} == {k: v["raw_bytes"] for k, v in b["groups"].items()}


def test_budget_fitter_steps_only_as_many_tensors_as_needed():
    sd = _big_state_dict()
    _, rep0 = export_artifact(sd, _h(quant_scheme="*:int8", compressor="zlib"), 0, lambda s: None)
    cap = rep0["total_bytes"] - 8000  # more than pruning every ±1 code saves, far less than a whole rung
    lines = []
    blob, rep = export_artifact(sd, _h(quant_scheme="*:int8", compressor="zlib", max_artifact_bytes=cap), 0,
                                lines.append)
    assert rep["total_bytes"] <= cap
    kinds = set(rep["precisions"].values())
    assert kinds == {"int8", "int7"}, rep["precisions"]
    assert rep["precisions"]["tok_emb.weight"] == "int7"  # the largest tensor goes first
    assert any(" of 4 tensors" in line for line in lines)
