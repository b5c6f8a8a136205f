"""Run the dynamic audit's child inside bubblewrap (`bwrap`), and copy a submission into it without trusting it.

The child gets: new user, PID, network, IPC, UTS (and, where the kernel has it, cgroup) namespaces; no capabilities;
`--die-with-parent` and `--new-session`; an empty root holding only read-only binds of what the run needs (/usr and
the /lib links, the interpreter's installation prefixes and site-packages, the shims, the staged copy of the
submission, its data and plan), one size-capped tmpfs (`/tmp`, which holds the work dir) plus a small capped
`/dev/shm` as the only writable places, a fresh `/proc` and minimal `/dev` (itself read-only), no host `/sys`, no host
sockets, `--clearenv` and an explicit environment. rlimits (CPU, address space, file size, processes) are set before
bwrap starts and are inherited by every process of the audit.

As root, the child must not run as host uid 0: a process whose kernel uid is 0 may write `/proc/sys` even without
capabilities (the sysctl check is on the uid). So a root parent starts bwrap as `nobody` (unprivileged bwrap, kernel
uid 65534 inside and out). `nobody` cannot reach an interpreter under a private home (`/root/.pyenv`), so the parent
first enters a private mount namespace of its own (nothing changes on the host) and binds each read-only source onto
a staging dir `nobody` can traverse; bwrap binds them from there back to their real paths.

The results come back through a pipe with a byte cap (`channel.py` validates them); output is kept as a bounded tail.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from trainer.errors import PgolfError

SHIMS = Path(__file__).resolve().parent / "shims"
NOBODY = 65534
STAGE_DATA = "{workdir}/.stage/data"  # where the staged data dir is bound read-only before boot copies it
SANDBOX_UID = 1000  # the uid the script sees inside its user namespace
INSTALL_HINT = ("pgolf audit --dynamic needs bubblewrap (bwrap) for its sandbox and it was not found on PATH: install "
                "it (Debian/Ubuntu: apt-get install bubblewrap; Fedora: dnf install bubblewrap) and rerun")
_LAYOUT: dict = {}


@dataclass
class Limits:
    timeout: float = 180.0
    address_space: int = 8 * 1024**3
    file_size: int = 512 * 1024**2  # one file (RLIMIT_FSIZE)
    nproc: int = 256  # processes of the sandbox's kernel uid
    threads: int = 1  # OpenMP spin-waiting on a busy 2-core box makes 2 threads ~40x slower than 1
    tmpfs_bytes: int = 1024 * 1024**2  # /tmp (work dir, TMPDIR, HOME): all the script can write
    shm_bytes: int = 64 * 1024**2  # /dev/shm
    results_bytes: int = 32 * 1024**2  # the results channel, in total
    output_tail_bytes: int = 64 * 1024  # stdout+stderr kept (the rest is counted, not stored)


@dataclass
class ChildResult:
    returncode: int | None
    timed_out: bool
    wall_s: float
    output_tail: str
    isolation: dict
    output_bytes: int = 0
    channel: bytes = b""  # raw results channel (at most Limits.results_bytes)
    channel_overflow: bool = False
    results: dict | None = None  # filled by channel.decode (validated)
    captures: dict = field(default_factory=dict)
    channel_error: str | None = None


def bwrap_path() -> str:
    path = shutil.which("bwrap")
    if not path:
        raise PgolfError(INSTALL_HINT)
    return path


_WORKS: dict = {}


def check_bwrap(bwrap: str, as_nobody: bool) -> None:
    """Start an empty sandbox with the same namespaces once per process: where the kernel or a container's seccomp
    policy forbids user namespaces, or bwrap is setuid (no `--size`), say so in one line instead of failing per run."""
    key = (bwrap, as_nobody)
    if key not in _WORKS:
        argv = [bwrap, *_NS_FLAGS, "--ro-bind", "/usr", "/usr", *_lib_links(), "--proc", "/proc", "--dev", "/dev",
                "--size", str(1 << 20), "--tmpfs", "/tmp", "--", "/usr/bin/true"]
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=30,
                               preexec_fn=_preexec(Limits(timeout=30), [], as_nobody))
            _WORKS[key] = None if p.returncode == 0 else (p.stderr.strip().splitlines() or [f"exit {p.returncode}"])[-1]
        except (OSError, subprocess.SubprocessError) as exc:
            _WORKS[key] = str(exc)
    if _WORKS[key] is not None:
        raise PgolfError(f"dynamic audit: bubblewrap ({bwrap}) cannot start its sandbox here: {_WORKS[key][:300]} "
                         "(it needs unprivileged user namespaces; in a container allow them, e.g. docker run "
                         "--security-opt seccomp=unconfined, or run the dynamic audit on the host)")


# --- the interpreter --------------------------------------------------------------------------------------------
_LAYOUT_CODE = (
    "import json, os, site, sys, sysconfig\n"
    "p = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]\n"
    "p += [v for k, v in sysconfig.get_paths().items() if k in ('stdlib', 'platstdlib', 'purelib', 'platlib')]\n"
    "p += site.getsitepackages() + ([site.getusersitepackages()] if site.ENABLE_USER_SITE else [])\n"
    "print(json.dumps({'executable': sys.executable, 'paths': p}))\n"
)


def interpreter_layout(python: str | os.PathLike) -> dict:
    """{'executable', 'roots'}: the directories to bind read-only so `python` and its packages work in the sandbox.
    `python` is the auditor user's choice (trusted); what it imports comes from these roots only."""
    key = os.fspath(python)
    if key in _LAYOUT:
        return _LAYOUT[key]
    try:
        out = subprocess.run([key, "-c", _LAYOUT_CODE], capture_output=True, text=True, timeout=60,
                             env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": os.path.expanduser("~")})
        info = json.loads(out.stdout)
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        raise PgolfError(f"dynamic audit: cannot run the interpreter {key} ({exc}); expected a Python >= 3.10 with "
                         "torch, numpy and sentencepiece") from None
    paths = {os.path.realpath(key), *(p for p in info["paths"] if isinstance(p, str))}
    real = set()
    for p in paths:
        for q in (os.path.abspath(p), os.path.realpath(p)):
            if os.path.isdir(q) or os.path.isfile(q):
                real.add(q if os.path.isdir(q) else os.path.dirname(q))
    roots = sorted(r for r in real if not any(r != o and r.startswith(o.rstrip("/") + "/") for o in real))
    if "/" in roots:
        raise PgolfError(f"dynamic audit: the interpreter {key} is installed at / (prefix '/'); cannot bind it "
                         "read-only without exposing the whole host")
    _LAYOUT[key] = {"executable": key, "roots": roots}
    return _LAYOUT[key]


# --- copying the submission in ----------------------------------------------------------------------------------
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


@dataclass
class CopyCaps:
    file_bytes: int = 32 * 1024**2
    total_bytes: int = 128 * 1024**2
    files: int = 2000
    depth: int = 6


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISLNK, "symlink"), (stat.S_ISFIFO, "FIFO"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket")):
        if test(mode):
            return name
    return "special file"


def copy_submission(src: Path, dest: Path, caps: CopyCaps | None = None) -> tuple[list[str], list[tuple[str, str]]]:
    """Copy the regular files below `src` into `dest` (created). Everything is opened relative to directory
    descriptors with O_NOFOLLOW|O_NONBLOCK and checked with fstat, so a symlink (to a secret, /proc/self/environ,
    /dev/zero) or a FIFO is never followed or read; sizes and counts are capped. Returns (copied relative paths,
    [(relative path, why it was not copied)])."""
    caps = caps or CopyCaps()
    copied: list[str] = []
    skipped: list[tuple[str, str]] = []
    total = 0
    dest.mkdir(mode=0o755)
    root = os.open(src, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    stack = [(root, "", 0)]
    try:
        while stack:
            dfd, prefix, depth = stack.pop()
            try:
                names = sorted(os.listdir(dfd))
                for name in names:
                    rel = f"{prefix}{name}"
                    try:
                        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                    except OSError:
                        continue
                    if stat.S_ISDIR(st.st_mode):
                        if name in (".git", "__pycache__"):
                            continue
                        if depth >= caps.depth:
                            skipped.append((rel + "/", f"folder deeper than the {caps.depth}-level cap"))
                            continue
                        try:
                            sub = os.open(name, _DIR_FLAGS, dir_fd=dfd)
                        except OSError:
                            skipped.append((rel + "/", "directory replaced while copying; not followed"))
                            continue
                        (dest / rel).mkdir(mode=0o755)
                        stack.append((sub, rel + "/", depth + 1))
                        continue
                    if not stat.S_ISREG(st.st_mode):
                        skipped.append((rel, f"{_kind(st.st_mode)}; not followed or read"))
                        continue
                    if len(copied) >= caps.files:
                        skipped.append((rel, f"over the {caps.files}-file cap"))
                        continue
                    if st.st_size > caps.file_bytes or total + st.st_size > caps.total_bytes:
                        skipped.append((rel, f"{st.st_size} bytes: over the per-file ({caps.file_bytes}) or total "
                                             f"({caps.total_bytes}) byte cap"))
                        continue
                    n = _copy_file(dfd, name, dest / rel, min(caps.file_bytes, caps.total_bytes - total))
                    if isinstance(n, str):
                        skipped.append((rel, n))
                        continue
                    total += n
                    copied.append(rel)
            finally:
                os.close(dfd)
    finally:
        for dfd, _p, _d in stack:
            os.close(dfd)
    return copied, skipped


def _copy_file(dfd: int, name: str, out: Path, cap: int) -> int | str:
    try:
        fd = os.open(name, _FILE_FLAGS, dir_fd=dfd)
    except OSError as exc:
        return "symlink; not followed" if exc.errno == errno.ELOOP else f"cannot open ({exc.strerror})"
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # swapped after the lstat
            return f"{_kind(st.st_mode)}; not followed or read"
        got = 0
        with open(out, "xb") as fh:
            while True:
                chunk = os.read(fd, min(1 << 20, cap + 1 - got))
                if not chunk:
                    break
                got += len(chunk)
                if got > cap:
                    break
                fh.write(chunk)
        if got > cap:
            out.unlink()
            return f"grew past the {cap}-byte cap while copying"
        os.chmod(out, 0o644)
        return got
    except OSError as exc:
        return f"cannot read ({exc.strerror})"
    finally:
        os.close(fd)


# --- the launcher -----------------------------------------------------------------------------------------------
def scrubbed_env(workdir: Path, extra: dict[str, str], threads: int) -> dict[str, str]:
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(workdir),
        "TMPDIR": str(workdir / "tmp"),
        "LANG": "C.UTF-8",
        "USER": "pgolf",
        "LOGNAME": "pgolf",
        "PYTHONPATH": str(SHIMS),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": "0",
        "PGOLF_DYNAMIC_CHILD": "1",
        "PGOLF_SANDBOX_DIR": str(workdir),
        "PGOLF_PROTECT_DIR": str(workdir / ".pgolf"),
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


_ETC = {
    "passwd": (f"root:x:0:0::/nonexistent:/usr/sbin/nologin\n"
               f"pgolf:x:{SANDBOX_UID}:{SANDBOX_UID}::/tmp:/usr/sbin/nologin\n"),
    "group": f"root:x:0:\npgolf:x:{SANDBOX_UID}:\n",
    "hosts": "127.0.0.1 localhost\n::1 localhost\n",
}


_NS_FLAGS = ("--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
             "--unshare-cgroup-try", "--disable-userns", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
             "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID))


def _lib_links() -> list[str]:
    """/bin, /lib... as on the host: symlinks into /usr (merged /usr) are recreated, real dirs bound read-only."""
    a: list[str] = []
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        p = Path("/") / name
        if p.is_symlink():
            a += ["--symlink", os.readlink(p), str(p)]
        elif p.is_dir():
            a += ["--ro-bind", str(p), str(p)]
    return a


def unavailable_reason() -> str | None:
    """Why the sandbox cannot run on this machine (no bwrap, no user namespaces), or None when it can."""
    try:
        check_bwrap(bwrap_path(), os.geteuid() == 0)
    except PgolfError as exc:
        return str(exc)
    return None


def _bwrap_argv(bwrap: str, workdir: Path, ro: list[tuple[str, str]], env: dict[str, str], limits: Limits,
                argv: list[str], seccomp_fd: int | None = None) -> list[str]:
    a = [bwrap, *_NS_FLAGS, "--hostname", "localhost", "--clearenv"]
    for k, v in env.items():
        a += ["--setenv", k, v]
    # the writable tmpfs first: read-only binds that live below /tmp (a virtualenv there) land on top of it
    a += ["--proc", "/proc", "--dev", "/dev", "--size", str(limits.shm_bytes), "--tmpfs", "/dev/shm",
          "--remount-ro", "/dev", "--size", str(limits.tmpfs_bytes), "--tmpfs", "/tmp",
          "--dir", str(workdir), "--dir", str(workdir / "tmp"), "--dir", str(workdir / "out"),
          "--dir", str(workdir / "data")]
    a += ["--ro-bind", "/usr", "/usr", *_lib_links()]
    for name in ("ld.so.cache", "ld.so.conf", "ld.so.conf.d"):
        if (Path("/etc") / name).exists():
            a += ["--ro-bind", f"/etc/{name}", f"/etc/{name}"]
    for name in _ETC:
        a += ["--ro-bind", str(workdir / ".etc" / name), f"/etc/{name}"]
    for src, dst in ro:
        a += ["--ro-bind", src, dst]
    for name in ("submission", ".pgolf"):  # the staged inputs, read-only on top of the writable work dir
        a += ["--ro-bind", str(workdir / name), str(workdir / name)]
    a += ["--ro-bind", str(workdir / "data"), STAGE_DATA.format(workdir=workdir)]  # copied into the tmpfs by boot
    if seccomp_fd is not None:
        a += ["--seccomp", str(seccomp_fd)]
    a += ["--remount-ro", "/", "--chdir", str(workdir), "--", argv[0], str(SHIMS / "pgolf_boot.py"), *argv[1:]]
    return a


# Syscalls the run never needs and kernel exploits often do (tracing other processes, keyrings, eBPF, perf,
# userfaultfd, io_uring, mounts and namespaces, modules, kexec): they fail with EPERM. x86_64 numbers; on other
# architectures no filter is installed (the namespaces and --disable-userns still apply).
_DENY_X86_64 = {
    "ptrace": 101, "syslog": 103, "pivot_root": 155, "acct": 163, "mount": 165, "umount2": 166, "swapon": 167,
    "swapoff": 168, "reboot": 169, "init_module": 175, "delete_module": 176, "quotactl": 179, "kexec_load": 246,
    "add_key": 248, "request_key": 249, "keyctl": 250, "unshare": 272, "perf_event_open": 298,
    "name_to_handle_at": 303, "open_by_handle_at": 304, "setns": 308, "process_vm_readv": 310,
    "process_vm_writev": 311, "finit_module": 313, "kexec_file_load": 320, "bpf": 321, "userfaultfd": 323,
    "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "open_tree": 428, "move_mount": 429,
    "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
}


def seccomp_program() -> bytes | None:
    """A classic-BPF seccomp filter (struct sock_filter[]) for bwrap --seccomp: other architectures' syscall ABIs
    (i386 `int 0x80`, x32) kill the process, the deny list returns EPERM, everything else is allowed."""
    import platform
    import struct

    if platform.machine() != "x86_64":
        return None
    ld_abs, jeq, jge, ret = 0x20, 0x15, 0x35, 0x06
    allow, errno_eperm, kill = 0x7FFF0000, 0x00050000 | errno.EPERM, 0x80000000
    nrs = sorted(_DENY_X86_64.values())
    n = len(nrs)
    i_allow, i_eperm, i_kill = 5 + n, 6 + n, 7 + n
    prog = [(ld_abs, 0, 0, 4), (jeq, 1, 0, 0xC000003E), (ret, 0, 0, kill), (ld_abs, 0, 0, 0),
            (jge, i_kill - 4 - 1, 0, 0x40000000)]
    prog += [(jeq, i_eperm - (5 + k) - 1, 0, nr) for k, nr in enumerate(nrs)]
    prog += [(ret, 0, 0, allow), (ret, 0, 0, errno_eperm), (ret, 0, 0, kill)]
    assert len(prog) == i_kill + 1
    return b"".join(struct.pack("<HBBI", *ins) for ins in prog)


_MS_BIND, _MS_REC, _MS_PRIVATE = 4096, 16384, 1 << 18
_CLONE_NEWNS = 0x00020000


def _libc_call(fn, *args) -> None:
    if fn(*args) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def _preexec(limits: Limits, stage_binds: list[tuple[str, str]], as_nobody: bool):
    libc = ctypes.CDLL(None, use_errno=True) if as_nobody else None

    def fn():
        if as_nobody:  # a private mount namespace of our own: the staging binds never appear on the host
            _libc_call(libc.unshare, _CLONE_NEWNS)
            _libc_call(libc.mount, None, b"/", None, _MS_REC | _MS_PRIVATE, None)
            for src, dst in stage_binds:
                _libc_call(libc.mount, os.fsencode(src), os.fsencode(dst), None, _MS_BIND | _MS_REC, None)
        cpu = int(limits.timeout * limits.threads) + 30
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
        resource.setrlimit(resource.RLIMIT_AS, (limits.address_space, limits.address_space))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_size, limits.file_size))
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.nproc, limits.nproc))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if as_nobody:
            os.setgroups([])
            os.setresgid(NOBODY, NOBODY, NOBODY)
            os.setresuid(NOBODY, NOBODY, NOBODY)

    return fn


def _drain(fd: int, cap: int, sink: dict, key: str, tail: bool) -> None:
    """Read `fd` to EOF; keep at most `cap` bytes (the first ones, or the last ones when `tail`), count the rest."""
    buf, n = bytearray(), 0
    try:
        while True:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            n += len(chunk)
            buf += chunk
            if len(buf) > cap:
                if tail:
                    del buf[: len(buf) - cap]
                else:
                    del buf[cap:]
                    sink[key + "_overflow"] = True
                    break  # the parent stops listening; the child's writes fail (EPIPE)
    except OSError:
        pass
    finally:
        os.close(fd)
    sink[key] = bytes(buf)
    sink[key + "_bytes"] = n


WORK_PREFIX = "pgolf-dyn-"
_LOCKS: dict[str, int] = {}


def new_workdir() -> Path:
    """A fresh host staging dir under /tmp, locked (flock) for as long as this audit runs. Dirs of audits whose
    process died without cleaning up (SIGKILL, OOM) are unlocked: `sweep_stale` removes them."""
    sweep_stale()
    workdir = Path(tempfile.mkdtemp(prefix=WORK_PREFIX, dir="/tmp"))
    fd = os.open(workdir / ".lock", os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    _LOCKS[str(workdir)] = fd
    return workdir


def release_workdir(workdir: Path, keep: bool = False) -> None:
    """Remove the staging dir (or, with `keep`, leave it for inspection, unlocked and never swept)."""
    fd = _LOCKS.pop(str(workdir), None)
    if keep:
        (workdir / ".lock").unlink(missing_ok=True)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    if fd is not None:
        os.close(fd)


def sweep_stale() -> list[str]:
    """Remove this user's staging dirs whose lock nobody holds (their auditor is gone). Returns what was removed."""
    removed = []
    for d in Path("/tmp").glob(WORK_PREFIX + "*"):
        try:
            if d.is_symlink() or d.stat().st_uid != os.geteuid() or str(d) in _LOCKS:
                continue
            fd = os.open(d / ".lock", os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue  # no lock file: not ours to judge (kept on purpose, or another version)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # a live audit holds it
        finally:
            os.close(fd)
        shutil.rmtree(d, ignore_errors=True)
        removed.append(str(d))
    return removed


def prepare_workdir(workdir: Path) -> None:
    """Host staging dir: readable by `nobody` (it traverses, cannot list), the sandbox's /etc files."""
    os.chmod(workdir, 0o711)
    (workdir / ".etc").mkdir(mode=0o755, exist_ok=True)
    for name, text in _ETC.items():
        (workdir / ".etc" / name).write_text(text)
        os.chmod(workdir / ".etc" / name, 0o644)


def run_child(argv: list[str], workdir: Path, env_extra: dict[str, str], limits: Limits,
              python: str | os.PathLike | None = None) -> ChildResult:
    """Run `python argv...` in the sandbox with cwd = `workdir` (its path is the same inside). `workdir` must be
    below /tmp and hold the staged `data`, `submission` and `.pgolf` dirs (bound read-only)."""
    bwrap = bwrap_path()
    if not str(workdir.resolve()).startswith("/tmp/"):
        raise PgolfError(f"dynamic audit: the work dir {workdir} must be below /tmp (the sandbox's tmpfs)")
    python = os.fspath(python or sys.executable)
    layout = interpreter_layout(python)
    prepare_workdir(workdir)
    as_nobody = os.geteuid() == 0
    check_bwrap(bwrap, as_nobody)
    sources = [*layout["roots"], str(SHIMS)]
    ro, stage = [], []
    for i, src in enumerate(sources):
        if as_nobody:
            mnt = workdir / ".roots" / str(i)
            mnt.mkdir(parents=True, mode=0o755, exist_ok=True)  # the harness may run the child twice
            os.chmod(workdir / ".roots", 0o711)
            stage.append((src, str(mnt)))
            ro.append((str(mnt), src))
        else:
            ro.append((src, src))
    for d in ("data", "submission", ".pgolf"):
        for p in [workdir / d, *(workdir / d).rglob("*")]:
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
    res_r, res_w = os.pipe()
    out_r, out_w = os.pipe()
    env = scrubbed_env(workdir, env_extra, limits.threads)
    env.update(PGOLF_RESULTS_FD=str(res_w), PGOLF_STAGE_DATA=STAGE_DATA.format(workdir=workdir),
               PGOLF_DATA_DIR=str(workdir / "data"))
    prog = seccomp_program()
    sec_r = None
    if prog is not None:  # bwrap reads the filter from a descriptor; it fits a pipe's buffer
        sec_r, sec_w = os.pipe()
        os.write(sec_w, prog)
        os.close(sec_w)
    cmd = _bwrap_argv(bwrap, workdir, ro, env, limits, [python, *argv], sec_r)
    info = {"sandbox": "bwrap", "uid": NOBODY if as_nobody else os.geteuid(), "netns": True, "pidns": True,
            "tmpfs_bytes": limits.tmpfs_bytes, "seccomp": prog is not None}
    sink: dict = {}
    t0 = time.time()
    timed_out = False
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out_w, stderr=out_w,
                                pass_fds=(res_w,) if sec_r is None else (res_w, sec_r), start_new_session=True,
                                preexec_fn=_preexec(limits, stage, as_nobody), close_fds=True,
                                env={"PATH": "/usr/bin:/bin"}, cwd="/")
    finally:
        for fd in (res_w, out_w, sec_r):
            if fd is not None:
                os.close(fd)
    readers = [threading.Thread(target=_drain, args=(res_r, limits.results_bytes, sink, "results", False), daemon=True),
               threading.Thread(target=_drain, args=(out_r, limits.output_tail_bytes, sink, "output", True),
                                daemon=True)]
    for t in readers:
        t.start()
    try:
        proc.wait(timeout=limits.timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:
        _kill(proc)
    for t in readers:
        t.join(timeout=10)
    return ChildResult(proc.returncode, timed_out, time.time() - t0,
                       sink.get("output", b"").decode("utf-8", errors="replace"), info,
                       output_bytes=sink.get("output_bytes", 0), channel=sink.get("results", b""),
                       channel_overflow=bool(sink.get("results_overflow")))


def _kill(proc: subprocess.Popen) -> None:
    """SIGKILL bwrap; its PID namespace's init dies with it (--die-with-parent), and with the init every process
    of the audit, setsid'd or not."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.kill()
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
