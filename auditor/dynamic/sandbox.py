"""Run the child under containment: own session and process group, temp working dir, scrubbed environment
(HOME = the temp dir), a network namespace (`unshare -n`) and, as root, an unprivileged uid (`setpriv`) so the
kernel enforces RLIMIT_NPROC and file permissions; rlimits on CPU seconds, address space, file size and processes;
a wall-clock timeout that kills the whole process group. The in-child audit hook (shims/pgolf_guard.py) adds the
explanations."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

SHIMS = Path(__file__).resolve().parent / "shims"
NOBODY = 65534
_PROBE: dict = {}


@dataclass
class Limits:
    timeout: float = 180.0
    address_space: int = 8 * 1024**3
    file_size: int = 512 * 1024**2
    nproc: int = 256  # per uid; effective when the child runs as an unprivileged uid
    threads: int = 1  # OpenMP spin-waiting on a busy 2-core box makes 2 threads ~40x slower than 1


@dataclass
class ChildResult:
    returncode: int | None
    timed_out: bool
    wall_s: float
    stdout_path: Path
    isolation: dict


def _works(cmd: list[str]) -> bool:
    key = tuple(cmd)
    if key not in _PROBE:
        try:
            _PROBE[key] = subprocess.run(cmd + ["true"], capture_output=True, timeout=10).returncode == 0
        except (OSError, subprocess.SubprocessError):
            _PROBE[key] = False
    return _PROBE[key]


def isolation_prefix(workdir: Path) -> tuple[list[str], dict]:
    """Wrapper command for network and privilege isolation, and what was achieved."""
    prefix: list[str] = []
    info = {"netns": False, "pidns": False, "uid": os.geteuid()}
    unshare = shutil.which("unshare")
    if unshare and os.geteuid() == 0 and _works([unshare, "-n", "-p", "-f", "--kill-child", "--"]):
        prefix += [unshare, "-n", "-p", "-f", "--kill-child", "--"]
        info.update(netns=True, pidns=True)
    elif unshare and _works([unshare, "-r", "-n", "--"]):
        prefix += [unshare, "-r", "-n", "--"]
        info["netns"] = True
    setpriv = shutil.which("setpriv")
    if os.geteuid() == 0 and setpriv:
        # nobody cannot traverse a private home holding the interpreter: keep read/search, nothing else
        cmd = [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
               "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search", "--"]
        if _works(cmd):
            prefix += cmd
            info["uid"] = NOBODY
            os.chown(workdir, NOBODY, NOBODY)
            for p in workdir.rglob("*"):
                os.lchown(p, NOBODY, NOBODY)
    return prefix, info


def scrubbed_env(workdir: Path, extra: dict[str, str], threads: int) -> dict[str, str]:
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(workdir),
        "TMPDIR": str(workdir / "tmp"),
        "LANG": "C.UTF-8",
        "PYTHONPATH": str(SHIMS),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": "0",
        "PGOLF_DYNAMIC_CHILD": "1",
        "PGOLF_SANDBOX_DIR": str(workdir),
        "PGOLF_PROTECT_DIR": str(workdir / ".pgolf"),
        "PGOLF_REAL_HOME": os.path.expanduser("~"),
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "TORCHINDUCTOR_CACHE_DIR": str(workdir / "tmp"),
        "TRITON_CACHE_DIR": str(workdir / "tmp"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "WORLD_SIZE": "1",
        "RANK": "0",
        "LOCAL_RANK": "0",
        "LOCAL_WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "29555",
    }
    env.update(extra)
    return env


def _preexec(limits: Limits):
    def fn():
        cpu = int(limits.timeout * limits.threads) + 30
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
        resource.setrlimit(resource.RLIMIT_AS, (limits.address_space, limits.address_space))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_size, limits.file_size))
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.nproc, limits.nproc))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return fn


def run_child(argv: list[str], workdir: Path, env_extra: dict[str, str], limits: Limits) -> ChildResult:
    (workdir / "tmp").mkdir(exist_ok=True)
    prefix, info = isolation_prefix(workdir)
    env = scrubbed_env(workdir, env_extra, limits.threads)
    out_path = workdir / ".pgolf" / "child.out"
    t0 = time.time()
    timed_out = False
    with open(out_path, "wb") as out:
        proc = subprocess.Popen(prefix + [sys.executable, *argv], cwd=workdir, env=env, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                                preexec_fn=_preexec(limits), close_fds=True)
        try:
            proc.wait(timeout=limits.timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            _kill_group(proc)
    return ChildResult(proc.returncode, timed_out, time.time() - t0, out_path, info)


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the child's whole process group (its session), then reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
