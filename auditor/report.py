"""Output formats: text (`path:line:col: PGnnn [level] message`, grouped per submission, then a verdict line),
json, SARIF 2.1.0 and GitHub workflow annotations."""

from __future__ import annotations

import json
import os
from pathlib import Path

TOOL = "pgolf"
INFO_URI = "https://github.com/openai/parameter-golf"
SCHEMA_URI = "https://json.schemastore.org/sarif-2.1.0.json"
_SARIF_LEVEL = {"error": "error", "warning": "warning", "note": "note"}


def tool_version() -> str:
    try:
        from importlib.metadata import version

        return version("pgolf")
    except Exception:
        return "0.1.0"


def finding_path(result, finding) -> str:
    """Path of the finding's file as the user named the submission (posix separators)."""
    root = Path(result.root or result.path)
    p = root / finding.file if finding.file else root
    return p.as_posix()


def _counts(findings) -> dict:
    c = {"error": 0, "warning": 0, "note": 0}
    for f in findings:
        c[f.level] = c.get(f.level, 0) + 1
    return c


def render_text(results) -> str:
    lines = []
    for r in results:
        c = _counts(r.findings)
        lines.append(f"== {r.path}")
        for f in r.findings:
            lines.append(f"{finding_path(r, f)}:{f.line}:{f.col}: {f.rule} [{f.level}] {f.message}")
        sup = len(getattr(r, "suppressed", None) or ())
        lines.append(
            f"{r.path}: {r.verdict.upper()} ({c['error']} error(s), {c['warning']} warning(s), {c['note']} note(s)"
            + (f", {sup} suppressed with a reason" if sup else "") + ")"
        )
        lines.append("")
    total = {"pass": 0, "fail": 0, "error": 0}
    for r in results:
        total[r.verdict] = total.get(r.verdict, 0) + 1
    verdict = "FAIL" if total["fail"] or total["error"] else "PASS"
    lines.append(
        f"verdict: {verdict} - {len(results)} submission(s): {total['pass']} pass, {total['fail']} fail, "
        f"{total['error']} error"
    )
    return "\n".join(lines) + "\n"


def render_json(results) -> str:
    subs = []
    for r in results:
        d = r.to_dict()
        if getattr(r, "suppressed", None):
            d["suppressed"] = [dict(rule=f.rule, level=f.level, file=f.file, line=f.line, reason=s.reason,
                                    by=f"{s.source}:{s.line}") for f, s in r.suppressed]
        subs.append(d)
    doc = {"tool": TOOL, "version": tool_version(), "submissions": subs}
    return json.dumps(doc, indent=2, sort_keys=False, default=str) + "\n"


def render_sarif(results, rules: dict, exit_code: int | None = None) -> str:
    ids = sorted(rules)
    index = {rid: i for i, rid in enumerate(ids)}
    descriptors = []
    for rid in ids:
        spec = rules[rid]
        level, title = spec if isinstance(spec, tuple) else (spec.level, spec.title)
        why, fix = ("", "") if isinstance(spec, tuple) else (spec.why, spec.fix)
        descriptors.append(
            {
                "id": rid,
                "name": "".join(
                    w.capitalize()
                    for w in title.replace("/", " ")
                    .replace("(", " ")
                    .replace(")", " ")
                    .replace(",", " ")
                    .replace("+", " ")
                    .replace(".", " ")
                    .split()
                )[:80]
                or rid,
                "shortDescription": {"text": title},
                "defaultConfiguration": {"level": _SARIF_LEVEL.get(level, "warning")},
                "helpUri": "https://github.com/openai/parameter-golf#rules",
            }
        )
        if why or fix:
            descriptors[-1]["fullDescription"] = {"text": why or title}
            descriptors[-1]["help"] = {"text": f"{why}\nFix: {fix}".strip()}
    out_results = []
    for r in results:
        for f in r.findings:
            res = {
                "ruleId": f.rule,
                "level": _SARIF_LEVEL.get(f.level, "warning"),
                "message": {"text": f.message},
                "locations": [
                    {
                        "physicalLocation": {
                            "artifactLocation": {"uri": _uri(finding_path(r, f)), "uriBaseId": "%SRCROOT%"},
                            "region": {"startLine": max(1, int(f.line or 1)), "startColumn": max(1, int(f.col or 1))},
                        }
                    }
                ],
                "partialFingerprints": {"pgolf/v1": f"{f.rule}:{finding_path(r, f)}:{f.line}"},
                "properties": {"submission": r.path, "verdict": r.verdict},
            }
            if f.rule in index:
                res["ruleIndex"] = index[f.rule]
            out_results.append(res)
    run = {
        "tool": {"driver": {"name": TOOL, "version": tool_version(), "informationUri": INFO_URI, "rules": descriptors}},
        "results": out_results,
        "columnKind": "unicodeCodePoints",
    }
    if exit_code is not None:
        run["invocations"] = [{"executionSuccessful": exit_code in (0, 1), "exitCode": exit_code}]
    doc = {"$schema": SCHEMA_URI, "version": "2.1.0", "runs": [run]}
    return json.dumps(doc, indent=2) + "\n"


def _uri(path: str) -> str:
    p = path.replace(os.sep, "/")
    while p.startswith("./"):
        p = p[2:]
    from urllib.parse import quote

    return quote(p, safe="/:._-~")


def _esc_data(s: str) -> str:
    return s.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _esc_prop(s: str) -> str:
    return _esc_data(s).replace(":", "%3A").replace(",", "%2C")


def render_github(results) -> str:
    lines = []
    kind = {"error": "error", "warning": "warning", "note": "notice"}
    for r in results:
        for f in r.findings:
            lines.append(
                f"::{kind.get(f.level, 'warning')} file={_esc_prop(finding_path(r, f))},line={f.line},"
                f"col={f.col},title={_esc_prop(f.rule)}::{_esc_data(f.message)}"
            )
    lines.append(render_text(results).rstrip("\n").splitlines()[-1])
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------------
# --explain, --format markdown (a review comment), --format triage (one row per submission)

_FAMILIES = (
    ("PG1", "artifact size and code accounting"),
    ("PG2", "required files and metadata"),
    ("PG3", "time limits"),
    ("PG4", "evaluation legality"),
    ("PG5", "data access"),
)
_LIMITS = (
    "Static analysis reads the code and the logs without running them; labels follow variable names inside a "
    "function and helpers are analysed once for all callers, so an unusual data flow can be missed or over-reported.",
    "Sizes and times come from the folder's own logs: the audit cannot tell whether the logs match the run.",
    "Probabilities computed for the target only and never normalized are caught only when the target keys a cache "
    "or a gate; `--dynamic` measures normalization by running the script on tiny data.",
)


def _numbered(text: str, marks=(), around: int | None = None, width: int = 150) -> list:
    lines = text.splitlines() or [""]
    keep = range(1, len(lines) + 1)
    if around is not None and marks:
        keep = sorted({n for m in marks for n in range(m - around, m + around + 1) if 1 <= n <= len(lines)})
    out, prev = [], None
    for n in keep:
        if prev is not None and n != prev + 1:
            out.append("     ...")
        line = lines[n - 1]
        if len(line) > width:
            line = line[: width - 3] + "..."
        out.append(f"{'>' if n in marks else ' '}{n:4d} | {line}")
        prev = n
    return out


def _example_block(ex, illegal: bool, rid: str) -> list:
    out = [f"{'Illegal' if illegal else 'Legal'}: {ex.name}" + (f" - {ex.note}" if ex.note else "")]
    if ex.env:
        out.append("  run with: " + " ".join(f"{k}={v}" for k, v in sorted(ex.env.items())))
    for rel, text in ex.files.items():
        marks = {line for f, line in ex.points_at if f == rel}
        if not illegal and rel != "train_gpt.py" and len(ex.files) > 1:
            continue
        big = len(text.splitlines()) > 40
        if illegal and big and not marks:
            continue
        out.append(f"  {rel}:")
        out += ["    " + s for s in _numbered(text, marks, around=5 if big else None)]
    missing = [(f, line) for f, line in ex.points_at if f not in ex.files]
    for f, line in missing:
        out.append(f"  {f}: (missing) > {rid} points here")
    return out


def render_explain(cls) -> str:
    """ruff-style explanation of one rule: what, why, how to fix, and its examples (finding lines marked >)."""
    kind = "dynamic audit (--dynamic)" if cls.kind == "dynamic" else "static audit"
    lines = [f"# {cls.id}: {cls.title}", "", f"Level: {cls.level}; reported by the {kind}.", ""]
    doc = " ".join((cls.__dict__.get("__doc__") or "").split())  # the class's own docstring, if it has one
    what = doc if doc and doc.rstrip(".") != cls.title else cls.title[0].upper() + cls.title[1:] + "."
    lines += ["## What it does", "", what, ""]
    lines += ["## Why is this bad?", "", cls.why or "(not documented yet)", ""]
    lines += ["## How to fix", "", cls.fix or "(not documented yet)", ""]
    if cls.ILLEGAL or cls.LEGAL:
        lines += ["## Examples", "", "Lines marked > are where the finding points.", ""]
        for ex in cls.ILLEGAL[:2]:
            lines += _example_block(ex, True, cls.id) + [""]
        for ex in cls.LEGAL[:1]:
            lines += _example_block(ex, False, cls.id) + [""]
    elif cls.kind == "dynamic":
        lines += ["## Examples", "", "The dynamic fixtures in tests/fixtures (see docs/dynamic-audit.md).", ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def _decoded_text(result, label: str):
    """Source of a decoded payload (`train_gpt.py#decoded1`), decoded again from the submission's files."""
    cache = result.__dict__.setdefault("_decoded", {})
    if "all" not in cache:
        cache["all"] = {}
        item = getattr(result, "item", None)
        if item is not None:
            from auditor.source import load_submission

            root, entry, display, is_folder = item
            try:
                sub = load_submission(Path(root), Path(entry) if entry else None, display, is_folder)
                cache["all"] = sub.decoded_sources()
            except Exception:  # an excerpt is a convenience: the finding itself is already reported
                pass
    return cache["all"].get(label)


def _folder_text(root: Path, rel: str, limit: int = 8_000_000):
    """Text of a regular file inside the submission folder; never through a symlink (a hostile folder could point
    one at a secret, which would then be quoted into a review comment)."""
    p = root / rel
    try:
        base = root.resolve()
        cur = root
        for part in Path(rel).parts:
            cur = cur / part
            if part in ("..", "") or cur.is_symlink():
                return None
        if not p.resolve().is_relative_to(base) or not p.is_file() or p.stat().st_size > limit:
            return None
        return p.read_text(encoding="utf-8", errors="replace")
    except (OSError, ValueError):
        return None


def _excerpt(result, f, around: int = 2) -> list:
    real = getattr(result, "real_root", None)
    if not real or not f.file:
        return []
    if "#decoded" in f.file:
        text = _decoded_text(result, f.file)
        if text is None:
            return []
    else:
        text = _folder_text(Path(real), f.file)
        if text is None:
            return []
    if f.line > len(text.splitlines()):
        return []
    return _numbered(text, {f.line}, around=around)


def _md_cell(s) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def _fmt_bytes(v) -> str:
    return f"{v:,}" if isinstance(v, int) else "-"


def _fmt_bpb(v) -> str:
    return f"{v:.4f}" if isinstance(v, (int, float)) else "-"


def top_finding(result):
    """The most serious finding: errors before warnings, evaluation legality and data (PG4/PG5) first."""
    ranked = sorted(result.findings, key=_serious_key)
    return ranked[0] if ranked else None


def _serious_key(f):
    rank = {"error": 0, "warning": 1, "note": 2}
    return rank.get(f.level, 3), f.rule[:3] not in ("PG4", "PG5"), f.rule, f.file, f.line


def render_triage(results) -> str:
    """A markdown table, one row per submission: verdict, top finding, claimed bpb, logged bytes."""
    lines = ["| submission | verdict | errors | warnings | top finding | claimed val_bpb | logged bpb | max bytes |",
             "|---|---|---:|---:|---|---:|---:|---:|"]
    for r in results:
        c = _counts(r.findings)
        top = top_finding(r)
        tops = f"{top.rule} {top.level}: {top.message[:90]}" if top is not None and top.level != "note" else "-"
        m = r.metrics or {}
        lines.append(
            f"| `{_md_cell(r.path)}` | **{r.verdict.upper()}** | {c['error']} | {c['warning']} | {_md_cell(tops)} "
            f"| {_fmt_bpb(m.get('claimed_val_bpb'))} | {_fmt_bpb(m.get('mean_val_bpb'))} "
            f"| {_fmt_bytes(m.get('max_total_bytes'))} |"
        )
    total = {"pass": 0, "fail": 0, "error": 0}
    for r in results:
        total[r.verdict] = total.get(r.verdict, 0) + 1
    lines += ["", f"{len(results)} submission(s): {total['pass']} pass, {total['fail']} fail, {total['error']} error"]
    return "\n".join(lines) + "\n"


def _facts_line(r) -> str:
    m = r.metrics or {}
    parts = []
    if "claimed_val_bpb" in m:
        parts.append(f"claimed val_bpb {_fmt_bpb(m['claimed_val_bpb'])} (submission.json)")
    if "mean_val_bpb" in m:
        parts.append(f"logs: mean val_bpb {_fmt_bpb(m['mean_val_bpb'])} over {len(m.get('seeds') or [])} seed(s)")
    if "max_total_bytes" in m:
        parts.append(f"largest logged artifact {_fmt_bytes(m['max_total_bytes'])} bytes")
    if "code_bytes" in m:
        parts.append(f"train_gpt.py {_fmt_bytes(m['code_bytes'])} bytes")
    return "; ".join(parts)


def render_markdown(results, registry) -> str:
    """A review comment a maintainer can paste: verdict, evidence per finding (file:line + excerpt), what was
    checked and found clean, what was suppressed and why, and the limits of the audit."""
    out = []
    if len(results) > 1:
        out += ["## pgolf audit: triage", "", render_triage(results).rstrip("\n"), ""]
    for r in results:
        c = _counts(r.findings)
        out += [f"## pgolf audit: `{r.path}` - **{r.verdict.upper()}**", ""]
        summary = f"{c['error']} error(s), {c['warning']} warning(s), {c['note']} note(s)"
        if r.verdict == "error":
            summary = "the submission could not be analysed; " + summary
        out += [f"**Verdict: {r.verdict.upper()}** - {summary}."]
        facts = _facts_line(r)
        if facts:
            out += ["", facts + "."]
        serious = sorted((f for f in r.findings if f.level in ("error", "warning")), key=_serious_key)
        if serious:
            out += ["", "### Findings", ""]
            for f in serious:
                cls = registry.get(f.rule)
                title = f" ({cls.title})" if cls is not None else ""
                out.append(f"- **{f.rule}** {f.level}{title} at `{finding_path(r, f)}:{f.line}`: {f.message}")
                ex = _excerpt(r, f)
                if ex:
                    out += ["", "  ```text", *("  " + s for s in ex), "  ```"]
        notes = [f for f in r.findings if f.level == "note"]
        if notes:
            out += ["", f"<details><summary>{len(notes)} note(s)</summary>", ""]
            out += [f"- {f.rule} `{finding_path(r, f)}:{f.line}`: {f.message}" for f in notes]
            out += ["", "</details>"]
        out += ["", "### Checked and found clean", ""]
        out += _clean_lines(r, registry)
        if getattr(r, "suppressed", None):
            out += ["", "### Suppressed (with the author's reason)", ""]
            for f, s in r.suppressed:
                out.append(f"- {f.rule} `{finding_path(r, f)}:{f.line}` by {s.source}:{s.line}: {s.reason}")
        out += [""]
    out += ["### Limits of this audit", ""] + [f"- {x}" for x in _LIMITS] + [""]
    out += [f"_pgolf {tool_version()} static audit; rule details: `pgolf audit --explain PGnnn`._", ""]
    return "\n".join(out)


def _clean_lines(r, registry) -> list:
    if r.verdict == "error":
        return ["- nothing: the code could not be analysed."]
    hit = {f.rule for f in r.findings if f.level in ("error", "warning")}
    checked = (r.metrics or {}).get("checked", {})
    lines = []
    for prefix, name in _FAMILIES:
        ids = [rid for rid, cls in registry.items() if rid.startswith(prefix) and cls.kind == "static"]
        clean = [rid for rid in ids if rid not in hit]
        if not ids:
            continue
        if len(clean) == len(ids):
            lines.append(f"- {name} ({', '.join(ids)}): no finding.")
        elif clean:
            lines.append(f"- {name}: no finding for {', '.join(clean)}.")
        for rid in clean:
            for stmt in checked.get(rid, ()):
                lines.append(f"  - {rid}: {stmt}")
    return lines or ["- (no rule ran)"]
