"""Orchestration of one dynamic audit: config recovery, tiny data, the run plan (main, flip, normalization), the
sandboxed child, then analysis into findings. Never raises for a submission that fails to run: that is a PG900
warning and the static verdict stands."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from auditor.dynamic import analyze, channel, datagen, envscan, sandbox
from auditor.findings import Finding
from trainer.errors import PgolfError

HARNESS_VERSION = "2"
N_VAL_WINDOWS = 16  # validation stream = 16 windows of SEQ tokens + 1
LONG_VAL_WINDOWS = 160  # retry length for scripts that hard-code a minimum (5121 tokens)
DOC_LEN = 97  # tokens per document (a BOS every DOC_LEN) in the tiny streams
# retry for per-document adaptation that skips short documents or small batches of them (hard-coded minimums such as
# 512 tokens and 16 documents): 20 documents of 1,200 tokens, about FineWeb's mean document length (~1,240 tokens)
LONG_DOC_LEN, LONG_DOCS = 1200, 20
NORM_CANDIDATES = 8


def default_cache_dir() -> Path:
    root = os.environ.get("PGOLF_CACHE_DIR") or os.path.join(os.environ.get("XDG_CACHE_HOME") or
                                                               os.path.expanduser("~/.cache"), "pgolf")
    return Path(root) / "dynamic"


def _vocab(env: dict[str, str], names: dict[str, str | None]) -> int:
    for key in ("VOCAB_SIZE", "VOCAB", "N_VOCAB"):
        raw = env.get(key) or names.get(key)
        if raw:
            try:
                return int(float(raw))
            except ValueError:
                raise PgolfError(f"dynamic audit: {key}={raw!r} is not an integer vocabulary size") from None
    return 1024


def python_version(python: str) -> str:
    """'3.11' for the interpreter the submission runs under (the auditor's own without asking it)."""
    if os.path.realpath(python) == os.path.realpath(sys.executable):
        return f"{sys.version_info[0]}.{sys.version_info[1]}"
    try:
        out = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], capture_output=True,
                             text=True, timeout=30, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as e:
        raise PgolfError(f"audit --python {python}: cannot run it ({e}); expected a Python interpreter") from None
    if out.returncode != 0 or not out.stdout.strip():
        raise PgolfError(f"audit --python {python}: exited with status {out.returncode} for `-c 'import sys'`; "
                         "expected a Python interpreter")
    return out.stdout.strip()


_VOCAB_LITERAL = re.compile(r"^\s*vocab_size\s*(?::\s*int\s*)?=\s*(\d{3,5})\s*$", re.M)


def _fits_default(value: str, default: str | None) -> bool:
    """A recovered value the script can parse the way it parses its default: a log line that printed a per-rank list
    (`36,36,...`) for a knob whose default is a number is not the environment value, so the default is kept. Booleans
    printed as True/False are mapped by auditor.config, not here."""
    try:
        float(default) if default is not None else None
    except ValueError:
        return True  # a text default: any text fits
    if default is None or value.strip().lower() in ("true", "false"):
        return True
    try:
        float(value)
    except ValueError:
        return False
    return True


def _unresolved(value: str) -> bool:
    """A README/run-script value that is still a shell expression (`SEED=$SEED`, `$(nproc)`): the run's real value is
    unknown, so the script's own default is used."""
    return "$" in value or "`" in value or bool(_ATTR_EXPR.match(value.strip()))


# a log/README that printed the expression instead of its value (`VE_LAYERS=args.ve_layers`)
_ATTR_EXPR = re.compile(r"(args|h|hp|hparams|self|cfg|config)\.[A-Za-z_]\w*\W*$")


def build_env(names: dict, recovered: dict, vocab: int, workdir: Path, datadir: Path, tok: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for k, v in recovered.items():
        if (k in names or k.endswith("_ENABLED")) and not envscan.LAUNCH_NAMES.match(k) and not _unresolved(v) \
                and _fits_default(v, names.get(k)):
            env[k] = v
    # size knobs are shrunk from their *effective* value: a switch the run turned on (EVAL_STRIDE=64) stays on
    effective = {k: recovered.get(k, d) for k, d in names.items()}
    env.update(envscan.shrink_plan(effective))
    env["VOCAB_SIZE"] = str(vocab)
    for name in names:
        if envscan.DATA_NAMES.match(name):
            # `DATA_DIR="./data/"` means the official layout's root (datasets/ and tokenizers/ below it)
            root = (names[name] or "").rstrip("/").endswith("data") and "datasets" not in (names[name] or "")
            env[name] = str(datadir.parent.parent if root else datadir)
        elif envscan.TOKENIZER_NAMES.match(name):
            env[name] = str(tok)
        elif envscan.OUTPUT_NAMES.match(name):
            env[name] = str(workdir / "out")
    env.setdefault("DATA_PATH", str(datadir))
    env.setdefault("TOKENIZER_PATH", str(tok))
    env["RUN_ID"] = "pgolf_dynamic"
    env["SEED"] = env.get("SEED", "1337")
    return env


def configure(submission: Path, script: Path, static_context) -> dict:
    """Everything that decides the run and is known without touching data: names, recovered config, vocab, env."""
    source = script.read_text(encoding="utf-8", errors="replace")
    names = envscan.scan_env(source, str(script))
    # knobs read by a decoded payload (LZMA/base64 wrappers) or by helper modules next to the script count too
    extra = [p.read_text(encoding="utf-8", errors="replace") for p in sorted(script.parent.glob("*.py")) if p != script]
    if isinstance(static_context, dict):
        extra += [t for t in (static_context.get("decoded_sources") or {}).values() if isinstance(t, str)]
    for text in extra:
        for k, d in envscan.scan_env(text).items():
            if names.get(k) is None:
                names[k] = d
    ctx = static_context if isinstance(static_context, dict) else None
    # without the static audit's facts, build its configuration model once: recovered env and logged adaptation
    model = _static_config(submission) if ctx is None or "adapts_on_val" not in ctx else None
    if ctx is not None:
        recovered = {str(k): str(v) for k, v in (ctx.get("env") or ctx).items() if isinstance(k, str) and k.isupper()}
    else:
        recovered = envscan.recover_config(submission, script, model)
    vocab = _vocab(recovered, names)
    if not any(k in recovered or k in names for k in ("VOCAB_SIZE", "VOCAB", "N_VOCAB")):
        # no knob: a hard-coded `vocab_size = 4096` decides the tokenizer and data files the script looks for
        lit = _VOCAB_LITERAL.search("\n".join([source, *extra]))
        vocab = int(lit.group(1)) if lit else vocab
    env = build_env(names, recovered, vocab, Path("@WORK"), Path("@DATA"), Path("@TOK"))
    # reported with the verdict: each size knob's run value (None = code default) -> the tiny value
    shrunk = {k: [recovered.get(k, names.get(k)), v] for k, v in envscan.shrink_plan(
        {k: recovered.get(k, d) for k, d in names.items()}).items() if recovered.get(k, names.get(k)) != v}
    if ctx is not None and "adapts_on_val" in ctx:
        adapts = bool(ctx["adapts_on_val"])
    else:
        adapts = bool(model and model.adaptation_logged())
    return {"names": names, "recovered": recovered, "vocab": vocab, "env": env, "shrunk": shrunk,
            "adapts_on_val": adapts,
            "hard_coded": envscan.hard_coded(names),
            "val_bytes": any("fineweb_val_bytes_" in text for text in [source, *extra]),
            "data_variants": _data_variants([source, *extra], vocab)}


def _static_config(submission: Path):
    """auditor.config's model of the staged submission; None when the static side cannot read it."""
    from auditor.config import config_of

    try:
        return config_of(submission)
    except Exception:  # noqa: BLE001 - a folder the static side cannot read: recovered from its text, no retry
        return None


# dataset folders and tokenizer files of the challenge's naming scheme that a script names literally (variants such as
# `fineweb10B_sp10240_casefold` / `fineweb_10240_casefold_bpe.model`, which scripts otherwise download when absent)
_DATASET_NAME = re.compile(r"\bfineweb10B_sp(\d+)[A-Za-z0-9_]*\b")
_TOKENIZER_NAME = re.compile(r"\bfineweb_(\d+)[A-Za-z0-9_]*\.model\b")


def _data_variants(texts, vocab: int) -> dict:
    """{"datasets": [...], "tokenizers": [...]} named in the code for this vocabulary size, besides the standard ones."""
    ds, tk = set(), set()
    for text in texts:
        ds.update(m.group(0) for m in _DATASET_NAME.finditer(text) if int(m.group(1)) == vocab)
        tk.update(m.group(0) for m in _TOKENIZER_NAME.finditer(text) if int(m.group(1)) == vocab)
    ds.discard(f"fineweb10B_sp{vocab}")
    tk.discard(f"fineweb_{vocab}_bpe.model")
    return {"datasets": sorted(ds)[:8], "tokenizers": sorted(tk)[:8]}


def prepare(cfg: dict, workdir: Path, cache_dir: Path, n_windows: int = N_VAL_WINDOWS,
            doc_len: int = DOC_LEN) -> dict:
    vocab = cfg["vocab"]
    tok = datagen.tokenizer_for(vocab, cache_dir / "tokenizers")
    # layout of the official data, so scripts that ignore DATA_PATH still find it relative to the cwd
    datadir = workdir / "data" / "datasets" / f"fineweb10B_sp{vocab}"
    datadir.mkdir(parents=True)
    tokdir = workdir / "data" / "tokenizers"
    tokdir.mkdir(parents=True)
    local_tok = tokdir / f"fineweb_{vocab}_bpe.model"
    shutil.copyfile(tok, local_tok)
    # the same tiny data under the variant names the code uses (links inside the work dir: one validation shard, so
    # the per-run swap reaches every name)
    variants = cfg.get("data_variants") or {}
    for name in variants.get("datasets", []):
        os.symlink(datadir.name, datadir.parent / name)
    for name in variants.get("tokenizers", []):
        os.symlink(local_tok.name, tokdir / name)
    n_val = n_windows * envscan.SEQ + 1
    train, val = datagen.make_streams(vocab, n_val, 64 * envscan.SEQ * 8, seed=vocab, doc_len=DOC_LEN,
                                      val_doc_len=doc_len)
    datagen.write_shard(datadir / "fineweb_train_000000.bin", train)
    env = build_env(cfg["names"], cfg["recovered"], vocab, workdir, datadir, local_tok)
    # per-token byte counts next to the validation shard, for scripts that read them (CaseOps `fineweb_val_bytes_*`)
    piece_bytes = datagen.piece_bytes(local_tok) if cfg.get("val_bytes") else None
    return dict(cfg, env=env, train=train, val=val, datadir=datadir, piece_bytes=piece_bytes)


def plan_runs(prep: dict, workdir: Path, norm: bool = True) -> tuple[list[dict], dict]:
    """Main run, flip run, and normalization runs (last target replaced by each candidate)."""
    val, vocab = prep["val"], prep["vocab"]
    n = len(val)
    j = n // 2 + 5
    meta = {"flip_j": j, "norm_pos": n - 1, "norm_candidates": []}
    streams = [("main", val), ("flip", datagen.flip_variant(val, j, vocab))]
    if norm:
        rng = np.random.default_rng(7)
        cands = [int(val[-1])]
        ctx = [int(t) for t in val[-64:-1] if t >= datagen.FIRST_ORDINARY]  # tokens a cache has seen nearby
        for t in ctx[::-1] + rng.integers(datagen.FIRST_ORDINARY, vocab, size=64).tolist():
            if len(cands) >= NORM_CANDIDATES:
                break
            if int(t) not in cands:
                cands.append(int(t))
        meta["norm_candidates"] = cands
        for c in cands[1:]:
            v = val.copy()
            v[-1] = c
            streams.append((f"norm_{c}", v))
    runs = []
    pg = workdir / ".pgolf"
    # every run sees the same paths (scripts seed loaders from file names): the runner copies the run's validation
    # shard over the one in the data dir before the run
    dst = prep["datadir"] / "fineweb_val_000000.bin"
    for name, stream in streams:
        src = pg / f"val_{name}.bin"
        datagen.write_shard(src, stream)
        copies = [[str(src), str(dst)]]
        if prep.get("piece_bytes") is not None:
            bsrc, bdst = pg / f"val_bytes_{name}.bin", prep["datadir"] / "fineweb_val_bytes_000000.bin"
            datagen.write_shard(bsrc, prep["piece_bytes"][stream])
            copies.append([str(bsrc), str(bdst)])
        if name == "main":
            for a, b in copies:
                shutil.copyfile(a, b)
        np.save(pg / f"val_{name}.npy", stream)
        runs.append({"name": name, "env": dict(prep["env"]), "val_tokens": str(pg / f"val_{name}.npy"),
                     "val_shard": copies[0], "val_copies": copies, "captures": str(pg / f"cap_{name}.npz"),
                     "required": name == "main", "only_if_logp": name.startswith("norm_")})
    return runs, meta


_SHORT_VAL = re.compile(r"too short|not enough|fewer than|at least \d+ tokens", re.I)


def _main_run(child) -> dict | None:
    """The main run's record from the child's results; None when the results are unusable or lack it."""
    if child.channel_error is not None or not child.results:
        return None
    return next((r for r in child.results.get("runs", []) if r["name"] == "main"), None)


def _short_validation(child) -> bool:
    """The main run stopped because the validation stream is shorter than a length the script hard-codes (a 4096-token
    multi-length eval): worth one more run with a longer stream."""
    main = _main_run(child)
    return bool(main and not main["ok"] and main["error"] and _SHORT_VAL.search(main["error"]["msg"]))


def _one_update_ttt(child) -> bool:
    """The main run trained on validation tokens, but one update covered the whole stream (the script's TTT chunk is
    at least as long as the tiny stream): the order of scoring and training across chunks, and what a later chunk's
    training does to an earlier chunk's score, cannot be observed. Worth one more run with a longer stream."""
    main = _main_run(child)
    pr = (main or {}).get("probe") or {}
    if not (main and main["ok"] and pr.get("val_train_backwards")) or pr.get("tainted"):  # a verdict already
        return False
    runs, n = pr.get("train_versions") or [], int(pr.get("n_val") or 0)
    versions = {r[2] for r in runs}
    covered = sum(r[1] - r[0] + 1 for r in runs)
    return len(versions) == 1 and n > 0 and covered >= n - 2


def _adaptation_not_run(child) -> bool:
    """The main run ended without training on a single validation token although the run's logs show an adaptation
    on validation (TTT/SLOT) ran: the tiny stream did not reach that path (documents shorter than a hard-coded
    minimum, too few of them for a batch). Worth one more run with long documents."""
    main = _main_run(child)
    pr = (main or {}).get("probe") or {}
    return bool(main and main["ok"]) and not pr.get("val_train_backwards") and not pr.get("tainted")


_FUSED_SWITCH = re.compile(r"^(?:[A-Z0-9_]*FUSED[A-Z0-9_]*|[A-Z0-9_]*TRITON[A-Z0-9_]*)$")


def _gpu_only_failure(child) -> bool:
    """The main run stopped because a code path refuses CPU tensors or launches a kernel the interpreter cannot run."""
    main = _main_run(child)
    e = (main or {}).get("error") or {}
    if not main or main["ok"] or not e:
        return False
    return e.get("type") == "PgolfNeedsGPU" or bool(analyze._CUDA_ONLY.search(str(e.get("msg", ""))))


def _fused_switches(cfg: dict) -> dict:
    """The script's own on/off knobs for fused GPU kernels (`FUSED_CE_ENABLED`, `USE_TRITON_MLP`) that are on: set to
    0 they select the eager path the script keeps next to the kernel."""
    out = {}
    for name, default in cfg["names"].items():
        value = cfg["recovered"].get(name, default)
        if _FUSED_SWITCH.match(name) and str(value).strip().lower() in ("1", "true", "yes", "on"):
            out[name] = "0"
    return out


def cache_key(sub: Path, copied: list[str], skipped: list, static_context, timeout: float, python: str) -> str:
    """Content hash of what decides the result: the staged copy of the submission (every file copied, and what was
    refused), the static context's configuration, the auditor's dynamic code, the interpreter and the timeout."""
    h = hashlib.sha256()
    h.update(HARNESS_VERSION.encode())
    for rel in copied:
        h.update(rel.encode() + b"\0" + hashlib.sha256((sub / rel).read_bytes()).digest())
    h.update(json.dumps(skipped).encode())
    env = (static_context.get("env") or static_context) if isinstance(static_context, dict) else None
    h.update(json.dumps(env, sort_keys=True, default=str).encode())
    for p in sorted(Path(__file__).parent.rglob("*.py")):
        h.update(p.read_bytes())
    h.update(f"{float(timeout)}\0{python}".encode())
    return h.hexdigest()


def _refused(skipped: list[tuple[str, str]]) -> list[Finding]:
    """Symlinks and special files are never followed (a finding); files over the copy caps are a note."""
    out = []
    bad = [(r, w) for r, w in skipped if "cap" not in w]
    if bad:
        out.append(Finding("PG5D6", "warning", f"submission: {len(bad)} entr{'y' if len(bad) == 1 else 'ies'} not "
                           f"copied into the sandbox, first {bad[0][0]} ({bad[0][1]})", bad[0][0],
                           evidence={"refused": [{"path": r, "why": w} for r, w in bad[:20]]}))
    big = [(r, w) for r, w in skipped if "cap" in w]
    if big:
        out.append(Finding("PG5D6", "note", f"submission: {len(big)} file(s) over the sandbox copy caps were not "
                           f"copied, first {big[0][0]} ({big[0][1]})", big[0][0],
                           evidence={"refused": [{"path": r, "why": w} for r, w in big[:20]]}))
    return out


def _load_cached(path: Path):
    try:
        data = json.loads(path.read_text())
        findings = [Finding(**f) for f in data["findings"]]
        metrics = dict(data["metrics"], cached=True)
    except (OSError, ValueError, TypeError, KeyError):
        return None  # unreadable or stale entry: audit again
    return findings, metrics


def _store_cached(path: Path, findings: list[Finding], metrics: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps({"findings": [f.to_dict() for f in findings], "metrics": metrics}))
    os.replace(tmp, path)


def execute(submission: Path, timeout: float, cache_dir: Path, static_context, keep: bool = False,
            python: str | os.PathLike | None = None) -> tuple[list[Finding], dict]:
    script = envscan.find_script(submission)
    python = os.fspath(python or sys.executable)
    # no bubblewrap, or one that cannot make namespaces here: one line saying so, before any work
    sandbox.check_bwrap(sandbox.bwrap_path(), os.geteuid() == 0)
    # the sandbox's writable tmpfs is /tmp and the work dir keeps its host path inside it; locked while we run, so
    # the dir of an auditor killed before its cleanup is removed by the next audit
    workdir = sandbox.new_workdir()
    try:
        t_prep = time.time()
        # everything below reads the staged copy: regular files only, never through a symlink, capped
        sub = workdir / "submission"
        copied, skipped = sandbox.copy_submission(script.parent, sub)
        pre = _refused(skipped)
        local = sub / script.name
        if script.name not in copied:
            why = dict(skipped).get(script.name, "not copied")
            return pre + [Finding("PG900", "warning", f"dynamic audit: {script.name} was not run ({why}); the static "
                                  "verdict stands", script.name)], {"cached": False}
        cached = cache_dir / "results" / f"{cache_key(sub, copied, skipped, static_context, timeout, python)}.json"
        hit = _load_cached(cached) if cached.exists() else None
        if hit:
            return hit
        cfg = configure(sub, local, static_context)
        t_start = time.time()
        stream, retried, why, switched = (N_VAL_WINDOWS, DOC_LEN), False, None, {}
        while True:
            n_windows, doc_len = stream
            for d in (workdir / ".pgolf", workdir / "data"):
                shutil.rmtree(d, ignore_errors=True)
            (workdir / ".pgolf").mkdir()
            prep = prepare(cfg, workdir, cache_dir, n_windows, doc_len)
            prep["env"].update(switched)
            prep.update(python=python, python_version=python_version(python), val_windows=n_windows,
                        val_doc_len=doc_len, retry=why)
            runs, meta = plan_runs(prep, workdir)
            plan = {"script": str(local), "out": "results-channel", "vocab_size": prep["vocab"], "runs": runs,
                    "norm_pos": meta["norm_pos"], "timeout": timeout}
            (workdir / ".pgolf" / "plan.json").write_text(json.dumps(plan))
            prep_s = time.time() - t_prep
            left = timeout - (time.time() - t_start)
            child = sandbox.run_child([str(sandbox.SHIMS / "pgolf_runner.py"), str(workdir / ".pgolf" / "plan.json")],
                                      workdir, {}, sandbox.Limits(timeout=left), python=python)
            channel.decode(child, [r["name"] for r in runs])
            if retried or timeout - (time.time() - t_start) <= 30:
                break
            retried = True  # at most one retry, on the stream the first run's outcome asks for
            if _short_validation(child):
                stream, why = (LONG_VAL_WINDOWS, DOC_LEN), "the script stopped on a validation stream too short for it"
            elif _one_update_ttt(child):
                stream, why = (LONG_VAL_WINDOWS, DOC_LEN), "one validation update covered the whole tiny stream"
            elif _gpu_only_failure(child) and (fused := _fused_switches(cfg)):
                switched = fused
                cfg = dict(cfg, shrunk=dict(cfg["shrunk"], **{k: [cfg["recovered"].get(k, cfg["names"].get(k)), v]
                                                             for k, v in switched.items()}))
                why = (f"the fused-kernel path stopped on CPU (it requires CUDA tensors); the script's own switch "
                       f"{', '.join(f'{k}={v}' for k, v in switched.items())} selects its eager path")
            elif cfg.get("adapts_on_val") and _adaptation_not_run(child):
                stream = (-(-LONG_DOC_LEN * LONG_DOCS // envscan.SEQ), LONG_DOC_LEN)
                why = ("the logs show test-time adaptation ran, the tiny run trained on no validation token: long "
                       "documents")
            else:
                break
        if child.channel_error is None:
            try:
                findings, metrics = analyze.analyze(workdir, plan, meta, prep, child, sub, local)
            except Exception as exc:  # noqa: BLE001 - child-provided data must never crash the auditor
                child.channel_error = f"its results could not be analysed ({type(exc).__name__}: {str(exc)[:200]})"
        if child.channel_error is not None:
            findings = [Finding("PG9D1", "error", f"dynamic audit: the sandboxed run's results are unusable: "
                                f"{child.channel_error}; no dynamic verdict", script.name,
                                evidence={"output_tail": child.output_tail[-1500:]})]
            metrics = {"child_wall_s": round(child.wall_s, 3), "isolation": child.isolation}
        findings = pre + findings
        metrics.update(prepare_s=round(prep_s, 3), cached=False, output_bytes=child.output_bytes,
                       workdir=str(workdir))  # removed after the audit; lets callers check nothing of it survives
        # the cache is written by the parent only, after validation; unusable results are never cached
        if child.channel_error is None and (not any(f.rule == "PG900" for f in findings) or child.timed_out):
            _store_cached(cached, findings, metrics)
        return findings, metrics
    finally:
        sandbox.release_workdir(workdir, keep)
