"""Static rules. Each module exposes RULES {id: (level, title)}, check(ctx) -> list[Finding], and
LEGAL_EXAMPLES / ILLEGAL_EXAMPLES (small submissions the rule must pass / flag; tests run them all)."""

from __future__ import annotations

from dataclasses import dataclass, field

from auditor.findings import Finding

META_RULES = {
    "PG001": ("error", "file unreadable, binary, empty or too large"),
    "PG002": ("error", "file does not parse"),
    "PG003": ("error", "self-extracting payload cannot be decoded statically"),
    "PG004": ("warning", "unused suppression"),
    "PG005": ("error", "suppression without a reason"),
}


@dataclass
class AuditContext:
    sub: object  # auditor.source.Submission
    cfg: object  # auditor.config.ConfigModel
    prog: object  # auditor.flow.Program | None
    max_bytes: int = 16_000_000
    summaries: dict = field(default_factory=dict)


def finding_at(ctx_unit, node, rule: str, level: str, message: str, evidence=None) -> Finding:
    file, line, col, note = ctx_unit.location(node)
    return Finding(rule, level, note + message, file, line, col, evidence or {})


def rule_modules():
    from auditor.rules import data, folder, legality, size, timing

    return [size, folder, timing, legality, data]


def all_rules() -> dict:
    out = dict(META_RULES)
    for m in rule_modules():
        out.update(m.RULES)
    return dict(sorted(out.items()))
