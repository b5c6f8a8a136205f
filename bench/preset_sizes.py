#!/usr/bin/env python3
"""Full-size artifact estimate of every preset, computed from parameter shapes (the model is built on the meta
device, so nothing is allocated or trained):

  python bench/preset_sizes.py [--code-bytes N] [--json]

For each preset: parameter count, raw container bytes per precision group as configured, the worst-case total
(compress_bound(raw) + code: what the artifact can reach if the compressor gains nothing), whether that fits without
the budget fitter, the raw size at the fitter's floor (every eligible matrix int4, bit-packed) and fit_guaranteed:
compress_bound(floor) + code <= MAX_ARTIFACT_BYTES, i.e. the fitter can always bring the artifact under the cap.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from trainer.artifact import artifact_label, artifact_size_bound  # noqa: E402
from trainer.config import Hyperparameters  # noqa: E402
from trainer.model import GPT  # noqa: E402
from trainer.presets import PRESETS, get_preset  # noqa: E402

# What the budget fitter reserves for train_gpt.py in these estimates: the plain inlined file of the stack is
# ~176 KB (pgolf train logs `Code size:`); a minified/wrapped file is far smaller.
DEFAULT_CODE_BYTES = 200_000


def preset_size_report(name: str, code_bytes: int = DEFAULT_CODE_BYTES) -> dict:
    h = Hyperparameters.resolve(preset=get_preset(name), env={})
    with torch.device("meta"):
        model = GPT(h)
    n_params = sum(p.numel() for p in model.parameters())
    shapes = {n: tuple(t.shape) for n, t in model.export_state_dict().items()}
    bound = artifact_size_bound(h, shapes, code_bytes)
    return {"preset": name, "label": artifact_label(h), "params": int(n_params), **bound}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--code-bytes", type=int, default=DEFAULT_CODE_BYTES, help="bytes reserved for train_gpt.py")
    ap.add_argument("--json", action="store_true", help="one JSON object per preset instead of the table")
    args = ap.parse_args()
    reports = [preset_size_report(name, args.code_bytes) for name in PRESETS]
    if args.json:
        for r in reports:
            print(json.dumps(r, sort_keys=True))
        return 0
    print(f"code bytes reserved: {args.code_bytes:,}; cap: {reports[0]['cap']:,}")
    print("| preset | label | params | raw bytes per group (as configured) | raw total | worst-case total | "
          "fits w/o fitter | int4-floor raw | fit_guaranteed |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in reports:
        groups = ", ".join(f"{k} {v['raw_bytes']:,}" for k, v in r["groups"].items())
        print(f"| {r['preset']} | {r['label']} | {r['params']:,} | {groups} | {r['raw_total']:,} | "
              f"{r['raw_bound_total']:,} | {int(r['fits_without_fitter'])} | {r['floor_raw_total']:,} | "
              f"{int(r['fit_guaranteed'])} |")
    return 0 if all(r["fit_guaranteed"] for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
