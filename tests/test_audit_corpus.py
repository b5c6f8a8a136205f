"""Regression test on the labelled corpus of real submissions (../shared/submissions; skipped when absent).

The whole corpus (88 folders, ~75 CPU s) is one slow test: every folder's verdict and error-level rule ids must match
tests/data/audit_corpus_expectations.json, the label-derived assertions recorded there must still hold (a caught
illegal folder stays caught, a clean one stays free of PG4xx/PG5xx errors, ...), and no target may get worse.
After an intended change, regenerate the file:
    python bench/audit_corpus.py ../shared/submissions --write-expectations tests/data/audit_corpus_expectations.json
"""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "submissions"
EXPECTED = REPO / "tests" / "data" / "audit_corpus_expectations.json"
REGEN = ("python bench/audit_corpus.py ../shared/submissions "
         "--write-expectations tests/data/audit_corpus_expectations.json")


def _bench():
    spec = importlib.util.spec_from_file_location("audit_corpus", REPO / "bench" / "audit_corpus.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["audit_corpus"] = mod  # its worker function must be importable by name in --jobs processes
    spec.loader.exec_module(mod)
    return mod


def _row(verdict, errors=(), warnings=()):
    return {"verdict": verdict, "errors": list(errors), "warnings": list(warnings), "top": "", "cpu_s": 0.1}


def test_targets_and_expectations_from_rows():
    """The bench's bookkeeping on synthetic rows (runs without the corpus)."""
    b = _bench()
    pairs = [
        ({"folder": "illegal/a", "label": "illegal"}, _row("fail", ["PG401", "PG101"])),
        ({"folder": "illegal/b", "label": "illegal"}, _row("fail", ["PG301"])),
        ({"folder": "clean/c", "label": "clean"}, _row("pass", [], ["PG102"])),
        ({"folder": "accepted/main-d", "label": "clean"}, _row("fail", ["PG502"])),
        ({"folder": "borderline/e", "label": "borderline"}, _row("pass", [], ["PG404"])),
        ({"folder": "borderline/f", "label": "borderline"}, _row("error", ["PG001"])),
    ]
    t = b.targets(pairs)
    assert t["illegal_caught"] == (1, 2) and t["clean_with_legality_error"] == (1, 2)
    assert t["clean_gated_pass"] == (1, 2) and t["borderline_flagged"] == (1, 2)
    assert t["crash_or_error_verdict"] == (1, 6)
    met = b.targets_met(t)
    assert met["illegal_caught"] and not met["clean_with_legality_error"] and not met["crash_or_error_verdict"]
    exp = b.expectations(pairs)["folders"]
    assert exp["illegal/a"]["assert"] == ["legality_error"] and exp["illegal/b"]["assert"] == []
    assert exp["clean/c"]["assert"] == ["no_legality_error", "pass"]
    assert exp["accepted/main-d"]["category"] == "accepted"
    assert exp["borderline/e"]["assert"] == ["legality_flag"] and exp["borderline/f"]["verdict"] == "error"


def test_bench_audits_a_labelled_folder_like_the_cli(tmp_path):
    from auditor.rules import all_rules

    ex = all_rules()["PG401"].ILLEGAL[0]
    folder = tmp_path / "illegal" / "x"
    folder.mkdir(parents=True)
    for rel, text in ex.files.items():
        (folder / rel).write_text(text)
    (folder / "copy").mkdir()
    (folder / "copy" / "train_gpt.py").write_text("print('readable copy')\n")  # belongs to the folder
    row = _bench()._audit_folder(str(folder))
    assert row["verdict"] == "fail" and "PG401" in row["errors"] and row["submissions"] == 1
    assert row["cpu_s"] > 0 and any(p.startswith("PG401 error train_gpt.py:") for p in row["proof"])


def test_bench_rejects_a_folder_without_labels(tmp_path, capsys):
    assert _bench().main([str(tmp_path)]) == 2
    assert "labels.json not found" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(not (CORPUS / "labels.json").is_file(), reason="../shared/submissions is not available")
def test_corpus_matches_recorded_expectations():
    b = _bench()
    expected = json.loads(EXPECTED.read_text(encoding="utf-8"))
    pairs = b.run_corpus(CORPUS, jobs=2)
    got = {e["folder"]: row for e, row in pairs}
    assert set(got) == set(expected["folders"]), "labels.json changed; " + REGEN
    crashes = {k: r["top"] for k, r in got.items() if r["verdict"] == "crash"}
    assert not crashes, crashes
    problems = []
    for folder, exp in sorted(expected["folders"].items()):
        row = got[folder]
        if row["verdict"] != exp["verdict"] or row["errors"] != exp["errors"]:
            problems.append(f"{folder}: {exp['verdict']} {exp['errors']} -> {row['verdict']} {row['errors']} "
                            f"({row['top'][:120]})")
        holds = {
            "legality_error": b.legality_error(row),
            "no_legality_error": not b.legality_error(row),
            "pass": row["verdict"] == "pass",
            "legality_flag": b.legality_flag(row),
        }
        problems += [f"{folder}: label assertion {a} no longer holds" for a in exp["assert"] if not holds[a]]
    t = b.targets(pairs)
    for name, (count, _n) in t.items():
        was = expected["targets"][name][0]
        worse = count > was if name in ("clean_with_legality_error", "crash_or_error_verdict") else count < was
        if worse:
            problems.append(f"target {name}: {was} -> {count}")
    assert not problems, "\n".join(problems) + f"\nIf these changes are intended: {REGEN}"
