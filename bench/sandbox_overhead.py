"""Benchmark: what the dynamic audit's bubblewrap sandbox costs per child start.

Compares, median of --reps runs each: an empty bwrap sandbox (`/usr/bin/true`, the availability probe); the full
launcher (`sandbox.run_child`: staging, private mount namespace as root, bwrap, seccomp, boot copy) running a script
that does nothing, with the shims off, against plain `python -c pass`; and the same with the shims on (they import
torch) against plain `python -c "import torch"`.

    python bench/sandbox_overhead.py [--reps 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from auditor.dynamic import sandbox  # noqa: E402


def _median(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _child(shims: bool) -> None:
    work = sandbox.new_workdir()
    try:
        for d in ("data", "submission", ".pgolf"):
            (work / d).mkdir()
        (work / "submission" / "x.py").write_text("pass\n")
        extra = {} if shims else {"PGOLF_DYNAMIC_CHILD": "0"}
        c = sandbox.run_child([str(work / "submission" / "x.py")], work, extra, sandbox.Limits(timeout=120))
        assert c.returncode == 0, c.output_tail
    finally:
        sandbox.release_workdir(work)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    reason = sandbox.unavailable_reason()
    if reason:
        print(reason, file=sys.stderr)
        return 2
    bwrap = sandbox.bwrap_path()
    as_nobody = os.geteuid() == 0

    def empty():
        sandbox._WORKS.clear()
        sandbox.check_bwrap(bwrap, as_nobody)

    env = dict(os.environ, OMP_NUM_THREADS="1")
    rows = [
        ("empty bwrap sandbox (/usr/bin/true)", _median(empty, args.reps)),
        ("plain `python -c pass`", _median(lambda: subprocess.run([sys.executable, "-c", "pass"], env=env, check=True),
                                           args.reps)),
        ("sandboxed child, shims off", _median(lambda: _child(False), args.reps)),
        ("plain `python -c 'import torch'`", _median(
            lambda: subprocess.run([sys.executable, "-c", "import torch"], env=env, check=True), args.reps)),
        ("sandboxed child, shims on (imports torch)", _median(lambda: _child(True), args.reps)),
    ]
    print(f"bwrap {subprocess.run([bwrap, '--version'], capture_output=True, text=True).stdout.strip()}, "
          f"root={as_nobody}, seccomp={sandbox.seccomp_program() is not None}, reps={args.reps}, "
          f"load average {os.getloadavg()}")
    print("| start | median s |\n|---|---|")
    for name, s in rows:
        print(f"| {name} | {s:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
