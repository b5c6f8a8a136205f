"""`pgolf demo`: the whole job on the embedded corpus, on CPU, in a few minutes.

1. `pgolf data build` (embedded corpus -> SentencePiece tokenizer + challenge-format shards), reused when present;
2. `pgolf train --preset tiny` for each seed (default three);
3. `pgolf build --track non_record_16mb` into OUT/track_non_record_16mb/;
4. `pgolf audit` of that folder when the auditor is installed;
then prints where everything is.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from trainer.errors import PgolfError

DEFAULT_SEEDS = "1337,42,2025"
DEMO_NAME = "pgolf_demo_tiny"


def add_parser(sub, name: str, help_text: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help_text, description=help_text + ".",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default="records", help="records root for the built folder")
    p.add_argument("--work-dir", default="runs/demo", help="where the dataset and the run directories go")
    p.add_argument("--seeds", default=DEFAULT_SEEDS, help="comma-separated seeds, one tiny run each")
    p.add_argument("--steps", type=int, default=None, help="training steps per run (default: the tiny preset's)")
    p.add_argument("--wrap", default="none", choices=["none", "lzma", "brotli"], help="wrap the built train_gpt.py")
    p.add_argument("--minify", action="store_true", help="minify the built train_gpt.py")
    p.set_defaults(handler=handle)
    return p


def _parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise PgolfError(f"--seeds {text!r}: expected comma-separated integers, e.g. {DEFAULT_SEEDS}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise PgolfError(f"--seeds {text!r}: expected distinct seeds, at least one")
    return seeds


def _sub_handler(module: str, name: str, argv: list[str]):
    """Parse `argv` with the subcommand parser `module.add_parser` registers (the same code `pgolf NAME` runs)."""
    import importlib

    mod = importlib.import_module(module)
    parser = argparse.ArgumentParser(prog=f"pgolf {name}")
    sub = parser.add_subparsers(dest="command")
    mod.add_parser(sub, name, name)
    args = parser.parse_args([name, *argv])
    return args.handler, args


def ensure_data(data_dir: Path, log=print) -> tuple[Path, int]:
    """Build the embedded-corpus dataset unless a complete one is there; returns (tokenizer path, vocab size)."""
    manifest = data_dir / "manifest.json"
    if not manifest.is_file():
        t = time.perf_counter()
        try:
            handler, args = _sub_handler("trainer.data_cli", "data", ["build", "--out", str(data_dir)])
        except ModuleNotFoundError as exc:
            if exc.name != "trainer.data_cli":
                raise
            handler = None
        if handler is not None:
            rc = handler(args)
            if rc:
                raise PgolfError(f"pgolf data build failed (exit {rc})")
        else:  # the data CLI is not installed: call its library function directly
            from trainer.data_build import build_dataset

            build_dataset(data_dir, log=log)
        log(f"demo: data built in {time.perf_counter() - t:.1f} s -> {data_dir}")
    else:
        log(f"demo: reusing the dataset in {data_dir}")
    meta = json.loads(manifest.read_text(encoding="utf-8"))
    tok = data_dir / meta["tokenizer"]["path"]
    if not tok.is_file():
        raise PgolfError(f"{manifest}: tokenizer {tok} is missing; delete {data_dir} and run the demo again")
    return tok, int(meta["tokenizer"]["vocab_size"])


def train_seed(data_dir: Path, tok: Path, vocab: int, run_dir: Path, seed: int, steps: int | None) -> None:
    argv = ["--preset", "tiny", "--data", str(data_dir), "--tokenizer", str(tok), "--out", str(run_dir),
            "--seed", str(seed), "--vocab-size", str(vocab), "--run-id", f"demo_tiny_seed{seed}"]
    if steps is not None:
        argv += ["--iterations", str(steps)]
    handler, args = _sub_handler("trainer.train_cli", "train", argv)
    rc = handler(args)
    if rc:
        raise PgolfError(f"pgolf train (seed {seed}) failed (exit {rc})")


def audit(folder: Path) -> int | None:
    try:
        handler, args = _sub_handler("auditor.cli", "audit", [str(folder)])
    except ModuleNotFoundError as exc:
        if exc.name and (exc.name == "auditor" or exc.name.startswith("auditor.")):
            return None  # the auditor is not installed (yet)
        raise
    return handler(args)


def handle(args) -> int:
    from builder.submission import BuildOptions, build

    seeds = _parse_seeds(args.seeds)
    if args.steps is not None and args.steps < 1:
        raise PgolfError(f"--steps {args.steps}: expected at least 1")
    t0 = time.perf_counter()
    work = Path(args.work_dir)
    data_dir = work / "data"
    tok, vocab = ensure_data(data_dir)
    run_dirs = []
    for seed in seeds:
        run_dir = work / "runs" / f"tiny_seed{seed}"
        t = time.perf_counter()
        print(f"demo: training seed {seed} -> {run_dir}", flush=True)
        train_seed(data_dir, tok, vocab, run_dir, seed, args.steps)
        print(f"demo: seed {seed} trained in {time.perf_counter() - t:.1f} s", flush=True)
        run_dirs.append(str(run_dir))
    res = build(BuildOptions(
        runs=run_dirs, name=DEMO_NAME, author="pgolf demo", github_id="pgolf-demo", track="non_record_16mb",
        out=args.out, wrap=args.wrap, minify=args.minify, force=True,
        blurb=f"pgolf demo: the tiny preset trained on the embedded corpus (not FineWeb) on CPU, {len(seeds)} seeds.",
    ))
    print(f"demo: built {res.folder}", flush=True)
    sub = res.submission
    print()
    print("pgolf demo: data, training and build took {:.0f} s".format(time.perf_counter() - t0))
    print(f"  dataset + tokenizer : {data_dir} ({tok.name})")
    for seed, rd in zip(seeds, run_dirs):
        print(f"  run seed {seed:<11}: {rd}")
    print(f"  record folder       : {res.folder}")
    for f in res.files:
        print(f"      {f}")
    print(f"  val_bpb {sub['val_bpb']:.4f} (std {sub['val_bpb_std']:.4f}, {len(seeds)} seeds), {sub['bytes_total']:,} bytes", flush=True)
    # The audit runs last so that its report (or a failure inside it) cannot hide where everything is.
    rc = audit(res.folder)
    if rc is None:
        print("  audit               : skipped (auditor not installed)")
    else:
        print(f"  audit               : {'passed' if rc == 0 else f'reported problems (exit {rc})'}: pgolf audit {res.folder}")
    return 0 if not rc else int(rc)
