"""The GPT of the record stack (challenge-spec §6.2), every component switchable from Hyperparameters.

Data flow: x = tok_emb(ids) [+ BigramHash(ids)] -> RMSNorm [-> SmearGate] -> x0 = x -> blocks with U-Net skips
(encoder outputs pushed, popped before decoder blocks, times learned skip_weights) -> RMSNorm -> tied (or untied)
head -> fp32 logits -> softcap. Each block: x = mix0*x + mix1*x0; x += attn_scale*Attn(RMSNorm(x)*s);
x += mlp_scale*MLP(RMSNorm(x)*s), s = 1/sqrt(layer+1) with LN_SCALE.

State-dict names (stable; quantization patterns match substrings such as "mlp", "attn", "tok_emb", "bigram", "ve."):
  tok_emb.weight [V, d]; lm_head.weight [V, d] (untied only); smear.gate [d];
  bigram.embed.weight [Vb, bd], bigram.proj.weight [d, bd], bigram.scale [1];
  ve.embed.weight [V, ved], ve.proj.weight [kv, ved], ve.scale [1], ve_layer_scales [n_ve_layers];
  skip_weights [n_skip*d] (row j = skip j); blocks.{i}.resid_mix [2*d] (first half multiplies x, second x0);
  blocks.{i}.attn_scale [d], blocks.{i}.mlp_scale [d], blocks.{i}.attn.q_gain [H],
  blocks.{i}.attn.attn_gate_w [H, d], blocks.{i}.attn.attn_gate_b [H] (GATED_ATTENTION), blocks.{i}.attn.vr_lambda [2];
  blocks.{i}.attn.c_q.weight [d, d], .c_k.weight [kv, d], .c_v.weight [kv, d], .proj.weight [d, d],
  blocks.{i}.mlp.fc.weight [hidden, d], blocks.{i}.mlp.proj.weight [d, hidden].
With PARAM_BANKS=1 the six per-layer matrices live in qo_bank [2L, d, d] (Q rows 0..L-1, out-proj L..2L-1),
kv_bank [2L, kv, d] (K, then V), mlp_up_bank [L, hidden, d], mlp_down_bank [L, d, hidden]; export_state_dict() and
load_export_state_dict() always use the per-layer names above.

Numerics: on CUDA the forward runs under bf16 autocast with a bf16 residual stream (fp32 master weights); on CPU
everything is fp32 and deterministic. Logits and the loss are fp32.
"""

from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F
from torch import nn

from trainer.attention import CausalSelfAttention, resolve_attention_backend
from trainer.config import ConfigError
from trainer.errors import PgolfError
from trainer.layers import BigramHash, EmbeddingWeight, LinearWeight, SmearGate, ValueEmbedding, empty_param, mlp_activation, rms_norm
from trainer.qat import fake_quantize
from trainer.rotary import Rotary

# Per-layer matrices: (export suffix, bank attribute, bank part). Bank row = part * num_layers + layer.
LAYER_MATRICES = (
    ("attn.c_q.weight", "qo_bank", 0),
    ("attn.c_k.weight", "kv_bank", 0),
    ("attn.c_v.weight", "kv_bank", 1),
    ("attn.proj.weight", "qo_bank", 1),
    ("mlp.fc.weight", "mlp_up_bank", 0),
    ("mlp.proj.weight", "mlp_down_bank", 0),
)
BANK_NAMES = ("qo_bank", "kv_bank", "mlp_up_bank", "mlp_down_bank")
GATE_BIAS_INIT = 4.0  # gated attention starts almost open: sigmoid(4) ~ 0.98
BIGRAM_SCALE_INIT = 0.05
VE_SCALE_INIT = 0.1
VE_EMBED_STD = 0.01


class MLPWeights(nn.Module):
    """Holder of blocks.{i}.mlp.fc / mlp.proj (absent when banked)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc = LinearWeight(dim, hidden)
        self.proj = LinearWeight(hidden, dim)


class Block(nn.Module):
    def __init__(self, h, layer_idx: int, use_xsa: bool, banked: bool):
        super().__init__()
        d = h.model_dim
        self.attn = CausalSelfAttention(
            d, h.num_heads, h.num_kv_heads, use_xsa, bool(h.gated_attention),
            bool(h.value_residual) and layer_idx > 0, banked,
        )
        if not banked:
            self.mlp = MLPWeights(d, h.mlp_hidden_size)
        self.attn_scale = empty_param(d)
        self.mlp_scale = empty_param(d)
        self.resid_mix = empty_param(2 * d)
        self.ln_factor = 1.0 / math.sqrt(layer_idx + 1) if h.ln_scale else 1.0
        self.activation = h.mlp_activation
        self.leaky_slope = float(h.leaky_slope)

    def forward(self, x, x0, weights, cos, sin, backend, ve=None, v0=None, names=None, observe=None):
        """`weights`: (c_q, c_k, c_v, proj, fc, mlp.proj); `observe(name, input)` sees each matrix input."""
        wq, wk, wv, wo, wup, wdown = weights
        d = x.shape[-1]
        dt = x.dtype
        mix = self.resid_mix.to(dt)
        x = mix[:d] * x + mix[d:] * x0
        n = rms_norm(x)
        if self.ln_factor != 1.0:
            n = n * self.ln_factor
        a, raw_v = self.attn(n, wq, wk, wv, wo, cos, sin, backend, ve=ve, v0=v0, names=names, observe=observe)
        x = x + self.attn_scale.to(dt) * a
        n = rms_norm(x)
        if self.ln_factor != 1.0:
            n = n * self.ln_factor
        if observe is not None:
            observe(names[4], n)
        u = mlp_activation(F.linear(n, wup.to(dt)), self.activation, self.leaky_slope)
        if observe is not None:
            observe(names[5], u)
        x = x + self.mlp_scale.to(dt) * F.linear(u, wdown.to(dt))
        return x, raw_v


def _natural_key(name: str):
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def _check_model_config(h) -> dict:
    """Validate the model fields; return derived sizes. Raises ConfigError with one line."""
    def bad(env, expected, got):
        raise ConfigError(f"{env}: expected {expected}, got {got!r}")

    for env, val in (("NUM_LAYERS", h.num_layers), ("MODEL_DIM", h.model_dim), ("NUM_HEADS", h.num_heads),
                     ("NUM_KV_HEADS", h.num_kv_heads), ("VOCAB_SIZE", h.vocab_size)):
        if val < 1:
            bad(env, "a positive integer", val)
    if h.model_dim % h.num_heads:
        bad("MODEL_DIM", f"a multiple of NUM_HEADS={h.num_heads}", h.model_dim)
    if h.num_heads % h.num_kv_heads:
        bad("NUM_KV_HEADS", f"a divisor of NUM_HEADS={h.num_heads}", h.num_kv_heads)
    head_dim = h.model_dim // h.num_heads
    if head_dim % 2:
        bad("MODEL_DIM", "an even head dim (MODEL_DIM / NUM_HEADS)", head_dim)
    rope_dims = h.rope_dims or head_dim
    if rope_dims % 2 or not 4 <= rope_dims <= head_dim:
        bad("ROPE_DIMS", f"0 or an even number in 4..{head_dim} (the head dim)", h.rope_dims)
    if h.mlp_hidden_size < 1:
        bad("MLP_HIDDEN/MLP_MULT", "a positive hidden size", h.mlp_hidden_size)
    if h.xsa_last_n < -1 or h.xsa_last_n > h.num_layers:
        bad("XSA_LAST_N", f"-1 (all) or 0..{h.num_layers}", h.xsa_last_n)
    if h.bigram_vocab_size < 0 or h.bigram_vocab_size == 1:
        bad("BIGRAM_VOCAB_SIZE", "0 (off) or at least 2 buckets", h.bigram_vocab_size)
    if h.bigram_vocab_size and h.bigram_dim < 1:
        bad("BIGRAM_DIM", "a positive integer", h.bigram_dim)
    if h.logit_softcap < 0:
        bad("LOGIT_SOFTCAP", "0 (off) or a positive number", h.logit_softcap)
    ve_layers = []
    if h.ve_enabled:
        try:
            ve_layers = h.ve_layer_ids()
        except ValueError:
            bad("VE_LAYERS", "comma-separated integers", h.ve_layers)
        if not ve_layers:
            bad("VE_LAYERS", "at least one layer when VE_ENABLED=1 (e.g. '-2,-1')", h.ve_layers)
        if any(not 0 <= i < h.num_layers for i in ve_layers):
            bad("VE_LAYERS", f"layers in -{h.num_layers}..{h.num_layers - 1}", h.ve_layers)
        if h.ve_dim < 1:
            bad("VE_DIM", "a positive integer", h.ve_dim)
    return dict(head_dim=head_dim, rope_dims=rope_dims, kv_dim=h.num_kv_heads * head_dim, ve_layers=ve_layers)


class GPT(nn.Module):
    def __init__(self, h, bos_id: int = 1):
        super().__init__()
        sizes = _check_model_config(h)
        self.bos_id = int(bos_id)
        self.vocab_size = h.vocab_size
        self.model_dim = d = h.model_dim
        self.num_layers = L = h.num_layers
        self.tied = bool(h.tie_embeddings)
        self.logit_softcap = float(h.logit_softcap)
        self.tied_embed_init_std = float(h.tied_embed_init_std)
        self.qk_gain_init = float(h.qk_gain_init)
        self.ortho_init = bool(h.ortho_init)
        self.banked = bool(h.param_banks)
        self.attn_backend = resolve_attention_backend(h.sdpa_backend)
        kv_dim, hidden = sizes["kv_dim"], h.mlp_hidden_size

        self.tok_emb = EmbeddingWeight(h.vocab_size, d)
        self.lm_head = None if self.tied else LinearWeight(d, h.vocab_size)
        self.bigram = BigramHash(h.bigram_vocab_size, h.bigram_dim, d) if h.bigram_vocab_size else None
        self.smear = SmearGate(d) if h.smear_gate else None
        self.ve_layers = tuple(sizes["ve_layers"])
        self.ve = ValueEmbedding(h.vocab_size, h.ve_dim, kv_dim) if self.ve_layers else None
        self.ve_layer_scales = empty_param(len(self.ve_layers)) if self.ve_layers else None
        n_xsa = L if h.xsa_last_n == -1 else h.xsa_last_n
        self.blocks = nn.ModuleList(Block(h, i, i >= L - n_xsa, self.banked) for i in range(L))
        self.num_encoder = L // 2
        self.num_skips = min(self.num_encoder, L - self.num_encoder) if h.unet_skips else 0
        self.skip_weights = empty_param(self.num_skips * d) if self.num_skips else None
        if self.banked:
            self.qo_bank = empty_param(2 * L, d, d)
            self.kv_bank = empty_param(2 * L, kv_dim, d)
            self.mlp_up_bank = empty_param(L, hidden, d)
            self.mlp_down_bank = empty_param(L, d, hidden)
        self.rotary = Rotary(sizes["rope_dims"], h.rope_base, h.rope_ref_seq_len, (h.train_seq_len, h.eval_len))
        self._layer_names = tuple(tuple(f"blocks.{i}.{s}" for s, _b, _p in LAYER_MATRICES) for i in range(L))
        # QAT state, read in forward: torch.compile guards on it, so set_qat triggers one recompile.
        self._qat_bits: dict = {}
        self._qat_clip = None
        self._qat_search = None
        # GPTQ calibration hook (trainer/gptq.py): observe(weight_name, input) for every matrix applied.
        self.activation_observer = None
        self.reset_parameters()

    # ---------------------------------------------------------------- init
    def _init_matrix(self, w: torch.Tensor, kind: str) -> None:
        if kind == "zero":
            nn.init.zeros_(w)
        elif self.ortho_init:
            nn.init.orthogonal_(w, gain=1.0)
            if kind == "proj":  # records: ".proj" matrices scaled by 1/sqrt(2L) after orthogonal init
                w.mul_(1.0 / math.sqrt(2 * self.num_layers))
        else:  # nn.Linear's default init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
            bound = 1.0 / math.sqrt(w.shape[1])
            nn.init.uniform_(w, -bound, bound)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Initialize every parameter in a fixed order (banked and unbanked models draw identical numbers)."""
        if self.tied:
            nn.init.normal_(self.tok_emb.weight, mean=0.0, std=self.tied_embed_init_std)
        else:
            nn.init.normal_(self.tok_emb.weight, mean=0.0, std=1.0)
            nn.init.zeros_(self.lm_head.weight)
        if self.bigram is not None:
            # Table zero; the projection must be nonzero or neither would ever receive a gradient.
            nn.init.zeros_(self.bigram.embed.weight)
            self._init_matrix(self.bigram.proj.weight, "proj")
            self.bigram.scale.fill_(BIGRAM_SCALE_INIT)
        if self.smear is not None:
            nn.init.zeros_(self.smear.gate)
        if self.ve is not None:
            nn.init.normal_(self.ve.embed.weight, mean=0.0, std=VE_EMBED_STD)
            self._init_matrix(self.ve.proj.weight, "proj" if self.ortho_init else "zero")
            self.ve.scale.fill_(VE_SCALE_INIT)
            self.ve_layer_scales.fill_(1.0)
        if self.skip_weights is not None:
            self.skip_weights.fill_(1.0)
        kinds = ("in", "in", "in", "zero", "in", "zero")
        for i, block in enumerate(self.blocks):
            for w, kind in zip(self._raw_layer_weights(i), kinds):
                self._init_matrix(w, kind)
            attn = block.attn
            attn.q_gain.fill_(self.qk_gain_init)
            if attn.gated:
                nn.init.zeros_(attn.attn_gate_w)
                attn.attn_gate_b.fill_(GATE_BIAS_INIT)
            if attn.value_residual:
                attn.vr_lambda.fill_(0.5)
            block.attn_scale.fill_(1.0)
            block.mlp_scale.fill_(1.0)
            block.resid_mix[: self.model_dim].fill_(1.0)
            block.resid_mix[self.model_dim:].fill_(0.0)

    # ---------------------------------------------------------------- weights
    def _raw_layer_weights(self, i: int):
        """(c_q, c_k, c_v, proj, fc, mlp.proj) of layer i: parameters or bank slices (views, gradients flow)."""
        if self.banked:
            L = self.num_layers
            return tuple(getattr(self, bank)[part * L + i] for _s, bank, part in LAYER_MATRICES)
        b = self.blocks[i]
        return (b.attn.c_q.weight, b.attn.c_k.weight, b.attn.c_v.weight, b.attn.proj.weight,
                b.mlp.fc.weight, b.mlp.proj.weight)

    def _q(self, name: str, w: torch.Tensor) -> torch.Tensor:
        bits = self._qat_bits.get(name, 0)
        if bits:
            return fake_quantize(w, bits, self._qat_clip, self._qat_search)
        return w

    def _layer_weights(self, i: int):
        return tuple(self._q(n, w) for n, w in zip(self._layer_names[i], self._raw_layer_weights(i)))

    def _export_views(self) -> dict:
        """{export name: tensor} in natural name order; bank entries are views into the banks."""
        out = {name: p for name, p in self.named_parameters() if name not in BANK_NAMES}
        if self.banked:
            for i in range(self.num_layers):
                out.update(zip(self._layer_names[i], self._raw_layer_weights(i)))
        return {k: out[k] for k in sorted(out, key=_natural_key)}

    # ---------------------------------------------------------------- forward
    def _hidden(self, input_ids: torch.Tensor):
        """Final normed hidden states [B, T, d] and the (maybe fake-quantized) tied embedding."""
        if input_ids.ndim != 2:
            raise PgolfError(f"GPT input: expected token ids of shape [batch, seq], got shape {tuple(input_ids.shape)}")
        dt = torch.bfloat16 if input_ids.is_cuda else torch.float32
        obs = self.activation_observer
        emb_w = self._q("tok_emb.weight", self.tok_emb.weight)
        x = F.embedding(input_ids, emb_w).to(dt)
        if self.bigram is not None:
            x = x + self.bigram(input_ids, self._q("bigram.embed.weight", self.bigram.embed.weight),
                                self._q("bigram.proj.weight", self.bigram.proj.weight), self.bos_id, dt, obs)
        x = rms_norm(x)
        if self.smear is not None:
            x = self.smear(x, input_ids, self.bos_id)
        x0 = x
        cos, sin = self.rotary(input_ids.shape[1], input_ids.device)
        ve_base = None
        if self.ve is not None:
            ve_base = self.ve(input_ids, self._q("ve.embed.weight", self.ve.embed.weight),
                              self._q("ve.proj.weight", self.ve.proj.weight), dt, obs)
        skip_w = self.skip_weights.to(dt).view(self.num_skips, -1) if self.num_skips else None
        skips = []
        v0 = None
        for i, block in enumerate(self.blocks):
            j = i - self.num_encoder
            if 0 <= j < self.num_skips and skips:
                x = x + skip_w[j] * skips.pop()
            ve = None
            if i in self.ve_layers:
                ve = ve_base * self.ve_layer_scales[self.ve_layers.index(i)].to(dt)
            x, raw_v = block(x, x0, self._layer_weights(i), cos, sin, self.attn_backend, ve=ve, v0=v0,
                             names=self._layer_names[i], observe=obs)
            if i == 0:
                v0 = raw_v
            if i < self.num_encoder and self.num_skips:
                skips.append(x)
        x = rms_norm(x)
        if obs is not None:
            obs("tok_emb.weight" if self.tied else "lm_head.weight", x)
        return x, emb_w

    def _logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=input_ids.is_cuda):
            x, emb_w = self._hidden(input_ids)
            head_w = emb_w if self.tied else self._q("lm_head.weight", self.lm_head.weight)
            logits = F.linear(x, head_w.to(x.dtype)).float()
        if self.logit_softcap > 0:
            logits = self.logit_softcap * torch.tanh(logits / self.logit_softcap)
        return logits

    def forward_logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        """[B, T, V] fp32 logits after the softcap."""
        return self._logits(input_ids)

    def token_nll(self, input_ids: torch.Tensor, target_ids: torch.Tensor) -> torch.Tensor:
        """[B, T] fp32 per-token negative log-likelihood of target_ids."""
        logits = self._logits(input_ids)
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target_ids.reshape(-1), reduction="none")
        return nll.view(target_ids.shape)

    def forward(self, input_ids: torch.Tensor, target_ids: torch.Tensor) -> torch.Tensor:
        """Scalar mean cross-entropy (fp32) over all B*T targets."""
        logits = self._logits(input_ids)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target_ids.reshape(-1))

    # ---------------------------------------------------------------- export / load
    def export_state_dict(self) -> dict:
        """Detached copies of all parameters under the standard per-layer names (banks unbanked), natural order."""
        return {k: v.detach().clone() for k, v in self._export_views().items()}

    @torch.no_grad()
    def load_export_state_dict(self, sd: dict) -> None:
        """Load tensors named as export_state_dict() (banked or not); exact names and shapes are required."""
        views = self._export_views()
        missing = [k for k in views if k not in sd]
        extra = [k for k in sd if k not in views]
        if missing or extra:
            raise PgolfError(
                f"model state dict: expected the {len(views)} export names of this config, got "
                f"missing {missing[:4]}{'...' if len(missing) > 4 else ''}, unexpected {extra[:4]}{'...' if len(extra) > 4 else ''}"
            )
        for k, v in views.items():
            src = sd[k]
            if tuple(src.shape) != tuple(v.shape):
                raise PgolfError(f"model state dict: {k} expected shape {tuple(v.shape)}, got {tuple(src.shape)}")
        for k, v in views.items():
            v.copy_(sd[k].to(device=v.device, dtype=v.dtype))

    # ---------------------------------------------------------------- optimizer groups
    def _group_of(self, name: str) -> str:
        if name in BANK_NAMES or name.endswith(("attn.c_q.weight", "attn.c_k.weight", "attn.c_v.weight",
                                                "attn.proj.weight", "mlp.fc.weight", "mlp.proj.weight")):
            return "matrix"
        if name in ("bigram.proj.weight", "ve.proj.weight"):
            return "matrix"
        if name in ("tok_emb.weight", "lm_head.weight", "bigram.embed.weight", "ve.embed.weight"):
            return "embedding"
        return "scalar"

    def _group(self, group: str) -> list:
        return [p for n, p in self.named_parameters() if self._group_of(n) == group]

    def matrix_params(self) -> list:
        """Muon: per-layer attention/MLP matrices (or the four 3-D banks) and the bigram/VE projections."""
        return self._group("matrix")

    def embedding_params(self) -> list:
        """Adam: tok_emb, bigram and VE tables, and lm_head when untied (compare with model.lm_head.weight to give
        it HEAD_LR)."""
        return self._group("embedding")

    def scalar_params(self) -> list:
        """Adam: every control vector (scales, gates, q_gain, resid_mix, skip weights, vr_lambda, attn gate)."""
        return self._group("scalar")

    # ---------------------------------------------------------------- QAT
    def set_qat(self, bits_by_name, clip_pct=None, search=None) -> None:
        """Fake-quantize (straight-through) the named matrices in every forward, or turn QAT off with None/{}.

        Names are export names (e.g. "blocks.3.mlp.fc.weight", "tok_emb.weight"); bits 2..8 (0 = leave alone).
        """
        bits_by_name = dict(bits_by_name or {})
        views = self._export_views()
        for name, bits in bits_by_name.items():
            if name not in views or views[name].ndim != 2:
                raise PgolfError(f"set_qat: expected 2-D matrices named as in export_state_dict(), got {name!r}")
            if not isinstance(bits, int) or not (bits == 0 or 2 <= bits <= 8):
                raise PgolfError(f"set_qat: bits for {name} expected 0 or 2..8, got {bits!r}")
        self._qat_bits = {k: v for k, v in bits_by_name.items() if v}
        self._qat_clip = clip_pct
        self._qat_search = tuple(search) if search else None

    @property
    def qat_active(self) -> bool:
        return bool(self._qat_bits)
