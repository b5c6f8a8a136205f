"""Static rules and the one registry of rule classes (static and dynamic; see `auditor.rules.base`).

`run_rules(ctx)` runs every registered static rule's `check(facts)` and, while modules are being converted, the
module-level `check(ctx)` of rule modules that still have one (findings of ids a class already checks are dropped
from the legacy output, so a rule never reports twice). `all_rules()` is the registry: {id: Rule class}, with the
ids of unconverted module `RULES` dicts wrapped in plain classes so every consumer (--list-rules, --explain, SARIF)
sees one shape. This module imports no rule module at import time (the dynamic audit's child imports
`auditor.rules.dynamic_rules` and must stay light)."""

from __future__ import annotations

import functools
import importlib
import pkgutil
from dataclasses import dataclass, field

from auditor.rules.base import REGISTRY, Example, Rule, register

__all__ = ["AuditContext", "Example", "Rule", "all_rules", "finding_at", "register", "rule_modules", "run_rules"]

_NOT_RULES = {"base", "evidence"}  # package modules that register nothing


@dataclass
class AuditContext:
    """The facts every static rule reads: the loaded submission, its effective configuration, the flow model."""

    sub: object  # auditor.source.Submission
    cfg: object  # auditor.config.ConfigModel
    prog: object  # auditor.flow.Program | None
    max_bytes: int = 16_000_000
    checked: dict = field(default_factory=dict)  # rule id -> what a clean rule verified (see run_rules)
    _memo: dict = field(default_factory=dict, repr=False)

    def memo(self, key, fn):
        """fn() computed once per submission and shared by every rule that asks for the same key."""
        if key not in self._memo:
            self._memo[key] = fn()
        return self._memo[key]


@functools.lru_cache(maxsize=1)
def _module_names() -> tuple:
    return tuple(sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name not in _NOT_RULES))


def _import_all() -> list:
    """Import every module of this package (importing a module registers its rule classes), in name order."""
    return [importlib.import_module(f"{__name__}.{n}") for n in _module_names()]


def rule_modules() -> list:
    """Rule modules that still expose the legacy module-level interface (RULES dict + check(ctx))."""
    return [m for m in _import_all() if callable(getattr(m, "check", None)) and isinstance(getattr(m, "RULES", None),
                                                                                              dict)]


def _checks(cls) -> bool:
    return cls.kind == "static" and cls.check is not Rule.check


def static_rule_classes() -> list:
    """Registered static classes that implement check(facts), in id order."""
    _import_all()
    return [REGISTRY[k] for k in sorted(REGISTRY) if _checks(REGISTRY[k])]


def run_rules(ctx) -> list:
    """Findings of every static rule. A class that reports no error/warning may say what it verified through an
    optional `clean(facts)` -> iterable of short statements ("score-first TTT: scored at line 210 before the step at
    line 230"), and auditor.rules.evidence adds what the flow model shows for the legality rules; they land in
    ctx.checked[id] for the review comment."""
    from auditor.rules import evidence

    classes = static_rule_classes()
    by_class = {cls.id for cls in classes}
    out = []
    for cls in classes:
        rule = cls()
        got = list(rule.check(ctx) or ())
        out.extend(got)
        if any(f.rule == cls.id and f.level != "note" for f in got):
            continue
        clean = getattr(rule, "clean", None)
        statements = [str(x) for x in clean(ctx) or ()] if callable(clean) else []
        statements += evidence.statements(cls.id, ctx)
        if statements:
            ctx.checked[cls.id] = statements
    for mod in rule_modules():
        out.extend(f for f in mod.check(ctx) if f.rule not in by_class)
    return out


def _legacy_class(rid: str, level: str, title: str, module):
    """A plain Rule class for an id that is still only in a module RULES dict (not registered)."""
    short = module.__name__.rsplit(".", 1)[-1]
    legal = tuple(_legacy_example(e) for e in getattr(module, "LEGAL_EXAMPLES", ()))
    illegal = tuple(_legacy_example(e) for e in getattr(module, "ILLEGAL_EXAMPLES", ()) if rid in e.get("rules", ()))
    return type(rid, (Rule,), {"id": rid, "level": level, "title": title, "LEGAL": legal, "ILLEGAL": illegal,
                               "__module__": module.__name__, "legacy_module": short})


def _legacy_example(e: dict) -> Example:
    return Example(e["name"], dict(e["files"]), env=dict(e.get("env", {})), note=e.get("note", ""))


def all_rules() -> dict:
    """{id: Rule class} for every static and dynamic rule, in id order."""
    mods = _import_all()
    out = dict(REGISTRY)
    for m in mods:
        rules = getattr(m, "RULES", None)
        if not isinstance(rules, dict):
            continue
        for rid, spec in rules.items():
            if rid in out or not (isinstance(spec, tuple) and len(spec) == 2):
                continue
            out[rid] = _legacy_class(rid, spec[0], spec[1], m)
    return dict(sorted(out.items()))
