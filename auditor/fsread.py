"""Read a submission folder without trusting it: regular files only, never through a symlink, bounded.

A submission is untrusted input. `README.md -> /proc/self/environ` or `-> ../.env` would put the auditor's secrets
into the report, `-> /dev/zero` or a FIFO would make a read never end. So every path is opened component by component
relative to the root's directory descriptor with O_NOFOLLOW (a symlinked directory on the way is refused too), with
O_NONBLOCK (opening a FIFO does not wait for a writer), and the open descriptor is checked with fstat to be a
regular file before a byte is read. Reads are capped per file, in total, and the number of entries listed is capped.
What was refused is recorded (`refused`, `truncated`) so the audit reports it (PG006) instead of following it.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

MAX_FILE_BYTES = 32 * 1024 * 1024  # a single file (training logs can be long)
MAX_TOTAL_BYTES = 128 * 1024 * 1024  # everything read from one submission
MAX_ENTRIES = 4000  # directory entries listed in one submission
MAX_WALK_DEPTH = 4
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class Refused(Exception):
    """A path that is not read: `kind` is symlink | special | missing | too_large | budget | error."""

    def __init__(self, kind: str, rel: str, detail: str):
        super().__init__(f"{rel}: {detail}")
        self.kind, self.rel, self.detail = kind, rel, detail


def _kind_of(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "symlink"
    for test, name in ((stat.S_ISFIFO, "FIFO"), (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
                       (stat.S_ISSOCK, "socket"), (stat.S_ISDIR, "directory")):
        if test(mode):
            return name
    return "special file"


@dataclass
class Entry:
    rel: str  # POSIX path relative to the root
    size: int


@dataclass
class FolderReader:
    """Bounded, no-follow reads below `root` (the folder the user named; only it may itself be a symlink)."""

    root: Path
    max_file_bytes: int | None = None  # None: the module's MAX_* (read at construction, so tests can lower them)
    max_total_bytes: int | None = None
    max_entries: int | None = None
    total_read: int = 0
    refused: dict = field(default_factory=dict)  # rel -> (kind, detail), symlinks and special files seen
    truncated: list = field(default_factory=list)  # messages: entry/byte budgets hit

    def __post_init__(self):
        self.max_file_bytes = MAX_FILE_BYTES if self.max_file_bytes is None else self.max_file_bytes
        self.max_total_bytes = MAX_TOTAL_BYTES if self.max_total_bytes is None else self.max_total_bytes
        self.max_entries = MAX_ENTRIES if self.max_entries is None else self.max_entries

    # -- opening -------------------------------------------------------------------------------------------------
    def _open_parent(self, rel: str) -> tuple[int, str]:
        """(fd of the directory holding `rel`, last component); every directory on the way opened with O_NOFOLLOW."""
        parts = [p for p in Path(rel).parts if p not in ("", ".")]
        if not parts or any(p == ".." for p in parts) or Path(rel).is_absolute():
            raise Refused("error", rel, "path leaves the submission folder")
        try:
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise Refused("missing", rel, f"cannot open the submission folder ({exc.strerror})") from None
        for i, part in enumerate(parts[:-1]):
            try:
                nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                os.close(fd)
                sub = "/".join(parts[: i + 1])
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise Refused("symlink", rel, f"{sub} is a symlink or not a directory; not followed") from None
                raise Refused("missing", rel, f"{sub}: {exc.strerror}") from None
            os.close(fd)
            fd = nfd
        return fd, parts[-1]

    def lstat(self, rel: str):
        """os.stat_result of `rel` itself (a symlink is not followed), or None when it does not exist."""
        try:
            fd, name = self._open_parent(rel)
        except Refused:
            return None
        try:
            return os.stat(name, dir_fd=fd, follow_symlinks=False)
        except OSError:
            return None
        finally:
            os.close(fd)

    def is_regular(self, rel: str) -> bool:
        st = self.lstat(rel)
        return st is not None and stat.S_ISREG(st.st_mode)

    def read_bytes(self, rel: str, limit: int | None = None) -> bytes:
        """The bytes of the regular file `rel`; Refused for a symlink, special file, missing file, over-cap file."""
        limit = self.max_file_bytes if limit is None else min(limit, self.max_file_bytes)
        fd, name = self._open_parent(rel)
        try:
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except OSError as exc:
                raise Refused("missing", rel, exc.strerror or "cannot stat") from None
            if not stat.S_ISREG(st.st_mode):
                self._refuse(rel, st.st_mode)
            try:
                ffd = os.open(name, _FILE_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno == errno.ELOOP:  # swapped for a symlink after the lstat
                    self._refuse(rel, stat.S_IFLNK)
                raise Refused("error", rel, f"cannot open ({exc.strerror})") from None
        finally:
            os.close(fd)
        try:
            st = os.fstat(ffd)
            if not stat.S_ISREG(st.st_mode):
                self._refuse(rel, st.st_mode)
            if st.st_size > limit:
                raise Refused("too_large", rel, f"{st.st_size} bytes, over the {limit}-byte reading limit")
            if self.total_read + st.st_size > self.max_total_bytes:
                raise Refused("budget", rel, f"the submission's files exceed the {self.max_total_bytes}-byte total the"
                                             " audit reads")
            chunks, got = [], 0
            while True:  # the size can change under us: never read past the cap
                chunk = os.read(ffd, min(1 << 20, limit + 1 - got))
                if not chunk:
                    break
                chunks.append(chunk)
                got += len(chunk)
                if got > limit:
                    raise Refused("too_large", rel, f"over the {limit}-byte reading limit")
            self.total_read += got
            return b"".join(chunks)
        except OSError as exc:
            raise Refused("error", rel, f"cannot read ({exc.strerror})") from None
        finally:
            os.close(ffd)

    def _refuse(self, rel: str, mode: int):
        kind = _kind_of(mode)
        detail = "symlink; not followed" if kind == "symlink" else f"{kind}, not a regular file; not read"
        self.refused[rel] = ("symlink" if kind == "symlink" else "special", detail)
        raise Refused("symlink" if kind == "symlink" else "special", rel, detail)

    # -- listing -------------------------------------------------------------------------------------------------
    def _list(self, prefix: str) -> list:
        """[(name, lstat result)] of `prefix`, listed through a descriptor opened without following links (a folder swapped for
        a symlink after it was seen is refused, not listed)."""
        if prefix:
            fd, name = self._open_parent(prefix)
            try:
                dfd = os.open(name, _DIR_FLAGS, dir_fd=fd)
            finally:
                os.close(fd)
        else:
            dfd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            out = []
            with os.scandir(dfd) as it:
                for e in it:  # stat while the descriptor is open (an fd DirEntry stats relative to it)
                    try:
                        out.append((e.name, e.stat(follow_symlinks=False)))
                    except OSError:
                        continue
            return sorted(out)
        finally:
            os.close(dfd)

    def walk(self, max_depth: int = MAX_WALK_DEPTH, skip_dirs=frozenset()) -> list:
        """[Entry] of the regular files below the root (sorted), never descending into a symlinked directory.
        Symlinks and special files are recorded in `refused`; listing stops after `max_entries` entries."""
        out: list = []
        seen = 0
        stack = [("", 0)]
        while stack:
            prefix, depth = stack.pop()
            try:
                entries = self._list(prefix)
            except (OSError, Refused):
                continue
            subdirs = []
            for ename, st in entries:
                seen += 1
                if seen > self.max_entries:
                    self.truncated.append(f"more than {self.max_entries} files and folders; the rest were not read")
                    return sorted(out, key=lambda x: x.rel)
                rel = f"{prefix}/{ename}" if prefix else ename
                if stat.S_ISDIR(st.st_mode):
                    if ename not in skip_dirs and not ename.startswith(".") and depth < max_depth:
                        subdirs.append((rel, depth + 1))
                elif stat.S_ISREG(st.st_mode):
                    out.append(Entry(rel, st.st_size))
                else:
                    kind = _kind_of(st.st_mode)
                    self.refused[rel] = (
                        "symlink" if kind == "symlink" else "special",
                        f"symlink to {_target(self.root / rel, rel)}; not followed" if kind == "symlink"
                        else f"{kind}, not a regular file; not read",
                    )
            stack.extend(reversed(subdirs))
        return sorted(out, key=lambda x: x.rel)


def _target(path: str, rel: str) -> str:
    """Where a symlink points, for the message: a path inside the folder, or just "outside the submission folder"
    (the outside path itself is not echoed: it can name a secret)."""
    try:
        t = os.readlink(path)
    except OSError:
        return "an unreadable target"
    if os.path.isabs(t):
        return "a path outside the submission folder"
    norm = os.path.normpath(os.path.join(os.path.dirname(rel), t))
    if norm.startswith("..") or len(norm) > 200:
        return "a path outside the submission folder"
    return repr(norm)
