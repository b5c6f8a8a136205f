"""Process-group setup and the few collectives the trainer uses.

Under torchrun (RANK/WORLD_SIZE/LOCAL_RANK set) this joins a process group: NCCL on CUDA, gloo on CPU.
Without torchrun it is a plain single process and every collective below is a no-op, so callers never branch.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from trainer.errors import PgolfError


class DistError(PgolfError):
    """A torchrun environment or device request that cannot be honoured."""


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str = ""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _dist_env_int(env, name: str, default: int) -> int:
    raw = env.get(name, "")
    if raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise DistError(f"environment variable {name}: expected an integer, got {raw!r}") from None


def select_device(requested: str, local_rank: int = 0) -> torch.device:
    """Resolve DEVICE (auto, cuda, cpu) to a torch.device; cuda:LOCAL_RANK under torchrun."""
    if requested not in ("auto", "cuda", "cpu"):
        raise DistError(f"DEVICE: expected auto, cuda or cpu, got {requested!r}")
    has_cuda = torch.cuda.is_available()
    if requested == "cuda" and not has_cuda:
        raise DistError("DEVICE=cuda: expected a CUDA device, but torch.cuda.is_available() is False")
    if requested == "cpu" or not has_cuda:
        return torch.device("cpu")
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise DistError(f"LOCAL_RANK={local_rank}: expected < the {count} visible CUDA device(s)")
    return torch.device("cuda", local_rank)


def init_distributed(h, env=None) -> DistContext:
    """Join torchrun's process group if present; pick the device from h.device."""
    env = os.environ if env is None else env
    world_size = _dist_env_int(env, "WORLD_SIZE", 1)
    rank = _dist_env_int(env, "RANK", 0)
    local_rank = _dist_env_int(env, "LOCAL_RANK", 0)
    if world_size < 1 or not 0 <= rank < world_size:
        raise DistError(f"torchrun environment: expected 0 <= RANK < WORLD_SIZE, got RANK={rank} WORLD_SIZE={world_size}")
    device = select_device(h.device, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world_size == 1:
        return DistContext(0, 1, local_rank, device, "")
    if not dist.is_available():
        raise DistError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        kwargs = dict(backend=backend, rank=rank, world_size=world_size, timeout=datetime.timedelta(minutes=30))
        if device.type == "cuda":
            kwargs["device_id"] = device  # binds NCCL to this GPU and lets it connect eagerly
        dist.init_process_group(**kwargs)
    return DistContext(rank, world_size, local_rank, device, backend)


def dist_active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def dist_world_size() -> int:
    return dist.get_world_size() if dist_active() else 1


def dist_rank() -> int:
    return dist.get_rank() if dist_active() else 0


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum t over ranks in place (no-op single process); returns t."""
    if dist_active():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_max(t: torch.Tensor) -> torch.Tensor:
    if dist_active():
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t


def all_reduce_mean_(tensors) -> None:
    """Average a list of tensors over ranks in place, coalesced into one flat buffer per dtype.

    Sum then divide (not ReduceOp.AVG) so gloo and NCCL compute the same thing, in rank order.
    """
    ws = dist_world_size()
    if ws == 1:
        return
    by_dtype = {}
    for t in tensors:
        by_dtype.setdefault((t.dtype, t.device), []).append(t)
    for group in by_dtype.values():
        flat = torch.cat([t.reshape(-1) for t in group])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat.div_(ws)
        offset = 0
        for t in group:
            n = t.numel()
            t.copy_(flat[offset:offset + n].view_as(t))
            offset += n


def reduce_scatter_mean(out: torch.Tensor, inp: torch.Tensor, async_op: bool = False):
    """out = this rank's dim-0 slice of the rank-mean of inp (inp.shape[0] == world_size * out.shape[0])."""
    fn = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
    return fn(out, inp, op=dist.ReduceOp.AVG, async_op=async_op)


def all_gather_dim0(out: torch.Tensor, inp: torch.Tensor, async_op: bool = False):
    """out = concatenation along dim 0 of every rank's inp."""
    fn = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
    return fn(out, inp, async_op=async_op)


def broadcast_from_main(t: torch.Tensor) -> torch.Tensor:
    if dist_active():
        dist.broadcast(t, src=0)
    return t


def barrier() -> None:
    if dist_active():
        dist.barrier()


def shutdown() -> None:
    """Leave the process group (safe to call when none was joined)."""
    if dist.is_available() and dist.is_initialized():
        # leave together: a rank that destroys its gloo group while a peer still talks to it can abort the peer
        # ("terminate called without an active exception", seen under load on a 2-core machine)
        dist.barrier()
        dist.destroy_process_group()
