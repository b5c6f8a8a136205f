"""`# pgolf: ignore[PG401,PG404] <reason>` on the finding's line (or alone on the line above) silences it.

A reason is required (PG005 otherwise, and the suppression is ignored); suppressions that silence nothing are
reported (PG004)."""

from __future__ import annotations

import io
import re
import tokenize
from dataclasses import dataclass, field

from auditor.findings import Finding

_RE = re.compile(r"#\s*pgolf:\s*ignore\[(?P<ids>[^\]]*)\]\s*(?P<reason>.*)$")


@dataclass
class Suppression:
    file: str
    line: int  # line of the comment
    applies_to: int  # line of code it covers
    rules: set
    reason: str
    used: set = field(default_factory=set)


def collect(units) -> list:
    out = []
    for u in units:
        if u.kind == "decoded" or "pgolf:" not in u.text:
            continue
        try:
            toks = list(tokenize.generate_tokens(io.StringIO(u.text).readline))
        except (tokenize.TokenError, SyntaxError, IndentationError):
            continue
        lines = u.text.splitlines()
        for tok in toks:
            if tok.type != tokenize.COMMENT:
                continue
            m = _RE.search(tok.string)
            if not m:
                continue
            line = tok.start[0]
            own_line = lines[line - 1][: tok.start[1]].strip() == "" if line - 1 < len(lines) else False
            ids = {x.strip().upper() for x in m.group("ids").split(",") if x.strip()}
            out.append(Suppression(u.rel, line, line + 1 if own_line else line, ids, m.group("reason").strip()))
    return out


def apply(findings: list, sups: list) -> list:
    out = []
    by_loc = {}
    for s in sups:
        by_loc.setdefault((s.file, s.applies_to), []).append(s)
    for f in findings:
        hit = None
        for s in by_loc.get((f.file, f.line), []):
            if (f.rule in s.rules or "*" in s.rules) and s.reason:
                hit = s
                break
        if hit is not None and not f.rule.startswith("PG00"):
            hit.used.add(f.rule)
            continue
        out.append(f)
    for s in sups:
        if not s.reason:
            out.append(
                Finding(
                    "PG005",
                    "error",
                    f"suppression of {', '.join(sorted(s.rules)) or '?'} has no reason; "
                    f"write `# pgolf: ignore[{','.join(sorted(s.rules))}] <why this is legal>`.",
                    s.file,
                    s.line,
                    1,
                )
            )
        elif not s.used:
            out.append(
                Finding(
                    "PG004",
                    "warning",
                    f"unused suppression of {', '.join(sorted(s.rules))}: nothing is "
                    f"reported on line {s.applies_to}; remove it.",
                    s.file,
                    s.line,
                    1,
                )
            )
        elif s.rules - s.used - {"*"}:
            out.append(
                Finding(
                    "PG004",
                    "warning",
                    f"suppression lists {', '.join(sorted(s.rules - s.used))} but "
                    f"no such finding is on line {s.applies_to}; remove those ids.",
                    s.file,
                    s.line,
                    1,
                )
            )
    return out
