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
        lines.append(
            f"{r.path}: {r.verdict.upper()} ({c['error']} error(s), {c['warning']} warning(s), {c['note']} note(s))"
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
    doc = {"tool": TOOL, "version": tool_version(), "submissions": [r.to_dict() for r in results]}
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
