"""`pgolf audit PATH...`: static (and optionally dynamic) audit of Parameter Golf submissions.

Exit status: 0 no failing finding, 1 failing findings (or a submission that could not be analysed), 2 usage error
or auditor failure. Never imports torch (the dynamic audit runs it in a sandboxed child)."""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

from trainer.errors import PgolfError

FORMATS = ("text", "json", "sarif", "github")


def add_parser(sub, name: str, help: str):
    p = sub.add_parser(
        name,
        help=help,
        description=(
            "Audit Parameter Golf submissions without running them: artifact size, required files, time limits from "
            "the logs, evaluation legality (score-before-update, single pass, no target leakage) and data access. "
            "PATH is a record folder, a train_gpt.py, or a tree (every folder holding a train_gpt*.py is audited)."
        ),
    )
    p.add_argument("paths", nargs="*", metavar="PATH", help="record folder, train_gpt.py, or a tree of records")
    p.add_argument("--format", choices=FORMATS, default="text", help="output format (default: text)")
    p.add_argument("--output", "-o", metavar="FILE", help="write the report here instead of stdout")
    p.add_argument(
        "--fail-on",
        choices=("error", "warning"),
        default="error",
        help="lowest finding level that fails a submission (default: error)",
    )
    p.add_argument(
        "--max-bytes", type=int, default=16_000_000, metavar="N", help="artifact cap in bytes (default: 16000000)"
    )
    p.add_argument("--jobs", "-j", type=int, default=1, metavar="N", help="audit N submissions in parallel")
    p.add_argument("--progress", action="store_true", help="progress bar on stderr even when it is not a terminal")
    p.add_argument("--no-progress", action="store_true", help="never show the progress bar")
    p.add_argument("--dynamic", action="store_true", help="also run the dynamic (sandboxed execution) audit")
    p.add_argument("--dynamic-only", action="store_true", help="run only the dynamic audit")
    p.add_argument("--timeout", type=float, default=180.0, metavar="S", help="dynamic audit time limit per submission")
    p.add_argument("--list-rules", action="store_true", help="print the rule ids, levels and titles and exit")
    p.set_defaults(handler=run)
    return p


def _analyse_one(item, opts_dict):
    from auditor.engine import Options, Result, analyse
    from auditor.findings import Finding

    root, entry, display, is_folder = item
    opts = Options(**opts_dict)
    try:
        return analyse(Path(root), Path(entry) if entry else None, display, is_folder, opts), None
    except Exception as exc:  # an auditor bug must never look like a pass
        tb = traceback.format_exc(limit=6)
        f = Finding(
            "PG000",
            "error",
            f"internal auditor error while analysing this submission: {type(exc).__name__}: {exc}; please report it.",
            "",
            1,
            1,
        )
        return Result(
            path=display,
            verdict="error",
            root=display if is_folder else str(Path(display).parent),
            findings=[f],
            metrics={},
        ), tb


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
    # SARIF descriptors: the static rules, and the dynamic ones when the dynamic audit runs
    rules = {rid: cls for rid, cls in registry.items() if cls.kind == "static" or args.dynamic or args.dynamic_only}
    if not args.paths:
        raise PgolfError("audit: no PATH given; expected a record folder, a train_gpt.py or a tree")
    if args.jobs < 1:
        raise PgolfError(f"audit: --jobs must be >= 1, got {args.jobs}")
    if args.max_bytes <= 0:
        raise PgolfError(f"audit: --max-bytes must be positive, got {args.max_bytes}")
    missing = [p for p in args.paths if not Path(p).exists()]
    if missing:
        raise PgolfError(f"audit: path not found: {missing[0]}")
    from auditor.engine import Result
    from auditor.source import discover

    items = [(str(r), str(e) if e else None, d, f) for r, e, d, f in discover(args.paths)]
    if not items:
        raise PgolfError(f"audit: nothing to audit under {', '.join(args.paths)} (no train_gpt*.py)")
    opts = {
        "max_bytes": args.max_bytes,
        "fail_on": args.fail_on,
        "keep_context": bool(args.dynamic or args.dynamic_only),
    }
    show = not args.no_progress and len(items) > 1 and (args.progress or sys.stderr.isatty())
    results, crashed = [None] * len(items), []
    if args.dynamic_only:
        results = [Result(path=d, verdict="pass", root=d if f else str(Path(d).parent)) for _r, _e, d, f in items]
    elif args.jobs > 1 and len(items) > 1:
        from concurrent.futures import ProcessPoolExecutor, as_completed

        opts_nc = dict(opts, keep_context=False)
        with ProcessPoolExecutor(max_workers=min(args.jobs, len(items))) as ex:
            futs = {ex.submit(_analyse_one, it, opts_nc): i for i, it in enumerate(items)}
            for n, fut in enumerate(as_completed(futs), 1):
                i = futs[fut]
                results[i], tb = fut.result()
                if tb:
                    crashed.append(tb)
                _progress(n, len(items), items[i][2], show)
    else:
        for i, it in enumerate(items):
            results[i], tb = _analyse_one(it, opts)
            if tb:
                crashed.append(tb)
            _progress(i + 1, len(items), it[2], show)
    if args.dynamic or args.dynamic_only:
        _run_dynamic(items, results, args, crashed)
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


def _run_dynamic(items, results, args, crashed) -> None:
    from auditor.engine import LEVEL_RANK

    try:
        from auditor.dynamic import run_dynamic
    except ImportError as exc:
        raise PgolfError(f"audit: --dynamic is not available in this installation ({exc})") from None
    threshold = LEVEL_RANK.get(args.fail_on, 2)
    for (root, entry, display, is_folder), r in zip(items, results):
        static_context = None
        try:
            if r.context is not None:
                sub, cfg = r.context.sub, r.context.cfg
            else:  # --dynamic-only: load and configure without running the static rules
                from auditor.config import build_config
                from auditor.source import load_submission

                sub = load_submission(Path(root), Path(entry) if entry else None, display, is_folder)
                cfg = build_config(sub)
            static_context = {
                "env": cfg.effective(),
                "env_with_defaults": cfg.effective(True),
                "decoded_sources": sub.decoded_sources(),
                "findings": [f.to_dict() for f in r.findings],
            }
        except Exception:
            static_context = None
        try:
            out = run_dynamic(Path(display), static_context, args.timeout)
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
        r.context = None
