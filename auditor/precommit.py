"""pre-commit entry (`python -m auditor.precommit FILE...`): audit the record folders the commit touches.

pre-commit passes the changed files; each is mapped to its record folder — the nearest folder at or above it (inside
the repository's working directory) that holds a train_gpt*.py — and every such folder is audited once with the
static audit. Files outside any record folder are ignored; with no folder touched the hook passes.
Options before the files (e.g. --fail-on warning) are passed to `pgolf audit`."""

from __future__ import annotations

import sys
from pathlib import Path


def record_folders(files: list[str], top: Path) -> list[str]:
    top = top.resolve()
    out: list[str] = []
    for f in files:
        p = (top / f).resolve() if not Path(f).is_absolute() else Path(f).resolve()
        d = p if p.is_dir() else p.parent
        while d == top or top in d.parents:
            if any(x.is_file() for x in d.glob("train_gpt*.py")):
                rel = str(d.relative_to(top)) if d != top else "."
                if rel not in out:
                    out.append(rel)
                break
            if d == top:
                break
            d = d.parent
    return sorted(out)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    opts: list[str] = []
    while argv and argv[0].startswith("-") and argv[0] != "--":
        opts.append(argv.pop(0))
        if opts[-1] in ("--fail-on", "--max-bytes", "--jobs", "-j", "--format", "--select", "--ignore", "--config") \
                and argv:
            opts.append(argv.pop(0))
    if argv and argv[0] == "--":
        argv.pop(0)
    folders = record_folders(argv, Path.cwd())
    if not folders:
        return 0
    import argparse

    from auditor import cli
    from trainer.errors import PgolfError

    parser = argparse.ArgumentParser(prog="pgolf")
    cli.add_parser(parser.add_subparsers(dest="command"), "audit", "audit")
    args = parser.parse_args(["audit", "--no-progress", *opts, "--", *folders])
    try:
        return int(args.handler(args) or 0)
    except PgolfError as exc:
        print(f"pgolf: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
