"""Reviewer-facing output: `--explain`, `--format markdown` (a review comment), `--format triage`, SARIF help text."""

import json
import re
from pathlib import Path

from auditor.rules import all_rules
from pgolf.cli import main


def _example(rid, name):
    cls = all_rules()[rid]
    return next(e for e in (*cls.LEGAL, *cls.ILLEGAL) if e.name == name)


def _write(root: Path, files: dict) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for k, v in files.items():
        (root / k).write_text(v)
    return root


def test_explain_static_rule_has_what_why_fix_and_located_examples(capsys):
    assert main(["audit", "--explain", "pg401"]) == 0
    out = capsys.readouterr().out
    cls = all_rules()["PG401"]
    for part in ("# PG401: " + cls.title, "## Why is this bad?", cls.why, "## How to fix", cls.fix, "Illegal: ",
                 "Legal: "):
        assert part in out
    ex = cls.ILLEGAL[0]
    file, line = ex.points_at[0]
    code = ex.files[file].splitlines()[line - 1]
    assert re.search(rf"^\s*>\s*{line} \| {re.escape(code[:60])}", out, re.M), "the finding line is marked"


def test_explain_dynamic_and_meta_rules(capsys):
    assert main(["audit", "--explain", "PG4D1"]) == 0
    out = capsys.readouterr().out
    assert "dynamic audit" in out and all_rules()["PG4D1"].fix in out
    assert main(["audit", "--explain", "PG005"]) == 0
    assert "pgolf: ignore[PG401]" in capsys.readouterr().out
    assert main(["audit", "--explain", "PG999"]) == 2
    assert "unknown rule" in capsys.readouterr().err


def test_markdown_review_comment(tmp_path, capsys, monkeypatch):
    ex = _example("PG401", "train_then_score_chunk")
    bad = _write(tmp_path / "records" / "bad", ex.files)
    _write(tmp_path / "records" / "good", _example("PG201", "complete_record_folder").files)
    cls = all_rules()["PG503"]
    monkeypatch.setattr(cls, "clean", lambda self, facts: ["no network call is reachable from main"], raising=False)
    assert main(["audit", "--format", "markdown", str(tmp_path / "records")]) == 1
    out = capsys.readouterr().out
    # a triage table first (two submissions), then one section per submission
    assert out.startswith("## pgolf audit: triage") and out.count("## pgolf audit: `") == 2
    assert "**Verdict: FAIL**" in out and "**Verdict: PASS**" in out
    file, line = ex.points_at[0]
    code = ex.files[file].splitlines()[line - 1].strip()
    assert f"{bad.as_posix()}/{file}:{line}`" in out
    assert re.search(rf"^\s*>\s*{line} \| .*{re.escape(code)}", out, re.M), "the evidence excerpt marks the line"
    assert "### Checked and found clean" in out and "PG503: no network call is reachable from main" in out
    assert "claimed val_bpb" in out  # the good folder's submission.json
    assert "### Limits of this audit" in out


def test_markdown_lists_suppressed_findings_with_reason(tmp_path, capsys):
    root = _write(tmp_path / "r", _example("PG101", "over_cap").files)
    (root / ".pgolf-audit.toml").write_text('[[ignore]]\nrules = ["PG101"]\nreason = "maintainer accepted: see PR"\n')
    assert main(["audit", "--format", "markdown", str(root)]) in (0, 1)
    out = capsys.readouterr().out
    assert "### Suppressed" in out and "maintainer accepted: see PR" in out and "PG101" in out


def test_sarif_descriptors_carry_why_and_fix(tmp_path, capsys):
    import jsonschema

    root = _write(tmp_path / "r", _example("PG401", "train_then_score_chunk").files)
    assert main(["audit", "--format", "sarif", str(root)]) == 1
    doc = json.loads(capsys.readouterr().out)
    schema = Path(__file__).resolve().parents[1] / "auditor" / "sarif_schema_2.1.0_subset.json"
    jsonschema.validate(doc, json.loads(schema.read_text()))
    desc = {d["id"]: d for d in doc["runs"][0]["tool"]["driver"]["rules"]}
    assert all_rules()["PG401"].fix in desc["PG401"]["help"]["text"]
    assert desc["PG401"]["fullDescription"]["text"] == all_rules()["PG401"].why
    assert "PG4D1" not in desc  # dynamic rules only with --dynamic


def test_triage_escapes_table_cells(tmp_path, capsys):
    root = _write(tmp_path / "a|b", _example("PG401", "train_then_score_chunk").files)
    assert main(["audit", "--format", "triage", str(root)]) == 1
    rows = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("| `")]
    assert len(rows) == 1 and "a\\|b" in rows[0] and rows[0].count(" | ") == 7


def test_markdown_excerpt_of_a_wrapped_script_shows_the_decoded_line(tmp_path, capsys):
    import base64
    import lzma

    ex = _example("PG401", "train_then_score_chunk")
    raw = lzma.compress(ex.files["train_gpt.py"].encode(), format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2}])
    wrapped = ('import lzma as L,base64 as B\nexec(L.decompress(B.b85decode("%s"),format=L.FORMAT_RAW,'
               'filters=[{"id":L.FILTER_LZMA2}]))\n' % base64.b85encode(raw).decode())
    root = _write(tmp_path / "w", dict(ex.files, **{"train_gpt.py": wrapped}))
    assert main(["audit", "--format", "markdown", str(root)]) == 1
    out = capsys.readouterr().out
    _file, line = ex.points_at[0]
    code = ex.files["train_gpt.py"].splitlines()[line - 1].strip()
    assert re.search(rf"^\s*>\s*{line} \| .*{re.escape(code)}", out, re.M), out


def test_markdown_says_where_the_score_first_loop_scores_and_updates(tmp_path, capsys):
    ex = _example("PG401", "score_first_chunked_ttt")
    root = _write(tmp_path / "legal", ex.files)
    main(["audit", "--format", "markdown", str(root)])
    out = capsys.readouterr().out
    m = re.search(r"PG401: score-first adaptation in (\w+): each chunk is scored at train_gpt.py:(\d+) before the "
                  r"update at train_gpt.py:(\d+)", out)
    assert m, out
    lines = ex.files["train_gpt.py"].splitlines()
    score, update = lines[int(m.group(2)) - 1], lines[int(m.group(3)) - 1]
    assert int(m.group(2)) < int(m.group(3)) and ".backward()" in update and "backward" not in score
    assert re.search(r"PG404: scores come from (cross_entropy|log_softmax)", out)


def test_review_never_quotes_a_file_through_a_symlink(tmp_path, capsys):
    secret = tmp_path / "secret.txt"
    secret.write_text("Total submission size int6+lzma: 16000131 bytes SECRET-TOKEN\n" * 6)
    root = _write(tmp_path / "r", _example("PG401", "train_then_score_chunk").files)
    (root / "train_seed1.log").symlink_to(secret)
    (root / ".pgolf-audit.toml").symlink_to(secret)
    assert main(["audit", "--format", "markdown", str(root)]) == 1
    out = capsys.readouterr().out
    assert "SECRET-TOKEN" not in out
    assert "PG006" in out and ".pgolf-audit.toml" in out  # the link is reported, not followed


def test_claimed_score_is_not_read_from_a_fifo(tmp_path, capsys):
    import os

    root = _write(tmp_path / "r", _example("PG401", "train_then_score_chunk").files)
    os.mkfifo(root / "submission.json")  # reading it would block forever
    assert main(["audit", "--format", "triage", str(root)]) == 1
    assert "| **FAIL** |" in capsys.readouterr().out
