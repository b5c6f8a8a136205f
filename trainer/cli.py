"""`pgolf`: one command with subcommands (data, train, build, audit, demo).

Each subcommand lives in the package that owns it and registers itself through `add_parser(subparsers)`;
modules are imported lazily so `pgolf audit` never imports torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from trainer.errors import PgolfError

# subcommand -> (module, one-line help)
SUBCOMMANDS = {
    "data": ("trainer.data_cli", "fetch, build and inspect tokenized shards"),
    "train": ("trainer.train_cli", "train a model (single process or under torchrun) into a run directory"),
    "build": ("builder.cli", "turn run directories into a PR-ready record folder"),
    "audit": ("auditor.cli", "check submissions for size, files, timing and evaluation legality"),
    "demo": ("builder.demo", "the main job on the embedded corpus: data, 3 tiny seeds, record folder, audit"),
}


def build_parser(argv=None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pgolf",
        description="Train, package and audit OpenAI Parameter Golf submissions.",
    )
    parser.add_argument("--version", action="version", version=f"pgolf {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    argv = sys.argv[1:] if argv is None else list(argv)
    wanted = next((a for a in argv if not a.startswith("-")), None)
    for name, (module, help_text) in SUBCOMMANDS.items():
        # Import only the subcommand being run (or all of them for top-level --help).
        if wanted is not None and wanted in SUBCOMMANDS and wanted != name:
            sub.add_parser(name, help=help_text)
            continue
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith(module):
                sub.add_parser(name, help=f"{help_text} (not available)")
                continue
            raise
        mod.add_parser(sub, name, help_text)
    return parser


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("pgolf")
    except Exception:
        return "0.1.0"


def main(argv=None) -> int:
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.error(f"{args.command}: not available in this installation")
    try:
        rc = handler(args)
    except PgolfError as exc:
        print(f"pgolf: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pgolf: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
