"""Hostile submissions against the dynamic audit's kernel sandbox (bubblewrap), its input copy and its results
channel. Each attack runs with the in-process guard switched off where that matters, so what holds is the kernel
layer. After every run: no process of the audit remains, nothing outside the sandbox changed, and planted canaries
(a root-only file, an environment variable of the auditor) appear nowhere in the report, the cache or the output."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from auditor.dynamic import harness, run_dynamic, sandbox

FIX = Path(__file__).resolve().parent / "fixtures" / "dynamic"
CANARY_TEXT = "pgolf-canary-9d2f61"
CANARY_ENV = "PGOLF_H5_CANARY_TOKEN"

_NO_SANDBOX = sandbox.unavailable_reason()  # no bwrap, or no user namespaces here (a locked-down container)
pytestmark = pytest.mark.skipif(_NO_SANDBOX is not None, reason=str(_NO_SANDBOX))


def _procs(marker: str) -> list[str]:
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if marker in line and "ps -eo" not in line]


def _fill(name: str, dest: Path, **subs) -> Path:
    dest.mkdir(parents=True)
    src = (FIX / name / "train_gpt.py").read_text()
    for k, v in subs.items():
        src = src.replace(f"@{k}@", str(v))
    (dest / "train_gpt.py").write_text(src)
    return dest


@pytest.fixture
def canary(tmp_path, monkeypatch):
    """A root-only secret file and a secret in the auditor's environment."""
    d = Path(tempfile.mkdtemp(prefix="pgolf-h5-secret-"))
    f = d / "secret.txt"
    f.write_text(CANARY_TEXT)
    os.chmod(f, 0o600)
    os.chmod(d, 0o700)
    monkeypatch.setenv(CANARY_ENV, CANARY_TEXT)
    yield f
    shutil.rmtree(d, ignore_errors=True)


def _everything(res, cache: Path) -> str:
    """All the audit reports or keeps: findings, metrics and every file in its cache."""
    blobs = [json.dumps([f.to_dict() for f in res.findings]), json.dumps(res.metrics, default=str)]
    for p in cache.rglob("*"):
        if p.is_file():
            blobs.append(p.read_bytes().decode("utf-8", errors="replace"))
    return "\n".join(blobs)


def _stage(tmp_path: Path, script: str) -> Path:
    """A bare work dir as the harness stages it, with `script` as the submission."""
    work = Path(tempfile.mkdtemp(prefix="pgolf-dyn-test-", dir="/tmp"))
    for d in ("data", "submission", ".pgolf"):
        (work / d).mkdir()
    (work / "submission" / "x.py").write_text(script)
    return work


def _run_script(tmp_path, script: str, **limits) -> sandbox.ChildResult:
    work = _stage(tmp_path, script)
    try:
        return sandbox.run_child([str(work / "submission" / "x.py")], work, {}, sandbox.Limits(timeout=60, **limits))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_kernel_sandbox_holds_without_the_guard(tmp_path, canary):
    """The escape fixture, run directly in the sandbox: every attempt fails in the kernel."""
    sock_path = Path(tempfile.mkdtemp(prefix="pgolf-h5-sock-")) / "host.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(sock_path))
    listener.listen(1)
    listener.settimeout(0.2)
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(1)
    tcp.settimeout(0.2)
    out = Path(tempfile.mkdtemp(prefix="pgolf-h5-out-"))
    os.chmod(out, 0o777)
    decoy = Path(tempfile.mkdtemp(prefix="pgolf-dyn-decoy-", dir="/tmp"))  # as if another audit were running
    os.chmod(decoy, 0o777)
    sleep = "4242.25"
    try:
        src = (FIX / "hostile_escape" / "train_gpt.py").read_text()
        subs = {"CANARY": canary, "SOCK": sock_path, "OUT": out / "escaped.txt", "SLEEP": sleep,
                "PORT": tcp.getsockname()[1]}
        for k, v in subs.items():
            src = src.replace(f"@{k}@", str(v))
        child = _run_script(tmp_path, src)
        line = next(x for x in child.output_tail.splitlines() if x.startswith("REPORT"))
        report = eval(line[len("REPORT "):])  # noqa: S307 - our own fixture's repr of a dict of strings
        for key in ("read", "symlink_read", "proc1root", "unix_socket", "inet", "replace", "dirfd", "proc_sys",
                    "host_sys", "dev_write", "userns", "own_folder", "host_cache"):
            assert report[key].startswith("blocked"), (key, report[key])
        assert report["other_audits"] == "OK []"  # another audit's staging dir (the decoy) is not visible
        if sandbox.seccomp_program() is not None:  # x86_64: the deny list answers EPERM
            for key in ("ptrace_traceme", "bpf", "userfaultfd"):
                assert report[key] == "blocked PermissionError", (key, report[key])
        assert report["dev_shm"].startswith("OK")  # the sandbox's own /dev/shm (capped tmpfs), not the host's
        uid, caps = eval(report["uid"][3:])  # noqa: S307
        assert uid == sandbox.SANDBOX_UID and int(caps, 16) == 0
        for sock in (listener, tcp):
            with pytest.raises(socket.timeout):
                sock.accept()
        assert list(out.iterdir()) == []
        assert not Path("/dev/shm/pgolf_h5_escape").exists()
        assert CANARY_TEXT not in child.output_tail
        time.sleep(0.3)
        assert _procs(sleep) == []  # the setsid'd survivor died with the sandbox's PID namespace
    finally:
        listener.close()
        tcp.close()
        shutil.rmtree(sock_path.parent, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)
        assert list(decoy.iterdir()) == []
        shutil.rmtree(decoy, ignore_errors=True)


def test_tmpfs_and_shm_are_capped(tmp_path):
    script = (
        "import os\n"
        "for where in ('/tmp/fill', '/dev/shm/fill'):\n"
        "    n = 0\n"
        "    try:\n"
        "        with open(where, 'wb') as f:\n"
        "            while n < 64 << 20:\n"
        "                f.write(b'x' * (1 << 20)); f.flush(); n += 1 << 20\n"
        "    except OSError as e:\n"
        "        print('FULL', where, n, e.errno)\n"
        "    os.remove(where)\n"
    )
    child = _run_script(tmp_path, script, tmpfs_bytes=8 << 20, shm_bytes=4 << 20)
    full = {ln.split()[1]: int(ln.split()[2]) for ln in child.output_tail.splitlines() if ln.startswith("FULL")}
    assert set(full) == {"/tmp/fill", "/dev/shm/fill"}, child.output_tail[-800:]
    assert full["/tmp/fill"] <= 8 << 20 and full["/dev/shm/fill"] <= 4 << 20


def _tree(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_audit_of_escape_fixture_leaks_nothing(tmp_path, canary):
    """The whole `pgolf audit --dynamic-only` run, as CI would: the canaries are nowhere in its stdout, stderr or
    cache, the submission folder is unchanged, and nothing of the audit is left."""
    out = Path(tempfile.mkdtemp(prefix="pgolf-h5-out-"))
    sleep = "4243.25"
    try:
        sub = _fill("hostile_escape", tmp_path / "rec", CANARY=canary, SOCK="/tmp/none.sock", OUT=out / "x.txt",
                    SLEEP=sleep, PORT=9)
        before = _tree(sub)
        env = dict(os.environ, PGOLF_CACHE_DIR=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
        p = subprocess.run([sys.executable, "-m", "pgolf", "audit", "--dynamic-only", "--format", "json",
                            "--no-progress", "--timeout", "60", str(sub)], capture_output=True, text=True, env=env,
                           timeout=180)
        report = json.loads(p.stdout)["submissions"][0]
        assert not any(f["rule"] == "PG9D1" for f in report["findings"]), report["findings"]
        cache = "".join(q.read_text(errors="replace") for q in (tmp_path / "cache").rglob("*") if q.is_file())
        for text in (p.stdout, p.stderr, cache):
            assert CANARY_TEXT not in text and CANARY_ENV not in text
        dyn = report["metrics"]["dynamic"]
        assert dyn["isolation"]["sandbox"] == "bwrap"
        assert not Path(dyn["workdir"]).exists()
        assert list(out.iterdir()) == [] and _tree(sub) == before
        time.sleep(0.3)
        assert _procs(sleep) == [] and _procs(dyn["workdir"]) == []
    finally:
        shutil.rmtree(out, ignore_errors=True)


def test_symlinks_and_fifos_in_the_submission_are_never_followed(tmp_path, canary):
    (tmp_path / ".env").write_text(f"NUM_LAYERS=3\nAPI_TOKEN={CANARY_TEXT}\n")
    sub = _fill("hostile_links", tmp_path / "rec")
    os.symlink("/proc/self/environ", sub / "penv.json")
    os.symlink("../.env", sub / "README.md")
    os.symlink(str(canary), sub / "notes.txt")
    os.symlink("/dev/zero", sub / "train.log")
    os.mkfifo(sub / "eval.log")
    t0 = time.time()
    res = run_dynamic(sub, timeout=60, cache_dir=tmp_path / "cache")
    assert time.time() - t0 < 60
    refused = [f for f in res.findings if f.rule == "PG5D6"]
    assert refused and refused[0].level == "warning"
    names = {r["path"] for r in refused[0].evidence["refused"]}
    assert names == {"penv.json", "README.md", "notes.txt", "train.log", "eval.log"}
    assert not any(f.rule == "PG9D1" for f in res.findings)
    text = _everything(res, tmp_path / "cache")
    assert CANARY_TEXT not in text and CANARY_ENV not in text and "NUM_LAYERS" not in json.dumps(res.metrics["env"])


@pytest.mark.parametrize("mode", ["garbage", pytest.param("flood", marks=pytest.mark.slow), "shape", "bomb", "silent",
                                  pytest.param("dev_zero", marks=pytest.mark.slow)])
def test_results_channel_attacks_are_errors(tmp_path, mode):
    sub = _fill("hostile_results", tmp_path / "rec", MODE=mode)
    res = run_dynamic(sub, timeout=60, cache_dir=tmp_path / "cache")
    bad = [f for f in res.findings if f.rule == "PG9D1"]
    if mode == "dev_zero":  # its own files are read-only and the parent reads none of them: a normal run
        assert not bad, [f.message for f in res.findings]
        return
    assert bad and bad[0].level == "error", [f.message for f in res.findings]
    assert "Traceback" not in bad[0].message
    assert not list((tmp_path / "cache").rglob("results/*.json"))  # unusable results are never cached


def test_cli_verdict_is_error_for_unusable_results(tmp_path):
    sub = _fill("hostile_results", tmp_path / "rec", MODE="garbage")
    env = dict(os.environ, PGOLF_CACHE_DIR=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
    p = subprocess.run([sys.executable, "-m", "pgolf", "audit", "--dynamic-only", "--format", "json", "--no-progress",
                        str(sub)], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 1, p.stderr[-2000:]
    data = json.loads(p.stdout)
    assert data["submissions"][0]["verdict"] == "error"


def test_missing_bwrap_is_one_line_exit_2(tmp_path, monkeypatch):
    from trainer.errors import PgolfError

    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap here
    with pytest.raises(PgolfError, match="needs bubblewrap") as e:
        run_dynamic(FIX / "hostile_secrets", timeout=30, cache_dir=tmp_path / "cache")
    assert "\n" not in str(e.value) and "apt-get install bubblewrap" in str(e.value)
    p = subprocess.run([sys.executable, "-m", "pgolf", "audit", "--dynamic-only", "--no-progress",
                        str(FIX / "hostile_secrets")], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, PATH=str(tmp_path), PGOLF_CACHE_DIR=str(tmp_path / "cache")))
    assert p.returncode == 2 and p.stdout == ""
    assert len(p.stderr.strip().splitlines()) == 1 and "apt-get install bubblewrap" in p.stderr


def test_cache_is_keyed_by_the_copied_content(tmp_path):
    sub = _fill("hostile_results", tmp_path / "rec", MODE="dev_zero")
    work = tmp_path / "stage"
    work.mkdir()
    copied, skipped = sandbox.copy_submission(sub, work / "a")
    k1 = harness.cache_key(work / "a", copied, skipped, None, 60, sys.executable)
    (sub / "helper.py").write_text("X = 1\n")
    copied2, skipped2 = sandbox.copy_submission(sub, work / "b")
    assert harness.cache_key(work / "b", copied2, skipped2, None, 60, sys.executable) != k1


def test_detection_is_cheap_but_not_through_env_or_hostname(tmp_path):
    """What docs/dynamic-audit.md says: the auditor's variables and a telling hostname are hidden, but its modules
    are in sys.modules (one line of code detects the audit)."""
    res = run_dynamic(FIX / "hostile_detect", timeout=60, cache_dir=tmp_path / "cache")
    msg = next(f.message for f in res.findings if f.rule == "PG900")
    assert "SIGNS modules" in msg and "env" not in msg.split("SIGNS")[1].split(";")[0]
    assert "hostname" not in msg and "pythonpath" not in msg


def test_bwrap_without_namespaces_is_one_line(tmp_path, monkeypatch):
    from trainer.errors import PgolfError

    bindir = Path(tempfile.mkdtemp(prefix="pgolf-h5-bin-"))  # as root, bwrap is started as nobody: reachable dir
    os.chmod(bindir, 0o755)
    fake = bindir / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to create a new namespace' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    monkeypatch.setattr(sandbox, "_WORKS", {})
    try:
        with pytest.raises(PgolfError, match="cannot start its sandbox here: bwrap: No permissions") as e:
            run_dynamic(FIX / "hostile_secrets", timeout=30, cache_dir=tmp_path / "cache")
        assert "\n" not in str(e.value)
    finally:
        shutil.rmtree(bindir, ignore_errors=True)


def test_copy_caps(tmp_path):
    src = tmp_path / "src"
    (src / "pkg" / "deep").mkdir(parents=True)
    (src / "a.py").write_text("a" * 10)
    (src / "big.bin").write_bytes(b"x" * 100)
    (src / "pkg" / "b.py").write_text("b")
    (src / "pkg" / "deep" / "c.py").write_text("c")
    copied, skipped = sandbox.copy_submission(src, tmp_path / "dst", sandbox.CopyCaps(file_bytes=50, total_bytes=1000,
                                                                                      files=2, depth=1))
    assert copied == ["a.py", "pkg/b.py"]  # depth 1 stops at pkg/deep; the file cap stops after two files
    why = dict(skipped)
    assert "cap" in why["big.bin"] and "cap" in why["pkg/deep/"]
    assert not (tmp_path / "dst" / "big.bin").exists() and (tmp_path / "dst" / "pkg" / "b.py").read_text() == "b"


def test_sandbox_dies_with_a_killed_auditor(tmp_path):
    """SIGKILL of the auditor process (no cleanup runs) still ends every process of the audit (--die-with-parent and
    the PID namespace), including one that left the session."""
    marker = "4244.25"
    work = _stage(tmp_path, "import os, time\n"
                            "if os.fork() == 0:\n"
                            "    os.setsid(); os.execv('/bin/sleep', ['sleep', '" + marker + "'])\n"
                            "os.execv('/bin/sleep', ['sleep', '" + marker + "'])\n")
    code = ("import sys\nfrom pathlib import Path\nfrom auditor.dynamic import sandbox\n"
            f"sandbox.run_child([{str(work / 'submission' / 'x.py')!r}], Path({str(work)!r}), {{}}, "
            "sandbox.Limits(timeout=120))\n")
    auditor = subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1])
    try:
        deadline = time.time() + 60
        while len(_procs(marker)) < 2 and time.time() < deadline:
            time.sleep(0.3)
        assert len(_procs(marker)) == 2
        auditor.kill()
        auditor.wait()
        deadline = time.time() + 10
        while _procs(marker) and time.time() < deadline:
            time.sleep(0.2)
        assert _procs(marker) == []
    finally:
        auditor.kill()
        shutil.rmtree(work, ignore_errors=True)


def test_stale_staging_dirs_are_swept():
    """An auditor killed before its cleanup leaves its staging dir; the next audit removes it (its lock is free),
    never the dir of a live audit (locked) or one kept on purpose (no lock)."""
    import fcntl

    stale = Path(tempfile.mkdtemp(prefix=sandbox.WORK_PREFIX, dir="/tmp"))
    (stale / ".lock").touch()
    (stale / "data").mkdir()
    kept = Path(tempfile.mkdtemp(prefix=sandbox.WORK_PREFIX, dir="/tmp"))
    live = Path(tempfile.mkdtemp(prefix=sandbox.WORK_PREFIX, dir="/tmp"))
    fd = os.open(live / ".lock", os.O_CREAT | os.O_WRONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        # flock is per open file: a lock held by this process through another descriptor blocks the sweep too
        removed = sandbox.sweep_stale()
        assert str(stale) in removed and not stale.exists()
        assert kept.exists() and live.exists()
        mine = sandbox.new_workdir()
        assert str(mine) not in sandbox.sweep_stale() and mine.exists()
        sandbox.release_workdir(mine)
        assert not mine.exists()
    finally:
        os.close(fd)
        shutil.rmtree(kept, ignore_errors=True)
        shutil.rmtree(live, ignore_errors=True)


def test_rlimits_apply_inside_the_sandbox(tmp_path):
    """CPU, address space, file size and process limits are what the sandboxed script itself runs under."""
    work = _stage(tmp_path, "print(open('/proc/self/limits').read())\n")
    lim = sandbox.Limits(timeout=20)
    try:
        child = sandbox.run_child([str(work / "submission" / "x.py")], work, {"PGOLF_DYNAMIC_CHILD": "0"}, lim)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = {ln[:26].strip(): ln[26:].split()[:2] for ln in child.output_tail.splitlines() if ln.startswith("Max ")}
    cpu = str(int(lim.timeout * lim.threads) + 30)
    assert rows["Max cpu time"] == [cpu, str(int(cpu) + 5)]
    assert rows["Max address space"] == [str(lim.address_space)] * 2
    assert rows["Max file size"] == [str(lim.file_size)] * 2
    assert rows["Max processes"] == [str(lim.nproc)] * 2
    assert rows["Max core file size"] == ["0", "0"]
