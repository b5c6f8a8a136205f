"""PG4xx calibration: shapes from real submissions that the legality rules got wrong, and a narrow check on a few
real folders of ../shared/submissions (skipped when absent; the full per-folder regression is test_audit_corpus)."""

import json
from pathlib import Path

import pytest

from auditor.engine import audit_paths
from auditor.rules.legality_examples import WARMUP_THROWAWAY

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "submissions"


def _audit(tmp_path, files):
    root = tmp_path / "records" / "track_10min_16mb" / "sub"
    root.mkdir(parents=True)
    for rel, text in files.items():
        (root / rel).write_text(text, encoding="utf-8")
    return audit_paths([root])[0]


def test_throwaway_warmup_adapter_on_val_is_a_disputed_warning(tmp_path):
    r = _audit(tmp_path, {"train_gpt.py": WARMUP_THROWAWAY})
    hits = [f for f in r.findings if f.rule == "PG401"]
    assert [f.level for f in hits] == ["warning"], [(f.level, f.message) for f in hits]
    line = WARMUP_THROWAWAY.splitlines()[hits[0].line - 1]
    assert "backward()" in line and "Disputed" in hits[0].message and "`warm`" in hits[0].message


def _pg4(folder: str) -> dict:
    r = audit_paths([SHARED / folder])
    out: dict = {}
    for res in r:
        for f in res.findings:
            if f.rule.startswith("PG4"):
                out.setdefault(f.level, set()).add(f.rule)
    return out


# (folder, rule that must be an error or None for "no PG4 error") — one per calibrated shape, kept small
_CASES = [
    ("clean/pr789", None),  # per-window prefix TTT, weights restored after each window
    ("clean/pr1514", None),  # context-only logit bias (local tensor), then TTT evaluation
    ("illegal/pr596", "PG402"),  # per-doc accumulators inside the epoch loop
    ("illegal/pr870", "PG404"),  # context hash extended by the token at the predicted position (no target names)
    ("illegal/pr1991", "PG404"),  # byte mixture of the realized token's log-probability spread over its bytes
    ("illegal/pr573", "PG403"),  # per-token minimum loss over passes, reported through a plain assignment
]


@pytest.mark.skipif(not (SHARED / "labels.json").exists(), reason="../shared/submissions not present")
@pytest.mark.parametrize("folder,rule", _CASES)
def test_real_submission_shapes(folder, rule):
    labels = {e["folder"]: e["label"] for e in json.loads((SHARED / "labels.json").read_text())}
    found = _pg4(folder)
    if rule is None:
        assert labels[folder] == "clean" and not found.get("error"), found
    else:
        assert labels[folder] == "illegal" and rule in found.get("error", set()), found
