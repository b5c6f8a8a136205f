"""After the rules ran: per-folder and per-path suppressions, --select/--ignore, the verdict again, and the facts a
review needs (claimed score, where the files really are) attached to each result."""

from __future__ import annotations

import json
from fnmatch import fnmatch
from pathlib import Path

from auditor.suppress import apply_file_suppressions, load_folder_file, selected, unused_findings

LEVEL_RANK = {"note": 0, "warning": 1, "error": 2}


def finish(results, items, settings, registry) -> None:
    known = set(registry) | {"PG000"}
    base = Path(settings.source).resolve().parent if settings.source else None
    for (root, entry, _display, is_folder), r in zip(items, results):
        real = Path(root)
        r.real_root = str(real)
        r.item = (root, entry, _display, is_folder)  # to reload decoded payloads for excerpts
        r.suppressed = []
        findings = list(r.findings)
        if is_folder:  # a single train_gpt.py is not a folder: its neighbours' suppression file is not its own
            sups, problems = load_folder_file(real, known)
            findings, silenced = apply_file_suppressions(findings, sups)
            findings += problems + unused_findings(sups)
            r.suppressed += silenced
        per_path = [s for glob, s in settings.per_path if base is not None and _under(real, base, glob, _display)]
        if per_path:
            findings, silenced = apply_file_suppressions(findings, per_path, code_ok=True)
            r.suppressed += silenced
        findings = [f for f in findings if selected(f.rule, settings.select, settings.ignore)]
        findings.sort(key=lambda f: (f.file, f.line, f.col, f.rule))
        r.findings = findings
        if r.verdict != "error":
            threshold = LEVEL_RANK.get(settings.fail_on, 2)
            r.verdict = "fail" if any(LEVEL_RANK.get(f.level, 0) >= threshold for f in findings) else "pass"
        claimed = _claimed_bpb(real if is_folder else Path(entry).parent)
        if claimed is not None:
            r.metrics["claimed_val_bpb"] = claimed


def _under(folder: Path, base: Path, glob: str, display: str = "") -> bool:
    """Does the folder match a per-path glob (relative to the pyproject.toml's folder)? A folder read from git
    (shown as REF:path) matches by its path in the repository, which is taken as rooted at that folder."""
    from auditor.gitsource import TEMP_PREFIX

    if TEMP_PREFIX in str(folder) and ":" in display:
        rel = display.split(":", 1)[1]
    else:
        try:
            rel = folder.resolve().relative_to(base).as_posix()
        except ValueError:
            return False
    g = glob.rstrip("/")
    return fnmatch(rel, g) or rel.startswith(g + "/")


def _claimed_bpb(folder: Path):
    """val_bpb that submission.json claims (None if absent or unreadable; PG202 reports problems)."""
    p = folder / "submission.json"
    try:
        if p.is_symlink() or not p.is_file() or p.stat().st_size > 1_000_000:
            return None  # never through a link or from a FIFO/device (PG006 reports those)
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(doc, dict):
        return None
    for key in ("val_bpb", "mean_val_bpb", "score"):
        v = doc.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
    return None
