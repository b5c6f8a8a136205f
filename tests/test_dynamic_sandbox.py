"""The sandbox contains hostile submissions and reports them (never crashes the auditor, never harms the host)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from auditor.dynamic import run_dynamic, sandbox

FIX = Path(__file__).resolve().parent / "fixtures" / "dynamic"
_NO_SANDBOX = sandbox.unavailable_reason()  # no bwrap, or no user namespaces here (a locked-down container)
pytestmark = pytest.mark.skipif(_NO_SANDBOX is not None, reason=str(_NO_SANDBOX))


def _audit(name, tmp_path, timeout=60):
    return run_dynamic(FIX / name, timeout=timeout, cache_dir=tmp_path / "cache")


def _rules(res):
    return {f.rule: f for f in reversed(res.findings)}  # first finding per rule


def test_secrets_are_not_reachable(tmp_path, monkeypatch):
    monkeypatch.setenv("PGOLF_TEST_CANARY_SECRET", "canary-7f3a9")
    res = _audit("hostile_secrets", tmp_path)
    r = _rules(res)
    assert r["PG5D4"].level == "error" and "secret file" in r["PG5D4"].message
    names = next(f for f in res.findings if f.rule == "PG5D4" and "names" in (f.evidence or {})).evidence["names"]
    assert "PGOLF_TEST_CANARY_SECRET" in names
    # the canary never reached the child (scrubbed environment), and no key material was printed
    out = str([f.to_dict() for f in res.findings])
    assert "canary-7f3a9" not in out and "PRIVATE KEY" not in out


def test_network_is_blocked(tmp_path):
    r = _rules(_audit("hostile_network", tmp_path))
    assert r["PG5D3"].level == "error"
    assert "NETWORK OK" not in str(r.get("PG900", ""))


def test_writes_outside_are_blocked(tmp_path, monkeypatch):
    escape = tmp_path / "escape.txt"
    monkeypatch.setenv("PGOLF_TEST_ESCAPE", str(escape))  # scrubbed: the script falls back to /var/tmp
    r = _rules(_audit("hostile_write_outside", tmp_path))
    assert r["PG5D4"].level == "error" and "outside" in r["PG5D4"].message
    for p in (escape, Path("/tmp/pgolf_hostile_escape.txt"), Path("/var/tmp/pgolf_escape.txt"),
              Path("/tmp/pgolf_hostile_dir"), Path("/tmp/pgolf_escape.txt")):
        assert not p.exists(), p


def _count_sleepers() -> int:
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return sum(1 for line in out.splitlines() if line.strip() == "sleep 30")


def test_fork_bomb_is_contained(tmp_path):
    before = _count_sleepers()
    res = _audit("hostile_fork_bomb", tmp_path)
    r = _rules(res)
    assert r["PG5D4"].level == "error" and "start a process" in r["PG5D4"].message
    kinds = " ".join(r["PG5D4"].evidence["attempts"])
    assert "os.fork" in kinds
    time.sleep(0.5)
    assert _count_sleepers() == before


@pytest.mark.slow
def test_infinite_loop_is_killed(tmp_path):
    t0 = time.time()
    res = _audit("hostile_infinite_loop", tmp_path, timeout=12)
    r = _rules(res)
    assert time.time() - t0 < 12 + 25
    assert r["PG5D5"].level == "warning" and "killed" in r["PG5D5"].message
    # could not run: PG900, or PG903 when the script hard-codes its size (cannot be shrunk); the static verdict stands
    assert (r.get("PG900") or r["PG903"]).level in ("warning", "note")
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert res.metrics["workdir"] not in out  # the whole process group is gone
    assert not Path(res.metrics["workdir"]).exists()


def test_huge_allocation_fails_cleanly(tmp_path):
    r = _rules(_audit("hostile_alloc", tmp_path))
    assert r["PG5D5"].level == "warning" and "address-space" in r["PG5D5"].message
    assert "MemoryError" in (r.get("PG900") or r["PG903"]).message  # PG903: the script hard-codes its size


def test_missing_submission_is_a_clear_error(tmp_path):
    from trainer.errors import PgolfError

    with pytest.raises(PgolfError, match="does not exist"):
        run_dynamic(tmp_path / "nope", cache_dir=tmp_path)


def test_unrunnable_script_names_the_failing_call(tmp_path):
    sub = tmp_path / "rec"
    sub.mkdir()
    (sub / "train_gpt.py").write_text(
        "import os\n"
        "VOCAB_SIZE = int(os.environ.get('VOCAB_SIZE', 1024))\n"
        "def main():\n"
        "    import pgolf_no_such_kernel_library\n"
        "main()\n"
    )
    res = run_dynamic(sub, timeout=60, cache_dir=tmp_path / "cache")
    f = _rules(res)["PG900"]
    assert f.level == "warning"
    assert "train_gpt.py:4 in main: import pgolf_no_such_kernel_library" in f.message
    assert "ModuleNotFoundError" in f.message and "static verdict stands" in f.message
    assert not any(x.level == "error" for x in res.findings)


@pytest.mark.slow
def test_timeout_after_main_run_keeps_its_findings(tmp_path):
    """A script that hangs only in a later run (the flip run) is killed, and the main run's findings still count."""
    src = (FIX / "pre_eval_ttt" / "train_gpt.py").read_text()
    # every run sees the same paths: the second run (flip) knows it is not the first by a file the first one left
    hang = ('    if os.path.exists("ran_once"):\n        while True:\n            pass\n'
            '    open("ran_once", "w").close()\n    main()\n')
    assert '    main()\n' in src
    sub = tmp_path / "rec"
    sub.mkdir()
    (sub / "train_gpt.py").write_text(src.replace('if __name__ == "__main__":\n    main()\n',
                                                  'if __name__ == "__main__":\n' + hang))
    r = _rules(run_dynamic(sub, timeout=20, cache_dir=tmp_path / "cache"))
    assert r["PG5D5"].level == "warning" and "main" in r["PG5D5"].evidence["finished_runs"]
    assert r["PG4D1"].level == "error" and "PG900" not in r


def test_another_interpreter_runs_in_the_sandbox(tmp_path):
    """`python` (audit --python): a virtualenv's prefix and its base installation are bound read-only, even when the
    virtualenv lives under /tmp (where the sandbox mounts its tmpfs)."""
    import sys
    import tempfile

    venv = Path(tempfile.mkdtemp(prefix="pgolf-test-venv-", dir="/tmp"))
    work = Path(tempfile.mkdtemp(prefix="pgolf-dyn-test-", dir="/tmp"))
    try:
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(venv)], check=True)
        os.chmod(venv, 0o755)
        for d in ("data", "submission", ".pgolf"):
            (work / d).mkdir()
        (work / "submission" / "x.py").write_text("import sys, torch\nprint('PREFIX', sys.prefix)\n")
        child = sandbox.run_child([str(work / "submission" / "x.py")], work, {}, sandbox.Limits(timeout=60),
                                  python=str(venv / "bin" / "python"))
        assert child.returncode == 0, child.output_tail[-1500:]
        assert f"PREFIX {venv}" in child.output_tail
    finally:
        shutil.rmtree(venv, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0 or not Path("/usr/bin/python3").exists() or not shutil.which("setpriv"),
                    reason="needs root (to become an ordinary user), /usr/bin/python3 and setpriv")
def test_launcher_as_an_ordinary_user():
    """The non-root path (a CI runner's user): bwrap runs unprivileged with the user's own binds, same namespaces.
    The system interpreter has no torch, so the child skips the shims (PGOLF_DYNAMIC_CHILD=0)."""
    import tempfile

    repo = Path(__file__).resolve().parents[1]
    d = Path(tempfile.mkdtemp(prefix="pgolf-test-user-", dir="/tmp"))
    os.chmod(d, 0o755)
    driver = d / "drive.py"
    driver.write_text(
        "import os, sys, tempfile, shutil\nfrom pathlib import Path\n"
        f"sys.path.insert(0, {str(repo)!r})\n"
        "from auditor.dynamic import sandbox\n"
        "work = Path(tempfile.mkdtemp(prefix='pgolf-dyn-user-', dir='/tmp'))\n"
        "for x in ('data', 'submission', '.pgolf'):\n    (work / x).mkdir()\n"
        "(work / 'submission' / 'x.py').write_text(\"import os\\nprint('UID', os.getuid(), "
        "open('/proc/self/status').read().split('CapEff:')[1].split()[0], os.path.exists('/root'))\\n\")\n"
        "c = sandbox.run_child([str(work / 'submission' / 'x.py')], work, {'PGOLF_DYNAMIC_CHILD': '0'}, "
        "sandbox.Limits(timeout=30), python=sys.executable)\n"
        "shutil.rmtree(work)\nprint('RC', c.returncode, c.isolation['uid'])\nprint(c.output_tail)\n")
    try:
        p = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--", "/usr/bin/python3",
                            str(driver)], capture_output=True, text=True, timeout=120, cwd="/tmp")
        assert "RC 0 65534" in p.stdout, p.stdout + p.stderr
        assert "UID 1000 0000000000000000 False" in p.stdout
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_a_compiler_run_is_a_warning_and_other_processes_stay_errors(tmp_path):
    # records build fused kernels with g++ at run time: blocked (the sandbox runs only the interpreter) but no violation
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "train_gpt.py").write_text(
        "import subprocess, sys\n"
        "for cmd in (['g++', '-O3', '-shared', 'fused.cpp', '-o', 'fused.so'],\n"
        "            [sys.executable, 'setup.py', 'build_ext', '--inplace']):\n"
        "    try:\n"
        "        subprocess.run(cmd)\n"
        "    except Exception as exc:\n"
        "        print('blocked:', type(exc).__name__)\n"
        "print('final_int8_zlib_roundtrip_exact val_loss:1.0 val_bpb:1.0')\n"
    )
    res = run_dynamic(sub, timeout=60, cache_dir=tmp_path / "cache")
    f = _rules(res)["PG5D4"]
    assert f.level == "warning" and "compiler" in f.message and "g++" in f.message
    assert any("build_ext" in a for a in f.evidence["attempts"]) and any("g++" in a for a in f.evidence["attempts"])
    assert not any(x.rule == "PG5D4" and x.level == "error" for x in res.findings)


def test_library_lookups_and_home_credential_probes_are_notes_not_violations(tmp_path):
    """ctypes.util.find_library (run by libraries on import) probes ldconfig/gcc/ld; huggingface_hub looks for a token in
    ~/.cache: neither is an attack. The lookups behave as on a machine without the tools, the token file is absent in
    the sandbox's empty home; a read of a credential file outside the work dir stays a blocked error."""
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "train_gpt.py").write_text(
        "import ctypes.util, os\n"
        "print('lib:', ctypes.util.find_library('pgolfnosuchlib'))\n"
        "boost, hf = os.environ.get('TOKEN_BOOST', '2.0'), os.environ.get('HF_TOKEN')\n"
        "try:\n"
        "    open(os.path.expanduser('~/.cache/huggingface/token')).read()\n"
        "except FileNotFoundError:\n"
        "    print('no token')\n"
        "print('final_int8_zlib_roundtrip_exact val_loss:1.0 val_bpb:1.0')\n"
    )
    res = run_dynamic(sub, timeout=60, cache_dir=tmp_path / "cache")
    pg5d4 = [f for f in res.findings if f.rule == "PG5D4"]
    assert not [f for f in pg5d4 if f.level == "error"], [f.message for f in pg5d4]
    note = next(f for f in pg5d4 if f.level == "note")
    assert "ldconfig" in note.evidence["commands"]
    probe = next(f for f in pg5d4 if f.level == "warning" and "paths" in f.evidence)
    # a credential variable is reported, an n-gram knob that merely contains TOKEN is not
    assert next(f for f in pg5d4 if "names" in (f.evidence or {})).evidence["names"] == ["HF_TOKEN"]
    assert probe.evidence["paths"][0].endswith("/.cache/huggingface/token")
    # the script ran past both to its end (PG9D0); its only PG900 is that it scores nothing per position
    assert "PG9D0" in {f.rule for f in res.findings}
    assert not [f for f in res.findings if f.rule == "PG900" and "could not run" in f.message]
