"""Audit straight from git: record folders read from a commit's objects (`git ls-tree` / `git cat-file`), never a
checkout, into a private temporary directory that is removed afterwards.

`materialize(repo, specs, changed)` yields (root, entry, display, is_folder) items like `source.discover`:
- specs: REF or REF:PATH (a commit, branch, tag, `refs/pull/N/head`, or a pattern such as `refs/pull/*/head`);
  every folder under PATH holding a train_gpt*.py is one submission (its subfolders belong to it), shown as
  `REF:folder`;
- changed: "BASE...HEAD": the folders (as of HEAD) that hold a file the change touches.
Refs and paths are validated before git sees them; git runs without a shell and with `--end-of-options`."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

MAX_BLOB = 64 * 1024 * 1024  # a record folder holds text files; anything bigger is not read
MAX_TOTAL = 512 * 1024 * 1024
TEMP_PREFIX = "pgolf-git-"
_REF = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_./~^@{}+-]*$")
_BLOB_MODES = ("100644", "100755")


class GitError(Exception):
    pass


def _git(repo: str, *args, input: bytes | None = None) -> bytes:
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0", GIT_OPTIONAL_LOCKS="0", LC_ALL="C")
    try:
        # the repository is untrusted input: no fsmonitor hook, no external diff or textconv programs
        cmd = ["git", "-c", "core.fsmonitor=false", "-c", "diff.external=", "-C", repo, *args]
        p = subprocess.run(cmd, input=input, capture_output=True, env=env, timeout=120)
    except FileNotFoundError:
        raise GitError("git is not installed (needed for --git/--changed)") from None
    except subprocess.TimeoutExpired:
        raise GitError(f"git {args[0]} in {repo} took longer than 120 s") from None
    if p.returncode != 0:
        msg = p.stderr.decode("utf-8", "replace").strip().splitlines()
        raise GitError(f"git {args[0]} failed in {repo}: {msg[-1] if msg else 'exit ' + str(p.returncode)}")
    return p.stdout


def check_ref(ref: str) -> str:
    if not _REF.match(ref) or ".." in ref or ref.endswith((".", "/", ".lock")) or "//" in ref:
        raise GitError(f"invalid git ref {ref!r}; expected a commit, branch, tag or refs/pull/N/head")
    return ref


def check_path(path: str) -> str:
    """A repository-relative folder path (posix, no '..', not absolute); '' is the whole tree."""
    p = path.strip().strip("/")
    if not p:
        return ""
    if "\\" in p or "\x00" in p or path.startswith("/") or any(part in ("..", ".") for part in p.split("/")):
        raise GitError(f"invalid path {path!r} inside the repository; expected a relative path like records/x")
    return p


def expand(repo: str, ref: str) -> list:
    """A ref with `*` (e.g. refs/pull/*/head) -> the matching refs, sorted by number-aware name; others as given."""
    if "*" not in ref:
        return [ref]
    check_ref(ref.replace("*", "x"))
    if not ref.startswith("refs/"):
        raise GitError(f"a ref pattern must start with refs/ (e.g. refs/pull/*/head), got {ref!r}")
    names = _git(repo, "for-each-ref", "--format=%(refname)", ref).decode().split()
    if not names:
        raise GitError(f"no ref matches {ref!r} in {repo}")
    return sorted(names, key=lambda n: [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", n)])


def resolve(repo: str, ref: str) -> str:
    check_ref(ref)
    try:
        out = _git(repo, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}")
    except GitError:
        raise GitError(f"unknown git ref {ref!r} in {repo}") from None
    return out.decode().strip()


def _tree(repo: str, sha: str, path: str) -> list:
    """[(mode, type, object, path)] of every entry under path at commit sha (recursively)."""
    args = ["ls-tree", "-r", "-z", "--full-tree", sha]
    if path:
        args += ["--", path]
    out = []
    for rec in _git(repo, *args).split(b"\x00"):
        if not rec:
            continue
        meta, _, name = rec.partition(b"\t")
        mode, typ, obj = meta.decode().split()
        out.append((mode, typ, obj, name.decode("utf-8", "surrogateescape")))
    return out


def _is_entry(name: str) -> bool:
    base = PurePosixPath(name).name
    return base.startswith("train_gpt") and base.endswith(".py")


def record_folders(entries) -> list:
    """Folders holding a train_gpt*.py, outermost only (a record folder's subfolders belong to it)."""
    dirs = sorted({str(PurePosixPath(n).parent) for m, t, _o, n in entries if t == "blob" and _is_entry(n)})
    out = []
    for d in dirs:
        if not any(d == o or d.startswith(o + "/") or o == "." for o in out):
            out.append(d)
    return out


def _safe_rel(name: str, folder: str) -> PurePosixPath | None:
    p = PurePosixPath(name)
    if p.is_absolute() or any(part in ("..", ".", "") for part in p.parts):
        return None
    if folder not in (".", "") and not name.startswith(folder + "/"):
        return None
    return p


def _extract(repo: str, entries, folders, dest: Path) -> None:
    """Write the regular files under `folders` into dest (symlinks and submodules are skipped)."""
    wanted = []
    for mode, typ, obj, name in entries:
        if typ != "blob" or mode not in _BLOB_MODES:
            continue
        if any(_safe_rel(name, f) is not None for f in folders):
            wanted.append((obj, name))
    if not wanted:
        return
    sizes = _git(repo, "cat-file", "--batch-check=%(objectname) %(objectsize)",
                 input="".join(o + "\n" for o, _ in wanted).encode()).decode().split("\n")
    total, keep = 0, []
    for (obj, name), line in zip(wanted, sizes):
        size = int(line.split()[1])
        if size > MAX_BLOB:
            continue  # the loader reports the file as missing/unreadable; never pull huge blobs into memory
        total += size
        if total > MAX_TOTAL:
            raise GitError(f"the record folders hold more than {MAX_TOTAL} bytes; audit a narrower REF:PATH")
        keep.append((obj, name))
    data = _git(repo, "cat-file", "--batch", input="".join(o + "\n" for o, _ in keep).encode())
    pos = 0
    for obj, name in keep:
        nl = data.index(b"\n", pos)
        got, _typ, size = data[pos:nl].decode().split()
        if got != obj:
            raise GitError(f"git cat-file returned {got} for {obj}")
        body = data[nl + 1 : nl + 1 + int(size)]
        pos = nl + 1 + int(size) + 1
        target = dest.joinpath(*PurePosixPath(name).parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(body)


def _items(repo: str, label: str, entries, folders, dest: Path) -> list:
    from auditor.source import _pick_entry

    dest.mkdir()
    _extract(repo, entries, folders, dest)
    out = []
    for f in folders:
        root = dest if f in (".", "") else dest.joinpath(*PurePosixPath(f).parts)
        entry = _pick_entry(root)
        out.append((str(root), str(entry) if entry else None, f"{label}:{'' if f == '.' else f}", True))
    return out


def changed_folders(repo: str, spec: str) -> tuple:
    """(head ref, head sha, entries at head, record folders) touched by BASE...HEAD."""
    if spec.count("...") != 1:
        raise GitError(f"--changed expects BASE...HEAD, got {spec!r}")
    base, head = spec.split("...")
    base_sha, head_sha = resolve(repo, base or "HEAD"), resolve(repo, head or "HEAD")
    names = _git(repo, "diff", "--name-only", "-z", "--no-renames", "--no-ext-diff", "--no-textconv",
                 "--end-of-options", f"{base_sha}...{head_sha}", "--").split(b"\x00")
    changed = [n.decode("utf-8", "surrogateescape") for n in names if n]
    entries = _tree(repo, head_sha, "")
    records = record_folders(entries)
    touched = []
    for name in changed:
        hit = [r for r in records if r == "." or name.startswith(r + "/")]
        for r in hit[:1]:
            if r not in touched:
                touched.append(r)
    return head or "HEAD", head_sha, entries, sorted(touched)


@contextmanager
def materialize(repo: str, specs, changed: str | None = None):
    repo = str(repo)
    if not Path(repo).is_dir():
        raise GitError(f"repository not found: {repo}")
    _git(repo, "rev-parse", "--git-dir")
    if changed and specs:
        raise GitError("--changed BASE...HEAD takes no REF arguments")
    if not changed and not specs:
        raise GitError("--git needs at least one REF or REF:PATH")
    tmp = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX))  # mode 0700: private to this user
    try:
        items = []
        if changed:
            label, _sha, entries, folders = changed_folders(repo, changed)
            if folders:
                items += _items(repo, label, entries, folders, tmp / "changed")
        refs = []
        for spec in specs:
            pattern, _, path = spec.partition(":")
            refs += [(ref, check_path(path)) for ref in expand(repo, pattern)]
        for i, (ref, path) in enumerate(refs):
            sha = resolve(repo, ref)
            entries = _tree(repo, sha, path)
            if not entries:
                raise GitError(f"{ref}:{path}: no such path at {ref}")
            folders = record_folders(entries)
            items += _items(repo, ref, entries, folders, tmp / f"ref{i}")
        yield items
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
