"""`pgolf train`: resolve a preset + environment + flags into Hyperparameters and run the pipeline.

Works as a single process and under torchrun, e.g.
    torchrun --standalone --nproc_per_node=8 -m pgolf train --preset record --data DIR --tokenizer MODEL

Order matters for the user: every input is checked (trainer.preflight) before torch is imported and before the run
directory exists; then the builder measures the train_gpt.py form that will ship (`--code-form`), and only then
the trainer runs with those bytes reserved.
"""

from __future__ import annotations

import argparse
import os
import sys

from builder.ship import FORM_HELP, parse_form, shipped_source
from trainer.config import Hyperparameters, add_cli_flags, cli_overrides, config_json
from trainer.errors import PgolfError
from trainer.preflight import check_run_inputs
from trainer.presets import PRESET_HELP, PRESETS, get_preset, scale_tiny

FLAG_ALIASES = {"data_path": "--data", "tokenizer_path": "--tokenizer", "out_dir": "--out"}


def add_parser(sub, name: str, help_text: str) -> argparse.ArgumentParser:
    p = sub.add_parser(
        name, help=help_text, description=help_text + ". Every hyperparameter can also be set with its environment "
        "variable (the challenge's names); precedence: preset < environment < flag.",
        # the generated usage would repeat all ~110 flags
        usage=f"pgolf {name} [--preset NAME] [--scale tiny] --data DIR --tokenizer MODEL [--out RUN_DIR] "
        "[--code-form FORM] [--HYPERPARAMETER VALUE ...]",
    )
    g = p.add_argument_group("run")
    g.add_argument("--preset", default="baseline", help="named configuration (see --list-presets) [default baseline]")
    g.add_argument("--scale", choices=["full", "tiny"], default="full",
                   help="tiny shrinks any preset to CPU size, keeping every feature on [default full]")
    g.add_argument("--code-form", default="plain", metavar="FORM",
                   help=f"the train_gpt.py you will ship; its bytes are reserved in the 16 MB budget and `pgolf build` "
                   f"ships the same form: {FORM_HELP} [default plain]")
    g.add_argument("--threads", type=int, default=None, metavar="N",
                   help="intra-op CPU threads per process [default: OMP_NUM_THREADS when set, else 1 on CPU: small "
                   "CPU runs are ~10x slower with torch's default of one thread per core]")
    g.add_argument("--list-presets", action="store_true", help="list presets and exit")
    g.add_argument("--print-config", action="store_true", help="print the resolved configuration as JSON and exit")
    add_cli_flags(p, aliases=FLAG_ALIASES)
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


def set_cpu_threads(h: Hyperparameters, threads: int | None) -> None:
    """One intra-op thread per process on CPU unless the user chose (--threads, OMP_NUM_THREADS)."""
    import torch

    on_cpu = h.device == "cpu" or (h.device == "auto" and not torch.cuda.is_available())
    if threads is not None:
        torch.set_num_threads(threads)
    elif on_cpu and not os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(1)


def handle(args) -> int:
    if args.list_presets:
        width = max(len(n) for n in PRESETS)
        for name in PRESETS:
            print(f"{name:<{width}}  {PRESET_HELP.get(name, '')}")
        return 0
    h = resolve_from_args(args)
    if args.print_config:
        print(config_json(h))
        return 0
    form = parse_form(args.code_form)
    if args.threads is not None and args.threads < 1:
        raise PgolfError(f"--threads {args.threads}: expected at least 1")
    check_run_inputs(h)  # before torch and before any file is written
    try:
        import torch  # noqa: F401  (the trainer's one heavy dependency; absent in a plain `pip install pgolf`)
    except ImportError:
        raise PgolfError("pgolf train needs PyTorch: pip install 'pgolf[train]' (CPU-only machines: first "
                         "pip install torch --index-url https://download.pytorch.org/whl/cpu)") from None
    set_cpu_threads(h, args.threads)
    is_main = int(os.environ.get("RANK", "0")) == 0
    code_bytes = 0
    if is_main:  # only rank 0 logs sizes and exports the artifact
        code_bytes = shipped_source(h.to_dict(), form).code_bytes
        print(f"code_form:{form.name} reserves {code_bytes} bytes for train_gpt.py", file=sys.stderr, flush=True)
    from trainer.train import run

    metrics = run(h, code_bytes=code_bytes, code_form=form.name)
    if is_main:
        print(
            f"run_dir:{h.out_dir or os.path.join('runs', h.run_id)} val_bpb:{metrics['val_bpb']:.6f} "
            f"artifact_bytes:{metrics['artifact_bytes']} steps:{metrics['steps']}",
            file=sys.stderr,
        )
    return 0
