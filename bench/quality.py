#!/usr/bin/env python3
"""Quality benchmark on a real dataset (e.g. ../shared/data/sp1024_mixed: train on the mixed corpus, validate on the
real FineWeb prefix), one GPU:

  (a) fixed steps:   python bench/quality.py --mode steps   --preset record --data DIR --tokenizer MODEL
      200 steps x 262,144 tokens; reports pre-quant, post-quant roundtrip, sliding and TTT bpb, artifact bytes
  (b) wallclock:     python bench/quality.py --mode seconds --preset record --data DIR --tokenizer MODEL
      300 s of training; same report

Runs `pgolf train` under torchrun and prints the run's RESULT json plus a markdown row for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["steps", "seconds"], required=True)
    ap.add_argument("--preset", default="record")
    ap.add_argument("--data", required=True)
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch-tokens", type=int, default=262144)
    ap.add_argument("--seconds", type=float, default=300.0)
    ap.add_argument("--nproc", type=int, default=1)
    ap.add_argument("--out", default=None)
    ap.add_argument("--env", action="append", default=[], help="extra KEY=VALUE")
    args = ap.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="pgolf-quality-"))
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1", OUT_DIR=str(out / "run"), VAL_LOSS_EVERY="0",
               **dict(kv.split("=", 1) for kv in args.env))
    if args.mode == "steps":
        env.update(ITERATIONS=str(args.steps), TRAIN_BATCH_TOKENS=str(args.batch_tokens), MAX_WALLCLOCK_SECONDS="0",
                   WARMDOWN_ITERS=str(max(args.steps // 4, 1)))
    else:
        env.update(ITERATIONS="100000", MAX_WALLCLOCK_SECONDS=str(args.seconds))
    cmd = [shutil.which("torchrun") or "torchrun", "--standalone", f"--nproc_per_node={args.nproc}", "-m", "pgolf",
           "train", "--preset", args.preset, "--data", args.data, "--tokenizer", args.tokenizer]
    t0 = time.time()
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    (out / "stdout.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        print(proc.stderr[-4000:], file=sys.stderr)
        sys.exit(proc.returncode)
    metrics = json.loads((out / "run" / "metrics.json").read_text())
    metrics.pop("history", None)
    keys = ["steps", "step_avg_ms", "pre_quant_val_bpb", "post_quant_val_bpb", "sliding_val_bpb", "ttt_val_bpb",
            "artifact_bytes", "train_time_ms", "eval_time_ms", "gpu_name", "torch_version"]
    summary = {k: metrics.get(k) for k in keys}
    summary.update(mode=args.mode, preset=args.preset, wall_s=round(time.time() - t0, 1))
    print(json.dumps(summary))
    print("| " + " | ".join(str(summary[k]) for k in ["mode", "preset"] + keys) + " |")


if __name__ == "__main__":
    main()
