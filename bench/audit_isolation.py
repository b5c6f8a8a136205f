"""CPU cost of running each submission's static analysis in a forked, rlimited child (auditor.isolate).

    OMP_NUM_THREADS=1 python bench/audit_isolation.py ../shared/submissions [--repeat 1]

Audits every discovered submission twice, sequentially: in-process (`engine.analyse`) and isolated
(`engine.audit_items`, one fork per submission, results pickled back). CPU seconds per submission are user+sys of
this process and its children (so fork, pickling and the child's whole analysis count). Prints mean / median / p95 /
max per submission for both modes and the per-submission overhead of isolation.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _cpu() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def _summary(xs: list) -> str:
    xs = sorted(xs)
    p95 = xs[min(len(xs) - 1, int(round(0.95 * (len(xs) - 1))))]
    return (f"total {sum(xs):.1f} s, mean {statistics.mean(xs):.3f} s, median {statistics.median(xs):.3f} s, "
            f"p95 {p95:.3f} s, max {xs[-1]:.3f} s")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus", type=Path)
    args = ap.parse_args(argv)
    if not args.corpus.is_dir():
        print(f"audit_isolation: not a folder: {args.corpus}", file=sys.stderr)
        return 2
    from auditor.engine import Options, analyse, audit_items
    from auditor.source import discover

    items = [(str(r), str(e) if e else None, d, f) for r, e, d, f in discover([args.corpus])]
    inproc, isolated, verdicts = [], [], [0, 0]
    t0 = time.monotonic()
    for it in items:
        c = _cpu()
        r_in = analyse(Path(it[0]), Path(it[1]) if it[1] else None, it[2], it[3], Options())
        inproc.append(_cpu() - c)
        c = _cpu()
        (r_iso,), crashed = audit_items([it], Options())
        isolated.append(_cpu() - c)
        same = r_in.verdict == r_iso.verdict and [f.rule for f in r_in.findings] == [f.rule for f in r_iso.findings]
        verdicts[0 if same else 1] += 1
        if crashed:
            print(f"crash: {crashed[0].strip()}", file=sys.stderr)
    print(f"submissions: {len(items)} (wall {time.monotonic() - t0:.0f} s for both modes)")
    print(f"in-process CPU per submission: {_summary(inproc)}")
    print(f"isolated   CPU per submission: {_summary(isolated)}")
    over = [b - a for a, b in zip(inproc, isolated)]
    print(f"isolation overhead per submission: mean {statistics.mean(over) * 1000:.0f} ms, "
          f"median {statistics.median(over) * 1000:.0f} ms")
    print(f"same verdict and findings in both modes: {verdicts[0]}/{len(items)}")
    return 0 if verdicts[1] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
