"""The optimizer set of a run (Muon for block matrices, AdamW for embeddings and scalars) and the LR schedule.

`Optimizers.step(step, lr_scale)` does everything between backward and the next forward: gradient averaging across
ranks (coalesced all-reduce; reduce-scatter for distributed-Muon banks), global-norm clipping, momentum warm-up,
LR scaling, and the parameter updates. It never synchronizes with the host on CUDA.
"""

from __future__ import annotations

import copy

import torch

from trainer.distributed import all_reduce_mean_, all_reduce_sum, dist_world_size
from trainer.errors import PgolfError
from trainer.muon import Muon


def muon_momentum_at(step: int, h) -> float:
    """Linear warm-up MUON_MOMENTUM_WARMUP_START -> MUON_MOMENTUM over MUON_MOMENTUM_WARMUP_STEPS (as the records)."""
    n = h.muon_momentum_warmup_steps
    frac = min(step / n, 1.0) if n > 0 else 1.0
    return (1.0 - frac) * h.muon_momentum_warmup_start + frac * h.muon_momentum


def lr_scale(step: int, elapsed_ms: float, h) -> float:
    """LR multiplier for optimizer step `step` after `elapsed_ms` of training time.

    Linear warm-up over LR_WARMUP_STEPS, then the records' warm-down: with a wallclock cap it is time-based
    (warmdown_ms = WARMDOWN_ITERS x the average step time so far; scale = remaining/warmdown_ms once the remaining
    time is within it), without one it is the last WARMDOWN_ITERS of ITERATIONS. The cap is h.max_wallclock_seconds
    as given: a caller reserving time for later training-phase work passes an h with the reduced cap.
    """
    warm = 1.0
    if h.lr_warmup_steps > 0 and step < h.lr_warmup_steps:
        warm = (step + 1) / h.lr_warmup_steps
    down = 1.0
    if h.warmdown_iters > 0:
        if h.max_wallclock_seconds <= 0:
            start = max(h.iterations - h.warmdown_iters, 0)
            if start <= step < h.iterations:
                down = max((h.iterations - step) / max(h.warmdown_iters, 1), 0.0)
            elif step >= h.iterations:
                down = 0.0
        else:
            step_ms = elapsed_ms / max(step, 1)
            warmdown_ms = h.warmdown_iters * step_ms
            remaining_ms = max(1000.0 * h.max_wallclock_seconds - elapsed_ms, 0.0)
            if remaining_ms <= warmdown_ms:
                down = remaining_ms / max(warmdown_ms, 1e-9)
    return min(warm, down)


def _optim_named_ids(model) -> dict:
    return {id(p): name for name, p in model.named_parameters()}


def _optim_param_groups(model, h) -> tuple:
    """(matrix params, adam group dicts) from the model's grouping methods, validated: each trainable param once."""
    for meth in ("matrix_params", "embedding_params", "scalar_params"):
        if not callable(getattr(model, meth, None)):
            raise PgolfError(f"build_optimizers: the model must define {meth}() (see docs/architecture.md), "
                             f"{type(model).__name__} does not")
    names = _optim_named_ids(model)
    matrices = list(model.matrix_params())
    embeds = list(model.embedding_params())
    scalars = list(model.scalar_params())
    seen = {}
    for group, params in (("matrix_params", matrices), ("embedding_params", embeds), ("scalar_params", scalars)):
        for p in params:
            name = names.get(id(p), f"<unnamed {tuple(p.shape)}>")
            if id(p) in seen:
                raise PgolfError(f"build_optimizers: parameter {name} is returned by both {seen[id(p)]}() and {group}()")
            seen[id(p)] = group
    missing = [name for name, p in model.named_parameters() if p.requires_grad and id(p) not in seen]
    if missing:
        raise PgolfError(f"build_optimizers: trainable parameters in no optimizer group: {', '.join(missing[:8])}"
                         + (f" (+{len(missing) - 8} more)" if len(missing) > 8 else ""))
    adam_groups = []
    if h.tie_embeddings:
        heads = [names.get(id(p), "") for p in embeds if names.get(id(p), "").startswith("lm_head")]
        if heads:
            raise PgolfError(f"build_optimizers: TIE_EMBEDDINGS=1 but the model has a separate output head {heads[0]}")
        adam_groups.append(dict(name="embed", params=list(embeds), lr=h.tied_embed_lr))
    else:
        head = [p for p in embeds if names.get(id(p), "").startswith("lm_head")]
        tok = [p for p in embeds if not names.get(id(p), "").startswith("lm_head")]
        adam_groups.append(dict(name="embed", params=tok, lr=h.embed_lr))
        adam_groups.append(dict(name="head", params=head, lr=h.head_lr))
    adam_groups.append(dict(name="scalar", params=scalars, lr=h.scalar_lr))
    adam_groups = [g for g in adam_groups if g["params"]]
    for g in adam_groups:
        g["base_lr"] = g["lr"]
    return matrices, adam_groups


class Optimizers:
    """Muon + AdamW driven together. `sync_grads=False` when gradients are already averaged (e.g. under DDP)."""

    def __init__(self, muon, adam, params, h, world_size: int = 1, sync_grads: bool = True):
        self.muon, self.adam, self.h = muon, adam, h
        self.params = list(params)
        self.world_size = world_size
        self.sync_grads = sync_grads
        self.last_grad_norm = None  # device tensor (pre-clip global norm) when GRAD_CLIP_NORM > 0
        self._sharded_ids = {id(p) for p in muon.sharded_params()} if muon is not None else set()

    @property
    def optimizers(self) -> list:
        return [o for o in (self.muon, self.adam) if o is not None]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def _replicated(self) -> list:
        return [p for p in self.params if id(p) not in self._sharded_ids]

    def _sync(self) -> None:
        # Distributed-Muon banks are always reduce-scattered: each rank needs its slice of the mean gradient.
        if self._sharded_ids:
            self.muon.launch_reduce_scatters()  # async: overlaps the all-reduce below
        if self.world_size > 1 and self.sync_grads:
            grads = []
            for p in self._replicated():
                if p.grad is None:  # unused this step; every rank must still contribute the same tensor list
                    p.grad = torch.zeros_like(p)
                grads.append(p.grad)
            all_reduce_mean_(grads)
        if self._sharded_ids:
            self.muon.wait_reduce_scatters()

    def _clip(self, max_norm: float) -> None:
        grads = [p.grad for p in self._replicated() if p.grad is not None]
        parts = [torch.stack([n.float() for n in torch._foreach_norm(grads)]).square().sum()] if grads else []
        shard_sq = self.muon.shard_grad_sq_sum() if self.muon is not None else None
        if shard_sq is not None:
            parts.append(all_reduce_sum(shard_sq))  # bank slices are disjoint across ranks: sum them
        if not parts:
            return
        norm = torch.stack([t.to(parts[0].device) for t in parts]).sum().sqrt()
        coef = (max_norm / (norm + 1e-6)).clamp(max=1.0)
        if grads:
            torch._foreach_mul_(grads, coef)
        if shard_sq is not None:
            self.muon.scale_shard_grads_(coef)
        self.last_grad_norm = norm

    def step(self, step: int, lr_scale: float) -> None:
        self._sync()
        if self.h.grad_clip_norm > 0:
            self._clip(self.h.grad_clip_norm)
        for o in self.optimizers:
            for g in o.param_groups:
                g["lr"] = g["base_lr"] * lr_scale
        if self.muon is not None:
            mom = muon_momentum_at(step, self.h)
            for g in self.muon.param_groups:
                g["momentum"] = mom
        for o in self.optimizers:
            o.step()

    def state_dict(self) -> dict:
        """A deep copy: later steps do not change a snapshot taken now."""
        return copy.deepcopy({"muon": self.muon.state_dict() if self.muon is not None else None,
                              "adam": self.adam.state_dict() if self.adam is not None else None})

    def load_state_dict(self, sd: dict) -> None:
        sd = copy.deepcopy(sd)  # the optimizers must not alias (and then mutate) the caller's snapshot
        for key, o in (("muon", self.muon), ("adam", self.adam)):
            if (sd.get(key) is None) != (o is None):
                raise PgolfError(f"Optimizers.load_state_dict: state for {key!r} does not match this optimizer set")
            if o is not None:
                o.load_state_dict(sd[key])


def build_optimizers(model, h, ctx=None, sync_grads: bool = True) -> Optimizers:
    """Muon over model.matrix_params(); AdamW over embedding_params() (tied/embed/head LRs) and scalar_params()."""
    matrices, adam_groups = _optim_param_groups(model, h)
    world_size = ctx.world_size if ctx is not None else dist_world_size()
    muon = None
    if matrices:
        if h.distributed_muon and not any(p.ndim == 3 for p in matrices):
            raise PgolfError("DISTRIBUTED_MUON=1: expected 3-D parameter banks (PARAM_BANKS=1) among "
                             "model.matrix_params(), got only 2-D matrices")
        muon = Muon(matrices, lr=h.matrix_lr, momentum=h.muon_momentum, nesterov=True,
                    backend_steps=h.muon_backend_steps, weight_decay=h.muon_wd, distributed=bool(h.distributed_muon))
        for g in muon.param_groups:
            g["base_lr"] = g["lr"]
    adam = None
    if adam_groups:
        on_cuda = all(p.is_cuda for g in adam_groups for p in g["params"])
        adam = torch.optim.AdamW(adam_groups, betas=(h.beta1, h.beta2), eps=h.adam_eps, weight_decay=h.adam_wd,
                                 fused=True if on_cuda else None)
    params = [p for p in model.parameters() if p.requires_grad]
    return Optimizers(muon, adam, params, h, world_size=world_size, sync_grads=sync_grads)
