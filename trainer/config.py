"""Hyperparameters: one object, read from the challenge's environment variable names and CLI flags.

Precedence (lowest first): field default < BAKED_CONFIG (set by `pgolf build` in a shipped train_gpt.py)
< preset < environment variable < explicit CLI flag.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
from dataclasses import dataclass, field

from trainer.errors import PgolfError

# `pgolf build` rewrites this literal so the shipped train_gpt.py reproduces the run with no environment.
BAKED_CONFIG: dict = {}


class ConfigError(PgolfError):
    """A configuration value that cannot be used; the message is one line."""


def _f(default, env: str, help: str, group: str, choices=None):
    return field(default=default, metadata={"env": env, "help": help, "group": group, "choices": choices})


@dataclass
class Hyperparameters:
    # --- run and data -------------------------------------------------------------------------
    data_path: str = _f("./data/datasets/fineweb10B_sp1024", "DATA_PATH", "directory holding fineweb_{train,val}_*.bin shards", "run")
    tokenizer_path: str = _f("./data/tokenizers/fineweb_1024_bpe.model", "TOKENIZER_PATH", "SentencePiece model used for the byte count of val_bpb", "run")
    run_id: str = _f("", "RUN_ID", "name of the run (default: preset and seed)", "run")
    out_dir: str = _f("", "OUT_DIR", "run directory for log, artifact, config.json, metrics.json (default: runs/RUN_ID)", "run")
    seed: int = _f(1337, "SEED", "random seed", "run")
    device: str = _f("auto", "DEVICE", "auto, cuda or cpu", "run", ["auto", "cuda", "cpu"])
    compile: int = _f(1, "TORCH_COMPILE", "torch.compile the model on CUDA (ignored on CPU)", "run")
    save_raw_model: int = _f(0, "SAVE_RAW_MODEL", "also save the pre-quantization weights (final_model.pt; final_model.rank<R>.pt per rank when distributed)", "run")
    sdpa_backend: str = _f("auto", "SDPA_BACKEND", "attention kernel: auto (FA3 if importable, else fastest SDPA), fa3, cudnn, flash, efficient, math", "run", ["auto", "fa3", "cudnn", "flash", "efficient", "math"])
    # --- schedule ------------------------------------------------------------------------------
    iterations: int = _f(20000, "ITERATIONS", "number of optimizer steps", "train")
    warmup_steps: int = _f(20, "WARMUP_STEPS", "compile/warm-up steps run before the timer and then undone (model and optimizer state restored)", "train")
    lr_warmup_steps: int = _f(0, "LR_WARMUP_STEPS", "linear learning-rate warm-up steps", "train")
    warmdown_iters: int = _f(1200, "WARMDOWN_ITERS", "steps of linear LR decay at the end (wallclock-aware when MAX_WALLCLOCK_SECONDS > 0)", "train")
    train_batch_tokens: int = _f(524288, "TRAIN_BATCH_TOKENS", "global tokens per optimizer step", "train")
    train_seq_len: int = _f(1024, "TRAIN_SEQ_LEN", "training sequence length", "train")
    grad_accum_steps: int = _f(0, "GRAD_ACCUM_STEPS", "micro-batches per step per rank (0: 8 // world_size, as the records)", "train")
    max_wallclock_seconds: float = _f(600.0, "MAX_WALLCLOCK_SECONDS", "stop training after this many seconds of training time (0: no cap)", "train")
    val_loss_every: int = _f(1000, "VAL_LOSS_EVERY", "validate every N steps (0: only at the end)", "train")
    train_log_every: int = _f(200, "TRAIN_LOG_EVERY", "log the training loss every N steps", "train")
    val_batch_size: int = _f(524288, "VAL_BATCH_SIZE", "global tokens per validation forward pass", "train")
    val_max_tokens: int = _f(0, "VAL_MAX_TOKENS", "score only the first N validation tokens (0: all; for quick local runs)", "train")
    # --- model ---------------------------------------------------------------------------------
    vocab_size: int = _f(1024, "VOCAB_SIZE", "vocabulary size (must equal the tokenizer's)", "model")
    num_layers: int = _f(9, "NUM_LAYERS", "transformer blocks", "model")
    model_dim: int = _f(512, "MODEL_DIM", "residual width", "model")
    num_heads: int = _f(8, "NUM_HEADS", "query heads", "model")
    num_kv_heads: int = _f(4, "NUM_KV_HEADS", "key/value heads (GQA)", "model")
    mlp_mult: float = _f(2.0, "MLP_MULT", "MLP hidden size as a multiple of MODEL_DIM", "model")
    mlp_hidden: int = _f(0, "MLP_HIDDEN", "explicit MLP hidden size (overrides MLP_MULT when > 0)", "model")
    mlp_activation: str = _f("relu2", "MLP_ACTIVATION", "relu2 or leaky_relu2", "model", ["relu2", "leaky_relu2"])
    leaky_slope: float = _f(0.5, "LEAKY_SLOPE", "negative slope of LeakyReLU before squaring", "model")
    tie_embeddings: int = _f(1, "TIE_EMBEDDINGS", "tie input embedding and output head", "model")
    tied_embed_init_std: float = _f(0.005, "TIED_EMBED_INIT_STD", "init std of the tied embedding", "model")
    rope_base: float = _f(10000.0, "ROPE_BASE", "RoPE base", "model")
    rope_dims: int = _f(0, "ROPE_DIMS", "rotated dims per head (0: all; partial RoPE otherwise)", "model")
    rope_ref_seq_len: int = _f(1024, "ROPE_REF_SEQ_LEN", "sequence length beyond which the RoPE base is NTK-scaled", "model")
    logit_softcap: float = _f(30.0, "LOGIT_SOFTCAP", "tanh softcap on logits (0: off)", "model")
    qk_gain_init: float = _f(1.5, "QK_GAIN_INIT", "initial learnable per-head query gain", "model")
    xsa_last_n: int = _f(0, "XSA_LAST_N", "exclusive self-attention on the last N layers (-1: all)", "model")
    ln_scale: int = _f(0, "LN_SCALE", "scale normed block inputs by 1/sqrt(layer+1)", "model")
    smear_gate: int = _f(0, "SMEAR_GATE", "SmearGate: gated mix with the previous token's embedding (never across BOS)", "model")
    bigram_vocab_size: int = _f(0, "BIGRAM_VOCAB_SIZE", "BigramHash buckets (0: off)", "model")
    bigram_dim: int = _f(128, "BIGRAM_DIM", "BigramHash embedding width", "model")
    ve_enabled: int = _f(0, "VE_ENABLED", "value embeddings", "model")
    ve_dim: int = _f(128, "VE_DIM", "value embedding width", "model")
    ve_layers: str = _f("", "VE_LAYERS", "comma-separated layers receiving value embeddings; negative counts from the end", "model")
    gated_attention: int = _f(0, "GATED_ATTENTION", "sigmoid output gate on attention", "model")
    value_residual: int = _f(0, "VALUE_RESIDUAL", "mix the first layer's values into later layers", "model")
    unet_skips: int = _f(1, "UNET_SKIPS", "U-Net skip connections between first and second half", "model")
    ortho_init: int = _f(0, "ORTHO_INIT", "orthogonal init of Q/K/V/MLP-up; zero-init output projections", "model")
    param_banks: int = _f(0, "PARAM_BANKS", "store per-layer matrices in contiguous 3-D banks (for distributed Muon)", "model")
    # --- optimizer -----------------------------------------------------------------------------
    embed_lr: float = _f(0.6, "EMBED_LR", "Adam LR of the untied input embedding", "optim")
    head_lr: float = _f(0.008, "HEAD_LR", "Adam LR of the untied output head", "optim")
    tied_embed_lr: float = _f(0.05, "TIED_EMBED_LR", "Adam LR of the tied embedding", "optim")
    matrix_lr: float = _f(0.04, "MATRIX_LR", "Muon LR of 2-D block matrices", "optim")
    scalar_lr: float = _f(0.04, "SCALAR_LR", "Adam LR of vectors and scalars", "optim")
    muon_momentum: float = _f(0.95, "MUON_MOMENTUM", "Muon momentum after warm-up", "optim")
    muon_backend_steps: int = _f(5, "MUON_BACKEND_STEPS", "Newton-Schulz iterations", "optim")
    muon_momentum_warmup_start: float = _f(0.85, "MUON_MOMENTUM_WARMUP_START", "Muon momentum at step 0", "optim")
    muon_momentum_warmup_steps: int = _f(500, "MUON_MOMENTUM_WARMUP_STEPS", "steps to reach MUON_MOMENTUM", "optim")
    muon_wd: float = _f(0.0, "MUON_WD", "decoupled weight decay for Muon matrices", "optim")
    adam_wd: float = _f(0.0, "ADAM_WD", "decoupled weight decay for Adam parameters", "optim")
    beta1: float = _f(0.9, "BETA1", "Adam beta1", "optim")
    beta2: float = _f(0.95, "BETA2", "Adam beta2", "optim")
    adam_eps: float = _f(1e-8, "ADAM_EPS", "Adam epsilon", "optim")
    grad_clip_norm: float = _f(0.0, "GRAD_CLIP_NORM", "global gradient-norm clip (0: off)", "optim")
    distributed_muon: int = _f(0, "DISTRIBUTED_MUON", "shard Newton-Schulz across ranks (reduce-scatter, orthogonalize, all-gather); needs PARAM_BANKS", "optim")
    # --- weight averaging ----------------------------------------------------------------------
    ema_enabled: int = _f(0, "EMA_ENABLED", "exponential moving average of weights, applied after training", "avg")
    ema_decay: float = _f(0.997, "EMA_DECAY", "EMA decay", "avg")
    ema_warmup: int = _f(1, "EMA_WARMUP", "warm the decay up as min(decay, (1+t)/(10+t)) so short runs do not keep the init", "avg")
    ema_reset_on_qat: int = _f(0, "EMA_RESET_ON_QAT", "restart the EMA when QAT switches on", "avg")
    swa_enabled: int = _f(0, "SWA_ENABLED", "average checkpoints taken every SWA_EVERY steps during warm-down (applied)", "avg")
    swa_every: int = _f(50, "SWA_EVERY", "SWA snapshot interval", "avg")
    # --- quantization-aware training -----------------------------------------------------------
    qat_enabled: int = _f(0, "QAT_ENABLED", "fake-quantize matrices (straight-through) from step 0", "qat")
    late_qat_threshold: float = _f(0.0, "LATE_QAT_THRESHOLD", "turn QAT on once the LR scale falls below this (0: off)", "qat")
    qat_start_frac: float = _f(0.0, "QAT_START_FRAC", "turn QAT on after this fraction of the run (0: off)", "qat")
    post_qat_seconds: float = _f(0.0, "POST_QAT_SECONDS", "post-training QAT phase of this many seconds (counts against the training budget)", "qat")
    # --- export --------------------------------------------------------------------------------
    quant_scheme: str = _f("*:int8", "QUANT_SCHEME", "name-pattern to precision, first match wins, e.g. 'mlp:int6,attn:int6,tok_emb:int8,*:int8'", "export")
    quant_clip_pct: float = _f(99.99984, "QUANT_CLIP_PCT", "per-row clip percentile of the int8 quantizer", "export")
    quant_clip_search: str = _f("", "QUANT_CLIP_SEARCH", "comma-separated row-clip percentiles searched per matrix (GPTQ-lite); empty: fixed clip", "export")
    passthrough_max_numel: int = _f(65536, "PASSTHROUGH_MAX_NUMEL", "tensors this small are stored as fp16", "export")
    bit_pack: int = _f(0, "BIT_PACK", "pack int4 two per byte and int6 four per three bytes (else int8 containers)", "export")
    compressor: str = _f("zlib", "COMPRESSOR", "zlib (level 9), zstd (22), lzma (raw LZMA2 preset 9) or brotli (11)", "export", ["zlib", "zstd", "lzma", "brotli"])
    byte_shuffle: int = _f(0, "BYTE_SHUFFLE", "byte-shuffle stride before compression (0: off)", "export")
    max_artifact_bytes: int = _f(16_000_000, "MAX_ARTIFACT_BYTES", "cap on code + compressed model bytes; the budget fitter enforces it", "export")
    gptq_enabled: int = _f(0, "GPTQ_ENABLED", "full-Hessian GPTQ for quantized matrices", "export")
    gptq_calib_source: str = _f("train", "GPTQ_CALIB_SOURCE", "train (training tokens inside the training budget) or selfgen (model-generated)", "export", ["train", "selfgen"])
    gptq_calib_seqs: int = _f(64, "GPTQ_CALIB_SEQS", "calibration sequences", "export")
    gptq_block_size: int = _f(128, "GPTQ_BLOCK_SIZE", "GPTQ column block size", "export")
    gptq_damp: float = _f(0.01, "GPTQ_DAMP", "Hessian damping as a fraction of its mean diagonal", "export")
    gptq_reserve_seconds: float = _f(0.0, "GPTQ_RESERVE_SECONDS", "seconds reserved from the training budget for calibration", "export")
    # --- evaluation ----------------------------------------------------------------------------
    eval_seq_len: int = _f(0, "EVAL_SEQ_LEN", "evaluation window length (0: TRAIN_SEQ_LEN)", "eval")
    eval_stride: int = _f(0, "EVAL_STRIDE", "sliding-window stride (0: no sliding-window eval)", "eval")
    eval_batch_seqs: int = _f(32, "EVAL_BATCH_SEQS", "windows per sliding-eval forward pass", "eval")
    ttt_enabled: int = _f(0, "TTT_ENABLED", "legal score-first test-time training", "ttt")
    ttt_optimizer: str = _f("sgd", "TTT_OPTIMIZER", "sgd or adamw", "ttt", ["sgd", "adamw"])
    ttt_lr: float = _f(0.002, "TTT_LR", "TTT learning rate", "ttt")
    ttt_epochs: int = _f(3, "TTT_EPOCHS", "passes over each already-scored chunk", "ttt")
    ttt_chunk_tokens: int = _f(32768, "TTT_CHUNK_TOKENS", "tokens per score-then-train chunk", "ttt")
    ttt_freeze_blocks: int = _f(0, "TTT_FREEZE_BLOCKS", "freeze the first N blocks during TTT", "ttt")
    ttt_freeze_embed: int = _f(0, "TTT_FREEZE_EMBED", "freeze embeddings during TTT", "ttt")
    ttt_momentum: float = _f(0.9, "TTT_MOMENTUM", "SGD momentum", "ttt")
    ttt_batch_seqs: int = _f(32, "TTT_BATCH_SEQS", "sequences per TTT step", "ttt")
    ttt_grad_clip: float = _f(1.0, "TTT_GRAD_CLIP", "gradient clip during TTT (0: off)", "ttt")
    ttt_cosine: int = _f(1, "TTT_COSINE", "cosine-decay the TTT LR over chunks", "ttt")
    ttt_ema_decay: float = _f(0.0, "TTT_EMA_DECAY", "score with an EMA of the TTT weights (0: off)", "ttt")

    # ------------------------------------------------------------------------------------------
    @classmethod
    def fields_meta(cls):
        return [(f.name, f.type, f.default, f.metadata) for f in dataclasses.fields(cls)]

    @classmethod
    def resolve(cls, preset: dict | None = None, env=None, cli: dict | None = None) -> "Hyperparameters":
        """Build from defaults < BAKED_CONFIG < preset < env < cli, validating every value."""
        env = os.environ if env is None else env
        values = {}
        for name, _typ, default, meta in cls.fields_meta():
            raw, where = default, "default"
            if name in BAKED_CONFIG:
                raw, where = BAKED_CONFIG[name], "baked config"
            if preset and name in preset:
                raw, where = preset[name], "preset"
            if meta["env"] in env and env[meta["env"]] != "":
                raw, where = env[meta["env"]], f"environment variable {meta['env']}"
            if cli and cli.get(name) is not None:
                raw, where = cli[name], f"--{name.replace('_', '-')}"
            values[name] = _coerce(name, raw, type(default), meta, where)
        unknown = set(preset or {}) - set(values)
        if unknown:
            raise ConfigError(f"preset has unknown keys: {', '.join(sorted(unknown))}")
        return cls(**values)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def env_items(self):
        """(ENV_NAME, value) pairs, for logging the full resolved configuration."""
        return [(meta["env"], getattr(self, name)) for name, _t, _d, meta in self.fields_meta()]

    # Derived values used in several places.
    @property
    def mlp_hidden_size(self) -> int:
        return self.mlp_hidden if self.mlp_hidden > 0 else int(self.mlp_mult * self.model_dim)

    @property
    def eval_len(self) -> int:
        return self.eval_seq_len or self.train_seq_len

    def ve_layer_ids(self) -> list:
        if not self.ve_enabled or not self.ve_layers.strip():
            return []
        ids = []
        for part in self.ve_layers.split(","):
            i = int(part)
            ids.append(i + self.num_layers if i < 0 else i)
        return sorted(set(ids))


def _coerce(name, raw, typ, meta, where):
    try:
        if typ is bool or typ is int:
            if isinstance(raw, str) and raw.strip().lower() in ("true", "false"):
                val = int(raw.strip().lower() == "true")
            else:
                num = float(raw) if isinstance(raw, str) else raw
                # an integer field must get an integral, finite number: 2.7 is not silently 2, inf is no count
                if isinstance(num, float) and (not math.isfinite(num) or not num.is_integer()):
                    raise ConfigError(f"{where}: {meta['env']} expects an integer, got {raw!r}")
                val = int(num)
        elif typ is float:
            val = float(raw)
            if not math.isfinite(val):
                raise ConfigError(f"{where}: {meta['env']} expects a finite number, got {raw!r}")
        else:
            val = str(raw)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{where}: {meta['env']} expects {typ.__name__}, got {raw!r}") from None
    if meta.get("choices") and val not in meta["choices"]:
        raise ConfigError(f"{where}: {meta['env']} expects one of {', '.join(meta['choices'])}, got {val!r}")
    return val


def add_cli_flags(parser: argparse.ArgumentParser, aliases: dict | None = None) -> None:
    """One --flag per field, grouped, each with help naming its environment variable and default.

    aliases: field -> extra flag name (e.g. data_path -> --data), listed with the field's own flag."""
    groups = {}
    for name, _typ, default, meta in Hyperparameters.fields_meta():
        g = groups.get(meta["group"])
        if g is None:
            g = groups[meta["group"]] = parser.add_argument_group(f"{meta['group']} hyperparameters")
        typ = type(default)
        flags = [f"--{name.replace('_', '-')}"]
        if aliases and name in aliases:
            flags.insert(0, aliases[name])
        shown = "\"\"" if default == "" else default
        g.add_argument(
            *flags, dest=f"hp_{name}", default=None, metavar=meta["env"],
            # ints parse as numbers so `--num-layers 2.7` gets the same one-line error as NUM_LAYERS=2.7
            type=str if typ in (bool, int) else typ, choices=meta.get("choices"),
            help=f"{meta['help']} [env {meta['env']}, default {shown}]",
        )


def cli_overrides(args: argparse.Namespace) -> dict:
    return {name: getattr(args, f"hp_{name}") for name, *_ in Hyperparameters.fields_meta() if getattr(args, f"hp_{name}", None) is not None}


def config_json(h: Hyperparameters) -> str:
    return json.dumps(h.to_dict(), indent=2, sort_keys=True)
