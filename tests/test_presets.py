"""Presets: each resolves to the issue's configuration, fits the 16,000,000-byte cap at full size (computed from
parameter shapes on the meta device), and trains at --scale tiny through the whole pipeline (train, EMA, QAT, GPTQ
calibration, export, reload, roundtrip / sliding / legal TTT evals) with the expected log lines."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch

from conftest import run_pgolf
from trainer.artifact import artifact_label, artifact_size_bound, compress_bound
from trainer.config import ConfigError, Hyperparameters
from trainer.presets import PRESET_HELP, PRESETS, TTT_CHUNKS_200, get_preset, scale_tiny
from trainer.quantize import precision_for

# Bytes reserved for train_gpt.py in the full-size estimate (the plain inlined file is ~176 KB).
CODE_RESERVE = 200_000
# The official FineWeb validation split: 62,021,632 scored targets; the raw stream is at most 62,029,824 tokens.
FINEWEB_VAL_TARGETS = (62_021_632, 62_029_823)


def resolve(name: str, tiny: bool = False, **cli) -> Hyperparameters:
    p = get_preset(name)
    return Hyperparameters.resolve(preset=scale_tiny(p) if tiny else p, env={}, cli=cli or None)


def export_shapes(h: Hyperparameters) -> dict:
    from trainer.model import GPT

    with torch.device("meta"):
        model = GPT(h)
    return {n: tuple(t.shape) for n, t in model.export_state_dict().items()}, sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------------------------------------ resolution
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_resolves_full_and_tiny(name):
    h = resolve(name)
    t = resolve(name, tiny=True)
    assert name in PRESET_HELP and PRESET_HELP[name]
    assert h.num_layers >= 2 and t.num_layers <= max(h.num_layers, 4)
    if name != "tiny":
        assert (t.num_layers, t.model_dim, t.train_seq_len) == (4, 64, 128)


def test_unknown_preset_is_one_clear_error():
    with pytest.raises(ConfigError, match=r"unknown preset 'seed999': expected one of .*seed347"):
        get_preset("seed999")


FEATURE_KEYS = (
    "mlp_activation", "ln_scale", "smear_gate", "ve_enabled", "ve_layers", "ema_enabled", "ema_reset_on_qat",
    "qat_enabled", "late_qat_threshold", "qat_start_frac", "quant_scheme", "quant_clip_search", "quant_clip_pct",
    "compressor", "bit_pack", "gptq_enabled", "gptq_calib_source", "ttt_enabled", "ttt_optimizer", "ttt_cosine",
    "ttt_ema_decay", "ttt_freeze_embed", "ttt_freeze_blocks", "ttt_momentum", "ttt_grad_clip", "param_banks",
    "distributed_muon", "unet_skips", "gated_attention", "value_residual", "tie_embeddings",
)
RESCALED_KEYS = ("bigram_vocab_size", "xsa_last_n", "rope_dims", "eval_stride", "mlp_hidden", "post_qat_seconds",
                 "gptq_reserve_seconds")


@pytest.mark.parametrize("name", sorted(n for n in PRESETS if n != "tiny"))
def test_scale_tiny_keeps_every_feature_on(name):
    full, tiny = resolve(name), resolve(name, tiny=True)
    for key in FEATURE_KEYS:
        assert getattr(tiny, key) == getattr(full, key), key
    for key in RESCALED_KEYS:
        assert (getattr(tiny, key) > 0) == (getattr(full, key) > 0), key
    # NTK RoPE scaling is active at tiny size exactly when it is at full size
    assert (tiny.train_seq_len > tiny.rope_ref_seq_len) == (full.train_seq_len > full.rope_ref_seq_len)
    assert tiny.train_seq_len == 128 and tiny.iterations <= 8


def test_seed347_matches_the_issue():
    h = resolve("seed347")
    assert (h.num_layers, h.model_dim, h.mlp_activation, h.xsa_last_n, h.rope_dims) == (11, 512, "leaky_relu2", 4, 16)
    assert (h.ln_scale, h.smear_gate, h.bigram_vocab_size, h.bigram_dim) == (1, 1, 2048, 128)
    assert h.ve_enabled and h.ve_dim == 128 and h.ve_layer_ids() == [9, 10]
    assert h.ema_enabled and h.late_qat_threshold == 0.15 and not h.qat_enabled and not h.gptq_enabled
    assert h.quant_clip_search and artifact_label(h) == "int6+lzma"
    assert (h.train_seq_len, h.eval_stride) == (2048, 64)
    assert (h.ttt_enabled, h.ttt_optimizer, h.ttt_epochs, h.ttt_chunk_tokens) == (1, "sgd", 3, 32768)
    assert h.gated_attention == 0 and h.value_residual == 0
    long = resolve("seed347_long4096")
    assert (long.train_seq_len, long.eval_stride) == (4096, 256) and long.train_seq_len > long.rope_ref_seq_len
    i4 = resolve("seed347_int4_16l")
    assert i4.num_layers == 16 and i4.qat_enabled and i4.bit_pack and artifact_label(i4) == "int4+lzma"


def test_seed578_matches_the_issue():
    h = resolve("seed578")
    assert (h.num_layers, h.model_dim, h.num_heads, h.num_kv_heads, h.mlp_mult, h.mlp_activation) == (11, 512, 8, 4, 3.0, "relu2")
    assert h.unet_skips and h.rope_dims == 16 and h.model_dim // h.num_heads == 64 and h.xsa_last_n == 4
    assert h.gptq_enabled and h.gptq_calib_seqs == 256 and len(h.quant_clip_search.split(",")) == 5
    assert h.qat_start_frac == 0.5 and h.quant_clip_pct == 99.95 and artifact_label(h) == "int6+zstd"
    assert (h.ttt_ema_decay, h.ttt_cosine, h.ttt_freeze_embed, h.ttt_momentum, h.ttt_epochs, h.ttt_grad_clip) == (
        0.995, 1, 1, 0.9, 3, 1.0)
    # the cosine LR runs over 200 chunks of the real validation stream (eval_ttt's chunk count)
    assert h.ttt_chunk_tokens == TTT_CHUNKS_200
    for targets in FINEWEB_VAL_TARGETS:
        assert (targets + h.ttt_chunk_tokens - 1) // h.ttt_chunk_tokens == 200


def test_seed107_seed910_seed1216_match_the_issue():
    h = resolve("seed107")
    assert (h.mlp_hidden_size, h.compressor, h.train_seq_len, h.eval_stride, h.post_qat_seconds) == (1488, "zstd", 2048, 64, 30.0)
    assert (h.matrix_lr, h.scalar_lr, h.tied_embed_lr, h.muon_momentum) == (0.02, 0.02, 0.03, 0.99)
    assert (h.muon_momentum_warmup_start, h.muon_momentum_warmup_steps, h.warmdown_iters) == (0.92, 1500, 3000)
    assert (h.qk_gain_init, h.grad_clip_norm) == (1.7, 0.3)
    shapes, _ = export_shapes(h)
    prec = {n: precision_for(n, math.prod(s), h, ndim=len(s)) for n, s in shapes.items()}
    for part, want in (("mlp.fc", "int6"), ("mlp.proj", "int6"), ("attn.c_q", "int6"), ("attn.c_v", "int6"),
                       ("attn.proj", "int6"), ("attn.c_k", "int8")):
        assert prec[f"blocks.3.{part}.weight"] == want, part
    assert prec["tok_emb.weight"] == "int8"

    h = resolve("seed910")
    assert h.num_layers == 12 and h.qat_enabled and h.eval_stride == 32 and h.quant_clip_search
    assert artifact_label(h) == "mixed_int4_int6+lzma" and h.ttt_enabled and h.smear_gate and h.ema_enabled

    h = resolve("seed1216")
    assert h.num_layers == 12 and h.param_banks and h.distributed_muon and h.ema_reset_on_qat and h.ema_decay == 0.997
    assert h.ve_layer_ids() == [10, 11] and h.xsa_last_n == 4 and h.rope_dims and h.ln_scale
    assert (h.ttt_enabled, h.ttt_lr, h.ttt_epochs) == (1, 0.002, 3) and h.compressor == "zstd"
    # the patterns select the model's real (unbanked export) tensor names
    shapes, _ = export_shapes(h)
    prec = {n: precision_for(n, math.prod(s), h, ndim=len(s)) for n, s in shapes.items()}
    assert prec["bigram.embed.weight"] == "int4" and prec["blocks.0.mlp.fc.weight"] == "int4"
    assert prec["blocks.11.attn.c_k.weight"] == "int6" and prec["tok_emb.weight"] == "int8"


# ------------------------------------------------------------------------------------------------ full-size fit
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_full_size_fit_is_guaranteed(name, capsys):
    h = resolve(name)
    shapes, n_params = export_shapes(h)
    b = artifact_size_bound(h, shapes, CODE_RESERVE)
    floor_bound = compress_bound(b["floor_raw_total"]) + CODE_RESERVE
    with capsys.disabled():
        print(f"\n{name}: params {n_params:,} label {artifact_label(h)} raw {b['raw_total']:,} worst-case "
              f"{b['raw_bound_total']:,} int4-floor bound {floor_bound:,} fit_guaranteed {int(b['fit_guaranteed'])}")
    assert b["fit_guaranteed"], f"{name}: worst case at the fitter's floor is {floor_bound} > {b['cap']}"
    assert floor_bound <= 16_000_000 and b["cap"] == 16_000_000


def test_size_bound_flags_a_preset_that_cannot_fit():
    # seed347_int4_16l with the 3x MLP: 37.7M matrix weights are 18.9 MB even at packed int4
    h = resolve("seed347_int4_16l", mlp_mult=3.0)
    shapes, _ = export_shapes(h)
    assert not artifact_size_bound(h, shapes, CODE_RESERVE)["fit_guaranteed"]


# ------------------------------------------------------------------------------------------------ tiny pipeline
def expected_lines(h: Hyperparameters) -> list:
    prefix = "final_" + artifact_label(h).replace("+", "_").replace("-", "_")
    want = [r"^artifact_bound: label:" + re.escape(artifact_label(h)) + r" .* fit_guaranteed:1$",
            r"^" + prefix + r"_roundtrip_exact val_loss:\d+\.\d{8} val_bpb:\d+\.\d{8}$",
            r"^Serialized model " + re.escape(artifact_label(h)) + r": \d+ bytes$"]
    if h.qat_enabled or h.late_qat_threshold > 0 or h.qat_start_frac > 0 or h.post_qat_seconds > 0:
        want.append(r"^qat:enabled step:\d+ reason:.* tensors:[1-9]\d*$")
    if h.post_qat_seconds > 0:
        want.append(r"^post_qat:done steps:[1-9]\d* ")
    if h.ema_enabled:
        want.append(r"^ema:applying EMA weights$")
    if h.gptq_enabled:
        want.append(r"^gptq:calibration source:train seqs:\d+ ")
    if h.eval_stride > 0:
        want.append(r"^" + prefix + r"_sliding_window_exact val_loss:\d+\.\d{8} val_bpb:\d+\.\d{8}$")
    if h.ttt_enabled:
        want.append(r"^ttt_sliding:start chunks=\d+ ")
        want.append(r"^legal_ttt_exact val_loss:\d+\.\d{8} val_bpb:\d+\.\d{8}$")
    return want


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_tiny_scale_trains_through_the_whole_pipeline(name, tiny_data, tmp_path):
    from trainer.train import run

    torch.set_num_threads(1)
    out = tmp_path / name
    h = resolve(name, tiny=name != "tiny", data_path=str(tiny_data["data"]), tokenizer_path=str(tiny_data["tokenizer"]),
                out_dir=str(out), seed=1, val_max_tokens=4096, iterations=6 if name == "tiny" else None,
                warmdown_iters=4 if name == "tiny" else None)
    metrics = run(h, code_bytes=CODE_RESERVE, log_console=False)
    log = (out / "train.log").read_text()
    for pattern in expected_lines(h):
        assert re.search(pattern, log, re.M), f"{name}: no log line matching {pattern!r}"
    for key in ("pre_quant_val_bpb", "post_quant_val_bpb", "val_bpb", "val_loss"):
        assert math.isfinite(metrics[key]) and 0 < metrics[key] < 20, (key, metrics[key])
    want_label = "legal_ttt" if h.ttt_enabled else ("sliding_window" if h.eval_stride > 0 else "roundtrip")
    assert metrics["scored_label"].endswith(want_label)
    assert metrics["artifact_bytes"] == (out / "final_model.ptz").stat().st_size + CODE_RESERVE


# ------------------------------------------------------------------------------------------------ CLI
def test_cli_print_config_and_list_presets():
    proc = run_pgolf("train", "--preset", "seed1216", "--scale", "tiny", "--print-config", "--seed", "7")
    cfg = json.loads(proc.stdout)
    assert cfg["num_layers"] == 4 and cfg["model_dim"] == 64 and cfg["seed"] == 7
    assert cfg["param_banks"] == 1 and cfg["quant_scheme"] == "mlp:int4,bigram:int4,attn:int6,*:int8"
    assert cfg["run_id"] == "seed1216_tiny_seed7"
    listing = run_pgolf("train", "--list-presets").stdout
    assert [line.split()[0] for line in listing.splitlines()] == list(PRESETS)
    bad = run_pgolf("train", "--preset", "nope", "--print-config", check=False)
    assert bad.returncode == 2 and "unknown preset 'nope'" in bad.stderr


def test_record_is_seed347_with_the_measured_changes():
    # docs/benchmarks.md "CPU-scale ablations": late QAT off, brotli instead of LZMA; everything else as seed347
    rec, base = get_preset("record"), get_preset("seed347")
    changed = {k for k in set(rec) | set(base) if rec.get(k) != base.get(k)}
    assert changed == {"late_qat_threshold", "compressor"}
    h = resolve("record")
    assert h.late_qat_threshold == 0 and not h.qat_enabled and not h.qat_start_frac and artifact_label(h) == "int6+brotli"
