"""`pgolf`: one command with subcommands (data, train, build, audit, demo).

Each subcommand's parser lives with the code it runs and registers itself through `add_parser(sub, name, help)`.
None of these modules imports torch at import time, so `pgolf audit` and `pgolf build` work without it.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path

from auditor import cli as audit_cli
from builder import cli as build_cli
from pgolf import demo, train_cmd
from trainer import data_cli
from trainer.errors import PgolfError

# subcommand -> (module with add_parser, one-line help)
SUBCOMMANDS = {
    "data": (data_cli, "fetch, build and inspect tokenized shards"),
    "train": (train_cmd, "train a model (single process or under torchrun) into a run directory"),
    "build": (build_cli, "turn run directories into a PR-ready record folder"),
    "audit": (audit_cli, "check submissions for size, files, timing and evaluation legality"),
    "demo": (demo, "the main job on the embedded corpus: data, 3 tiny seeds, record folder, audit"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pgolf", description="Train, package and audit OpenAI Parameter Golf submissions.")
    parser.add_argument("--version", action="version", version=f"pgolf {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module, help_text) in SUBCOMMANDS.items():
        module.add_parser(sub, name, help_text)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pgolf")
    except PackageNotFoundError:  # running from a checkout that was never installed
        return "0.1.0"


# Packages of the `train` extra: a plain `pip install pgolf` lacks them.
TRAIN_EXTRA = ("torch", "sentencepiece", "huggingface_hub", "zstandard")


def run_handler(args) -> int:
    """Run a parsed subcommand: a PgolfError is one line on stderr and exit 2."""
    try:
        rc = args.handler(args)
    except PgolfError as exc:
        print(f"pgolf: error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in TRAIN_EXTRA:
            raise
        print(f"pgolf: error: pgolf {args.command} needs {exc.name}, which is not installed: pip install "
              f"'pgolf[train]'", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pgolf: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug of ours: never exit 1 (reads as "findings") and never dump a traceback
        if os.environ.get("PGOLF_DEBUG"):
            raise
        where = traceback.extract_tb(exc.__traceback__)[-1]
        print(f"pgolf: internal error in {args.command}: {type(exc).__name__}: {exc} "
              f"(at {Path(where.filename).name}:{where.lineno}; PGOLF_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 2
    return int(rc or 0)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return run_handler(args)


if __name__ == "__main__":
    sys.exit(main())
