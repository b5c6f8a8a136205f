"""`pgolf demo`: the whole job on the embedded corpus, on CPU, in a few minutes.

1. `pgolf data build` (embedded corpus -> SentencePiece tokenizer + challenge-format shards), reused when present;
2. `pgolf train --preset tiny` for each seed (default three), one CPU thread each unless OMP_NUM_THREADS says;
3. `pgolf build --track non_record_16mb` into OUT/track_non_record_16mb/;
4. `pgolf audit` of that folder;
then prints where everything is.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from auditor import cli as audit_cli
from builder.submission import BuildOptions, build
from pgolf import train_cmd
from trainer import data_cli
from trainer.errors import PgolfError

DEFAULT_SEEDS = "1337,42,2025"
DEMO_NAME = "pgolf_demo_tiny"


def add_parser(sub, name: str, help_text: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help_text, description=help_text + ".")
    p.add_argument("--out", default="records", help="records root for the built folder [default records]")
    p.add_argument("--work-dir", default="runs/demo", help="where the dataset and the run directories go [default runs/demo]")
    p.add_argument("--seeds", default=DEFAULT_SEEDS, help=f"comma-separated seeds, one tiny run each [default {DEFAULT_SEEDS}]")
    p.add_argument("--steps", type=int, default=None, help="training steps per run [default: the tiny preset's]")
    p.add_argument("--code-form", default="plain", metavar="FORM",
                   help="train_gpt.py form the runs reserve and the record ships (see `pgolf train --help`) [default plain]")
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


def _sub_args(module, name: str, argv: list[str]) -> argparse.Namespace:
    """Parse `argv` with the parser `module.add_parser` registers (the same code `pgolf NAME` runs)."""
    parser = argparse.ArgumentParser(prog=f"pgolf {name}")
    sub = parser.add_subparsers(dest="command")
    module.add_parser(sub, name, name)
    return parser.parse_args([name, *argv])


def ensure_data(data_dir: Path, log=None) -> tuple[Path, int]:
    """Build the embedded-corpus dataset unless a complete one is there; returns (tokenizer path, vocab size)."""
    log = log or (lambda line: print(line, flush=True))
    manifest = data_dir / "manifest.json"
    if not manifest.is_file():
        t = time.perf_counter()
        log(f"demo: building the dataset from the embedded corpus -> {data_dir}")
        args = _sub_args(data_cli, "data", ["build", "--out", str(data_dir)])
        rc = args.handler(args)
        if rc:
            raise PgolfError(f"pgolf data build failed (exit {rc})")
        log(f"demo: data built in {time.perf_counter() - t:.1f} s -> {data_dir}")
    else:
        log(f"demo: reusing the dataset in {data_dir}")
    meta = json.loads(manifest.read_text(encoding="utf-8"))
    tok = data_dir / meta["tokenizer"]["path"]
    if not tok.is_file():
        raise PgolfError(f"{manifest}: tokenizer {tok} is missing; delete {data_dir} and run the demo again")
    return tok, int(meta["tokenizer"]["vocab_size"])


def train_seed(data_dir: Path, tok: Path, vocab: int, run_dir: Path, seed: int, steps: int | None, code_form: str) -> None:
    argv = ["--preset", "tiny", "--data", str(data_dir), "--tokenizer", str(tok), "--out", str(run_dir),
            "--seed", str(seed), "--vocab-size", str(vocab), "--run-id", f"demo_tiny_seed{seed}", "--code-form", code_form]
    if steps is not None:
        argv += ["--iterations", str(steps)]
    args = _sub_args(train_cmd, "train", argv)
    rc = args.handler(args)
    if rc:
        raise PgolfError(f"pgolf train (seed {seed}) failed (exit {rc})")


def audit(folder: Path) -> int:
    args = _sub_args(audit_cli, "audit", [str(folder)])
    return args.handler(args)


def handle(args) -> int:
    from builder.ship import parse_form

    parse_form(args.code_form)  # a bad form is one line before anything is built
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
        train_seed(data_dir, tok, vocab, run_dir, seed, args.steps, args.code_form)
        print(f"demo: seed {seed} trained in {time.perf_counter() - t:.1f} s", flush=True)
        run_dirs.append(str(run_dir))
    res = build(BuildOptions(
        runs=run_dirs, name=DEMO_NAME, author="pgolf demo", github_id="pgolf-demo", track="non_record_16mb",
        out=args.out, force=True,
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
    print(f"  audit               : {'passed' if rc == 0 else f'reported problems (exit {rc})'}: pgolf audit {res.folder}")
    return int(rc or 0)
