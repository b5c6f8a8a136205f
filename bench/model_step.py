#!/usr/bin/env python3
"""Model-only GPU microbenchmark: compiled forward+backward ms per micro-batch for each attention backend.

    python bench/model_step.py --preset seed347 --micro-seqs 48 --seq-len 2048 --backends auto,cudnn,flash

One optimizer step of the record configuration on one GPU is 8 such micro-batches (786,432 tokens, grad accum 8),
so ms/step ~= 8 x the printed ms/micro (plus the optimizer). Random tokens, no data needed. One JSON line per backend.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from trainer.config import Hyperparameters  # noqa: E402
from trainer.model import GPT  # noqa: E402
from trainer.presets import get_preset  # noqa: E402


def bench(preset: str, backend: str, micro_seqs: int, seq_len: int, iters: int, warmup: int) -> dict:
    p = get_preset(preset)
    p.update(sdpa_backend=backend, train_seq_len=seq_len)
    h = Hyperparameters.resolve(preset=p, env={})
    torch.manual_seed(0)
    model = GPT(h).cuda()
    cm = torch.compile(model, dynamic=False)
    x = torch.randint(0, h.vocab_size, (micro_seqs, seq_len), device="cuda")
    y = torch.randint(0, h.vocab_size, (micro_seqs, seq_len), device="cuda")
    for _ in range(warmup):
        cm(x, y).backward()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        cm(x, y).backward()
    end.record()
    torch.cuda.synchronize()
    ms = start.elapsed_time(end) / iters
    return dict(preset=preset, backend=backend, resolved=model.attn_backend, micro_seqs=micro_seqs,
                seq_len=seq_len, ms_per_micro=round(ms, 2), tokens_per_s=round(micro_seqs * seq_len / ms * 1000),
                peak_mib=torch.cuda.max_memory_allocated() >> 20, device=torch.cuda.get_device_name(),
                torch=torch.__version__)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="seed347")
    ap.add_argument("--backends", default="auto,cudnn,flash,efficient")
    ap.add_argument("--micro-seqs", type=int, default=48)
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    a = ap.parse_args()
    if not torch.cuda.is_available():
        print("model_step.py: error: needs a CUDA GPU", file=sys.stderr)
        return 2
    for backend in a.backends.split(","):
        t0 = time.time()
        r = bench(a.preset, backend.strip(), a.micro_seqs, a.seq_len, a.iters, a.warmup)
        r["wall_s"] = round(time.time() - t0, 1)
        print(json.dumps(r), flush=True)
        torch._dynamo.reset()
    return 0


if __name__ == "__main__":
    sys.exit(main())
