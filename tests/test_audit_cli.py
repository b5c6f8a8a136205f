"""`pgolf audit` end to end: exit codes, text/json/sarif/github formats, SARIF schema validation, suppressions,
--fail-on, --max-bytes, --jobs with a tree."""

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from auditor.rules import all_rules
from pgolf.cli import main

SCHEMA = Path(__file__).resolve().parents[1] / "auditor" / "sarif_schema_2.1.0_subset.json"


def _write(root: Path, files: dict) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for k, v in files.items():
        (root / k).write_text(v)
    return root


def _ex(name):
    """Files of the rule example called `name` (from the registry)."""
    for cls in all_rules().values():
        for ex in (*cls.LEGAL, *cls.ILLEGAL):
            if ex.name == name:
                return dict(ex.files)
    raise KeyError(name)


@pytest.fixture
def tree(tmp_path):
    good = _write(tmp_path / "records" / "good", _ex("complete_record_folder"))
    bad = _write(tmp_path / "records" / "bad", dict(_ex("train_then_score_chunk")))
    return tmp_path / "records", good, bad


def test_exit_codes_and_text(tree, capsys):
    root, good, bad = tree
    assert main(["audit", str(good)]) == 0
    out = capsys.readouterr().out
    assert "PASS" in out and out.strip().endswith("0 error")
    assert main(["audit", str(bad)]) == 1
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if " PG401 " in ln)
    path, lineno, col, rest = line.split(":", 3)
    assert path.endswith("bad/train_gpt.py") and int(lineno) > 1 and int(col) >= 1 and rest.startswith(" PG401 [error]")
    assert "verdict: FAIL" in out
    assert main(["audit", str(root / "missing")]) == 2
    assert "path not found" in capsys.readouterr().err


def test_json_format_shape(tree, capsys):
    root, good, bad = tree
    assert main(["audit", "--format", "json", "--no-progress", str(root)]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["tool"] == "pgolf" and isinstance(doc["version"], str)
    subs = {Path(s["path"]).name: s for s in doc["submissions"]}
    assert subs["good"]["verdict"] == "pass" and subs["bad"]["verdict"] == "fail"
    f = next(f for f in subs["bad"]["findings"] if f["rule"] == "PG401")
    assert set(f) == {"rule", "level", "message", "file", "line", "col"}
    assert isinstance(subs["bad"]["metrics"], dict) and subs["bad"]["metrics"]["code_bytes"] > 0


def test_sarif_validates_against_schema(tree, capsys):
    root, _good, _bad = tree
    (root / "bad" / "train_seed1.log").write_text("Total submission size int8+zlib: 16000500 bytes\n")
    assert main(["audit", "--format", "sarif", "--no-progress", str(root)]) == 1
    doc = json.loads(capsys.readouterr().out)
    jsonschema.validate(doc, json.loads(SCHEMA.read_text()))
    run = doc["runs"][0]
    ids = [r["id"] for r in run["tool"]["driver"]["rules"]]
    assert ids == sorted(ids) and {"PG101", "PG401", "PG503"} <= set(ids)
    res = [r for r in run["results"] if r["ruleId"] == "PG401"][0]
    assert ids[res["ruleIndex"]] == "PG401"
    region = res["locations"][0]["physicalLocation"]["region"]
    assert region["startLine"] >= 1 and region["startColumn"] >= 1
    assert any(r["ruleId"] == "PG101" for r in run["results"])
    # the schema really constrains: a 0 column or an unknown level is rejected
    res["locations"][0]["physicalLocation"]["region"]["startColumn"] = 0
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, json.loads(SCHEMA.read_text()))


def test_github_annotations(tree, capsys):
    _root, _good, bad = tree
    assert main(["audit", "--format", "github", str(bad)]) == 1
    out = capsys.readouterr().out.splitlines()
    ann = [ln for ln in out if ln.startswith("::error file=")]
    assert ann and ",title=PG401::" in next(a for a in ann if "PG401" in a)
    assert all("\n" not in a for a in ann)


def test_fail_on_warning_and_max_bytes(tmp_path, capsys):
    files = _ex("complete_record_folder")
    files["train_gpt.py"] = "x = 1\n" * 1600
    root = _write(tmp_path / "r", files)
    assert main(["audit", str(root)]) == 0
    assert main(["audit", "--fail-on", "warning", str(root)]) == 1
    assert main(["audit", "--max-bytes", "1000", str(root)]) == 1
    assert "PG101" in capsys.readouterr().out


def test_suppressions_need_reason_and_unused_are_reported(tmp_path, capsys):
    files = dict(_ex("train_then_score_chunk"))
    code = files["train_gpt.py"].replace(
        "            loss.backward()\n",
        "            loss.backward()  # pgolf: ignore[PG401] reviewed: synthetic example\n",
    )
    root = _write(tmp_path / "s", {"train_gpt.py": code})
    assert main(["audit", "--format", "json", str(root / "train_gpt.py")]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert not [f for f in doc["submissions"][0]["findings"] if f["rule"] == "PG401"]
    code2 = code.replace("# pgolf: ignore[PG401] reviewed: synthetic example", "# pgolf: ignore[PG401]")
    code2 += "y = 2  # pgolf: ignore[PG404] nothing here\n"
    (root / "train_gpt.py").write_text(code2)
    assert main(["audit", "--format", "json", str(root / "train_gpt.py")]) == 1
    rules = [f["rule"] for f in json.loads(capsys.readouterr().out)["submissions"][0]["findings"]]
    assert "PG401" in rules and "PG005" in rules and "PG004" in rules


def test_jobs_tree_and_progress_subprocess(tree):
    root, _good, _bad = tree
    for i in range(3):
        _write(root / f"extra{i}", dict(_ex("score_first_chunked_ttt")))
    p = subprocess.run(
        [sys.executable, "-m", "pgolf", "audit", "--jobs", "2", "--progress", "--format", "json", str(root)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert p.returncode == 1, p.stderr
    doc = json.loads(p.stdout)
    assert len(doc["submissions"]) == 5
    assert [Path(s["path"]).name for s in doc["submissions"]] == ["bad", "extra0", "extra1", "extra2", "good"]
    assert "5/5" in p.stderr


def test_no_torch_import_and_usage_errors(capsys):
    code = (
        "import sys; from pgolf.cli import main; rc = main(['audit', '--list-rules']); "
        "print('TORCH' if 'torch' in sys.modules else 'NOTORCH', rc)"
    )
    p = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert "NOTORCH 0" in p.stdout and "PG401" in p.stdout
    assert main(["audit"]) == 2
    assert "no PATH" in capsys.readouterr().err


def test_dynamic_wiring_passes_static_context_and_merges(tree, capsys, monkeypatch):
    import auditor.dynamic as dyn
    from auditor.findings import Finding

    _root, good, _bad = tree
    seen = {}

    class Out:
        findings = [Finding("PG4D1", "error", "dynamic: scored after update", "train_gpt.py", 3, 1)]
        metrics = {"phases": 2}

    def fake(path, static_context, timeout):
        seen.update(path=str(path), ctx=static_context, timeout=timeout)
        return Out()

    monkeypatch.setattr(dyn, "run_dynamic", fake)
    assert main(["audit", "--dynamic", "--timeout", "42", "--format", "json", str(good)]) == 1
    doc = json.loads(capsys.readouterr().out)
    sub = doc["submissions"][0]
    assert sub["verdict"] == "fail" and any(f["rule"] == "PG4D1" for f in sub["findings"])
    assert sub["metrics"]["dynamic"] == {"phases": 2}
    assert seen["timeout"] == 42.0 and seen["path"] == str(good)
    assert "train_gpt.py" in seen["ctx"]["decoded_sources"] and isinstance(seen["ctx"]["env"], dict)
    assert main(["audit", "--dynamic-only", "--format", "json", str(good)]) == 1
    only = json.loads(capsys.readouterr().out)["submissions"][0]["findings"]
    assert [f["rule"] for f in only] == ["PG4D1"]


def test_internal_crash_is_exit_2_never_0(tree, capsys, monkeypatch):
    import auditor.rules.legality as legality

    def boom(ctx):
        raise RuntimeError("synthetic rule bug")

    monkeypatch.setattr(legality, "analyse", boom)
    _root, good, _bad = tree
    assert main(["audit", "--format", "json", str(good)]) == 2
    captured = capsys.readouterr()
    sub = json.loads(captured.out)["submissions"][0]
    assert sub["verdict"] == "error" and sub["findings"][0]["rule"] == "PG000"
    assert "synthetic rule bug" in captured.err
