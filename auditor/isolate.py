"""Run each submission's static analysis in a forked child with memory, CPU-time and wall-time limits.

A few kilobytes of hostile code can crash or hang the parser (libcst's native parser segfaults on deep nesting; a
quadratic construct can take minutes). Forking from the parent, which has already imported libcst and the rules,
costs milliseconds, and whatever the child does (segfault, MemoryError under RLIMIT_AS, SIGXCPU, a hang killed at
the wall limit) comes back as an `Outcome`, never as a dead job or a stuck audit. Results travel back pickled over a
pipe; the child leaves with os._exit (no atexit handlers, no freeing of its trees). Where fork is unavailable the
function runs in-process (no limits)."""

from __future__ import annotations

import faulthandler
import os
import pickle
import resource
import selectors
import signal
import sys
import time
import traceback
from dataclasses import dataclass

_GIB = 1 << 30


@dataclass(frozen=True)
class Limits:
    memory_bytes: int = 2 * _GIB  # address space the child may add to what it inherits from the parent
    cpu_seconds: int = 60
    wall_seconds: float = 180.0


@dataclass
class Outcome:
    value: object = None
    error: str | None = None  # one line: an exception the analysed code raised in the auditor (an auditor bug)
    traceback: str = ""
    limit: str | None = None  # the child hit a resource limit or died: what happened, in words

    @property
    def ok(self) -> bool:
        return self.error is None and self.limit is None


def _vm_bytes() -> int:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _child(fn, item, limits: Limits, wfd: int) -> None:
    try:
        try:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            faulthandler.disable()  # a crash is reported by the parent in one line, not as a dump on stderr
            _, cpu_hard = resource.getrlimit(resource.RLIMIT_CPU)
            cpu = limits.cpu_seconds if cpu_hard == resource.RLIM_INFINITY else min(limits.cpu_seconds, cpu_hard)
            # SIGXCPU at the soft limit; the hard limit (SIGKILL) 5 s later in case it is caught
            resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5 if cpu_hard == resource.RLIM_INFINITY else cpu_hard))
            vm = _vm_bytes()
            if limits.memory_bytes and vm:  # unknown current size: no cap rather than one below it
                cap = vm + limits.memory_bytes
                _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
                if hard != resource.RLIM_INFINITY:
                    cap = min(cap, hard)
                resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
            msg = ("ok", fn(item))
        except MemoryError:
            msg = ("limit", f"it needed more than the {limits.memory_bytes >> 20} MiB memory limit")
        except RecursionError:
            msg = ("limit", "the code nests too deeply for the analysis (recursion limit)")
        except BaseException as exc:  # reported to the parent as an internal error
            msg = ("exc", f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": "),
                   traceback.format_exc(limit=8))
        try:
            data = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            data = pickle.dumps(("exc", f"result not transferable: {type(exc).__name__}: {exc}", ""))
        view = memoryview(data)
        while view:
            n = os.write(wfd, view)
            view = view[n:]
    finally:
        os._exit(0)


def _describe(status: int, limits: Limits) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig == signal.SIGXCPU:
            return f"it used more than the {limits.cpu_seconds} s CPU-time limit"
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        hint = " (out of memory under the limit?)" if sig == signal.SIGABRT else ""
        return f"the analysis process crashed ({name}){hint}"
    return f"the analysis process exited with status {os.WEXITSTATUS(status)} and no result"


def map_isolated(fn, items, jobs: int = 1, limits: Limits | None = None, on_done=None) -> list:
    """[Outcome of fn(item)] in item order, at most `jobs` children at a time; on_done(index, outcome) as each
    finishes. fn runs in a forked child, so it needs no pickling (its result does)."""
    limits = limits or Limits()
    items = list(items)
    out: list = [None] * len(items)
    if not hasattr(os, "fork"):
        for i, item in enumerate(items):
            try:
                out[i] = Outcome(value=fn(item))
            except Exception as exc:
                out[i] = Outcome(error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc(limit=8))
            if on_done:
                on_done(i, out[i])
        return out
    sel = selectors.DefaultSelector()
    running: dict = {}  # read fd -> [index, pid, started, chunks]
    pending = list(range(len(items)))
    pending.reverse()
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        while pending or running:
            while pending and len(running) < max(1, jobs):
                i = pending.pop()
                rfd, wfd = os.pipe()
                pid = os.fork()
                if pid == 0:  # child
                    os.close(rfd)
                    _child(fn, items[i], limits, wfd)
                os.close(wfd)
                os.set_blocking(rfd, False)
                running[rfd] = [i, pid, time.monotonic(), []]
                sel.register(rfd, selectors.EVENT_READ)
            now = time.monotonic()
            deadline = min(r[2] for r in running.values()) + limits.wall_seconds
            for key, _ in sel.select(timeout=max(0.0, deadline - now)):
                rfd = key.fd
                state = running[rfd]
                try:
                    chunk = os.read(rfd, 1 << 20)
                except BlockingIOError:
                    continue
                if chunk:
                    state[3].append(chunk)
                    continue
                sel.unregister(rfd)
                os.close(rfd)
                del running[rfd]
                _, status = os.waitpid(state[1], 0)
                out[state[0]] = _outcome(b"".join(state[3]), status, limits)
                if on_done:
                    on_done(state[0], out[state[0]])
            now = time.monotonic()
            for rfd, state in list(running.items()):
                if now - state[2] > limits.wall_seconds:
                    os.kill(state[1], signal.SIGKILL)
                    os.waitpid(state[1], 0)
                    sel.unregister(rfd)
                    os.close(rfd)
                    del running[rfd]
                    out[state[0]] = Outcome(limit=f"it ran past the {limits.wall_seconds:g} s wall-time limit")
                    if on_done:
                        on_done(state[0], out[state[0]])
    finally:
        for rfd, state in running.items():  # interrupted: no orphans
            try:
                os.kill(state[1], signal.SIGKILL)
                os.waitpid(state[1], 0)
            except OSError:
                pass
            os.close(rfd)
        sel.close()
    return out


def _outcome(data: bytes, status: int, limits: Limits) -> Outcome:
    msg = None
    if data:
        try:
            msg = pickle.loads(data)
        except Exception:
            msg = None
    if msg is None:
        return Outcome(limit=_describe(status, limits))
    if msg[0] == "ok":
        return Outcome(value=msg[1])
    if msg[0] == "limit":
        return Outcome(limit=msg[1])
    return Outcome(error=msg[1], traceback=msg[2])
