"""Audit one submission or many: load, build the configuration and flow model, run the rules, apply suppressions."""

from __future__ import annotations

import time
from pathlib import Path
from dataclasses import dataclass, field

from auditor.config import build_config
from auditor.findings import Finding
from auditor.flow import Program
from auditor.rules import AuditContext, run_rules
from auditor.source import discover, load_submission
from auditor.suppress import apply as apply_suppressions
from auditor.suppress import collect as collect_suppressions

LEVEL_RANK = {"note": 0, "warning": 1, "error": 2}


@dataclass
class Result:
    path: str
    verdict: str  # pass | fail | error
    root: str = ""  # folder the finding paths are relative to, as the user named it
    findings: list = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    context: object = None  # static context (for the dynamic audit), not serialized

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "verdict": self.verdict,
            "findings": [
                {k: v for k, v in f.to_dict().items() if k in ("rule", "level", "message", "file", "line", "col")}
                for f in self.findings
            ],
            "metrics": self.metrics,
        }


@dataclass
class Options:
    max_bytes: int = 16_000_000
    fail_on: str = "error"
    keep_context: bool = False


def analyse(root, entry, display, is_folder, opts: Options) -> Result:
    t0 = time.perf_counter()
    sub = load_submission(root, entry, display, is_folder)
    cfg = build_config(sub)
    prog = None
    if sub.analysable and sub.units:
        try:
            prog = Program(sub.units, cfg)
        except RecursionError:
            sub.findings.append(
                Finding(
                    "PG002", "error", "code nests too deeply for the analysis; simplify it.", sub.units[0].rel, 1, 1
                )
            )
            sub.analysable = False
    ctx = AuditContext(sub=sub, cfg=cfg, prog=prog, max_bytes=opts.max_bytes)
    findings = list(sub.findings)
    findings += run_rules(ctx)
    findings = apply_suppressions(findings, collect_suppressions(sub.units))
    findings.sort(key=lambda f: (f.file, f.line, f.col, f.rule))
    if not sub.analysable or (entry is None and not is_folder):
        verdict = "error"
    else:
        threshold = LEVEL_RANK.get(opts.fail_on, 2)
        verdict = "fail" if any(LEVEL_RANK[f.level] >= threshold for f in findings) else "pass"
    metrics = _metrics(sub, prog)
    if ctx.checked:  # what clean rules verified, for the review comment (--format markdown)
        metrics["checked"] = ctx.checked
    metrics["seconds"] = round(time.perf_counter() - t0, 4)
    return Result(
        path=display,
        verdict=verdict,
        root=display if is_folder else str(Path(display).parent),
        findings=findings,
        metrics=metrics,
        context=ctx if opts.keep_context else None,
    )


def _metrics(sub, prog) -> dict:
    m = {
        "code_bytes": sub.entry_bytes,
        "code_lines": sub.entry_lines,
        "decoded_units": sum(1 for u in sub.units if u.kind == "decoded"),
        # where each decoded payload's pseudo file (findings' `file`) comes from, for renderers that need a real file
        "decoded_payloads": {
            u.file: {"from": u.parent.file, "line": u.exec_line, "layers": list(u.layers), "lines": u.line_count}
            for u in sub.units
            if u.kind == "decoded" and u.parent is not None
        },
        "helper_files": [u.rel for u in sub.helper_units()],
        "logs": len(sub.logs),
        "seeds": sorted({i.seed for i in sub.logs.values() if i.seed is not None}),
    }
    totals = [i.total_size_bytes for i in sub.logs.values() if i.total_size_bytes is not None]
    if totals:
        m["max_total_bytes"] = max(totals)
    bpbs = [i.scored_val_bpb for i in sub.logs.values() if i.scored_val_bpb is not None]
    if bpbs:
        m["mean_val_bpb"] = round(sum(bpbs) / len(bpbs), 8)
    if prog is not None:
        m["functions"] = sum(1 for f in prog.funcs if not f.is_module)
        m["reachable_functions"] = sum(1 for f in prog.funcs if f.reach == "on" and not f.is_module)
    return m


def audit_paths(paths, opts: Options | None = None) -> list:
    opts = opts or Options()
    return [analyse(*d, opts) for d in discover(paths)]


# -- isolated runs ------------------------------------------------------------------------------------------------


@dataclass
class _SubFacts:
    """What the dynamic audit reads from the Submission, picklable (the child's libcst trees stay in the child)."""

    sources: dict

    def decoded_sources(self) -> dict:
        return self.sources


@dataclass
class _CfgFacts:
    env: dict
    env_with_defaults: dict
    adapts_on_val: bool = False

    def adaptation_logged(self) -> bool:
        return self.adapts_on_val

    def effective(self, with_defaults: bool = False) -> dict:
        return self.env_with_defaults if with_defaults else self.env


@dataclass
class DynamicFacts:
    """Stand-in for AuditContext in results that came back from an isolated child (`.sub`, `.cfg` as used by the
    dynamic audit's static context)."""

    sub: _SubFacts
    cfg: _CfgFacts


def _analyse_item(item, opts: Options) -> Result:
    root, entry, display, is_folder = item
    r = analyse(Path(root), Path(entry) if entry else None, display, is_folder, opts)
    if opts.keep_context and r.context is not None:
        sub, cfg = r.context.sub, r.context.cfg
        r.context = DynamicFacts(_SubFacts(sub.decoded_sources()), _CfgFacts(cfg.effective(), cfg.effective(True),
                                                                      cfg.adaptation_logged()))
    return r


def _stopped(item, why: str) -> Result:
    """Verdict error for a submission whose analysis hit a resource limit or crashed the parser (PG002)."""
    _root, entry, display, is_folder = item
    file = Path(entry).name if entry else ""
    f = Finding("PG002", "error", f"{file or display}: the static analysis was stopped: {why}. Code that crashes or "
                "exhausts the parser (e.g. thousands of nested brackets) cannot be audited; simplify it.", file, 1, 1)
    return Result(path=display, verdict="error", root=display if is_folder else str(Path(display).parent),
                  findings=[f], metrics={})


def _internal(item, error: str) -> Result:
    _root, _entry, display, is_folder = item
    f = Finding("PG000", "error", f"internal auditor error while analysing this submission: {error}; please report "
                "it.", "", 1, 1)
    return Result(path=display, verdict="error", root=display if is_folder else str(Path(display).parent),
                  findings=[f], metrics={})


def audit_items(items, opts: Options | None = None, jobs: int = 1, progress=None, limits=None) -> tuple:
    """(results in item order, one-line internal-error messages) for discovered items (root, entry, display,
    is_folder), each analysed in a forked child under `limits` (auditor.isolate.Limits), `jobs` at a time.
    A parser crash or resource limit is a PG002 finding with verdict error; an auditor exception is a PG000 finding
    plus a message line (the caller exits 2). progress(done, total, display) after each submission."""
    import os

    from auditor.isolate import map_isolated

    opts = opts or Options()
    items = list(items)
    results, crashed, done = [None] * len(items), [], [0]

    def finished(i, outcome):
        item = items[i]
        if outcome.ok:
            results[i] = outcome.value
        elif outcome.limit is not None:
            results[i] = _stopped(item, outcome.limit)
        else:
            results[i] = _internal(item, outcome.error)
            line = f"pgolf audit: internal error while analysing {item[2]}: {outcome.error}\n"
            if os.environ.get("PGOLF_DEBUG"):
                line += outcome.traceback
            crashed.append(line)
        done[0] += 1
        if progress is not None:
            progress(done[0], len(items), item[2])

    map_isolated(lambda it: _analyse_item(it, opts), items, jobs=jobs, limits=limits, on_done=finished)
    return results, crashed
