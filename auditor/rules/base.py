"""One class per rule (Fixit's shape) and one registry for static and dynamic rules.

A rule is a class with a stable `id` (PGnnn, dynamic ones PGnDn), a default `level`, a one-line `title`, `why` (the
challenge rule or ruling it enforces), `fix` (what the author should change), and `LEGAL` / `ILLEGAL` examples: small
submissions it must pass / flag, each illegal one with the (file, line) every finding must point at. Static rules
implement `check(facts)`; `facts` is the `AuditContext` of the submission (its `memo()` shares analysis that several
rules of one family need, e.g. the legality flow summary). Dynamic rules are registered with `kind = "dynamic"` and
are emitted by the sandboxed run, so their `check` is never called.

    @register
    class PG101(Rule):
        id, level, title = "PG101", "error", "artifact over the byte cap"
        why = "..."; fix = "..."
        ILLEGAL = (Example("over_cap", {"train_gpt.py": "...", "train.log": "..."}, points_at=(("train.log", 12),)),)
        def check(self, facts):
            yield self.finding("...", "train.log", 12)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Iterable

from auditor.findings import LEVELS, Finding


@dataclass(frozen=True)
class Example:
    """A small submission: `files` maps relative paths to text. For an ILLEGAL example, `points_at` lists the
    (file, line) locations the rule's findings must point at (every finding of the rule at error/warning level must
    be at one of them, and each location must get one). `env` is the run's configuration where it matters."""

    name: str
    files: dict
    points_at: tuple = ()
    env: dict = field(default_factory=dict)
    note: str = ""  # what the example shows (rendered by --explain)


class Rule:
    id: ClassVar[str] = ""
    level: ClassVar[str] = "error"  # default level; a finding may be emitted lower (e.g. a flag-off path is a note)
    title: ClassVar[str] = ""
    why: ClassVar[str] = ""
    fix: ClassVar[str] = ""
    kind: ClassVar[str] = "static"  # static | dynamic
    LEGAL: ClassVar[tuple] = ()
    ILLEGAL: ClassVar[tuple] = ()

    def check(self, facts) -> Iterable[Finding]:
        return ()

    def finding(self, message: str, file: str = "", line: int = 1, col: int = 1, level: str | None = None,
                evidence: dict | None = None) -> Finding:
        return Finding(self.id, level or self.level, message, file, max(1, int(line)), max(1, int(col)),
                       evidence or {})


REGISTRY: dict = {}


def register(cls):
    """Class decorator: add a rule to the registry (ids are unique)."""
    if not cls.id or cls.level not in LEVELS or not cls.title:
        raise ValueError(f"rule {cls.__name__} needs an id, a level in {LEVELS} and a title")
    if cls.id in REGISTRY and REGISTRY[cls.id] is not cls:
        raise ValueError(f"rule id {cls.id} registered twice ({REGISTRY[cls.id].__name__}, {cls.__name__})")
    REGISTRY[cls.id] = cls
    return cls
