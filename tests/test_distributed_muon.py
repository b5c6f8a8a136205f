"""Two gloo ranks under torchrun must train a banked model to the same weights as one process on the same global batch.

The test launches this file under `torch.distributed.run` (so init_distributed reads RANK/WORLD_SIZE/LOCAL_RANK
exactly as in a real run); each rank writes its final weights, which are compared with an in-process reference.
"""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from trainer.config import Hyperparameters  # noqa: E402
from trainer.distributed import init_distributed, shutdown  # noqa: E402
from trainer.optim import build_optimizers, lr_scale  # noqa: E402

VOCAB, DIM, LAYERS, BATCH, SEQ, STEPS = 32, 16, 3, 8, 12, 6

# Scenarios: (name, overrides). LAYERS=3 banks over 2 ranks exercise the dim-0 padding.
SCENARIOS = {
    "dist_muon": dict(distributed_muon=1, muon_wd=0.05, adam_wd=0.01, grad_clip_norm=0.0),
    "dist_muon_clip": dict(distributed_muon=1, muon_wd=0.0, grad_clip_norm=0.05),
    "allreduce_clip": dict(distributed_muon=0, muon_wd=0.05, grad_clip_norm=0.05),
}


class ToyBanked(nn.Module):
    """Embedding, a residual stack whose up/down matrices live in 3-D banks, one 2-D matrix, scalars, tied head."""

    def __init__(self):
        super().__init__()
        self.tok_emb = nn.Embedding(VOCAB, DIM)
        self.up_bank = nn.Parameter(torch.randn(LAYERS, 2 * DIM, DIM) / math.sqrt(DIM))  # tall: rows > cols
        self.down_bank = nn.Parameter(torch.randn(LAYERS, DIM, 2 * DIM) / math.sqrt(2 * DIM))  # wide
        self.mix = nn.Parameter(torch.randn(DIM, DIM) / math.sqrt(DIM))
        self.scales = nn.Parameter(torch.ones(LAYERS, DIM))

    def forward(self, ids, targets):
        x = self.tok_emb(ids)
        for i in range(LAYERS):
            x = x + self.scales[i] * F.linear(F.relu(F.linear(x, self.up_bank[i])).square(), self.down_bank[i])
        x = F.rms_norm(F.linear(x, self.mix), (DIM,))
        logits = F.linear(x, self.tok_emb.weight)
        return F.cross_entropy(logits.float().reshape(-1, VOCAB), targets.reshape(-1))

    def matrix_params(self):
        return [self.up_bank, self.down_bank, self.mix]

    def embedding_params(self):
        return [self.tok_emb.weight]

    def scalar_params(self):
        return [self.scales]


def toy_hparams(**overrides) -> Hyperparameters:
    h = Hyperparameters.resolve(env={})
    base = dict(device="cpu", iterations=STEPS, warmdown_iters=3, lr_warmup_steps=2, max_wallclock_seconds=0.0,
                matrix_lr=0.05, scalar_lr=0.04, tied_embed_lr=0.05, muon_momentum=0.95,
                muon_momentum_warmup_start=0.85, muon_momentum_warmup_steps=4)
    base.update(overrides)
    return dataclasses.replace(h, **base)


def train_toy(h, ctx) -> dict:
    """STEPS optimizer steps; this rank computes the mean loss of its slice of each global batch."""
    torch.manual_seed(0)
    model = ToyBanked()
    opt = build_optimizers(model, h, ctx)
    gen = torch.Generator().manual_seed(1)
    for step in range(STEPS):
        x = torch.randint(0, VOCAB, (BATCH, SEQ), generator=gen)
        y = torch.randint(0, VOCAB, (BATCH, SEQ), generator=gen)
        rows = slice(ctx.rank * BATCH // ctx.world_size, (ctx.rank + 1) * BATCH // ctx.world_size)
        model(x[rows], y[rows]).backward()
        opt.step(step, lr_scale(step, 0.0, h))
        opt.zero_grad(set_to_none=True)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _worker_main(out_dir: str) -> None:
    torch.set_num_threads(1)
    ctx = init_distributed(toy_hparams())
    assert ctx.world_size == 2 and ctx.backend == "gloo" and ctx.device.type == "cpu"
    try:
        for name, overrides in SCENARIOS.items():
            sd = train_toy(toy_hparams(**overrides), ctx)
            torch.save(sd, os.path.join(out_dir, f"{name}.rank{ctx.rank}.pt"))
    finally:
        shutdown()


def test_two_gloo_ranks_match_single_process(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(Path(__file__).resolve()), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    from trainer.distributed import DistContext

    single = DistContext()
    for name, overrides in SCENARIOS.items():
        ref = train_toy(toy_hparams(**overrides), single)
        init = {k: v for k, v in (lambda: (torch.manual_seed(0), ToyBanked())[1])().state_dict().items()}
        r0 = torch.load(tmp_path / f"{name}.rank0.pt")
        r1 = torch.load(tmp_path / f"{name}.rank1.pt")
        for k in ref:
            # Both ranks hold identical replicas ...
            assert torch.equal(r0[k], r1[k]), f"{name}: ranks disagree on {k}"
            # ... equal to the single-process result up to float reassociation of the gradient mean.
            assert torch.allclose(r0[k], ref[k], rtol=1e-4, atol=2e-5), \
                f"{name}: {k} differs from single process by {(r0[k] - ref[k]).abs().max().item():.3g}"
            # And training actually moved every tensor (the comparison is not between two untouched inits).
            assert (ref[k] - init[k]).abs().max() > 1e-3, f"{name}: {k} did not train"


def test_init_distributed_without_torchrun_is_a_plain_process():
    from trainer.distributed import all_reduce_mean_, all_reduce_sum, barrier

    ctx = init_distributed(toy_hparams(device="auto"), env={})
    assert (ctx.rank, ctx.world_size, ctx.local_rank, ctx.is_main, ctx.distributed) == (0, 1, 0, True, False)
    assert ctx.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    t = torch.tensor([1.0, 2.0])
    all_reduce_mean_([t])
    assert torch.equal(all_reduce_sum(t), torch.tensor([1.0, 2.0]))
    barrier()
    shutdown()


@pytest.mark.parametrize("env, device, message", [
    ({"WORLD_SIZE": "two"}, "cpu", "WORLD_SIZE: expected an integer, got 'two'"),
    ({"WORLD_SIZE": "2", "RANK": "2"}, "cpu", "expected 0 <= RANK < WORLD_SIZE, got RANK=2 WORLD_SIZE=2"),
    ({}, "cuda", "DEVICE=cuda: expected a CUDA device"),
])
def test_init_distributed_bad_environment(env, device, message):
    from trainer.errors import PgolfError

    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(PgolfError, match=message):
        init_distributed(toy_hparams(device=device), env=env)


if __name__ == "__main__":
    _worker_main(sys.argv[1])
