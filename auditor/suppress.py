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
        if "pgolf:" not in u.text:
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
            # u.file: a decoded payload's comments cover the findings in it (`train_gpt.py#decoded1`)
            file = getattr(u, "file", u.rel)
            out.append(Suppression(file, line, line + 1 if own_line else line, ids, m.group("reason").strip()))
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


# ---------------------------------------------------------------------------------------------------------------
# Which findings are reported: --select/--ignore, [tool.pgolf.audit] in pyproject.toml, and per-folder suppression
# files for findings in logs and metadata (a `# pgolf: ignore` comment inside train_gpt.py would cost artifact bytes).

SUPPRESSION_FILE = ".pgolf-audit.toml"
MAX_SUPPRESSION_BYTES = 64 * 1024
_ID = re.compile(r"^PG[0-9A-Z]{0,4}$")
_SETTINGS_KEYS = {"select", "ignore", "fail-on", "max-bytes", "per-path-ignores"}


def _toml():
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    return tomllib


def parse_ids(values, known, where: str) -> tuple:
    """Rule ids or id prefixes (PG4 = every PG4xx) from a list or comma-separated strings; ValueError on a bad one."""
    out = []
    for v in values if isinstance(values, (list, tuple)) else [values]:
        if not isinstance(v, str):
            raise ValueError(f"{where}: expected rule ids as strings, got {v!r}")
        for part in v.split(","):
            p = part.strip().upper()
            if not p:
                continue
            if not _ID.match(p) or not any(k.startswith(p) for k in known):
                raise ValueError(f"{where}: {part.strip()!r} is not a rule id or id prefix (e.g. PG401, PG4)")
            out.append(p)
    return tuple(out)


def selected(rule: str, select: tuple, ignore: tuple) -> bool:
    """ruff's logic: the longest matching prefix decides; PG000 (auditor failure) is always reported."""
    if rule == "PG000":
        return True
    s = max((len(p) for p in select if rule.startswith(p)), default=-1 if select else 0)
    i = max((len(p) for p in ignore if rule.startswith(p)), default=-1)
    return s >= 0 and s > i


@dataclass
class FileSuppression:
    source: str  # where it was written (file path as shown), for PG004/PG005 and the report
    line: int
    rules: tuple
    reason: str
    path: str = ""  # glob of the submission-relative file it covers ("" = any non-code file)
    at_line: int | None = None
    used: int = 0


@dataclass
class Settings:
    select: tuple = ()
    ignore: tuple = ()
    fail_on: str | None = None
    max_bytes: int | None = None
    per_path: list = field(default_factory=list)  # (folder glob relative to the pyproject dir, FileSuppression)
    source: str = ""


def find_pyproject(paths, cwd=None):
    """The nearest pyproject.toml with a [tool.pgolf.audit] table above the first audited path (then the cwd),
    never one inside or at a record folder (a submission cannot configure its own audit)."""
    from pathlib import Path

    starts = [Path(p).resolve() for p in paths[:1]] + [Path(cwd or ".").resolve()]
    for start in starts:
        chain = [start, *start.parents] if start.is_dir() else list(start.parents)
        # a submission must not configure its own audit: nothing inside (or at) a record folder is read
        inside = [i for i, d in enumerate(chain) if _is_record_folder(d)]
        for d in chain[inside[-1] + 1 :] if inside else chain:
            f = d / "pyproject.toml"
            if f.is_file():
                try:
                    doc = _toml().loads(f.read_text(encoding="utf-8"))
                except (OSError, UnicodeDecodeError, _toml().TOMLDecodeError) as exc:
                    raise ValueError(f"{f}: cannot read it as TOML ({exc})") from None
                if "audit" in doc.get("tool", {}).get("pgolf", {}):
                    return f, doc["tool"]["pgolf"]["audit"]
    return None, None


def _is_record_folder(d) -> bool:
    try:
        return any(f.name.startswith("train_gpt") and f.suffix == ".py" for f in d.iterdir())
    except OSError:
        return False


def load_config_file(path, known) -> Settings:
    """Settings from [tool.pgolf.audit] of an explicitly named file (--config); ValueError on any problem."""
    if not path.is_file():
        raise ValueError(f"--config: file not found: {path}")
    try:
        doc = _toml().loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, _toml().TOMLDecodeError) as exc:
        raise ValueError(f"--config: {path} is not valid TOML ({exc})") from None
    table = doc.get("tool", {}).get("pgolf", {}).get("audit")
    if table is None:
        raise ValueError(f"--config: {path} has no [tool.pgolf.audit] table")
    return load_settings(path, table, known)


def load_settings(path, table: dict, known) -> Settings:
    where = f"{path} [tool.pgolf.audit]"
    if not isinstance(table, dict):
        raise ValueError(f"{where}: expected a table")
    extra = set(table) - _SETTINGS_KEYS
    if extra:
        raise ValueError(f"{where}: unknown key {sorted(extra)[0]!r}; expected one of {sorted(_SETTINGS_KEYS)}")
    s = Settings(source=str(path))
    s.select = parse_ids(table.get("select", []), known, f"{where} select")
    s.ignore = parse_ids(table.get("ignore", []), known, f"{where} ignore")
    fo = table.get("fail-on")
    if fo is not None and fo not in ("error", "warning"):
        raise ValueError(f"{where} fail-on: expected 'error' or 'warning', got {fo!r}")
    s.fail_on = fo
    mb = table.get("max-bytes")
    if mb is not None and (not isinstance(mb, int) or isinstance(mb, bool) or mb <= 0):
        raise ValueError(f"{where} max-bytes: expected a positive integer, got {mb!r}")
    s.max_bytes = mb
    entries = table.get("per-path-ignores", [])
    if not isinstance(entries, list):
        raise ValueError(f"{where} per-path-ignores: expected an array of tables")
    for i, e in enumerate(entries):
        w = f"{where} per-path-ignores[{i}]"
        if not isinstance(e, dict) or not isinstance(e.get("path"), str) or not e["path"]:
            raise ValueError(f"{w}: expected a table with path, rules and reason")
        sup = _entry(e, known, w, str(path), 1)
        if not sup.reason:
            raise ValueError(f"{w}: a reason is required (why are these findings acceptable?)")
        s.per_path.append((e["path"], sup))
    return s


def _entry(e: dict, known, where: str, source: str, line: int) -> FileSuppression:
    rules = parse_ids(e.get("rules", []), known, f"{where} rules")
    if not rules:
        raise ValueError(f"{where}: rules is empty; list the rule ids to ignore")
    reason = e.get("reason", "")
    if not isinstance(reason, str):
        raise ValueError(f"{where} reason: expected a string")
    at = e.get("line")
    if at is not None and (not isinstance(at, int) or isinstance(at, bool) or at < 1):
        raise ValueError(f"{where} line: expected a positive integer, got {at!r}")
    f = e.get("file", "")
    if not isinstance(f, str):
        raise ValueError(f"{where} file: expected a string")
    return FileSuppression(source, line, rules, reason.strip(), f, at)


def load_folder_file(folder, known) -> tuple:
    """(suppressions, findings) from FOLDER/.pgolf-audit.toml: `[[ignore]]` tables with rules, reason, and optionally
    file (a glob) and line. Problems are findings of the submission (PG002 unparsable, PG005 no reason)."""
    from pathlib import Path

    p = Path(folder) / SUPPRESSION_FILE
    if p.is_symlink() or (p.exists() and not p.is_file()):  # never read through a link out of the folder
        return [], [Finding("PG006", "error", f"{SUPPRESSION_FILE} is a symlink or special file; it was not read and "
                            "its suppressions were not applied. Commit a regular file.", SUPPRESSION_FILE, 1, 1)]
    if not p.is_file():
        return [], []
    try:
        if p.stat().st_size > MAX_SUPPRESSION_BYTES:
            raise ValueError(f"over {MAX_SUPPRESSION_BYTES} bytes")
        text = p.read_text(encoding="utf-8")
        doc = _toml().loads(text)
    except (OSError, ValueError) as exc:  # TOMLDecodeError and UnicodeDecodeError are ValueErrors
        return [], [Finding("PG002", "error", f"{SUPPRESSION_FILE} does not parse as TOML ({exc}); its "
                            "suppressions were not applied.", SUPPRESSION_FILE, 1, 1)]
    lines = text.splitlines()
    starts = [i + 1 for i, ln in enumerate(lines) if ln.strip().startswith("[[ignore]]")]
    sups, findings = [], []
    entries = doc.get("ignore", [])
    for i, e in enumerate(entries if isinstance(entries, list) else []):
        line = starts[i] if i < len(starts) else 1
        try:
            if not isinstance(e, dict):
                raise ValueError("expected a table")
            sup = _entry(e, known, f"[[ignore]] #{i + 1}", SUPPRESSION_FILE, line)
        except ValueError as exc:
            findings.append(Finding("PG002", "error", f"{SUPPRESSION_FILE}: {exc}; not applied.", SUPPRESSION_FILE,
                                    line, 1))
            continue
        if not sup.reason:
            findings.append(Finding("PG005", "error", f"suppression of {', '.join(sup.rules)} has no reason; add "
                                    "reason = \"<why this is acceptable>\".", SUPPRESSION_FILE, line, 1))
            continue
        sups.append(sup)
    if not isinstance(entries, list) or set(doc) - {"ignore"}:
        findings.append(Finding("PG002", "error", f"{SUPPRESSION_FILE}: expected only [[ignore]] tables (rules, "
                                "reason, file, line).", SUPPRESSION_FILE, 1, 1))
    return sups, findings


def _covers(sup: FileSuppression, f: Finding, code_ok: bool) -> bool:
    from fnmatch import fnmatch

    if not any(f.rule.startswith(r) for r in sup.rules) or f.rule.startswith("PG00"):
        return False
    if not code_ok and f.file.endswith(".py"):  # code findings need the inline comment, where a reviewer sees it
        return False
    if sup.path and not fnmatch(f.file, sup.path):
        return False
    return sup.at_line is None or sup.at_line == f.line


def apply_file_suppressions(findings: list, sups: list, code_ok: bool = False) -> tuple:
    """(kept findings, [(finding, suppression)] silenced) plus PG004 for entries that silenced nothing."""
    kept, silenced = [], []
    for f in findings:
        hit = next((s for s in sups if _covers(s, f, code_ok)), None)
        if hit is None:
            kept.append(f)
        else:
            hit.used += 1
            silenced.append((f, hit))
    return kept, silenced


def unused_findings(sups: list) -> list:
    return [Finding("PG004", "warning", f"unused suppression of {', '.join(s.rules)} in {s.source}: nothing it covers "
                    "is reported; remove it.", s.source if s.source == SUPPRESSION_FILE else "", s.line, 1)
            for s in sups if not s.used]
