"""`pgolf train`: resolve a preset + environment + flags into Hyperparameters and run the pipeline.

Works as a single process and under torchrun, e.g.
    torchrun --standalone --nproc_per_node=8 -m trainer train --preset seed347 --data DIR --tokenizer MODEL
"""

from __future__ import annotations

import argparse
import os
import sys

from trainer.config import Hyperparameters, add_cli_flags, cli_overrides
from trainer.presets import PRESET_HELP, PRESETS, get_preset, scale_tiny


def add_parser(sub, name: str, help_text: str) -> argparse.ArgumentParser:
    p = sub.add_parser(
        name, help=help_text, description=help_text + ". Every hyperparameter can also be set with its environment "
        "variable (the challenge's names); precedence: preset < environment < flag.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--preset", default="baseline", help="named configuration (see --list-presets)")
    p.add_argument("--scale", choices=["full", "tiny"], default="full", help="tiny shrinks any preset to CPU size, keeping every feature on")
    p.add_argument("--data", dest="hp_data_path", metavar="DIR", help="dataset directory (DATA_PATH)")
    p.add_argument("--tokenizer", dest="hp_tokenizer_path", metavar="MODEL", help="SentencePiece model (TOKENIZER_PATH)")
    p.add_argument("--out", dest="hp_out_dir", metavar="RUN_DIR", help="run directory (OUT_DIR)")
    p.add_argument(
        "--code-form", choices=["plain", "minified", "lzma", "brotli"], default="plain",
        help="which train_gpt.py you will ship: its bytes are reserved in the 16 MB budget (plain is the safe upper "
        "bound; lzma/brotli are minified + wrapped as `pgolf build --minify --wrap` makes them)",
    )
    p.add_argument("--list-presets", action="store_true", help="list presets and exit")
    p.add_argument("--print-config", action="store_true", help="print the resolved configuration as JSON and exit")
    add_cli_flags(p)
    p.set_defaults(handler=handle)
    return p


def resolve_from_args(args) -> Hyperparameters:
    preset = get_preset(args.preset)
    if args.scale == "tiny":
        preset = scale_tiny(preset)
    h = Hyperparameters.resolve(preset=preset, cli=cli_overrides(args))
    if not h.run_id:
        h.run_id = f"{args.preset}{'_tiny' if args.scale == 'tiny' else ''}_seed{h.seed}"
    return h


def trainer_code_bytes(h: Hyperparameters, form: str = "plain") -> int:
    """Bytes of the single-file train_gpt.py this configuration would ship in `form` (what the budget fitter
    reserves). `pgolf build` re-checks the total with the file it really ships.
    """
    try:
        from builder.inline import build_source
        from builder.wrap import minify, wrap
    except ImportError:
        build_source = None
    if build_source is not None:
        # Wrapped forms are specialized, as `pgolf build --wrap` does by default (builder.specialize).
        source = build_source(config=h.to_dict(), specialize=form in ("lzma", "brotli"))
        if form != "plain":
            source = minify(source)
        if form in ("lzma", "brotli"):
            source = wrap(source, form)
        return len(source.encode("utf-8"))
    import trainer

    root = os.path.dirname(trainer.__file__)
    return sum(os.path.getsize(os.path.join(root, f)) for f in os.listdir(root) if f.endswith(".py"))


def handle(args) -> int:
    if args.list_presets:
        width = max(len(n) for n in PRESETS)
        for name in PRESETS:
            print(f"{name:<{width}}  {PRESET_HELP.get(name, '')}")
        return 0
    h = resolve_from_args(args)
    if args.print_config:
        from trainer.config import config_json

        print(config_json(h))
        return 0
    from trainer.train import run

    is_main = int(os.environ.get("RANK", "0")) == 0
    # Only rank 0 logs sizes and exports the artifact, so only it builds the single file to measure it.
    metrics = run(h, code_bytes=trainer_code_bytes(h, args.code_form) if is_main else 0)
    if is_main:
        print(
            f"run_dir:{h.out_dir or os.path.join('runs', h.run_id)} val_bpb:{metrics['val_bpb']:.6f} "
            f"artifact_bytes:{metrics['artifact_bytes']} steps:{metrics['steps']}",
            file=sys.stderr,
        )
    return 0

