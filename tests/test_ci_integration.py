"""The GitHub Action and the pre-commit hook: inputs are data (never pasted into a shell script), the hook audits the
record folders a commit touches."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from auditor.precommit import main as precommit_main
from auditor.precommit import record_folders

REPO = Path(__file__).resolve().parents[1]
ACTION = yaml.safe_load((REPO / "action.yml").read_text())
STEPS = {s.get("id") or s.get("name"): s for s in ACTION["runs"]["steps"]}


def test_no_expression_is_pasted_into_a_shell_script():
    for step in ACTION["runs"]["steps"]:
        if "run" in step:
            assert "${{" not in step["run"], step["name"]  # inputs arrive through env: only


def test_install_needs_no_torch():
    installs = [ln for step in ACTION["runs"]["steps"] for ln in step.get("run", "").splitlines()
                if "pip install" in ln]
    assert installs and not any(re.search(r"torch|\[train\]|\[gpu\]", ln) for ln in installs)
    hooks = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())
    assert all(not re.search(r"torch|\[train\]", str(h.get("additional_dependencies", ""))) for h in hooks)


def _run_step(step: dict, env: dict, tmp_path: Path, rc: int = 0) -> subprocess.CompletedProcess:
    """Run an action step's script the way the runner does (`bash --noprofile --norc -eo pipefail`), with a fake
    `pgolf` that records its argv and exits with `rc`."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    fake = bindir / "pgolf"
    fake.write_text('#!/usr/bin/env python3\nimport json, os, sys\n'
                    'open(os.environ["ARGV_LOG"], "a").write(json.dumps(sys.argv[1:]) + "\\n")\n'
                    f'sys.exit({rc})\n')
    fake.chmod(0o755)
    full = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}", ARGV_LOG=str(tmp_path / "argv.jsonl"),
                GITHUB_OUTPUT=str(tmp_path / "out.txt"))
    for k, v in step.get("env", {}).items():
        m = re.fullmatch(r"\$\{\{ inputs\.([\w-]+) \}\}", str(v))
        if m:
            full[k] = env.get(m.group(1), ACTION["inputs"][m.group(1)].get("default", ""))
    full.update(env.get("_extra", {}))
    script = tmp_path / "step.sh"
    script.write_text(step["run"])
    return subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)], env=full, cwd=tmp_path,
                          capture_output=True, text=True, timeout=30)


HOSTILE = "records/a  records/b\n$(touch pwned1) `touch pwned2` ;touch pwned3 records/*"


def test_hostile_paths_are_data(tmp_path):
    (tmp_path / "records").mkdir()
    (tmp_path / "records" / "zz").mkdir()  # a glob would expand records/* to this
    p = _run_step(STEPS["audit"], {"paths": HOSTILE, "_extra": {"PGOLF_SARIF": "x.sarif"}}, tmp_path)
    assert p.returncode == 0, p.stderr
    assert not list(tmp_path.glob("pwned*"))
    argv = json.loads((tmp_path / "argv.jsonl").read_text().splitlines()[0])
    paths = argv[argv.index("--") + 1:]
    assert paths == ["records/a", "records/b", "$(touch", "pwned1)", "`touch", "pwned2`", ";touch", "pwned3",
                     "records/*"]
    assert (tmp_path / "out.txt").read_text().strip() == "exit-code=0"


@pytest.mark.parametrize("inputs", [{"paths": "records --output=/etc/passwd"}, {"fail-on": "error; touch pwned"},
                                    {"max-bytes": "1$(touch pwned)"}, {"jobs": "2 --dynamic"}, {"paths": " \n "}])
def test_bad_inputs_are_refused(tmp_path, inputs):
    p = _run_step(STEPS["args"], inputs, tmp_path)
    assert p.returncode == 2 and "::error::" in p.stdout
    assert not list(tmp_path.glob("pwned*"))


def test_good_inputs_pass_the_check(tmp_path):
    assert _run_step(STEPS["args"], {"paths": "records/a\nrecords/b"}, tmp_path).returncode == 0


def test_precommit_maps_files_to_record_folders(tmp_path, monkeypatch, capsys):
    src = REPO / "tests" / "fixtures" / "dynamic" / "hostile_secrets" / "train_gpt.py"
    for d in ("records/a", "records/b/logs", "docs"):
        (tmp_path / d).mkdir(parents=True)
    shutil.copy(src, tmp_path / "records/a/train_gpt.py")
    shutil.copy(src, tmp_path / "records/b/train_gpt.py")
    (tmp_path / "records/b/logs/seed1.txt").write_text("x\n")
    (tmp_path / "docs/notes.md").write_text("x\n")
    files = ["records/b/logs/seed1.txt", "docs/notes.md", "records/a/train_gpt.py", "records/a/README.md"]
    assert record_folders(files, tmp_path) == ["records/a", "records/b"]
    monkeypatch.chdir(tmp_path)
    assert precommit_main(["docs/notes.md"]) == 0  # no record folder touched: nothing to audit
    assert capsys.readouterr().out == ""
    rc = precommit_main(["--format", "json", *files])
    out = json.loads(capsys.readouterr().out)
    assert sorted(s["path"] for s in out["submissions"]) == ["records/a", "records/b"]
    assert rc == (1 if any(s["verdict"] != "pass" for s in out["submissions"]) else 0)


@pytest.mark.parametrize("rc", [0, 1, 2])
def test_audit_exit_status_is_recorded_and_the_annotation_step_fails_with_it(tmp_path, rc):
    p = _run_step(STEPS["audit"], {"paths": "records/a", "_extra": {"PGOLF_SARIF": "x.sarif"}}, tmp_path, rc)
    assert p.returncode == 0, p.stderr  # the SARIF step never fails the job: the upload must still happen
    assert (tmp_path / "out.txt").read_text().strip() == f"exit-code={rc}"
    annotate = next(s for s in ACTION["runs"]["steps"] if s.get("name") == "Annotate the PR")
    q = _run_step(annotate, {"paths": "records/a", "_extra": {"PGOLF_FIRST_CODE": str(rc)}}, tmp_path, rc)
    assert q.returncode == rc and "disagree" not in q.stdout
