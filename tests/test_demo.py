"""`pgolf demo` end to end on the embedded corpus: data, three tiny seeds, a complete record folder, the audit."""

from __future__ import annotations

import json

import pytest

from conftest import run_pgolf


@pytest.mark.slow
def test_demo_produces_a_complete_record_folder(tmp_path):
    work, out = tmp_path / "work", tmp_path / "records"
    proc = run_pgolf("demo", "--work-dir", work, "--out", out, "--seeds", "1,2,3", "--steps", "2", timeout=600, check=False)
    # The demo's own record must pass its audit (exit 0).
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    folders = list((out / "track_non_record_16mb").iterdir())
    assert len(folders) == 1, folders
    f = folders[0]
    names = sorted(p.name for p in f.iterdir())
    assert names == sorted(["README.md", "submission.json", "train_gpt.py", "loss_curve.png",
                            "train_seed1.log", "train_seed2.log", "train_seed3.log"])
    sub = json.loads((f / "submission.json").read_text())
    assert sub["track"] == "non_record_16mb" and sub["seeds"] == [1, 2, 3]
    assert all(sub["seed_results"][s]["steps"] == 2 for s in ("1", "2", "3"))
    assert sub["compliance"]["three_seeds"] is True
    for s in (1, 2, 3):
        m = json.loads((work / "runs" / f"tiny_seed{s}" / "metrics.json").read_text())
        assert sub["seed_results"][str(s)]["val_bpb"] == m["val_bpb"]
    assert (work / "data" / "manifest.json").is_file()
    assert f"record folder       : {f}" in proc.stdout and "pgolf demo: data, training and build took" in proc.stdout
    assert "audit               : passed" in proc.stdout
    # ... and the dynamic audit: run sandboxed, no evaluation-legality or data-access finding.
    dyn = run_pgolf("audit", f, "--dynamic", "--format", "json", "--no-progress", timeout=600, check=False)
    report = json.loads(dyn.stdout)
    assert dyn.returncode == 0, dyn.stdout[-3000:] + dyn.stderr[-3000:]
    sub_report = report["submissions"][0]
    assert sub_report["verdict"] == "pass"
    rules = {x["rule"] for x in sub_report["findings"]}
    assert "PG9D0" in rules  # the script really ran in the sandbox
    assert not [x for x in sub_report["findings"] if x["level"] == "error"]
    assert not {r for r in rules if r.startswith(("PG4D", "PG900"))}


def test_demo_rejects_bad_seeds(tmp_path):
    proc = run_pgolf("demo", "--work-dir", tmp_path, "--seeds", "1,x", check=False)
    assert proc.returncode == 2
    assert "pgolf: error: --seeds '1,x': expected comma-separated integers" in proc.stderr
    assert not any(tmp_path.iterdir())
