"""`pgolf build RUN_DIR...`: package runs into a PR-ready record folder."""

from __future__ import annotations

import argparse
import time

from builder.runs import TRACKS
from builder.ship import FORM_HELP
from builder.wrap import WRAPS


def add_parser(sub, name: str, help_text: str) -> argparse.ArgumentParser:
    p = sub.add_parser(
        name, help=help_text,
        description=help_text + ". Inlines the trainer into one train_gpt.py with the runs' configuration baked in, "
        "and writes train_gpt.py, train_seed<N>.log, submission.json, README.md, loss_curve.png (and "
        "requirements.txt when needed) to OUT/track_<TRACK>/<date>_<NAME>/. The train_gpt.py form is the one the "
        "runs reserved (`pgolf train --code-form`) unless --code-form or --minify/--wrap/--specialize say otherwise.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="pgolf run directories (or logs with --from-logs), one per seed")
    p.add_argument("--name", required=True, help="submission name (also the folder name)")
    p.add_argument("--author", required=True, help="author name for submission.json")
    p.add_argument("--github-id", required=True, help="GitHub user id")
    p.add_argument("--track", choices=TRACKS, default="10min_16mb", help="record track (needs 3 seeds, <=600 s, the full validation split) or non-record (default: 10min_16mb)")
    p.add_argument("--out", default="records", help="records root directory (default: records)")
    form = p.add_argument_group("train_gpt.py form (default: the form the runs reserved with `pgolf train --code-form`)")
    form.add_argument("--code-form", default=None, metavar="FORM", help=FORM_HELP)
    form.add_argument("--wrap", choices=WRAPS, default=None, help="ship train_gpt.py as a self-extracting lzma/brotli wrapper")
    form.add_argument("--minify", action=argparse.BooleanOptionalAction, default=None,
                      help="minify the source with python-minifier (global names kept)")
    form.add_argument("--specialize", action=argparse.BooleanOptionalAction, default=None,
                      help="freeze the runs' feature switches and drop the code other values need (overriding a frozen "
                      "switch's environment variable then stops the built file with an error); default: on with --wrap")
    p.add_argument("--sota-bpb", type=float, nargs="+", default=[], metavar="X",
                   help="reference SOTA val_bpb (one mean, or its per-seed values) for the Welch significance test (default: none)")
    p.add_argument("--blurb", default=None, help="one-paragraph description (default: generated from the configuration)")
    p.add_argument("--date", default=None, help="YYYY-MM-DD for the folder and submission.json (default: the runs' start date)")
    p.add_argument("--force", action="store_true", help="replace an existing folder")
    p.add_argument("--from-logs", action="store_true", help="RUN_DIRs are challenge-style logs from another script (needs --script)")
    p.add_argument("--script", default=None, help="with --from-logs: the train_gpt.py that produced the logs")
    p.set_defaults(handler=handle)
    return p


def handle(args) -> int:
    from builder.submission import BuildOptions, build

    t = time.perf_counter()
    res = build(BuildOptions(
        runs=args.runs, name=args.name, author=args.author, github_id=args.github_id, track=args.track, out=args.out,
        wrap=args.wrap, minify=args.minify, specialize=args.specialize, code_form=args.code_form,
        sota_bpb=list(args.sota_bpb), blurb=args.blurb, force=args.force,
        from_logs=args.from_logs, script=args.script, date=args.date,
    ))
    sub = res.submission
    print(f"record folder: {res.folder}")
    for f in res.files:
        print(f"  {f}")
    sizes = ", ".join(f"{k} {v:,}" for k, v in res.code_sizes.items())
    print(f"val_bpb {sub['val_bpb']:.6f} (std {sub['val_bpb_std']:.6f}, {len(sub['seeds'])} seeds) | "
          f"bytes_total {sub['bytes_total']:,} | code form {res.form} ({sizes}) | built in {time.perf_counter() - t:.1f} s")
    if sub["validation"]["scope"] == "partial":
        print(f"note: partial validation ({sub['validation']['scored_tokens']:,} tokens scored): labelled in "
              f"README.md and submission.json; not a challenge score")
    if "p_value" in sub:
        print(f"vs reference {sub['sota_val_bpb']:.4f}: {sub['delta_nats']:+.4f} nats, Welch p = {sub['p_value']:.3g}")
    return 0
