"""`pgolf audit` end to end: exit codes, text/json/sarif/github formats, SARIF schema validation, suppressions
(inline, per-folder file, pyproject per-path), --select/--ignore, [tool.pgolf.audit], --fail-on, --max-bytes,
--jobs with a tree, nested record folders, and auditing straight from git (--git REF[:PATH], --changed)."""

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

    def fake(path, static_context, timeout, **_kw):
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


def test_a_crash_outside_the_analysis_is_one_line_and_exit_2(tree, capsys, monkeypatch):
    # a bug in report rendering (after the isolated analysis) must not read as "findings" (1) or dump a traceback
    from auditor import report

    def boom(*a, **k):
        raise RuntimeError("synthetic report bug")

    monkeypatch.delenv("PGOLF_DEBUG", raising=False)
    monkeypatch.setattr(report, "render_json", boom)
    _root, good, _bad = tree
    assert main(["audit", "--format", "json", str(good)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "internal error in audit" in err[0] and "synthetic report bug" in err[0]


def _json(capsys):
    return json.loads(capsys.readouterr().out)["submissions"]


def _rules(sub):
    return {f["rule"] for f in sub["findings"]}


def test_select_and_ignore(tree, capsys):
    _root, _good, bad = tree
    assert main(["audit", "--format", "json", str(bad)]) == 1
    everything = _rules(_json(capsys)[0])
    assert "PG401" in everything and any(not r.startswith("PG4") for r in everything)
    assert main(["audit", "--format", "json", "--select", "PG4", str(bad)]) == 1
    assert {r[:3] for r in _rules(_json(capsys)[0])} == {"PG4"}
    # the longer prefix wins: select PG4 but ignore PG401 leaves no failing finding in this folder
    assert main(["audit", "--format", "json", "--select", "PG4", "--ignore", "PG401", str(bad)]) == 0
    sub = _json(capsys)[0]
    assert "PG401" not in _rules(sub) and sub["verdict"] == "pass"
    assert main(["audit", "--format", "json", "--ignore", "pg401,PG2", str(bad)]) in (0, 1)
    assert not {r for r in _rules(_json(capsys)[0]) if r == "PG401" or r.startswith("PG2")}
    for bad_arg in (["--select", "PG9Z9"], ["--ignore", "nonsense"]):
        assert main(["audit", *bad_arg, str(bad)]) == 2
        assert "not a rule id" in capsys.readouterr().err


def test_pyproject_config_is_found_above_the_path(tree, tmp_path, capsys):
    _root, _good, bad = tree
    cfg = tmp_path / "pyproject.toml"
    cfg.write_text('[tool.pgolf.audit]\nignore = ["PG401"]\nfail-on = "error"\nmax-bytes = 16000000\n')
    assert main(["audit", "--format", "json", str(bad)]) in (0, 1)
    assert "PG401" not in _rules(_json(capsys)[0])
    assert main(["audit", "--format", "json", "--isolated", str(bad)]) == 1
    assert "PG401" in _rules(_json(capsys)[0])
    # the command line adds to the file's ignores; --select from the command line replaces the file's
    assert main(["audit", "--format", "json", "--select", "PG401", str(bad)]) == 0
    assert _rules(_json(capsys)[0]) == set()
    cfg.write_text('[tool.pgolf.audit]\nignores = ["PG401"]\n')
    assert main(["audit", str(bad)]) == 2
    assert "unknown key 'ignores'" in capsys.readouterr().err
    cfg.write_text('[tool.pgolf.audit]\n[[tool.pgolf.audit.per-path-ignores]]\npath = "records/bad"\n'
                   'rules = ["PG401"]\n')
    assert main(["audit", str(bad)]) == 2
    assert "a reason is required" in capsys.readouterr().err
    cfg.write_text('[tool.pgolf.audit]\n[[tool.pgolf.audit.per-path-ignores]]\npath = "records/b*"\nrules = ["PG401"]\n'
                   'reason = "maintainer ruling: adapts on scored chunks only"\n')
    assert main(["audit", "--format", "json", str(bad)]) in (0, 1)
    sub = _json(capsys)[0]
    assert "PG401" not in _rules(sub)
    assert sub["suppressed"] and sub["suppressed"][0]["rule"] == "PG401"
    assert "maintainer ruling" in sub["suppressed"][0]["reason"]
    other = tmp_path / "elsewhere" / "cfg.toml"
    other.parent.mkdir()
    other.write_text("[tool.pgolf.audit]\nselect = [\"PG2\"]\n")
    assert main(["audit", "--format", "json", "--config", str(other), str(bad)]) in (0, 1)
    assert {r[:3] for r in _rules(_json(capsys)[0])} <= {"PG2"}
    cfg.write_text("[tool.pgolf.audit\n")
    assert main(["audit", str(bad)]) == 2
    assert "TOML" in capsys.readouterr().err


def test_folder_suppression_file_for_logs_and_metadata(tmp_path, capsys):
    root = _write(tmp_path / "r", _ex("over_cap"))
    assert main(["audit", "--format", "json", str(root)]) == 1
    hit = [f for f in _json(capsys)[0]["findings"] if f["rule"] == "PG101"]
    assert hit and hit[0]["file"] == "train_seed1.log"
    sup = root / ".pgolf-audit.toml"
    sup.write_text('# reviewed\n[[ignore]]\nrules = ["PG101"]\nfile = "train_seed*.log"\n'
                   'reason = "the log counts the uncompressed checkpoint; the shipped artifact is 15.2 MB"\n')
    assert main(["audit", "--format", "json", str(root)]) in (0, 1)
    sub = _json(capsys)[0]
    assert "PG101" not in _rules(sub) and sub["suppressed"][0]["by"] == ".pgolf-audit.toml:2"
    main(["audit", str(root)])
    assert "1 suppressed with a reason" in capsys.readouterr().out
    # no reason: PG005 at the table's line, and the finding stays
    sup.write_text('[[ignore]]\nrules = ["PG101"]\n')
    assert main(["audit", "--format", "json", str(root)]) == 1
    sub = _json(capsys)[0]
    pg005 = [f for f in sub["findings"] if f["rule"] == "PG005"]
    assert "PG101" in _rules(sub) and pg005 and pg005[0]["file"] == ".pgolf-audit.toml" and pg005[0]["line"] == 1
    # findings in code need the inline comment: the file does not silence them, and the unused entry is reported
    bad = _write(tmp_path / "bad", _ex("train_then_score_chunk"))
    (bad / ".pgolf-audit.toml").write_text('[[ignore]]\nrules = ["PG401"]\nreason = "scored first, really"\n')
    assert main(["audit", "--format", "json", str(bad)]) == 1
    sub = _json(capsys)[0]
    assert "PG401" in _rules(sub) and "PG004" in _rules(sub)
    (bad / ".pgolf-audit.toml").write_text("[[ignore]\n")
    assert main(["audit", "--format", "json", str(bad)]) == 1
    assert any(f["rule"] == "PG002" and f["file"] == ".pgolf-audit.toml" for f in _json(capsys)[0]["findings"])


def _git(repo, *args):
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
                   check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path):
    r = tmp_path / "challenge"
    _write(r / "records" / "track_10min_16mb" / "good", _ex("complete_record_folder"))
    bad = _write(r / "records" / "track_10min_16mb" / "bad", _ex("train_then_score_chunk"))
    _write(r / "records" / "track_10min_16mb" / "bad" / "readable", {"train_gpt.py": "print('a readable copy')\n"})
    _git(r.parent, "init", "-q", str(r))
    _git(r, "add", "-A")
    _git(r, "commit", "-q", "-m", "two records")
    (bad / "train_gpt.py").write_text((bad / "train_gpt.py").read_text() + "# revised\n")
    _git(r, "commit", "-q", "-am", "revise bad")
    _git(r, "update-ref", "refs/pull/7/head", "HEAD")
    _git(r, "checkout", "-q", "--detach", "HEAD~1")  # the working tree is not what gets audited
    return r


def test_git_refs_without_checkout(repo, capsys):
    import tempfile

    before = set(Path(tempfile.gettempdir()).glob("pgolf-git-*"))
    assert main(["audit", "--git", str(repo), "--format", "json", "refs/pull/7/head"]) == 1
    subs = {s["path"]: s for s in _json(capsys)}
    pr = "refs/pull/7/head:records/track_10min_16mb/"
    assert set(subs) == {pr + "bad", pr + "good"}
    assert subs[pr + "good"]["verdict"] == "pass"
    assert "PG401" in _rules(subs[pr + "bad"])
    assert main(["audit", "--git", str(repo), "--format", "json", "HEAD:records/track_10min_16mb/good"]) == 0
    assert [s["path"] for s in _json(capsys)] == ["HEAD:records/track_10min_16mb/good"]
    # text output names the findings' files under REF:folder
    assert main(["audit", "--git", str(repo), "refs/pull/7/head:records/track_10min_16mb/bad"]) == 1
    assert "refs/pull/7/head:records/track_10min_16mb/bad/train_gpt.py:" in capsys.readouterr().out
    assert set(Path(tempfile.gettempdir()).glob("pgolf-git-*")) == before  # private temp dirs are removed


def test_git_changed_and_triage(repo, capsys):
    assert main(["audit", "--git", str(repo), "--changed", "HEAD...refs/pull/7/head", "--format", "json"]) == 1
    assert [s["path"] for s in _json(capsys)] == ["refs/pull/7/head:records/track_10min_16mb/bad"]
    assert main(["audit", "--git", str(repo), "--format", "triage", "refs/pull/7/head", "HEAD"]) == 1
    out = capsys.readouterr().out
    rows = [ln for ln in out.splitlines() if ln.startswith("| `")]
    assert len(rows) == 4 and "| **FAIL** |" in rows[0] and "PG401 error" in rows[0]
    assert "4 submission(s): 2 pass, 2 fail, 0 error" in out
    _git(repo, "update-ref", "refs/pull/10/head", "HEAD")  # a ref pattern: every pull request, in number order
    assert main(["audit", "--git", str(repo), "--format", "json", "refs/pull/*/head:records/track_10min_16mb/bad"]) == 1
    assert [s["path"].split(":")[0] for s in _json(capsys)] == ["refs/pull/7/head", "refs/pull/10/head"]


@pytest.mark.parametrize("args,msg", [
    (["--upload-pack=touch /tmp/x"], "invalid git ref"),
    (["HEAD:../outside"], "invalid path"),
    (["HEAD:/etc"], "invalid path"),
    (["no-such-branch"], "unknown git ref"),
    (["HEAD:records/nothing"], "no such path"),
    ([], "needs at least one REF"),
    (["refs/none/*"], "no ref matches"),
    (["pull/*"], "must start with refs/"),
])
def test_git_bad_input_is_a_usage_error(repo, capsys, args, msg):
    assert main(["audit", "--git", str(repo), *args]) == 2
    assert msg in capsys.readouterr().err


def test_git_not_a_repository(tmp_path, capsys):
    assert main(["audit", "--git", str(tmp_path), "HEAD"]) == 2
    assert "git" in capsys.readouterr().err
    assert main(["audit", "--git", str(tmp_path / "missing"), "HEAD"]) == 2
    assert "repository not found" in capsys.readouterr().err


def test_tree_discovery_keeps_nested_copies_inside_their_record(tmp_path, capsys):
    rec = _write(tmp_path / "records" / "rec", _ex("complete_record_folder"))
    _write(rec / "human_readable", {"train_gpt.py": "print('readable copy')\n"})
    assert main(["audit", "--format", "json", str(tmp_path / "records")]) == 0
    assert [Path(s["path"]).name for s in _json(capsys)] == ["rec"]
    assert main(["audit", "--format", "json", str(rec / "human_readable")]) in (0, 1)  # named directly: audited alone
    assert Path(_json(capsys)[0]["path"]).name == "human_readable"


def test_changed_in_the_current_repository(repo, capsys, monkeypatch):
    monkeypatch.chdir(repo)
    assert main(["audit", "--changed", "HEAD...refs/pull/7/head", "--format", "json"]) == 1
    assert [s["path"] for s in _json(capsys)] == ["refs/pull/7/head:records/track_10min_16mb/bad"]
    # per-path ignores of the repository's pyproject.toml match the folder's path in the repository
    (repo / "pyproject.toml").write_text('[tool.pgolf.audit]\n[[tool.pgolf.audit.per-path-ignores]]\n'
                                         'path = "records/track_10min_16mb/bad"\nrules = ["PG4"]\n'
                                         'reason = "ruled legal"\n')
    main(["audit", "--changed", "HEAD...refs/pull/7/head", "--format", "json"])
    sub = _json(capsys)[0]
    assert not {r for r in _rules(sub) if r.startswith("PG4")} and sub["suppressed"][0]["reason"] == "ruled legal"
    (repo / "pyproject.toml").unlink()
    assert main(["audit", "--changed", "HEAD..refs/pull/7/head"]) == 2
    assert "BASE...HEAD" in capsys.readouterr().err
    assert main(["audit", "--changed", "HEAD...HEAD"]) == 2  # nothing changed: nothing to audit
    assert "no folder" in capsys.readouterr().err
    assert main(["audit", "--changed", "HEAD...refs/pull/7/head", "HEAD"]) == 2
    assert "takes no REF" in capsys.readouterr().err


def test_a_submission_cannot_configure_its_own_audit(tree, tmp_path, capsys):
    _root, _good, bad = tree
    (bad / "pyproject.toml").write_text('[tool.pgolf.audit]\nignore = ["PG4"]\n')
    (bad / "sub").mkdir()
    (bad / "sub" / "pyproject.toml").write_text("not toml [[[\n")
    for target in (bad, bad / "train_gpt.py"):
        assert main(["audit", "--format", "json", str(target)]) == 1
        assert "PG401" in _rules(_json(capsys)[0])
    (tmp_path / "pyproject.toml").write_text('[tool.pgolf.audit]\nignore = ["PG401"]\n')  # the reviewer's, above
    assert main(["audit", "--format", "json", str(bad)]) in (0, 1)
    assert "PG401" not in _rules(_json(capsys)[0])
