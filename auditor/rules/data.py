"""PG5xx data access: training shards read after the training phase, validation tokens used for training or stored
in the artifact, network/hub access reachable from the run."""

from __future__ import annotations

import re
from dataclasses import dataclass

from auditor.findings import Finding
from auditor.flow import TRAIN, VAL
from auditor.rules.base import Example, Rule, register

_RESERVE = re.compile(r"(?i)reserve")


def _f(rule, unit, node, level, msg):
    file, line, col, note = unit.location(node)
    return Finding(rule.id, level, note + msg, file, line, col)


def _off(site):
    return site.off or site.func.reach == "off"


def _note(site):
    return (
        f" (switched off in this run: `{site.guards[0]}` is false)"
        if site.guards
        else " (only reachable through code that is off in this run)"
    )


def _reserves_budget(facts) -> bool:
    """Does the run reserve part of the training budget (`GPTQ_RESERVE_SECONDS`, `gptq_reserve_ms`) with a value
    above zero, or do its logs print a reservation (`gptq:reserving 12s`)?"""
    if any(i.gptq_reserve_s for i in facts.sub.logs.values()):
        return True
    cfg = facts.cfg
    for attr, env in cfg.attr_env.items():
        if not (_RESERVE.search(attr) or _RESERVE.search(env)):
            continue
        v = cfg.env_value(env)
        try:
            if v is None or float(str(v)) > 0:
                return True  # an unknown value gets the benefit of the doubt (a note, not an error)
        except ValueError:
            return True
    return False


@dataclass
class _Reads:
    """Which functions read training data (transitively) and which train on it (the training phase)."""

    any_read: dict
    reads: dict
    trains: dict
    has_reserve: bool


def _reads(facts) -> _Reads:
    prog = facts.prog
    has_reserve = _reserves_budget(facts)
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
    return _Reads(any_read, reads, trains, has_reserve)


def _readers(prog, r: _Reads, f, c) -> list:
    """Functions called at `c` (from `f`) that read training data there."""
    train_args = any(TRAIN in lab for _k, lab, _c in c.arg_labels)
    return [g for g in prog.targets(c) if g is not f and (r.reads[g] or (train_args and r.any_read[g]))]


def late_train_reads(facts) -> list:
    """Calls that read training data after training has ended: [(func, call, reader, after, fix)], at most one per
    function. Training ends when a called training function returns, or with the last training loop of a function
    that runs (warm-up loops and a loader re-created before the main loop are training). Shared by PG501 and the
    calibration timing rule (PG302)."""
    return facts.memo("data.late_reads", lambda: _late_reads(facts))


def _late_reads(facts) -> list:
    prog = facts.prog
    if prog is None:
        return []
    r = facts.memo("data.reads", lambda: _reads(facts))
    out = []
    for f in prog.funcs:
        if f.reach == "dead":
            continue
        calls = sorted((c for c in f.calls if not c.is_ref), key=lambda c: c.order)
        trained_at = next((c.order for c in calls if any(r.trains[g] for g in prog.targets(c) if g is not f)), None)
        if trained_at is not None and not any(s.kind == "train" and TRAIN in s.labels for s in f.sites):
            for c in calls:
                if c.order <= trained_at:
                    continue
                gs = [g for g in _readers(prog, r, f, c) if not r.trains[g]]
                if gs:
                    out.append((f, c, gs[0], f"training phase has returned in {f.qualname}",
                                "Reserve the calibration time inside the budget"))
                    break
        tsites = [s for s in f.sites if s.kind == "train" and TRAIN in s.labels and VAL not in s.labels
                  and s.loops and not _off(s)]
        if not tsites:
            continue
        loops = {id(s.loops[0].node) for s in tsites}
        in_loop = [x.order for x in f.sites + f.calls if x.loops and id(x.loops[0].node) in loops]
        end = max(in_loop + [s.order for s in tsites])
        hit = next(((c, gs[0]) for c in calls if c.order > end for gs in [_readers(prog, r, f, c)] if gs), None)
        # a shard opened inline after the loop (np.memmap of the last training shard for a later adaptation)
        late = [s for s in f.sites if s.kind == "read_train" and s.order > end and not _off(s)]
        site = min(late, key=lambda s: s.order, default=None)
        if site is not None and (hit is None or site.order < hit[0].order):
            hit = (site, f)
        if hit is not None:
            out.append((f, hit[0], hit[1], f"training loop in {f.qualname} has stopped",
                        "Reserve the calibration time inside the budget (stop training early)"))
    return out


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

_NORESERVE = _HP.replace(
    '    gptq_reserve_ms = float(os.environ.get("GPTQ_RESERVE_SECONDS", {reserve})) * 1000\n', ""
)


_BASELINE = _NORESERVE.replace(
    """    train_stream = TokenStream(args.train_files)
    for step in range(100):
        x = train_stream.take(1025)
        loss = model(x[:-1][None], x[1:][None])
        loss.backward()
        opt.step()
    collect_hessians(model, args.train_files)
    {save}""",
    """    train_stream = TokenStream(args.train_files)
    for warmup_step in range(20):
        x = train_stream.take(1025)
        loss = model(x[:-1][None], x[1:][None])
        loss.backward()
        opt.step()
    train_stream = TokenStream(args.train_files)
    step = 0
    while True:
        x = train_stream.take(1025)
        loss = model(x[:-1][None], x[1:][None])
        loss.backward()
        opt.step()
        step += 1
        if step >= 100:
            break
    {after}
    torch.save(model.state_dict(), "final_model.pt")""")
# after the main loop, the tail of the last training shard is opened inline for a later adaptation step
_INLINE_TAIL = _BASELINE.replace("{after}", """last = sorted(glob.glob(args.train_files))[-1]
    tail = torch.from_numpy(np.memmap(last, dtype=np.uint16, mode="r")[256:].astype(np.int64))[-4097:]
    model(tail[:-1][None], tail[1:][None]).backward()""")
# a distillation loop that is switched off follows the calibration: training ended with the main loop
_DISTILL_OFF = _BASELINE.replace("{after}", """collect_hessians(model, args.train_files)
    if int(os.environ.get("DISTILL_STEPS", "0")) > 0:
        for _ in range(10):
            x = train_stream.take(1025)
            model(x[:-1][None], x[1:][None]).backward()
            opt.step()""")


@register
class PG501(Rule):
    id, level, title = "PG501", "error", "training shards read after the training phase"
    why = ("Training data may be used only inside the 600 s training budget; GPTQ/Hessian calibration on training "
           "shards after the training loop, or any training-data read during evaluation, is outside it.")
    fix = ("Reserve the calibration time inside the training budget (stop training early), or calibrate on "
           "self-generated data.")
    LEGAL = (
        Example("gptq_calibration_with_reserve", {"train_gpt.py": _HP.replace("{reserve}", "12").replace(
            "{save}", "torch.save(model.state_dict(), 'final_model.pt')")}),
        Example("baseline_warmup_then_recreated_loader", {"train_gpt.py": _BASELINE.replace("{after}", "pass")},
                note="loader built, warm-up steps, loader re-created, main loop: all of it is training"),
    )
    ILLEGAL = (
        Example("reserve_variable_set_to_zero", {"train_gpt.py": _HP.replace("{reserve}", "0").replace(
            "{save}", "pass")}, points_at=(("train_gpt.py", 35),), note="a reserve of 0 s reserves nothing"),
        Example("calibration_before_a_switched_off_loop", {"train_gpt.py": _DISTILL_OFF},
                points_at=(("train_gpt.py", 44),)),
        Example("calibration_after_train_model_returns", {"train_gpt.py": _SPLIT}, points_at=(("train_gpt.py", 37),)),
        Example("training_shard_tail_opened_after_the_loop", {"train_gpt.py": _INLINE_TAIL},
                points_at=(("train_gpt.py", 44),), note="an inline read, no reader function in between"),
        Example("gptq_on_train_after_loop_no_reserve", {"train_gpt.py": _NORESERVE.replace("{save}", "pass")},
                points_at=(("train_gpt.py", 34),)),
    )

    def check(self, facts):
        prog = facts.prog
        if prog is None:
            return
        for f, c, reader, after, fix in late_train_reads(facts):
            yield self._late(f, c, reader, facts.memo("data.reads", lambda: _reads(facts)).has_reserve, after, fix)
        for f in prog.funcs:
            if f.reach == "dead":
                continue
            # an evaluation function: scores validation tokens itself and does no training on training data
            scores = any(s.kind == "score" for s in f.sites) and not any(
                s.kind == "train" and TRAIN in s.labels for s in f.sites)
            if scores:
                for s in f.sites:
                    if s.kind == "read_train" and s.detail.get("intrinsic"):
                        lvl = "note" if _off(s) else "error"
                        yield _f(self, f.unit, s.node, lvl,
                                 f"{f.qualname} evaluates on validation data and also reads training shards; "
                                 f"evaluation may not access training data. Move any use of training data into "
                                 f"the timed training phase.{_note(s) if lvl == 'note' else ''}")

    def _late(self, f, c, reader, has_reserve: bool, after: str, fix: str):
        """At call `c`: `reader` opens training shards after `after`. A note when the run switches the path off or
        the code reserves budget time for it, an error otherwise."""
        off = c.off or f.reach == "off"
        lvl = "note" if (off or has_reserve) else "error"
        why = (
            " (inside the reserved budget: the code reserves time for it)"
            if has_reserve and not off
            else (f" (switched off in this run: `{c.guards[0]}` is false)" if off and c.guards else "")
        )
        return _f(self, f.unit, c.node, lvl,
                  f"{reader.qualname} reads training shards after the {after} (e.g. GPTQ/Hessian calibration); "
                  f"training-data access outside the 600 s training budget is not allowed. {fix} or calibrate on "
                  f"self-generated data.{why}")


@register
class PG502(Rule):
    id, level, title = "PG502", "error", "validation tokens used for training or stored in the artifact"
    why = "Validation data may be used only for scoring: never for training, never stored in the artifact."
    fix = "Train only on fineweb_train shards; serialize only model weights and code."
    LEGAL = (
        Example("gptq_calibration_with_reserve", {"train_gpt.py": _HP.replace("{reserve}", "12").replace(
            "{save}", "torch.save(model.state_dict(), 'final_model.pt')")}),
    )
    ILLEGAL = (
        Example("val_tokens_saved_in_artifact", {"train_gpt.py": _HP.replace("{reserve}", "12").replace(
            "{save}",
            "val_tokens = load_data_shard(sorted(glob.glob(args.val_files))[0])\n"
            "    torch.save({'model': model.state_dict(), 'prefix': val_tokens[:100000]}, 'final_model.pt')")},
            points_at=(("train_gpt.py", 37),)),
        Example("val_shard_linked_as_train_shard", {
            "train_gpt.py": _HP.replace("{reserve}", "12").replace("{save}", "pass"),
            "README.md": "# Setup\n```bash\nmkdir -p data/valonly\n"
                         "ln -s data/fineweb10B_sp1024/fineweb_val_000000.bin data/valonly/fineweb_train_000000.bin\n"
                         "DATA_PATH=data/valonly torchrun --nproc_per_node=8 train_gpt.py\n```\n"},
            points_at=(("README.md", 4),)),
        Example("paid_prefix_blob_script", {
            "train_gpt.py": _HP.replace("{reserve}", "12").replace("{save}", "pass"),
            "build_prefix.py": "import glob, lzma, numpy as np\n"
                               "files = sorted(glob.glob('data/fineweb_val_*.bin'))\n"
                               "toks = np.concatenate([np.fromfile(f, dtype='<u2')[512:] for f in files])\n"
                               "open('prefix.xz', 'wb').write(lzma.compress(toks[:6_000_000].tobytes()))\n",
            "README.md": "```\npython build_prefix.py\n"
                         "PREFIX=prefix.xz torchrun --nproc_per_node=8 train_gpt.py\n```\n"},
            points_at=(("build_prefix.py", 4),)),
    )

    def check(self, facts):
        yield from self._folder_shapes(facts.sub)
        if facts.prog is None:
            return
        for f in facts.prog.funcs:
            if f.reach == "dead":
                continue
            for s in f.sites:
                lvl = "note" if _off(s) else "error"
                tail = _note(s) if lvl == "note" else ""
                if s.kind == "save_val":
                    yield _f(self, f.unit, s.node, lvl,
                             f"validation tokens flow into `{s.detail.get('what', 'the state dict')}` in "
                             f"{f.qualname}; storing validation data in the artifact ('paid prefix') is forbidden. "
                             f"Serialize only model weights and code.{tail}")
                elif s.kind == "train" and VAL in s.labels and TRAIN in s.labels:
                    yield _f(self, f.unit, s.node, lvl,
                             f"the training loss in {f.qualname} mixes validation tokens into training batches; "
                             f"validation data may not be used for training. Train only on fineweb_train "
                             f"shards.{tail}")


    def _folder_shapes(self, sub):
        """Shapes outside the run's code: set-up commands that make a training shard a validation shard, and
        companion scripts the README runs that store validation tokens for the run."""
        if not sub.is_folder:
            return
        for rel, line, cmd in _val_into_train_commands(sub):
            yield self.finding(
                f"{rel} sets the data up so that a training shard is a validation shard (`{cmd[:160]}`); the run "
                f"then trains on validation data, which is forbidden. Train only on fineweb_train shards.", rel, line)
        for rel, store, reads_val in _val_storing_scripts(sub):
            yield self.finding(
                f"{rel} reads validation shards (line {reads_val}) and writes them out compressed here, and the "
                f"README/run script runs it: validation tokens stored for the run ('paid prefix') are forbidden in "
                f"the artifact. Serialize only model weights and code.", rel, store)


@register
class PG503(Rule):
    id, level, title = "PG503", "error", "network or hub access reachable from the run"
    why = "The artifact must be self-contained: no downloads, hub or network calls during the run."
    fix = "Ship what the run needs inside the 16 MB artifact."
    LEGAL = (
        Example("download_in_separate_script", {
            "train_gpt.py": _HP.replace("{reserve}", "12").replace("{save}", "pass"),
            "cached_challenge_fineweb.py": "from huggingface_hub import hf_hub_download\n"
                                           "hf_hub_download('willdepueoai/parameter-golf', 'x')\n"}),
    )
    ILLEGAL = (
        Example("dataset_download_before_training", {"train_gpt.py": _HP.replace("{reserve}", "12").replace(
            "{save}", "pass").replace("    args = Hyperparameters()\n",
                                      "    args = Hyperparameters()\n    fetch_data()\n").replace(
            "def main():", "def fetch_data():\n    from huggingface_hub import hf_hub_download\n"
                           "    hf_hub_download('someone/data', 'fineweb_train_000000.bin')\n\ndef main():")},
            points_at=(("train_gpt.py", 27),), note="before training: a warning, not an evaluation violation"),
        Example("pip_install_at_start_of_training_function", {"train_gpt.py": _HP.replace("{reserve}", "12").replace(
            "{save}", "pass").replace("import os, glob,", "import subprocess, sys, os, glob,").replace(
            "    args = Hyperparameters()\n",
            "    subprocess.check_call([sys.executable, '-m', 'pip', 'install', 'brotli'])\n"
            "    args = Hyperparameters()\n")},
            points_at=(("train_gpt.py", 26),), note="before the training loop of the same function: a warning"),
        Example("hub_download_at_eval", {"train_gpt.py": _HP.replace("{reserve}", "12").replace(
            "{save}", "from huggingface_hub import hf_hub_download\n"
                      "    hf_hub_download(repo_id='someone/cache', filename='ngram.bin')")},
            points_at=(("train_gpt.py", 37),)),
    )

    def check(self, facts):
        if facts.prog is None:
            return
        for f in facts.prog.funcs:
            if f.reach == "dead":
                continue
            for s in f.sites:
                if s.kind != "net":
                    continue
                lvl = "note" if _off(s) else "error"
                setup = lvl == "error" and _site_before_training(facts, f, s)
                if setup:
                    lvl = "warning"
                yield _f(self, f.unit, s.node, lvl,
                         f"network/hub access `{s.detail.get('what')}` in {f.qualname} is reachable from the entry "
                         f"point; the artifact must be self-contained (no downloads, hub or network calls during the "
                         f"run). Ship what you need inside the 16 MB artifact."
                         + (" (data set-up: every call to it happens before training starts, so it cannot feed "
                            "evaluation anything the run did not have at training time)" if setup else "")
                         + (_note(s) if lvl == "note" else ""))


def _training_start(facts, f):
    """Statement order at which `f` starts training (its first train site or call into a training function)."""
    prog = facts.prog
    r = facts.memo("data.reads", lambda: _reads(facts))
    starts = [s.order for s in f.sites if s.kind == "train" and TRAIN in s.labels]
    starts += [x.order for x in f.calls if not x.is_ref and any(r.trains[t] for t in prog.targets(x) if t is not f)]
    return min(starts) if starts else None


def _site_before_training(facts, f, site) -> bool:
    """Does `site` (in `f`) run before training starts: earlier in a function that trains, or in a function only
    called before training?"""
    r = facts.memo("data.reads", lambda: _reads(facts))
    if r.trains[f]:
        start = _training_start(facts, f)
        return start is not None and site.order < start and not site.loops
    return _before_training(facts, f)


def _before_training(facts, g, depth: int = 0) -> bool:
    """Is every call to `g` made before training starts (data/tokenizer download at start-up)? Followed up to three
    callers deep: `main` -> `prepare()` -> `download()`."""
    prog = facts.prog
    r = facts.memo("data.reads", lambda: _reads(facts))
    callers = [(f, c) for f in prog.funcs if f.reach != "dead" for c in f.calls
               if not c.is_ref and f is not g and g in prog.targets(c)]
    if not callers or depth > 2:
        return False
    for f, c in callers:
        if r.trains[f]:
            start = _training_start(facts, f)
            if start is None or c.order >= start:
                return False
        elif not _before_training(facts, f, depth + 1):
            return False
    return True


# ------------------------------------------------------------------------------------------------ folder text shapes
MAX_SCRIPT_BYTES = 400_000
_VAL_SHARD = re.compile(r"fineweb_val_|val_files|val[-_]dir|[\"'/]val_\d")
_STORE = re.compile(r"(?:lzma|zlib|bz2|brotli|zstd)\w*\.compress\(|\.tofile\(|np\.save\w*\(|lzma\.open\(")
_LINKERS = {"ln", "cp", "mv", "rsync", "install"}


def _text_lines(text: str):
    for i, line in enumerate(text.splitlines(), 1):
        if len(line) <= 4096:  # no real command or code line is longer; keeps the scans linear
            yield i, line


def _val_into_train_commands(sub):
    """README / run-script lines that link or copy a validation shard to a training-shard name
    (`ln -s .../fineweb_val_000000.bin .../fineweb_train_000000.bin`): the run then trains on validation data."""
    texts = [(sub.readme_rel, sub.readme_text)] if sub.readme_rel else []
    texts += sorted(sub.scripts.items())
    for rel, text in texts:
        for i, line in _text_lines(text or ""):
            toks = [t.strip("`'\"(),") for t in line.replace("$", " ").split()]
            toks = [t for t in toks if t and t != "sudo"]
            is_py = "os.symlink(" in line or "shutil.copy" in line or "os.link(" in line
            if not toks or not (toks[0] in _LINKERS or is_py):
                continue
            vals = [k for k, t in enumerate(toks) if "val_" in t and (".bin" in t or "*" in t)]
            trains = [k for k, t in enumerate(toks) if "train_" in t and (".bin" in t or "*" in t)]
            if vals and trains and max(trains) > min(vals):
                yield rel, i, line.strip()


def _val_storing_scripts(sub):
    """Python files of the folder that the run does not execute but its README / run scripts run with python, which
    read validation shards and write them out compressed (a 'paid prefix' blob the run then loads) and train
    nothing."""
    run_texts = (sub.readme_text or "") + "\n".join(sub.scripts.values())
    executed = {u.rel for u in sub.units}
    try:
        entries = sub.reader.walk(max_depth=1)
    except Exception:
        return
    for e in entries:
        if not e.rel.endswith(".py") or e.rel in executed or e.size > MAX_SCRIPT_BYTES:
            continue
        name = e.rel.rsplit("/", 1)[-1]
        if not any(("python" in ln and name in ln) for _i, ln in _text_lines(run_texts)):
            continue  # the README/run script does not run it
        try:
            text = sub.reader.read_bytes(e.rel, MAX_SCRIPT_BYTES).decode("utf-8", errors="replace")
        except Exception:
            continue
        reads_val = weak = store = None
        for i, line in _text_lines(text):
            if reads_val is None and "fineweb_val_" in line:
                reads_val = i  # the shard pattern itself beats a `--val-dir` in a usage string
            if weak is None and _VAL_SHARD.search(line):
                weak = i
            if store is None and _STORE.search(line):
                store = i
        reads_val = reads_val or weak
        if ".backward(" in text:
            continue  # a training script (a readable copy of the trainer): its compressed output is the model
        if reads_val is not None and store is not None:
            yield e.rel, store, reads_val


# ------------------------------------------------------------------------------------------------ validation subset
_SUBSET_ENV = re.compile(
    r"^(?:(?:VAL|EVAL)_(?:MAX_)?(?:TOKENS?|DOCS?|DOCUMENTS|SEQS|SEQUENCES|BATCHES)_?(?:LIMIT|MAX|CAP)?"
    r"|(?:MAX|LIMIT)_(?:VAL|EVAL)_(?:TOKENS?|DOCS?|DOCUMENTS|SEQS|SEQUENCES|BATCHES)"
    r"|(?:VAL|EVAL)_(?:SUBSET|FRACTION|FRAC))$"
)
_SUBSET_WORDS = ("LIMIT", "MAX", "CAP", "SUBSET", "FRAC")


def _subset_settings(facts):
    """(ENV, value, is_fraction) of every validation-size limit the run sets to a subset of the validation set."""
    cfg = facts.cfg
    names = set(cfg.defaults) | set(cfg.overrides)
    for env in sorted(names):
        if not _SUBSET_ENV.match(env) or not any(w in env for w in _SUBSET_WORDS):
            continue
        v = cfg.env_value(env)
        try:
            x = float(str(v).strip())
        except (TypeError, ValueError):
            continue
        frac = "FRAC" in env or ("SUBSET" in env and x <= 1.0)
        if (frac and 0.0 < x < 1.0) or (not frac and x > 0):
            yield env, str(v).strip(), frac


def _setting_location(facts, env: str):
    """Where the run's value of `env` is set: the log line that prints it, the README line that assigns it, or the
    code line that reads it (its default)."""
    sub, cfg = facts.sub, facts.cfg
    src = cfg.source_of(env)
    info = sub.logs.get(src)
    if info is not None:
        attr = next((a for a, e in cfg.attr_env.items() if e == env), None)
        line = info.setting_lines.get(env) or (info.setting_lines.get(attr) if attr else None)
        return src, line or 1
    texts = {sub.readme_rel: sub.readme_text, **sub.scripts} if sub.readme_rel else dict(sub.scripts)
    if src in texts:
        for i, line in _text_lines(texts[src] or ""):
            if f"{env}=" in line:
                return src, i
        return src, 1
    for attr, e in cfg.attr_env.items():
        if e == env and attr in cfg.attr_expr:
            node, unit = cfg.attr_expr[attr]
            file, line, _col, note = unit.location(node)
            return file, line, note
    for u in sub.units:
        if u.kind == "decoded":
            continue
        for i, line in _text_lines(u.text or ""):
            if f'"{env}"' in line or f"'{env}'" in line:
                return u.rel, i
    return (sub.entry.name if sub.entry is not None else "train_gpt.py"), 1


_SUBSET_CODE = """import os, glob, numpy as np, torch

class Hyperparameters:
    val_files = "./data/fineweb_val_*.bin"
    val_tokens_limit = int(os.environ.get("VAL_TOKENS_LIMIT", {limit}))

def load_validation_tokens(pattern, limit):
    tokens = np.concatenate([np.fromfile(f, dtype="<u2") for f in sorted(glob.glob(pattern))])
    return tokens[:limit] if limit > 0 else tokens

args = Hyperparameters()
val_tokens = load_validation_tokens(args.val_files, args.val_tokens_limit)
print(f"final_int8_zlib_roundtrip_exact val_loss:{{2.0:.8f}} val_bpb:{{1.2:.8f}}")
"""


@register
class PG504(Rule):
    id, level, title = "PG504", "error", "scored on a subset of the validation set"
    why = ("The score is the bits per byte over the whole validation set (the first 50,000 documents); a run that "
           "limits the validation tokens or documents (VAL_MAX_TOKENS, a document subset) and reports that number "
           "as its score is not comparable and not a valid record.")
    fix = "Evaluate on the full validation set: leave the limit unset (0) in the submitted run."
    LEGAL = (Example("limit_off", {"train_gpt.py": _SUBSET_CODE.format(limit=0)}),)
    ILLEGAL = (
        Example("limit_in_code_default", {"train_gpt.py": _SUBSET_CODE.format(limit=1_000_000)},
                points_at=(("train_gpt.py", 5),)),
        Example("limit_in_run_command", {
            "train_gpt.py": _SUBSET_CODE.format(limit=0),
            "README.md": "```\nVAL_TOKENS_LIMIT=2000000 torchrun --nproc_per_node=8 train_gpt.py\n```\n"},
            points_at=(("README.md", 2),)),
        Example("limit_printed_in_log", {
            "train_gpt.py": _SUBSET_CODE.format(limit=0),
            "train_seed1.log": "Hyperparameters:\n  val_tokens_limit: 4194304\n"
                               "step:1/10 train_loss:6.0 train_time:10ms step_avg:10.00ms\n"
                               "final_int8_zlib_roundtrip_exact val_loss:2.0 val_bpb:1.2\n"},
            points_at=(("train_seed1.log", 2),)),
    )

    def check(self, facts):
        for env, v, frac in _subset_settings(facts):
            rel, line, *note = _setting_location(facts, env)
            yield self.finding(
                f"{note[0] if note else ''}{env}={v} limits evaluation to {'a fraction' if frac else 'part'} of the "
                f"validation set "
                f"(set by {facts.cfg.source_of(env)}); the reported score is then not the full-validation bits per "
                f"byte. Leave it unset (0) for the submitted run.", rel, line,
                evidence={"env": env, "value": v})
