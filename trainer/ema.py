"""Weight averaging: an exponential moving average (EMA) and a uniform snapshot average (SWA), both fp32 shadows.

Why the EMA decay warms up: with a fixed decay d the average keeps weight d^N on the initial (random) weights after N
updates. 0.997^390 = 0.31, so a 390-step run with fixed 0.997 scored an average that was one third random init
(2.17 -> 6.8 bpb). With warm-up, update t uses min(d, (1+t)/(10+t)); the init's weight after N updates is then the
telescoping product 9! N! / (N+9)!, about 9!/N^9 (1.6e-18 at N=390).
"""

from __future__ import annotations

import math

import torch

from trainer.errors import PgolfError


def ema_decay_at(t: int, decay: float, warmup: bool = True) -> float:
    """Decay used by the (t+1)-th update (t = updates already done)."""
    return min(decay, (1.0 + t) / (10.0 + t)) if warmup else decay


def ema_init_weight(n_updates: int, decay: float, warmup: bool = True) -> float:
    """Weight the EMA puts on the weights it was initialized from after n_updates updates."""
    if not warmup:
        return decay ** n_updates
    log_w = sum(math.log(ema_decay_at(t, decay, True)) for t in range(n_updates))
    return math.exp(log_w)


def _ema_float_state(model) -> dict:
    return {k: v for k, v in model.state_dict().items() if v.is_floating_point()}


class WeightEMA:
    """fp32 EMA of every floating-point tensor of model.state_dict(); update() after each optimizer step."""

    def __init__(self, model, decay: float, warmup: bool = True):
        if not 0.0 <= decay < 1.0:
            raise PgolfError(f"EMA_DECAY: expected 0 <= decay < 1, got {decay}")
        self.decay = decay
        self.warmup = warmup
        self.reset(model)

    def reset(self, model) -> None:
        """Restart the average at the model's current weights (e.g. when QAT switches on)."""
        live = _ema_float_state(model)
        self._names = list(live)
        self.shadow = {k: v.detach().float().clone() for k, v in live.items()}
        self._shadow_list = [self.shadow[k] for k in self._names]
        self.num_updates = 0

    def current_decay(self) -> float:
        return ema_decay_at(self.num_updates, self.decay, self.warmup)

    @torch.no_grad()
    def update(self, model) -> None:
        """shadow <- d*shadow + (1-d)*weights; call after each optimizer step."""
        sd = model.state_dict()  # read fresh each time: .to()/load_state_dict may swap the tensors behind params
        live = [sd[k] for k in self._names]
        d = self.current_decay()
        torch._foreach_lerp_(self._shadow_list, [t.float() for t in live], 1.0 - d)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, model) -> None:
        """Overwrite the model's floating-point tensors with the average (cast to each tensor's dtype)."""
        _ema_copy_shadow(self.shadow, model, "EMA")

    def state_dict(self) -> dict:
        return {"decay": self.decay, "warmup": self.warmup, "num_updates": self.num_updates,
                "shadow": {k: v.clone() for k, v in self.shadow.items()}}

    def load_state_dict(self, sd: dict) -> None:
        if set(sd["shadow"]) != set(self.shadow):
            raise PgolfError("WeightEMA.load_state_dict: tensor names differ from the model this EMA tracks")
        for k, v in sd["shadow"].items():
            self.shadow[k].copy_(v)
        self.decay, self.warmup, self.num_updates = sd["decay"], sd["warmup"], sd["num_updates"]


def _ema_copy_shadow(shadow: dict, model, what: str) -> None:
    target = model.state_dict()
    missing = [k for k in shadow if k not in target]
    if missing:
        raise PgolfError(f"{what}.copy_to: the model has no tensor named {missing[0]} (expected the averaged model's names)")
    for k, v in shadow.items():
        target[k].copy_(v.to(target[k].dtype))


class WeightSWA:
    """Uniform average of weight snapshots (fp32 sums). The records' "tight SWA" snapshotted every 50 steps once the
    LR scale fell below 0.2 and then never applied the average; here copy_to() applies it. `model` fixes the tensor
    names; update(model) takes a snapshot, maybe_update() takes one only when due."""

    def __init__(self, model, every: int = 50, start_scale: float = 0.2):
        if every < 1:
            raise PgolfError(f"SWA_EVERY: expected >= 1, got {every}")
        self.every = every
        self.start_scale = start_scale
        self._names = list(_ema_float_state(model))
        self.sum = None
        self.count = 0

    def should_snapshot(self, step: int, lr_scale: float) -> bool:
        """Due when the LR scale is below start_scale and `step` (steps completed) is a multiple of `every`."""
        return lr_scale < self.start_scale and step % self.every == 0

    @torch.no_grad()
    def update(self, model) -> None:
        live = _ema_float_state(model)
        if self.sum is None:
            self.sum = {k: live[k].detach().float().clone() for k in self._names}
        else:
            torch._foreach_add_([self.sum[k] for k in self._names], [live[k].float() for k in self._names])
        self.count += 1

    def maybe_update(self, model, step: int, lr_scale: float) -> bool:
        """Snapshot when due; returns whether a snapshot was taken."""
        if self.should_snapshot(step, lr_scale):
            self.update(model)
            return True
        return False

    def average(self) -> dict:
        if not self.count:
            raise PgolfError("SWA: no snapshots were taken (the run never reached the SWA window); nothing to apply")
        return {k: v / self.count for k, v in self.sum.items()}

    @torch.no_grad()
    def copy_to(self, model) -> None:
        _ema_copy_shadow(self.average(), model, "SWA")
