"""Dynamic audit: run a submission's train_gpt.py on tiny synthetic data in a sandbox and observe what it does.

`run_dynamic(submission_path, static_context=None, timeout=180.0, cache_dir=None) -> DynamicResult`.
The auditor process never imports torch; the sandboxed child does (CPU, with CUDA/FlashAttention shims).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from auditor.findings import Finding

RULES = {
    "PG4D1": "score-after-update: a reported validation position was scored by weights already trained on it",
    "PG4D2": "causality: a recorded score changed when only later validation tokens changed",
    "PG4D3": "normalization: the scored probabilities over the vocabulary do not sum to 1",
    "PG5D1": "training data read after the training phase",
    "PG5D2": "validation data read during training",
    "PG5D3": "network access attempted",
    "PG5D4": "sandbox violation (secret read, write outside the work dir, process creation, auditor tampering)",
    "PG5D5": "resource limit hit (wall clock, memory)",
    "PG900": "the dynamic audit could not run the script (the static verdict stands)",
    "PG9D0": "dynamic audit summary (phase timings)",
}


@dataclass
class DynamicResult:
    findings: list[Finding] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)


def run_dynamic(submission_path, static_context=None, timeout: float = 180.0, cache_dir=None) -> DynamicResult:
    """Audit one submission dynamically. Failures to run become a PG900 warning, never an exception, except bad
    arguments (a missing path) which raise PgolfError."""
    from auditor.dynamic import harness
    from trainer.errors import PgolfError

    sub = Path(submission_path)
    cdir = Path(cache_dir) if cache_dir else harness.default_cache_dir()
    try:
        findings, metrics = harness.execute(sub, float(timeout), cdir, static_context)
    except PgolfError as e:
        if not sub.exists() or "no train_gpt.py" in str(e):
            raise
        return DynamicResult([Finding("PG900", "warning", f"dynamic audit could not prepare the run: {e}; the static "
                                      "verdict stands", sub.name)], {})
    return DynamicResult(findings, metrics)
