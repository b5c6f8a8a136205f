"""Sandbox entry point: copy the staged inputs (bound read-only) into the writable tmpfs work dir, then run the
real entry script. The runner rewrites the data dir between runs (each run's validation shard), so the data lives on
the sandbox's own tmpfs; the submission and the plan stay read-only."""

from __future__ import annotations

import os
import runpy
import shutil
import sys


def main() -> None:
    shutil.copytree(os.environ["PGOLF_STAGE_DATA"], os.environ["PGOLF_DATA_DIR"], dirs_exist_ok=True)
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    main()
