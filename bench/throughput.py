#!/usr/bin/env python3
"""Trainer throughput on a GPU: ms/step, tokens/s and peak memory for a preset, optionally beside another
train_gpt.py (`--reference PATH`) run on the same data in the same invocation.

    python bench/throughput.py --preset baseline --data DIR --tokenizer MODEL --seconds 60
    python bench/throughput.py --preset seed347 --data DIR --tokenizer MODEL --reference /path/to/train_gpt.py

Each trainer runs under `torchrun --standalone --nproc_per_node=N` with MAX_WALLCLOCK_SECONDS=--seconds and is
stopped as soon as its training loop ends (evaluation is not timed). Prints one JSON line per trainer and a
markdown row for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STEP_RE = re.compile(r"^step:(\d+)/\d+ train_loss:[\d.naninf]+ train_time:(\d+)ms step_avg:([\d.]+)ms")
MEM_RE = re.compile(r"peak memory allocated: (\d+) MiB")
STOP_RE = re.compile(r"^(stopping_early|DIAGNOSTIC|peak memory|ema:applying|swa:)")


def run_one(cmd, env, log_path, timeout):
    """Run a trainer, stream its log, and stop it once training has ended. Returns parsed step timings."""
    steps, mem = [], None
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True, cwd=env.get("BENCH_CWD", str(REPO)))
        t0 = time.time()
        ended = False
        for line in proc.stdout:
            log.write(line)
            m = STEP_RE.match(line.strip())
            if m:
                steps.append((int(m.group(1)), float(m.group(2)), float(m.group(3))))
            mm = MEM_RE.search(line)
            if mm:
                mem = int(mm.group(1))
            if STOP_RE.match(line.strip()) and steps:
                ended = True
            if (ended and mem is not None) or time.time() - t0 > timeout:
                break
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    return steps, mem


def summarize(name, steps, mem, tokens_per_step):
    if len(steps) < 2:
        return {"trainer": name, "error": "fewer than 2 step lines parsed"}
    # Exclude the first logged steps (compile / autotune stragglers): average over the last logged window.
    (s0, t0, _), (s1, t1, _) = steps[min(len(steps) - 2, max(1, len(steps) // 4))], steps[-1]
    ms = (t1 - t0) / max(s1 - s0, 1)
    return {"trainer": name, "steps": s1, "ms_per_step": round(ms, 2), "tokens_per_s": round(tokens_per_step / ms * 1000),
            "peak_mem_mib": mem, "step_avg_reported_ms": steps[-1][2]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="baseline")
    ap.add_argument("--data", required=True, help="dataset dir (e.g. a copy of ../shared/data/sp1024_mixed)")
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--seconds", type=float, default=60.0, help="training wallclock per trainer")
    ap.add_argument("--nproc", type=int, default=1)
    ap.add_argument("--reference", help="another train_gpt.py to time the same way (env-configured)")
    ap.add_argument("--env", action="append", default=[], help="extra KEY=VALUE for both trainers")
    ap.add_argument("--out", default=None, help="folder for the logs (default: a temp dir)")
    args = ap.parse_args()

    sys.path.insert(0, str(REPO))
    from trainer.config import Hyperparameters
    from trainer.presets import get_preset

    h = Hyperparameters.resolve(get_preset(args.preset), env={})
    out = Path(args.out or tempfile.mkdtemp(prefix="pgolf-bench-"))
    out.mkdir(parents=True, exist_ok=True)
    torchrun = shutil.which("torchrun") or "torchrun"
    extra = dict(kv.split("=", 1) for kv in args.env)
    base_env = dict(os.environ, PYTHONUNBUFFERED="1", MAX_WALLCLOCK_SECONDS=str(args.seconds), VAL_LOSS_EVERY="0",
                    TRAIN_LOG_EVERY="10", ITERATIONS="100000", DATA_PATH=args.data, TOKENIZER_PATH=args.tokenizer,
                    **extra)
    results = []
    ours_env = dict(base_env, PYTHONPATH=str(REPO), OUT_DIR=str(out / "ours"), EVAL_STRIDE="0", TTT_ENABLED="0",
                    VAL_MAX_TOKENS="1048576")
    cmd = [torchrun, "--standalone", f"--nproc_per_node={args.nproc}", "-m", "pgolf", "train", "--preset", args.preset]
    steps, mem = run_one(cmd, ours_env, out / "ours.log", args.seconds * 3 + 600)
    results.append(summarize(f"pgolf:{args.preset}", steps, mem, h.train_batch_tokens))
    if args.reference:
        ref = Path(args.reference).resolve()
        ref_env = dict(base_env, BENCH_CWD=str(out), RUN_ID="reference")
        cmd = [torchrun, "--standalone", f"--nproc_per_node={args.nproc}", str(ref)]
        steps, mem = run_one(cmd, ref_env, out / "reference.log", args.seconds * 3 + 600)
        results.append(summarize(f"reference:{ref.name}", steps, mem, int(extra.get("TRAIN_BATCH_TOKENS", h.train_batch_tokens))))
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    for r in results:
        r.update(device=device, torch=torch.__version__, seconds=args.seconds, logs=str(out))
        print(json.dumps(r))
    for r in results:
        print(f"| {time.strftime('%Y-%m-%d')} | {device} | torch {torch.__version__} | {r['trainer']} | "
              f"{r.get('ms_per_step')} ms/step | {r.get('tokens_per_s')} tok/s | peak {r.get('peak_mem_mib')} MiB |")


if __name__ == "__main__":
    main()
