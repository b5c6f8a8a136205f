"""Benchmark: wall time of `pgolf audit --dynamic-only` machinery (run_dynamic) on a record-sized submission.

The submission is pgolf's own trainer inlined into one train_gpt.py (~3,600 lines, the size of the late records)
with the record stack switched on (sliding eval, score-first TTT, GPTQ, EMA, int6). Every repetition uses a fresh
cache (the tokenizer cache is shared, as on a user's machine after the first audit).

    python bench/dynamic_audit.py [--reps 3] [--timeout 180]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CONFIG = {"TTT_ENABLED": "1", "EVAL_STRIDE": "64", "GPTQ_ENABLED": "1", "GPTQ_RESERVE_SECONDS": "8",
          "EMA_ENABLED": "1", "QUANT_SCHEME": "*:int6", "BIGRAM_VOCAB_SIZE": "2048", "XSA_LAST_N": "4"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=180.0)
    args = ap.parse_args()
    from auditor.dynamic import run_dynamic
    from builder.inline import inline_package

    work = Path(tempfile.mkdtemp(prefix="pgolf-bench-dyn-"))
    sub = work / "record"
    sub.mkdir()
    src = inline_package(str(REPO), "trainer.train").source
    (sub / "train_gpt.py").write_text(src)
    lines = src.count("\n")
    tok_cache = work / "shared-cache"
    times, rows = [], []
    for i in range(args.reps):
        cache = work / f"cache{i}"
        cache.mkdir()
        if (tok_cache / "tokenizers").exists():
            os.symlink(tok_cache / "tokenizers", cache / "tokenizers")
        t0 = time.perf_counter()
        res = run_dynamic(sub, static_context={"env": CONFIG}, timeout=args.timeout, cache_dir=cache)
        dt = time.perf_counter() - t0
        if not (tok_cache / "tokenizers").exists():
            tok_cache.mkdir(exist_ok=True)
            os.replace(cache / "tokenizers", tok_cache / "tokenizers")
        times.append(dt)
        rules = sorted({f.rule for f in res.findings})
        rows.append({"rep": i, "wall_s": round(dt, 2), "rules": rules, "phases": res.metrics.get("phases"),
                     "runs": res.metrics.get("runs")})
        print(json.dumps(rows[-1]))
    t0 = time.perf_counter()
    run_dynamic(sub, static_context={"env": CONFIG}, timeout=args.timeout, cache_dir=work / "cache0")
    cached = time.perf_counter() - t0
    print(json.dumps({"script_lines": lines, "cpus": os.cpu_count(), "median_s": round(statistics.median(times), 2),
                      "max_s": round(max(times), 2), "cached_s": round(cached, 3),
                      "loadavg": os.getloadavg()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
