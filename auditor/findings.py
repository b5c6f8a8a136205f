"""Finding: one rule hit. Shared by the static rules, the dynamic probes and every output format."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

LEVELS = ("error", "warning", "note")


@dataclass(frozen=True)
class Finding:
    rule: str  # stable id, e.g. "PG401" or "PG4D1"
    level: str  # "error" | "warning" | "note"
    message: str  # what, where, why, and how to fix
    file: str = ""  # path relative to the audited submission (or absolute when outside)
    line: int = 1  # 1-based
    col: int = 1  # 1-based
    evidence: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self):
        if self.level not in LEVELS:
            raise ValueError(f"finding level must be one of {LEVELS}, got {self.level!r}")

    def to_dict(self) -> dict:
        d = asdict(self)
        if not d["evidence"]:
            d.pop("evidence")
        return d
