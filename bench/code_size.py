#!/usr/bin/env python3
"""Code bytes of the built train_gpt.py for a preset (default `record`): plain, minified, lzma- and brotli-wrapped,
each also specialized to the preset's feature switches (what `pgolf build --wrap` ships by default).

    python bench/code_size.py [--preset record] [--runs RUN_DIR RUN_DIR RUN_DIR]

The preset's resolved configuration is baked in exactly as `pgolf build` does for a run of that preset. With
--runs, also times a full `pgolf build` of those run directories (non-record track, into a temp dir).
Prints a markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from builder.inline import ENTRY, baked_config_for, inline_package, trainer_root  # noqa: E402
from builder.wrap import minify, wrap  # noqa: E402
from trainer.config import Hyperparameters  # noqa: E402
from trainer.presets import get_preset  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="record")
    ap.add_argument("--runs", nargs="*", default=[], help="run directories to time a full build with")
    args = ap.parse_args()

    config = Hyperparameters.resolve(preset=get_preset(args.preset), env={}).to_dict()
    t0 = time.perf_counter()
    res = inline_package(trainer_root(), ENTRY, baked_config=baked_config_for(config))
    t_inline = time.perf_counter() - t0
    plain = res.source
    t0 = time.perf_counter()
    mini = minify(plain)
    t_min = time.perf_counter() - t0
    from builder.specialize import frozen_values

    t0 = time.perf_counter()
    spec = inline_package(trainer_root(), ENTRY, baked_config=baked_config_for(config),
                          frozen=frozen_values(baked_config_for(config)))
    t_spec = time.perf_counter() - t0
    smini = minify(spec.source)
    rows = [
        ("plain (inlined, config baked)", plain),
        ("minified", mini),
        ("lzma-wrapped plain", wrap(plain, "lzma")),
        ("lzma-wrapped minified", wrap(mini, "lzma")),
        ("brotli-wrapped plain", wrap(plain, "brotli")),
        ("brotli-wrapped minified", wrap(mini, "brotli")),
        ("specialized", spec.source),
        ("specialized minified", smini),
        ("specialized lzma-wrapped minified", wrap(smini, "lzma")),
        ("specialized brotli-wrapped minified", wrap(smini, "brotli")),
    ]
    print(f"preset {args.preset}: {len(res.modules)} modules inlined, {len(res.removed)} unreferenced defs removed; "
          f"inline {t_inline:.2f} s, minify {t_min:.2f} s (python {platform.python_version()}, {platform.machine()})")
    print(f"specialized: {len(spec.frozen)} switches frozen, {len(spec.removed)} unreferenced defs removed, "
          f"inline+specialize {t_spec:.2f} s")
    print()
    print("| form | bytes | lines |")
    print("|---|---:|---:|")
    for name, text in rows:
        print(f"| {name} | {len(text.encode('utf-8')):,} | {text.count(chr(10)):,} |")
    if args.runs:
        from builder.submission import BuildOptions, build

        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            out = build(BuildOptions(runs=args.runs, name="bench", author="bench", github_id="bench",
                                     track="non_record_16mb", out=tmp, force=True))
            dt = time.perf_counter() - t0
        print()
        print(f"full build of {len(args.runs)} runs: {dt:.2f} s ({len(out.files)} files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
