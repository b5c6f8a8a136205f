"""Muon: momentum SGD whose update is orthogonalized by a Newton-Schulz iteration.

Parameters are 2-D matrices or 3-D banks (a stack of same-shape matrices along dim 0, one per layer); a bank is
orthogonalized matrix by matrix in one batched call. With `distributed=True` and more than one rank, each bank's
gradient is reduce-scattered (mean) along dim 0, every rank runs momentum + Newton-Schulz on its own slice only,
and the updates are all-gathered: the Newton-Schulz work is split across ranks instead of repeated on each.
Non-bank (2-D) parameters are expected to arrive with gradients already averaged across ranks (trainer.optim does it).
"""

from __future__ import annotations

import torch

from trainer.distributed import all_gather_dim0, dist_world_size, reduce_scatter_mean
from trainer.errors import PgolfError

# Quintic Newton-Schulz coefficients tuned (Keller Jordan) to push all singular values towards ~1 in 5 steps.
NS_COEFFS = (3.4445, -4.7750, 2.0315)


def newton_schulz5(G: torch.Tensor, steps: int = 5, eps: float = 1e-7) -> torch.Tensor:
    """Approximate the orthogonal polar factor U V^T of G (2-D, or batched over leading dims).

    bf16 on CUDA (fast, what the records use); fp32 elsewhere so CPU runs are deterministic and exact enough.
    Works on the wide orientation (rows <= cols) so the Gram matrix X X^T is the small one.
    """
    if G.ndim < 2:
        raise PgolfError(f"newton_schulz5: expected a matrix or a batch of matrices, got shape {tuple(G.shape)}")
    a, b, c = NS_COEFFS
    X = G.bfloat16() if G.is_cuda else G.float()
    transposed = G.size(-2) > G.size(-1)
    if transposed:
        X = X.mT
    # Frobenius normalization puts every singular value in [0, 1], inside the iteration's basin.
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + eps)
    for _ in range(steps):
        A = X @ X.mT
        B = b * A + c * (A @ A)
        X = a * X + B @ X
    if transposed:
        X = X.mT
    return X


def muon_update_scale(shape) -> float:
    """max(1, rows/cols)^0.5: keeps the RMS of tall-matrix updates comparable to wide ones."""
    rows, cols = shape[-2], shape[-1]
    return max(1.0, rows / cols) ** 0.5


class Muon(torch.optim.Optimizer):
    def __init__(self, params, lr: float, momentum: float = 0.95, nesterov: bool = True, backend_steps: int = 5,
                 weight_decay: float = 0.0, distributed: bool = False):
        if lr < 0 or not 0.0 <= momentum < 1.0 or backend_steps < 1 or weight_decay < 0:
            raise PgolfError(f"Muon: expected lr >= 0, 0 <= momentum < 1, backend_steps >= 1, weight_decay >= 0; "
                             f"got lr={lr} momentum={momentum} backend_steps={backend_steps} weight_decay={weight_decay}")
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, backend_steps=backend_steps,
                        weight_decay=weight_decay)
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                if p.ndim not in (2, 3):
                    raise PgolfError(f"Muon: expected 2-D matrices or 3-D banks, got a parameter of shape {tuple(p.shape)}")
        self.distributed = distributed
        self._shard_grads = {}  # bank -> this rank's slice of the rank-mean gradient (sharded mode)
        self._comm = []  # (bank, padded grad buffer, shard buffer, work handle) of in-flight reduce-scatters

    # ----- sharded-bank bookkeeping ------------------------------------------------------------
    def sharded(self) -> bool:
        return self.distributed and dist_world_size() > 1

    def sharded_params(self) -> list:
        """Banks whose gradients this optimizer averages itself (reduce-scatter); empty unless sharded."""
        if not self.sharded():
            return []
        return [p for g in self.param_groups for p in g["params"] if p.ndim == 3]

    @staticmethod
    def _comm_dtype(p: torch.Tensor) -> torch.dtype:
        # bf16 gradients on the wire halve NCCL traffic (as the records); fp32 on CPU keeps gloo runs exact.
        return torch.bfloat16 if p.is_cuda else torch.float32

    def launch_reduce_scatters(self) -> None:
        """Start async mean-reduce-scatters of every bank gradient along dim 0, biggest bank first."""
        ws = dist_world_size()
        banks = sorted(self.sharded_params(), key=lambda t: -t.numel())
        for p in banks:
            g = p.grad if p.grad is not None else torch.zeros_like(p)
            n = g.shape[0]
            per = -(-n // ws)
            buf = torch.zeros((per * ws,) + tuple(g.shape[1:]), dtype=self._comm_dtype(p), device=g.device)
            buf[:n].copy_(g)
            shard = torch.empty((per,) + tuple(g.shape[1:]), dtype=buf.dtype, device=g.device)
            work = reduce_scatter_mean(shard, buf, async_op=True)
            self._comm.append((p, buf, shard, work))

    def wait_reduce_scatters(self) -> None:
        for p, _buf, shard, work in self._comm:
            work.wait()
            self._shard_grads[p] = shard.float()
        self._comm = []

    def shard_grad_sq_sum(self):
        """Sum of squared entries of this rank's bank-gradient slices (a device tensor), or None."""
        shards = list(self._shard_grads.values())
        if not shards:
            return None
        return torch.stack([s.square().sum() for s in shards]).sum()

    def scale_shard_grads_(self, coef: torch.Tensor) -> None:
        for s in self._shard_grads.values():
            s.mul_(coef)

    # ----- the step ----------------------------------------------------------------------------
    @staticmethod
    def _momentum(state, g, momentum, nesterov):
        buf = state.get("momentum_buffer")
        if buf is None:
            buf = state["momentum_buffer"] = torch.zeros_like(g, dtype=torch.float32)
        buf.mul_(momentum).add_(g)
        return g.add(buf, alpha=momentum) if nesterov else buf

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self._comm:
            self.wait_reduce_scatters()
        sharded = self.sharded()
        gathers = []  # all-gathers of bank updates run while the replicated matrices are orthogonalized
        for group in self.param_groups:
            lr, mom, nesterov = group["lr"], group["momentum"], group["nesterov"]
            wd, steps = group["weight_decay"], group["backend_steps"]
            # Same-shape replicated parameters are orthogonalized together in one batched call.
            batches = {}
            for p in group["params"]:
                if sharded and p.ndim == 3:
                    gathers.append(self._launch_sharded_bank(p, lr, mom, nesterov, wd, steps))
                    continue
                if p.grad is None:
                    continue
                g = self._momentum(self.state[p], p.grad.float(), mom, nesterov)
                batches.setdefault(tuple(p.shape), []).append((p, g))
            for shape, items in batches.items():
                if len(items) == 1:
                    updates = [newton_schulz5(items[0][1], steps)]
                elif len(shape) == 2:
                    updates = list(newton_schulz5(torch.stack([g for _, g in items]), steps).unbind(0))
                else:
                    updates = list(newton_schulz5(torch.cat([g for _, g in items]), steps).split(shape[0]))
                scale = muon_update_scale(shape)
                for (p, _g), u in zip(items, updates):
                    _muon_apply(p, u, lr, wd, scale)
        for p, full, work, lr, wd in gathers:
            work.wait()
            _muon_apply(p, full[: p.shape[0]], lr, wd, muon_update_scale(p.shape))
        self._shard_grads = {}
        return loss

    def _launch_sharded_bank(self, p, lr, mom, nesterov, wd, steps):
        g = self._shard_grads.get(p)
        if g is None:
            raise PgolfError("Muon(distributed): step() on a bank whose gradient was not reduce-scattered; "
                             "call launch_reduce_scatters() after backward (trainer.optim.Optimizers.step does)")
        u = newton_schulz5(self._momentum(self.state[p], g, mom, nesterov), steps).contiguous()
        full = torch.empty((g.shape[0] * dist_world_size(),) + tuple(g.shape[1:]), dtype=u.dtype, device=u.device)
        work = all_gather_dim0(full, u, async_op=True)
        return p, full, work, lr, wd


def _muon_apply(p: torch.Tensor, u: torch.Tensor, lr: float, wd: float, scale: float) -> None:
    """Decoupled weight decay (p *= 1 - lr*wd), then p -= lr * scale * update."""
    if wd > 0:
        p.mul_(1.0 - lr * wd)
    p.add_(u.to(p.dtype), alpha=-lr * scale)
