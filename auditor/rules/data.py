"""PG5xx data access: training shards read after the training phase, validation tokens used for training or stored
in the artifact, network/hub access reachable from the run."""

from __future__ import annotations

import re

from auditor.findings import Finding
from auditor.flow import TRAIN, VAL

RULES = {
    "PG501": ("error", "training shards read after the training phase"),
    "PG502": ("error", "validation tokens used for training or stored in the artifact"),
    "PG503": ("error", "network or hub access reachable from the run"),
}
_RESERVE = re.compile(r"(?i)reserve")


def _f(unit, node, rule, level, msg):
    file, line, col, note = unit.location(node)
    return Finding(rule, level, note + msg, file, line, col)


def _off(site):
    return site.off or site.func.reach == "off"


def _note(site):
    return (
        f" (switched off in this run: `{site.guards[0]}` is false)"
        if site.guards
        else " (only reachable through code that is off in this run)"
    )


def check(ctx) -> list:
    prog = ctx.prog
    if prog is None:
        return []
    out = []
    has_reserve = any(_RESERVE.search(k) for k in ctx.cfg.attr_env) or any(
        i.gptq_reserve_s for i in ctx.sub.logs.values()
    )
    # transitive "reads training data"
    # transitive "reads training data", context-sensitive at one level: a helper that reads whatever file it is
    # given (load_data_shard) reads training data only where a caller passes training files
    any_read = {f: any(s.kind == "read_train" for s in f.sites) for f in prog.funcs}
    reads = {f: any(s.kind == "read_train" and s.detail.get("intrinsic") for s in f.sites) for f in prog.funcs}
    for _ in range(10):
        ch = False
        for f in prog.funcs:
            if reads[f]:
                continue
            for c in f.calls:
                if c.is_ref:
                    continue
                train_args = any(TRAIN in lab for _k, lab, _c in c.arg_labels)
                if any(g is not f and (reads[g] or (train_args and any_read[g])) for g in prog.targets(c)):
                    reads[f] = ch = True
                    break
        if not ch:
            break
    # transitive "trains on training data" (the training phase), to find calibration reads after it returns
    trains = {
        f: any(s.kind == "train" and TRAIN in s.labels and VAL not in s.labels for s in f.sites) for f in prog.funcs
    }
    for _ in range(10):
        ch = False
        for f in prog.funcs:
            if not trains[f] and any(trains[g] for c in f.calls if not c.is_ref for g in prog.targets(c) if g is not f):
                trains[f] = ch = True
        if not ch:
            break
    for f in prog.funcs:
        if f.reach == "dead":
            continue
        calls = sorted((c for c in f.calls if not c.is_ref), key=lambda c: c.order)
        trained_at = next((c.order for c in calls if any(trains[g] for g in prog.targets(c) if g is not f)), None)
        if trained_at is not None and not any(s.kind == "train" and TRAIN in s.labels for s in f.sites):
            for c in calls:
                if c.order <= trained_at:
                    continue
                gs = [g for g in prog.targets(c) if g is not f and not trains[g]]
                train_args = any(TRAIN in lab for _k, lab, _c in c.arg_labels)
                gs = [g for g in gs if reads[g] or (train_args and any_read[g])]
                if not gs:
                    continue
                out.append(_late_train_read(f, c, gs[0], has_reserve,
                                            f"training phase has returned in {f.qualname}",
                                            "Reserve the calibration time inside the budget"))
                break
        # an evaluation function: scores validation tokens itself and does no training on training data
        scores = any(s.kind == "score" for s in f.sites) and not any(
            s.kind == "train" and TRAIN in s.labels for s in f.sites
        )
        for s in f.sites:
            lvl = "note" if _off(s) else "error"
            tail = _note(s) if lvl == "note" else ""
            if s.kind == "read_train" and scores and s.detail.get("intrinsic"):
                out.append(
                    _f(
                        f.unit,
                        s.node,
                        "PG501",
                        lvl,
                        f"{f.qualname} evaluates on validation data and also "
                        f"reads training shards; evaluation may not access training data. Move any use of "
                        f"training data into the timed training phase.{tail}",
                    )
                )
            elif s.kind == "net":
                out.append(
                    _f(
                        f.unit,
                        s.node,
                        "PG503",
                        lvl,
                        f"network/hub access `{s.detail.get('what')}` in "
                        f"{f.qualname} is reachable from the entry point; the artifact must be self-contained "
                        f"(no downloads, hub or network calls during the run). Ship what you need inside the "
                        f"16 MB artifact.{tail}",
                    )
                )
            elif s.kind == "save_val":
                out.append(
                    _f(
                        f.unit,
                        s.node,
                        "PG502",
                        lvl,
                        f"validation tokens flow into `{s.detail.get('what', 'the state dict')}` "
                        f"in {f.qualname}; storing validation data in the artifact ('paid prefix') is forbidden. "
                        f"Serialize only model weights and code.{tail}",
                    )
                )
            elif s.kind == "train" and VAL in s.labels and TRAIN in s.labels:
                out.append(
                    _f(
                        f.unit,
                        s.node,
                        "PG502",
                        lvl,
                        f"the training loss in {f.qualname} mixes validation "
                        f"tokens into training batches; validation data may not be used for training. Train "
                        f"only on fineweb_train shards.{tail}",
                    )
                )
        # training loop: train sites on TRAIN data; calls after it that read training data
        tsites = [s for s in f.sites if s.kind == "train" and TRAIN in s.labels and VAL not in s.labels and s.loops]
        if not tsites:
            continue
        loop = tsites[0].loops[0]
        in_loop = [x.order for x in f.sites + f.calls if x.loops and x.loops[0] is loop]
        end = max(in_loop) if in_loop else tsites[0].order
        for c in f.calls:
            if c.is_ref or c.order <= end or (c.loops and c.loops[0] is loop):
                continue
            train_args = any(TRAIN in lab for _k, lab, _c in c.arg_labels)
            gs = [g for g in prog.targets(c) if g is not f and (reads[g] or (train_args and any_read[g]))]
            if not gs:
                continue
            out.append(_late_train_read(f, c, gs[0], has_reserve, f"training loop in {f.qualname} has stopped",
                                        "Reserve the calibration time inside the budget (stop training early)"))
            break
    return out


def _late_train_read(f, c, reader, has_reserve: bool, after: str, fix: str):
    """PG501 at call `c`: `reader` opens training shards after `after`. A note when the run switches the path off
    or the code reserves budget time for it, an error otherwise."""
    off = c.off or f.reach == "off"
    lvl = "note" if (off or has_reserve) else "error"
    why = (
        " (inside the reserved budget: the code reserves time for it)"
        if has_reserve and not off
        else (f" (switched off in this run: `{c.guards[0]}` is false)" if off and c.guards else "")
    )
    return _f(
        f.unit,
        c.node,
        "PG501",
        lvl,
        f"{reader.qualname} reads training shards after the {after} (e.g. GPTQ/Hessian calibration); "
        f"training-data access outside the 600 s training budget is not allowed. {fix} or calibrate on "
        f"self-generated data.{why}",
    )


_HP = """import os, glob, numpy as np, torch

class Hyperparameters:
    data_path = os.environ.get("DATA_PATH", "./data/datasets/fineweb10B_sp1024")
    train_files = os.path.join(data_path, "fineweb_train_*.bin")
    val_files = os.path.join(data_path, "fineweb_val_*.bin")
    gptq_reserve_ms = float(os.environ.get("GPTQ_RESERVE_SECONDS", {reserve})) * 1000

def load_data_shard(f):
    return torch.from_numpy(np.fromfile(f, dtype="<u2", offset=1024).astype(np.int64))

class TokenStream:
    def __init__(self, pattern):
        self.files = sorted(glob.glob(pattern))
        self.tokens = load_data_shard(self.files[0])
    def take(self, n):
        return self.tokens[:n]

def collect_hessians(model, train_files):
    stream = TokenStream(train_files)
    for _ in range(16):
        x = stream.take(2048)
        model(x[None])

def main():
    args = Hyperparameters()
    model = torch.nn.Module()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    train_stream = TokenStream(args.train_files)
    for step in range(100):
        x = train_stream.take(1025)
        loss = model(x[:-1][None], x[1:][None])
        loss.backward()
        opt.step()
    collect_hessians(model, args.train_files)
    {save}

main()
"""

LEGAL_EXAMPLES = [
    {
        "name": "gptq_calibration_with_reserve",
        "files": {
            "train_gpt.py": _HP.replace("{reserve}", "12").replace(
                "{save}", "torch.save(model.state_dict(), 'final_model.pt')"
            )
        },
        "rules": ["PG501", "PG502", "PG503"],
    },
    {
        "name": "download_in_separate_script",
        "files": {
            "train_gpt.py": _HP.replace("{reserve}", "12").replace("{save}", "pass"),
            "cached_challenge_fineweb.py": "from huggingface_hub import hf_hub_download\nhf_hub_download('willdepueoai/parameter-golf', 'x')\n",
        },
        "rules": ["PG503"],
    },
]
_SPLIT = (
    _HP.replace('    gptq_reserve_ms = float(os.environ.get("GPTQ_RESERVE_SECONDS", {reserve})) * 1000\n', "")
    .replace(
        """def main():
    args = Hyperparameters()
    model = torch.nn.Module()
    opt""",
        """def train_model(args, model):
    opt""",
    )
    .replace(
        """    collect_hessians(model, args.train_files)
    {save}

main()""",
        """
def main():
    args = Hyperparameters()
    model = torch.nn.Module()
    train_model(args, model)
    collect_hessians(model, args.train_files)

main()""",
    )
)

ILLEGAL_EXAMPLES = [
    {"name": "calibration_after_train_model_returns", "files": {"train_gpt.py": _SPLIT}, "rules": ["PG501"]},
    {
        "name": "val_tokens_saved_in_artifact",
        "files": {
            "train_gpt.py": _HP.replace("{reserve}", "12").replace(
                "{save}",
                "val_tokens = load_data_shard(sorted(glob.glob(args.val_files))[0])\n    torch.save({'model': model.state_dict(), 'prefix': val_tokens[:100000]}, 'final_model.pt')",
            )
        },
        "rules": ["PG502"],
    },
    {
        "name": "hub_download_at_eval",
        "files": {
            "train_gpt.py": _HP.replace("{reserve}", "12").replace(
                "{save}",
                "from huggingface_hub import hf_hub_download\n    hf_hub_download(repo_id='someone/cache', filename='ngram.bin')",
            )
        },
        "rules": ["PG503"],
    },
    {
        "name": "gptq_on_train_after_loop_no_reserve",
        "files": {
            "train_gpt.py": _HP.replace(
                '    gptq_reserve_ms = float(os.environ.get("GPTQ_RESERVE_SECONDS", {reserve})) * 1000\n', ""
            ).replace("{save}", "pass")
        },
        "rules": ["PG501"],
    },
]
