"""In-child sandbox guard: an audit hook that denies network, process creation, writes outside the work dir and
reads of secrets, and records every denial plus every data-shard access (with a timestamp) for the probes.

Installed first by sitecustomize. It is NOT the security boundary: it lives in the untrusted script's interpreter and
the script can switch it off (tests/test_dynamic_hostile.py does). The boundary is the bubblewrap sandbox
(auditor/dynamic/sandbox.py: namespaces, empty read-only root, capped tmpfs, rlimits); this hook *explains* what a
cooperative-enough script tried, as PG5D3/PG5D4 findings.
"""

from __future__ import annotations

import os
import re
import sys
import time

STATE = {
    "violations": [],  # [{kind, detail, t}]
    "shard_reads": [],  # [{split, path, t, how}]
    "secret_env": [],
    "writes": [],  # [{path, t}] files the script opened for writing in its work dir (artifacts, logs)
}
_WORK = os.path.realpath(os.environ.get("PGOLF_SANDBOX_DIR", os.getcwd()))
_REAL_HOME = os.path.expanduser("~")
_SECRET_PATH = re.compile(
    r"(/\.ssh/|/\.aws/|/\.gnupg/|/\.netrc$|/\.git-credentials$|/\.docker/config|/\.kube/|/\.pypirc$|/\.config/gcloud"
    r"|/\.huggingface/token|/\.cache/huggingface/token|^/etc/shadow|^/etc/ssh/|^/proc/\d+/environ|^/proc/self/environ"
    r"|/id_rsa|/id_ed25519)"
)
# credential variables end with the secret's kind (HF_TOKEN, AWS_SECRET_ACCESS_KEY); knobs such as TOKEN_BOOST or
# TOKEN_ORDER (n-gram settings) are not credentials
_SECRET_ENV = re.compile(
    r"(^|_)(TOKEN|SECRET|PASSWORD|PASSWD|API_KEY|ACCESS_KEY|SECRET_KEY|CREDENTIALS?|PRIVATE_KEY|AUTH)$")
_SHARD = re.compile(r"fineweb_(train|val)_\d+\.bin$")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
# /tmp inside the sandbox is its own size-capped tmpfs (it holds the work dir): records keep scratch files there
# (`/tmp/ttt_counter_<run>`), as contained as the work dir and gone with the sandbox
_ALLOWED_WRITE = ("/dev/null", "/dev/shm/torch_", "/dev/shm/__KMP", "/tmp/")
_PROTECT = os.path.realpath(os.environ["PGOLF_PROTECT_DIR"]) if os.environ.get("PGOLF_PROTECT_DIR") else None
_active = [False]


class SandboxDenied(PermissionError):
    pass


def _record(kind: str, detail: str) -> None:
    if len(STATE["violations"]) < 200:
        STATE["violations"].append({"kind": kind, "detail": str(detail)[:300], "t": time.time()})


def _inside(path: str) -> bool:
    try:
        rp = os.path.realpath(path)
    except Exception:
        return False
    return rp == _WORK or rp.startswith(_WORK + os.sep)


def _in_sandbox(full: str) -> bool:
    """Inside the work dir, or under /tmp (the sandbox's own private tmpfs, which holds the work dir)."""
    return _inside(full) or full.startswith("/tmp/")


def note_shard(path, how: str) -> None:
    try:
        p = os.fspath(path)
    except TypeError:
        return
    if not isinstance(p, str):
        return
    m = _SHARD.search(p)
    if m:
        STATE["shard_reads"].append({"split": m.group(1), "path": os.path.basename(p), "t": time.time(), "how": how})


def _check_open(path, mode, flags) -> None:
    if isinstance(path, int) or path is None:
        return
    try:
        p = os.fsdecode(os.fspath(path))
    except TypeError:
        return
    full = p if os.path.isabs(p) else os.path.join(os.getcwd(), p)
    if _SECRET_PATH.search(full) or (full.startswith(_REAL_HOME + "/") and "/.ssh" in full):
        if not _inside(full):
            _record("secret_read", full)
            raise SandboxDenied(f"pgolf sandbox: reading {full} is not allowed")
        # the sandbox's HOME is the empty work dir: a library probing its usual credential path there
        # (huggingface_hub's ~/.cache/huggingface/token) finds nothing, as on a fresh machine; noted, not blocked
        _record("secret_probe", full)
    writing = False
    if isinstance(mode, str):
        writing = any(c in mode for c in "wax+")
    if isinstance(flags, int) and flags & _WRITE_FLAGS:
        writing = True
    if writing and _PROTECT and os.path.realpath(full).startswith(_PROTECT + os.sep):
        _record("tamper", full)
        raise SandboxDenied(f"pgolf sandbox: {full} belongs to the auditor")
    if writing and not _inside(full) and not full.startswith(_ALLOWED_WRITE):
        _record("write_outside", full)
        raise SandboxDenied(f"pgolf sandbox: writing {full} outside the work dir is not allowed")
    if not writing:
        note_shard(full, "open")
    elif len(STATE["writes"]) < 500:
        STATE["writes"].append({"path": os.path.basename(full), "t": time.time()})


_PATH_EVENTS = {
    "os.remove": 0, "os.rmdir": 0, "os.mkdir": 0, "os.rename": 0, "os.replace": 0, "os.chmod": 0, "os.chown": 0,
    "os.truncate": 0, "os.symlink": 1, "os.link": 1, "os.utime": 0, "shutil.rmtree": 0, "shutil.copyfile": 1,
    "shutil.move": 1,
}
_SPAWN_EVENTS = ("os.fork", "os.forkpty", "os.posix_spawn", "os.spawn", "os.system", "subprocess.Popen", "os.exec",
                 "os.startfile", "pty.spawn")


def _hook(event: str, args) -> None:
    if not _active[0]:
        return
    if event == "open":
        _check_open(args[0], args[1] if len(args) > 1 else None, args[2] if len(args) > 2 else None)
    elif event in ("socket.__new__", "socket.connect", "socket.bind", "socket.getaddrinfo", "socket.gethostbyname",
                   "socket.sendto"):
        if event == "socket.__new__" and len(args) > 1 and args[1] == getattr(__import__("socket"), "AF_UNIX", 1):
            _record("network", f"{event} AF_UNIX")
        else:
            _record("network", f"{event} {args[1:] if event == 'socket.__new__' else args}")
        raise SandboxDenied(f"pgolf sandbox: network access ({event}) is not allowed")
    elif event in _SPAWN_EVENTS:
        _record("process", f"{event} {str(args)[:120]}")
        raise SandboxDenied(f"pgolf sandbox: creating processes ({event}) is not allowed")
    elif event in _PATH_EVENTS:
        idx = _PATH_EVENTS[event]
        target = args[idx] if len(args) > idx else None
        if isinstance(target, (str, bytes, os.PathLike)):
            p = os.fsdecode(os.fspath(target))
            full = p if os.path.isabs(p) else os.path.join(os.getcwd(), p)
            if _PROTECT and os.path.realpath(full).startswith(_PROTECT + os.sep):
                _record("tamper", f"{event} {full}")
                raise SandboxDenied(f"pgolf sandbox: {full} belongs to the auditor")
            if not _in_sandbox(full):
                _record("write_outside", f"{event} {full}")
                raise SandboxDenied(f"pgolf sandbox: {event} on {full} outside the work dir is not allowed")
        if event in ("os.rename", "os.replace") and len(args) > 1:
            src = os.fsdecode(os.fspath(args[0])) if isinstance(args[0], (str, bytes, os.PathLike)) else ""
            srcf = src if os.path.isabs(src) else os.path.join(os.getcwd(), src)
            if src and not _in_sandbox(srcf):
                _record("write_outside", f"{event} {src}")
                raise SandboxDenied(f"pgolf sandbox: {event} of {src} is not allowed")
    elif event == "ctypes.dlopen":
        name = args[0] if args else None
        if name is None or (isinstance(name, str) and re.search(r"libc\.so|libpthread", name)):
            _record("process", f"ctypes.dlopen({name!r}) (raw libc access)")
            raise SandboxDenied("pgolf sandbox: loading libc through ctypes is not allowed")


def _watch_env() -> None:
    cls = type(os.environ)
    orig = cls.__getitem__

    def getitem(self, key):
        if isinstance(key, str) and _SECRET_ENV.search(key) and _active[0]:
            if len(STATE["secret_env"]) < 50:
                STATE["secret_env"].append(key)
        return orig(self, key)

    cls.__getitem__ = getitem


_BENIGN = {"nvidia-smi", "uname", "hostname", "lscpu", "nproc", "git", "free", "df"}


def _argv0(args) -> str:
    a = args[0] if isinstance(args, (list, tuple)) and args else args
    return os.path.basename(os.fsdecode(a).split()[0]) if isinstance(a, (str, bytes)) and a else ""


def _library_probe(name: str, cmd) -> bool:
    """ctypes.util.find_library's lookups (`ldconfig -p`, `gcc -Wl,-t -o TMP -lNAME`, `ld -t -o /dev/null -lNAME`),
    which libraries run on import: answered as on a machine without these tools (find_library returns None)."""
    if name == "ldconfig":
        return True
    if name not in ("gcc", "cc", "ld") or not isinstance(cmd, (list, tuple)):
        return False
    argv = [os.fsdecode(a) for a in cmd[1:] if isinstance(a, (str, bytes))]
    trace = "-Wl,-t" in argv if name != "ld" else "-t" in argv
    # flags and the output path only: no source or object file, nothing is built
    only_flags = all(a.startswith("-") or (i > 0 and argv[i - 1] == "-o") for i, a in enumerate(argv))
    return trace and only_flags


def _fake_info_commands() -> None:
    """Read-only system-info commands (the records log `nvidia-smi`; `platform` runs `uname -p`) get an empty
    successful result instead of a process, so such scripts keep running; recorded, reported as a note."""
    import subprocess

    run, check_output, popen = subprocess.run, subprocess.check_output, subprocess.Popen

    def _benign(args, kwargs) -> bool:
        cmd = args if args else kwargs.get("args")
        name = _argv0(cmd)
        if _active[0] and (name in _BENIGN or _library_probe(name, cmd)):
            STATE["violations"].append({"kind": "benign_process", "detail": name, "t": time.time()})
            return True
        return False

    def _empty(kwargs):
        return "" if (kwargs.get("text") or kwargs.get("universal_newlines") or kwargs.get("encoding")) else b""

    def fake_run(*args, **kwargs):
        if _benign(args[0] if args else None, kwargs):
            return subprocess.CompletedProcess(args[0] if args else kwargs.get("args"), 0, _empty(kwargs), _empty(kwargs))
        return run(*args, **kwargs)

    def fake_check_output(*args, **kwargs):
        if _benign(args[0] if args else None, kwargs):
            return _empty(kwargs)
        return check_output(*args, **kwargs)

    class FakePopen(popen):
        def __init__(self, *args, **kwargs):
            if _benign(args[0] if args else None, kwargs):
                raise FileNotFoundError(2, "pgolf sandbox: no such command", _argv0(args[0] if args else ""))
            super().__init__(*args, **kwargs)

    subprocess.run, subprocess.check_output, subprocess.Popen = fake_run, fake_check_output, FakePopen


def install() -> None:
    sys.addaudithook(_hook)
    _watch_env()
    _fake_info_commands()


def activate(on: bool = True) -> None:
    """Arm the guard (after interpreter and torch start-up, which load libraries the guard would block); the runner
    disarms it only while writing its own results."""
    _active[0] = on
