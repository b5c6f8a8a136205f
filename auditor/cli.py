"""`pgolf audit PATH...`: static (and optionally dynamic) audit of Parameter Golf submissions.

Exit status: 0 no failing finding, 1 failing findings (or a submission that could not be analysed), 2 usage error
or auditor failure. Never imports torch (the dynamic audit runs it in a sandboxed child)."""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

from trainer.errors import PgolfError

FORMATS = ("text", "json", "sarif", "github", "markdown", "triage")


def add_parser(sub, name: str, help: str):
    p = sub.add_parser(
        name,
        help=help,
        description=(
            "Audit Parameter Golf submissions without running them: artifact size, required files, time limits from "
            "the logs, evaluation legality (score-before-update, single pass, no target leakage) and data access. "
            "PATH is a record folder, a train_gpt.py, or a tree (every folder holding a train_gpt*.py is a record; its "
            "subfolders belong to it)."
        ),
    )
    p.add_argument("paths", nargs="*", metavar="PATH",
                   help="record folder, train_gpt.py, or a tree of records (with --git: REF or REF:PATH)")
    p.add_argument("--format", choices=FORMATS, default="text",
                   help="output format (default: text; markdown = a review comment, triage = one row per submission)")
    p.add_argument("--output", "-o", metavar="FILE", help="write the report here instead of stdout")
    p.add_argument(
        "--fail-on",
        choices=("error", "warning"),
        default=None,
        help="lowest finding level that fails a submission (default: error, or fail-on in [tool.pgolf.audit])",
    )
    p.add_argument("--max-bytes", type=int, default=None, metavar="N", help="artifact cap in bytes (default: 16000000)")
    p.add_argument("--select", action="append", default=[], metavar="IDS",
                   help="report only these rule ids or prefixes (comma-separated, e.g. PG4,PG501)")
    p.add_argument("--ignore", action="append", default=[], metavar="IDS",
                   help="do not report these rule ids or prefixes (the longer matching prefix wins over --select)")
    p.add_argument("--config", metavar="PYPROJECT",
                   help="read [tool.pgolf.audit] from this file (default: nearest pyproject.toml above PATH or cwd)")
    p.add_argument("--isolated", action="store_true", help="ignore every pyproject.toml")
    p.add_argument("--git", metavar="REPO",
                   help="read the submissions from this git repository's objects (no checkout); PATHs are REF or "
                        "REF:PATH (a commit, branch, tag or refs/pull/N/head)")
    p.add_argument("--changed", metavar="BASE...HEAD",
                   help="audit only the record folders the change BASE...HEAD touches, as of HEAD "
                        "(in --git REPO, or the repository at the current directory)")
    p.add_argument("--jobs", "-j", type=int, default=1, metavar="N", help="audit N submissions in parallel")
    p.add_argument("--progress", action="store_true", help="progress bar on stderr even when it is not a terminal")
    p.add_argument("--no-progress", action="store_true", help="never show the progress bar")
    p.add_argument("--dynamic", action="store_true", help="also run the dynamic (sandboxed execution) audit")
    p.add_argument("--dynamic-only", action="store_true", help="run only the dynamic audit")
    p.add_argument("--timeout", type=float, default=180.0, metavar="S", help="dynamic audit time limit per submission")
    p.add_argument("--python", metavar="PATH", help="interpreter the dynamic audit runs the submission under (needs "
                   "torch and numpy; default: the one running pgolf)")
    p.add_argument("--list-rules", action="store_true", help="print the rule ids, levels and titles and exit")
    p.add_argument("--explain", metavar="RULE", help="what a rule checks, why, how to fix it, with examples; then exit")
    p.set_defaults(handler=run)
    return p


def _progress(i, n, label, enabled):
    if not enabled:
        return
    width = 30
    done = int(width * i / max(n, 1))
    sys.stderr.write(f"\r[{'#' * done}{'.' * (width - done)}] {i}/{n} {label[-50:]:<50}")
    if i == n:
        sys.stderr.write("\n")
    sys.stderr.flush()


def run(args) -> int:
    from auditor.rules import all_rules

    registry = all_rules()
    if args.list_rules:
        for rid, cls in registry.items():
            level = "dynamic " + cls.level if cls.kind == "dynamic" else cls.level
            print(f"{rid}  {level:<15}  {cls.title}")
        return 0
    if args.explain:
        from auditor.report import render_explain

        rid = args.explain.strip().upper()
        if rid not in registry:
            raise PgolfError(f"audit --explain: unknown rule {args.explain!r}; `pgolf audit --list-rules` lists them")
        sys.stdout.write(render_explain(registry[rid]))
        return 0
    settings = _settings(args, registry)
    # SARIF descriptors: the static rules, and the dynamic ones when the dynamic audit runs
    rules = {rid: cls for rid, cls in registry.items() if cls.kind == "static" or args.dynamic or args.dynamic_only}
    if args.jobs < 1:
        raise PgolfError(f"audit: --jobs must be >= 1, got {args.jobs}")
    if args.git or args.changed:
        from auditor.gitsource import GitError, materialize

        if args.dynamic or args.dynamic_only:
            raise PgolfError("audit: --dynamic cannot be combined with --git/--changed; check the folder out first")
        try:
            with materialize(args.git or ".", args.paths, args.changed) as items:
                if not items:
                    raise PgolfError("audit: the git refs/change contain no folder with a train_gpt*.py")
                return _audit(items, args, settings, rules, registry)
        except GitError as exc:
            raise PgolfError(f"audit: {exc}") from None
    if not args.paths:
        raise PgolfError("audit: no PATH given; expected a record folder, a train_gpt.py or a tree")
    missing = [p for p in args.paths if not Path(p).exists()]
    if missing:
        raise PgolfError(f"audit: path not found: {missing[0]}")
    from auditor.source import discover

    items = [(str(r), str(e) if e else None, d, f) for r, e, d, f in discover(args.paths)]
    if not items:
        raise PgolfError(f"audit: nothing to audit under {', '.join(args.paths)} (no train_gpt*.py)")
    return _audit(items, args, settings, rules, registry)


def _settings(args, registry):
    """[tool.pgolf.audit] of the nearest pyproject.toml (or --config), overridden by the command line."""
    from auditor.suppress import Settings, find_pyproject, load_config_file, load_settings, parse_ids

    known = set(registry) | {"PG000"}
    settings = Settings()
    try:
        if args.config:
            settings = load_config_file(Path(args.config), known)
        elif not args.isolated and not args.git:
            found, table = find_pyproject(args.paths)
            if found is not None:
                settings = load_settings(found, table, known)
        if args.select:
            settings.select = parse_ids(args.select, known, "--select")
        settings.ignore = tuple(settings.ignore) + parse_ids(args.ignore, known, "--ignore")
    except ValueError as exc:
        raise PgolfError(f"audit: {exc}") from None
    settings.fail_on = args.fail_on or settings.fail_on or "error"
    settings.max_bytes = args.max_bytes if args.max_bytes is not None else (settings.max_bytes or 16_000_000)
    if settings.max_bytes <= 0:
        raise PgolfError(f"audit: --max-bytes must be positive, got {settings.max_bytes}")
    return settings


def _analyse_items(items, opts, args) -> tuple:
    """(results, one-line internal-error messages) for the items, in order. Each submission is analysed in a forked
    child with memory/CPU/wall limits (auditor.engine.audit_items), in every --jobs mode."""
    from auditor.engine import Options, Result, audit_items

    show = not args.no_progress and len(items) > 1 and (args.progress or sys.stderr.isatty())

    def progress(n, total, label):
        _progress(n, total, label, show)

    if args.dynamic_only:  # the dynamic audit still needs the static facts (env, decoded code), computed isolated
        static, crashed = audit_items(items, Options(**dict(opts, keep_context=True)), jobs=args.jobs,
                                      progress=progress)
        return [Result(path=d, verdict="pass", root=d if f else str(Path(d).parent), context=s.context)
                for (_r, _e, d, f), s in zip(items, static)], crashed
    return audit_items(items, Options(**opts), jobs=args.jobs, progress=progress)


def _audit(items, args, settings, rules, registry) -> int:
    opts = {
        "max_bytes": settings.max_bytes,
        "fail_on": settings.fail_on,
        "keep_context": bool(args.dynamic or args.dynamic_only),
    }
    results, crashed = _analyse_items(items, opts, args)
    if args.dynamic or args.dynamic_only:
        _run_dynamic(items, results, args, crashed)
    from auditor.postprocess import finish

    finish(results, items, settings, registry)
    for tb in crashed:
        sys.stderr.write(tb)
    from auditor import report

    any_fail = any(r.verdict in ("fail", "error") for r in results)
    exit_code = 2 if crashed else (1 if any_fail else 0)
    if args.format == "text":
        text = report.render_text(results)
    elif args.format == "json":
        text = report.render_json(results)
    elif args.format == "sarif":
        text = report.render_sarif(results, rules, exit_code)
    elif args.format == "markdown":
        text = report.render_markdown(results, registry)
    elif args.format == "triage":
        text = report.render_triage(results)
    else:
        text = report.render_github(results)
    if args.output:
        tmp = f"{args.output}.tmp-{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, args.output)
    else:
        sys.stdout.write(text)
    return exit_code


def _python_arg(path: str | None) -> str | None:
    """--python PATH: an executable (a bare name is looked up on PATH), checked before any audit runs."""
    if path is None:
        return None
    import shutil

    found = shutil.which(path) if os.sep not in path else (path if os.access(path, os.X_OK) else None)
    if not found or not os.path.isfile(found):
        raise PgolfError(f"audit --python {path}: no such executable (expected a Python interpreter, e.g. "
                         "/usr/bin/python3.12)")
    return os.path.abspath(found)


def _run_dynamic(items, results, args, crashed) -> None:
    python = _python_arg(getattr(args, "python", None))
    from auditor.engine import LEVEL_RANK

    try:
        from auditor.dynamic import run_dynamic
    except ImportError as exc:
        raise PgolfError(f"audit: --dynamic is not available in this installation ({exc})") from None
    threshold = LEVEL_RANK.get(args.fail_on, 2)
    for (root, entry, display, is_folder), r in zip(items, results):
        static_context = None
        try:
            if r.context is None:  # the isolated static analysis crashed or hit a limit: never parse it here
                raise LookupError("no static facts")
            sub, cfg = r.context.sub, r.context.cfg
            static_context = {
                "env": cfg.effective(),
                "env_with_defaults": cfg.effective(True),
                "adapts_on_val": cfg.adaptation_logged(),
                "decoded_sources": sub.decoded_sources(),
                "findings": [f.to_dict() for f in r.findings],
            }
        except Exception:
            static_context = None
        try:
            out = run_dynamic(Path(root if is_folder else entry), static_context, args.timeout, python=python)
        except PgolfError:
            raise
        except Exception:
            crashed.append(traceback.format_exc(limit=6))
            continue
        findings = getattr(out, "findings", None)
        metrics = getattr(out, "metrics", None)
        if findings is None and isinstance(out, tuple):
            findings, metrics = out[0], (out[1] if len(out) > 1 else {})
        elif findings is None:
            findings, metrics = list(out or []), {}
        r.findings = list(r.findings) + list(findings)
        if metrics:
            r.metrics["dynamic"] = metrics
        if r.verdict != "error":
            r.verdict = "fail" if any(LEVEL_RANK.get(f.level, 0) >= threshold for f in r.findings) else "pass"
        if any(f.rule == "PG9D1" for f in findings):  # unusable sandbox results: not analysed, never a pass
            r.verdict = "error"
        r.context = None
