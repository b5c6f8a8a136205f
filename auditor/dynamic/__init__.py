"""Dynamic audit: run a submission's train_gpt.py on tiny synthetic data in a sandbox and observe what it does.

`run_dynamic(submission_path, static_context=None, timeout=180.0, cache_dir=None) -> DynamicResult`.
The auditor process never imports torch; the sandboxed child does (CPU, with CUDA/FlashAttention shims).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from auditor.findings import Finding
from auditor.rules.dynamic_rules import DYNAMIC_RULES

# rule ids and titles come from the one registry (auditor/rules/dynamic_rules.py)
RULES = {rid: cls.title for rid, cls in DYNAMIC_RULES.items()}


@dataclass
class DynamicResult:
    findings: list[Finding] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)


def run_dynamic(submission_path, static_context=None, timeout: float = 180.0, cache_dir=None,
                python=None) -> DynamicResult:
    """Audit one submission dynamically, running it under `python` (default: this interpreter). Failures to run
    become a PG900 warning (or a PG901-PG903 note saying what the machine lacks), never an exception, except bad
    arguments (a missing path, an interpreter that does not run) which raise PgolfError."""
    from auditor.dynamic import harness
    from trainer.errors import PgolfError

    sub = Path(submission_path)
    cdir = Path(cache_dir) if cache_dir else harness.default_cache_dir()
    try:
        findings, metrics = harness.execute(sub, float(timeout), cdir, static_context, python=python)
    except PgolfError as e:
        if not sub.exists() or "no train_gpt.py" in str(e) or "bubblewrap" in str(e) or "--python" in str(e):
            raise
        return DynamicResult([Finding("PG900", "warning", f"dynamic audit could not prepare the run: {e}; the static "
                                      "verdict stands", sub.name)], {})
    return DynamicResult(findings, metrics)
