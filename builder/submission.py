"""`pgolf build`: run directories -> a PR-ready record folder.

records/track_<track>/<date>_<name>/ with train_gpt.py (inlined trainer, run config baked in; optionally minified
and wrapped), train_seed<N>.log per seed, submission.json, README.md, loss_curve.png and requirements.txt when the
configuration needs packages beyond the challenge image. The folder is built in a temporary directory beside the
target and renamed into place; the same inputs give a byte-identical folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from builder import readme as readme_mod
from builder.plot import loss_curve_png
from builder.runs import (
    MAX_ARTIFACT_BYTES,
    MAX_EVAL_SECONDS,
    MAX_TRAIN_SECONDS,
    RECORD_MIN_SEEDS,
    RunError,
    SeedRun,
    check_runs,
    check_sizes,
    load_log_run,
    load_run_dir,
)
from builder.ship import Form, Shipped, form_from_flags, parse_form, shipped_script, shipped_source
from builder.stats import mean, sample_std, significance
from trainer.errors import PgolfError


@dataclass
class BuildOptions:
    runs: list
    name: str
    author: str
    github_id: str
    track: str = "10min_16mb"
    out: str = "records"
    # The shipped form. None everywhere: the form the runs reserved (`pgolf train --code-form`). A given flag
    # overrides that form's part; a form that differs from the runs' is refused (their logs count other bytes).
    wrap: str | None = None
    minify: bool | None = None
    specialize: bool | None = None  # None with --wrap given: specialize exactly when wrapped (builder.specialize)
    code_form: str | None = None
    sota_bpb: list = field(default_factory=list)
    blurb: str | None = None
    force: bool = False
    from_logs: bool = False
    script: str | None = None
    date: str | None = None


@dataclass
class BuildResult:
    folder: Path
    files: list
    submission: dict
    code_sizes: dict  # bytes after each stage (builder.ship.Shipped.sizes)
    form: str = "plain"  # the shipped form's name


def slug(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", name.strip()).strip("_.")
    if not s:
        raise PgolfError(f"--name {name!r} gives an empty folder name; use letters or digits")
    return s[:80]


def _run_date(runs: list[SeedRun]) -> str | None:
    dates = []
    for r in runs:
        m = re.search(r"^run_started:(\d{4}-\d{2}-\d{2})", r.log_text, re.M)
        if m:
            dates.append(m.group(1))
    return max(dates) if dates else None


def _requirements(config: dict | None, wrap_method: str, script_text: str | None) -> list[str]:
    req = set()
    if config is not None:
        if config.get("compressor") == "zstd":
            req.add("zstandard")
        if config.get("compressor") == "brotli":
            req.add("brotli")
    if script_text is not None:
        for mod, pkg in (("zstandard", "zstandard"), ("brotli", "brotli"), ("flash_attn_interface", None)):
            if re.search(rf"^\s*(import|from)\s+{mod}\b", script_text, re.M) and pkg:
                req.add(pkg)
    if wrap_method == "brotli":
        req.add("brotli")
    return sorted(req)


def _fmt(v, spec=".4f") -> str:
    return "-" if v is None else format(v, spec)


def requested_form(opts: BuildOptions, base: Form) -> Form:
    """The form this build ships: `base` (the runs' form) with --code-form or --minify/--wrap/--specialize applied."""
    if opts.code_form is not None:
        if (opts.minify, opts.wrap, opts.specialize) != (None, None, None):
            raise PgolfError("--code-form names the whole form: do not combine it with --minify/--wrap/--specialize")
        return parse_form(opts.code_form)
    return form_from_flags(opts.minify, opts.wrap, opts.specialize, base)


def runs_form(runs: list[SeedRun]) -> Form | None:
    """The code form every run reserved (None for runs that did not record one)."""
    name = runs[0].code_form  # check_runs has made sure every run reserved the same form
    return None if name is None else parse_form(name, where=f"{runs[0].source}: code_form")


def make_code(opts: BuildOptions, runs: list[SeedRun]) -> Shipped:
    """The shipped train_gpt.py, in the runs' reserved form unless the options ask for another (then refused with
    exactly what differs, because the runs' logs count the bytes of the form they reserved)."""
    if opts.from_logs:
        if not opts.script:
            raise PgolfError("--from-logs needs --script PATH (the train_gpt.py that produced the logs)")
        p = Path(opts.script)
        if not p.is_file():
            raise PgolfError(f"--script {p}: no such file")
        form = requested_form(opts, Form())
        if opts.specialize is None and opts.code_form is None:
            form = Form(minify=form.minify, wrap=form.wrap)  # another script cannot be specialized; never by default
        return shipped_script(p.read_text(encoding="utf-8"), form)
    reserved = runs_form(runs)
    form = requested_form(opts, reserved or Form())
    if reserved is not None and form != reserved:
        shipped = shipped_source(runs[0].config, form)
        r = runs[0]
        raise RunError(
            f"the runs reserved code form {reserved.name} ({r.code_bytes:,} bytes, `pgolf train --code-form "
            f"{reserved.name}`) but this build ships {form.name} ({shipped.code_bytes:,} bytes): "
            f"{', '.join(reserved.differences(form))}; the logs' `Code size` lines must equal the shipped file "
            f"(audit PG102): drop the form flags to ship {reserved.name}, or retrain with `pgolf train --code-form "
            f"{form.name}`"
        )
    shipped = shipped_source(runs[0].config, form)
    for r in runs:
        if r.code_bytes is not None and r.code_bytes != shipped.code_bytes:
            how = f"reserved {r.code_bytes:,} bytes for form {form.name}" if reserved else \
                f"measured {r.code_bytes:,} code bytes (no form recorded; this build ships {form.name})"
            raise RunError(
                f"{r.source}: the run {how}, but the current trainer's {form.name} train_gpt.py for this "
                f"configuration is {shipped.code_bytes:,} bytes: the runs come from different trainer code"
                + ("" if reserved else "; pass the form the run reserved with --code-form")
            )
    return shipped


def load_runs(opts: BuildOptions) -> list[SeedRun]:
    loader = load_log_run if opts.from_logs else load_run_dir
    runs = [loader(p) for p in opts.runs]
    return sorted(runs, key=lambda r: r.seed)


def build(opts: BuildOptions) -> BuildResult:
    for label, val in (("--name", opts.name), ("--author", opts.author), ("--github-id", opts.github_id)):
        if not val or not val.strip():
            raise PgolfError(f"{label} must not be empty")
    runs = load_runs(opts)
    date = opts.date or _run_date(runs) or time.strftime("%Y-%m-%d", time.gmtime())
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", date):
        raise PgolfError(f"--date {date!r}: expected YYYY-MM-DD")
    folder = Path(opts.out) / f"track_{opts.track}" / f"{date}_{slug(opts.name)}"
    if folder.exists() and not opts.force:
        raise PgolfError(f"{folder} already exists (pass --force to replace it)")
    check_runs(runs, opts.track)  # seeds, configuration, validation scope, track limits: before any (slow) inlining
    code = make_code(opts, runs)
    sizes, shipped = code.sizes, code.text
    check_sizes(runs, sizes["shipped"])

    files: dict[str, bytes] = {"train_gpt.py": shipped.encode("utf-8")}
    for r in runs:
        files[f"train_seed{r.seed}.log"] = r.log_text.encode("utf-8")
    config = runs[0].config
    reqs = _requirements(config, code.form.wrap, shipped if opts.from_logs else None)
    if reqs:
        files["requirements.txt"] = ("\n".join(reqs) + "\n").encode()
    sub = submission_dict(opts, runs, sizes["shipped"], date, config)
    files["submission.json"] = (json.dumps(sub, indent=2) + "\n").encode()
    title = f"{opts.name}: val_bpb {sub['val_bpb']:.4f} ({len(runs)} seeds)"
    files["loss_curve.png"] = loss_curve_png(runs, title)
    files["README.md"] = readme_text(opts, runs, sub, code, reqs, sorted(files) + ["README.md"]).encode("utf-8")
    _write_folder(folder, files, opts.force)
    return BuildResult(folder=folder, files=sorted(files), submission=sub, code_sizes=sizes, form=code.form.name)


def submission_dict(opts: BuildOptions, runs: list[SeedRun], code_bytes: int, date: str, config: dict | None) -> dict:
    losses = [r.val_loss for r in runs]
    bpbs = [r.val_bpb for r in runs]
    totals = [r.model_bytes + code_bytes for r in runs]
    seed_results = {
        str(r.seed): {
            "val_loss": r.val_loss,
            "val_bpb": r.val_bpb,
            "artifact_bytes": r.model_bytes + code_bytes,
            "steps": r.steps,
            "step_avg_ms": None if r.step_avg_ms is None else round(r.step_avg_ms, 3),
            "train_time_s": round(r.train_time_ms / 1000.0, 3),
            "eval_time_s": None if r.eval_time_ms is None else round(r.eval_time_ms / 1000.0, 3),
        }
        for r in runs
    }
    ttt = bool(config.get("ttt_enabled")) if config is not None else None
    techniques = readme_mod.technique_list(config) if config is not None else []
    sub = {
        "author": opts.author,
        "github_id": opts.github_id,
        "name": opts.name,
        "blurb": opts.blurb or _default_blurb(config, runs),
        "date": date,
        "track": opts.track,
        "val_loss": mean(losses),
        "val_bpb": mean(bpbs),
        "val_bpb_std": sample_std(bpbs),
        "val_loss_std": sample_std(losses),
        "seeds": [r.seed for r in runs],
        "seed_results": seed_results,
        "validation": validation_summary(runs),
        "bytes_total": max(totals),
        "bytes_code": code_bytes,
        "hardware": runs[0].hardware,
        "pytorch_version": runs[0].torch_version,
        "cuda_version": runs[0].cuda_version,
        "technique_summary": "; ".join(techniques) if techniques else (opts.blurb or ""),
        "compliance": {
            "artifact_under_16mb": all(t <= MAX_ARTIFACT_BYTES for t in totals),
            "train_under_600s": all(r.train_time_ms <= MAX_TRAIN_SECONDS * 1000.0 for r in runs),
            "eval_under_600s": all(r.eval_time_ms is not None and r.eval_time_ms <= MAX_EVAL_SECONDS * 1000.0 for r in runs),
            # pgolf's TTT scores each chunk before training on it; runs from other scripts cannot be verified here.
            "score_first_ttt": True if ttt is not None else None,
            "three_seeds": len(runs) >= RECORD_MIN_SEEDS,
            "full_validation": _full_validation(runs),
        },
    }
    if opts.sota_bpb:
        if len(runs) < 2:
            raise PgolfError("--sota-bpb needs at least 2 seeds for the significance test")
        sig = significance(losses, bpbs, opts.sota_bpb)
        sub.update(
            sota_val_bpb=sig["sota_val_bpb"],
            delta_bpb=sig["delta_bpb"],
            delta_nats=sig["delta_nats"],
            t_statistic=sig["t_statistic"],
            welch_df=sig["welch_df"],
            p_value=sig["p_value"],
        )
    return sub


def validation_summary(runs: list[SeedRun]) -> dict:
    """What the scores were measured on: the full validation split, a prefix of it, or unknown (bare logs)."""
    scopes = [r.validation_scope() for r in runs]
    if any(s is None for s in scopes):
        return {"scope": "unknown", "note": "packaged from logs; the validation scope is not recorded"}
    partial = [s for s in scopes if s["partial"]]
    out = {"scope": "partial" if partial else "full",
           "scored_tokens": min(s["scored_tokens"] for s in scopes)}
    if any(s.get("available_tokens") is not None for s in scopes):
        out["available_tokens"] = max(s.get("available_tokens") or 0 for s in scopes)
    if partial:
        out["val_max_tokens"] = max(s["val_max_tokens"] for s in partial)
        out["note"] = "scored on a prefix of the validation split (VAL_MAX_TOKENS): not a challenge score"
    return out


def _full_validation(runs: list[SeedRun]) -> bool | None:
    scope = validation_summary(runs)["scope"]
    return None if scope == "unknown" else scope == "full"


def _default_blurb(config: dict | None, runs: list[SeedRun]) -> str:
    if config is None:
        return f"{len(runs)} seeds packaged from challenge-style logs with pgolf build"
    c = config
    return (f"{c['num_layers']}x{c['model_dim']} model, {c['quant_scheme']} + {c['compressor']}; "
            f"{len(runs)} seeds packaged with pgolf build")


def readme_text(opts, runs, sub, code: Shipped, reqs, files) -> str:
    config = runs[0].config
    sizes, baked = code.sizes, (code.baked if config is not None else None)
    rows = []
    for r in runs:
        rows.append(dict(
            seed=r.seed, steps=r.steps, pre=_fmt(r.pre_quant_val_bpb), quant=_fmt(r.post_quant_val_bpb),
            sliding=_fmt(r.sliding_val_bpb), ttt=_fmt(r.ttt_val_bpb), val_bpb=r.val_bpb,
            artifact_bytes=sub["seed_results"][str(r.seed)]["artifact_bytes"], train_s=r.train_time_ms / 1000.0,
            step_avg=_fmt(r.step_avg_ms, ".2f"), eval_s=_fmt(None if r.eval_time_ms is None else r.eval_time_ms / 1000.0, ".1f"),
        ))
    if "p_value" in sub:
        verdict = "meets" if sub["p_value"] < 0.01 else "does not meet"
        sig_text = (
            f"Against the reference {sub['sota_val_bpb']:.4f} bpb this is {sub['delta_bpb']:+.4f} bpb "
            f"({sub['delta_nats']:+.4f} nats/token) better. One-sided Welch t-test that the improvement exceeds "
            f"0.005 nats: t = {sub['t_statistic']:.3f}, df = {sub['welch_df']:.2f}, p = {sub['p_value']:.2e}, which "
            f"{verdict} the challenge's p < 0.01 bar."
        )
    else:
        sig_text = "No reference score was given (`--sota-bpb`), so no significance test was run."
    code_note = []
    if sizes.get("specialized"):
        code_note.append(f"specialized to the run's switches ({sizes['specialized']:,})")
    if sizes.get("minified"):
        code_note.append(f"minified to {sizes['minified']:,}")
    if code.form.wrap != "none":
        code_note.append(f"{code.form.wrap}-compressed self-extracting wrapper")
    code_note.append(f"form `{code.form.name}`")
    hw = sub["hardware"] or "unknown hardware"
    ctx = dict(
        name=opts.name, val_bpb=sub["val_bpb"], val_bpb_std=sub["val_bpb_std"], val_loss=sub["val_loss"],
        val_loss_std=sub["val_loss_std"], n_seeds=len(runs), bytes_total=sub["bytes_total"],
        bytes_total_mb=sub["bytes_total"] / 1e6, bytes_code=sub["bytes_code"], hardware=hw, blurb=sub["blurb"],
        author=opts.author, github_id=opts.github_id, track=opts.track, date=sub["date"], seed_rows=rows,
        scored_label=runs[0].scored_label or "final metric", code_note=", ".join(code_note),
        significance_text=sig_text, validation=sub["validation"],
        architecture=readme_mod.architecture_rows(config) if config else [],
        techniques=readme_mod.technique_list(config) if config else [],
        script_name=Path(opts.script).name if opts.script else "train_gpt.py",
        requirements=reqs, seeds=[r.seed for r in runs], baked=baked is not None,
        data_path=(baked or {}).get("data_path", "./data/datasets/fineweb10B_sp1024"),
        tokenizer_path=(baked or {}).get("tokenizer_path", "./data/tokenizers/fineweb_1024_bpe.model"),
        compliance_statements=readme_mod.compliance_statements(config),
        compliance_table=[
            ("Artifact ≤ 16,000,000 bytes (max over seeds)", f"{sub['bytes_total']:,} — {'yes' if sub['compliance']['artifact_under_16mb'] else 'NO'}"),
            ("Training ≤ 600 s", "yes" if sub["compliance"]["train_under_600s"] else "NO"),
            ("Evaluation ≤ 600 s", "yes" if sub["compliance"]["eval_under_600s"] else "NO"),
            ("Score-first TTT", "not verified" if config is None else ("yes" if config.get("ttt_enabled") else "yes (no test-time training)")),
            ("At least 3 seeds", "yes" if sub["compliance"]["three_seeds"] else "NO"),
            ("Full validation split", {True: "yes", False: "NO (partial validation)", None: "not recorded"}[
                sub["compliance"]["full_validation"]]),
        ],
        pytorch_version=sub["pytorch_version"] or "unknown", cuda_version=sub["cuda_version"], files=files,
    )
    return readme_mod.render("README.md.j2", ctx)


def _write_folder(folder: Path, files: dict[str, bytes], force: bool) -> None:
    """Write everything into a temp dir beside `folder`, then rename it into place (replacing with --force)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        for name, data in sorted(files.items()):
            (tmp / name).write_bytes(data)
        if folder.exists():
            if not force:
                raise PgolfError(f"{folder} already exists (pass --force to replace it)")
            old = folder.parent / f".{folder.name}.old-{os.getpid()}"
            os.replace(folder, old)
            os.replace(tmp, folder)
            shutil.rmtree(old)
        else:
            os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
