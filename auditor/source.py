"""Load a submission without running it: find the folder's files, read and parse the code, decode wrappers, follow
helper files (`exec(open(<sibling>.py).read())`, imports of sibling modules), parse the logs.

Every problem with an input file becomes a Finding (PG001 unreadable/binary/empty/huge, PG002 unparsable, PG003
undecodable wrapper), never a traceback.
"""

from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

import libcst as cst
import libcst.metadata as md

from auditor.cstwalk import children, dotted, index, walk
from auditor.decode import MAX_DECODED_BYTES, MAX_DEPTH, Budget, DecodeError, find_wrapped_sources
from auditor.findings import Finding
from auditor.fsread import FolderReader, Refused
from auditor.logs import LogInfo, parse_log
from auditor.pyparse import PythonSyntaxError
from auditor.pyparse import parse as parse_python

MAX_SOURCE_BYTES = 4 * 1024 * 1024
MAX_LOG_BYTES = 32 * 1024 * 1024
MAX_HELPERS = 64
_SKIP_DIRS = {".git", "__pycache__", "node_modules", ".venv", "venv", ".tox", ".mypy_cache", ".pytest_cache"}
_LOG_SUFFIXES = {".log", ".txt", ".tsv", ".out"}
_NON_LOG_NAMES = re.compile(r"(?i)^(readme|requirements|license|results|notes|changelog)")
_CODE_EXT = (".cpp", ".cc", ".cu", ".cuh", ".c", ".h", ".hpp", ".so", ".pyx", ".pyd")


@dataclass(eq=False)
class SourceUnit:
    """One piece of Python source the run executes."""

    rel: str  # path relative to the submission root of the file that holds it (the wrapper for decoded code)
    text: str
    kind: str  # "entry" | "decoded" | "helper"
    counted: bool  # its bytes are the bytes of the shipped train_gpt.py
    module: cst.Module | None = None
    _positions: object = None
    _parents: object = None
    _index: object = None

    def nodes(self, *types) -> list:
        """[(node, inside_function)] of the given node types, from one shared traversal."""
        if self._index is None:
            self._index = index(self.module) if self.module is not None else {}
        out = []
        for t in types:
            out += self._index.get(t, [])
        return out

    parent: "SourceUnit | None" = None
    exec_line: int = 0  # decoded: line of the exec() in the parent
    exec_col: int = 1
    layers: list = field(default_factory=list)
    size_bytes: int = 0
    line_count: int = 0
    label: str = ""  # decoded: the pseudo file findings in it point at, `<wrapper>#decoded<n>`
    parsed_text: str | None = None  # the text the tree was parsed from when it is not `text` (auditor.pyparse)
    line_map: list | None = None  # parsed line -> line of `text` when the tree came from re-rendered code

    @property
    def file(self) -> str:
        """The path findings in this unit point at: the file, or the decoded payload's pseudo file."""
        return self.label or self.rel

    @property
    def positions(self):
        """Node -> CodeRange from libcst's PositionProvider (a full code-generation pass: only a fallback)."""
        if self._positions is None and self.module is not None:
            try:
                self._positions = md.MetadataWrapper(self.module, unsafe_skip_copy=True).resolve(md.PositionProvider)
            except Exception:
                self._positions = {}
        return self._positions

    def _line_col(self, node):
        """Position of `node` found by text search inside its enclosing def/class headers (cheap, no codegen of the
        whole module); None when the text cannot be located."""
        if self._parents is None:
            self._parents = {}
            for n in walk(self.module):
                for c in children(n):
                    self._parents[id(c)] = n
        chain, cur = [], node
        while id(cur) in self._parents:
            cur = self._parents[id(cur)]
            if isinstance(cur, (cst.FunctionDef, cst.ClassDef)):
                chain.append(cur)
        text = self.parsed_text if self.parsed_text is not None else self.text
        start = 0
        for scope in reversed(chain):
            kw = "class" if isinstance(scope, cst.ClassDef) else "def"
            pat = re.compile(r"^[ \t]*(?:async[ \t]+)?" + kw + r"[ \t]+" + re.escape(scope.name.value) + r"\b", re.M)
            m = pat.search(text, start)
            if m is None:
                return None
            start = m.start()
        code = self.code(node).strip()
        if not code:
            return None
        first = code.splitlines()[0]
        idx = text.find(first, start)
        if idx < 0:
            return None
        # the same text twice in the scope (`eval_val(...)` before and after TTT): the search cannot tell which
        end = start + len(self.code(chain[0])) if chain else len(text)
        if 0 <= text.find(first, idx + 1) < end:
            return None  # -> exact position from the metadata pass
        line = text.count("\n", 0, idx) + 1
        col = idx - (text.rfind("\n", 0, idx) + 1) + 1
        return line, col

    def location(self, node) -> tuple:
        """(file, line, col, note) of `node`. Code decoded from a wrapper points at its line in the decoded payload
        (file `<wrapper>#decoded<n>`, as in Submission.decoded_sources()); the note names the exec() it came from."""
        line, col = 1, 1
        if node is not None and self.module is not None:
            try:
                lc = self._line_col(node)
            except Exception:
                lc = None
            if lc is not None:
                line, col = lc
            else:
                try:
                    pos = self.positions[node]
                    line, col = pos.start.line, pos.start.column + 1
                except KeyError:
                    pass
        if self.line_map is not None and 1 <= line <= len(self.line_map):
            line, col = self.line_map[line - 1], 1
        note = ""
        if self.kind == "decoded" and self.parent is not None:
            note = f"in the payload decoded ({'+'.join(self.layers)}) from {self.parent.file} line {self.exec_line}: "
        return self.file, line, col, note

    def code(self, node) -> str:
        if self.module is None:
            return ""
        try:
            return self.module.code_for_node(node)
        except Exception:
            return ""


@dataclass
class Submission:
    root: Path
    entry: Path | None
    display: str
    is_folder: bool
    units: list = field(default_factory=list)
    logs: dict = field(default_factory=dict)  # rel -> LogInfo (training logs only)
    other_logs: list = field(default_factory=list)
    submission_json_rel: str | None = None
    submission_json: object = None  # parsed object (None when missing or invalid)
    submission_json_error: str | None = None
    readme_rel: str | None = None
    readme_text: str = ""
    scripts: dict = field(default_factory=dict)  # rel -> text of run scripts (*.sh)
    referenced_code: dict = field(default_factory=dict)  # rel -> bytes of non-Python code files the code loads
    findings: list = field(default_factory=list)
    analysable: bool = True
    entry_bytes: int | None = None
    entry_lines: int | None = None
    reader: FolderReader | None = field(default=None, repr=False)
    decode_budget: Budget = field(default_factory=Budget, repr=False)  # shared by the whole wrapper nesting tree

    def __post_init__(self):
        if self.reader is None:
            self.reader = FolderReader(Path(self.root))

    @property
    def entry_unit(self) -> SourceUnit | None:
        return next((u for u in self.units if u.kind == "entry"), None)

    def helper_units(self) -> list:
        return [u for u in self.units if u.kind == "helper"]

    def decoded_sources(self) -> dict:
        """{label: source text} of every unit; decoded payloads are labelled `<file>#decoded<n>`."""
        return {u.file: u.text for u in self.units}


def discover(paths) -> list:
    """(root, entry or None, display, is_folder) for every submission under `paths` (a folder, a file, or a tree)."""
    out = []
    for p in paths:
        p = Path(p)
        if p.is_file():
            out.append((p.parent, p, str(p), False))
            continue
        if not p.is_dir():
            continue
        if _entry_candidates(p):
            out.append((p, _pick_entry(p), str(p), True))
            continue
        found = []
        for dirpath, dirnames, filenames in os.walk(p):
            dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("."))
            if any(f.startswith("train_gpt") and f.endswith(".py") for f in filenames):
                d = Path(dirpath)
                found.append((d, _pick_entry(d), str(d), True))
                dirnames[:] = []  # a record folder's subfolders (a readable copy, a variant) belong to it
        if not found:
            out.append((p, None, str(p), True))
        out.extend(sorted(found, key=lambda t: str(t[0])))
    return out


def _entry_candidates(d: Path) -> list:
    try:
        # lstat, not is_file(): a symlinked train_gpt.py is still this folder's entry (reported, never followed)
        return sorted(
            f for f in d.iterdir()
            if f.name.startswith("train_gpt") and f.suffix == ".py" and not stat.S_ISDIR(f.lstat().st_mode)
        )
    except OSError:
        return []


def _pick_entry(d: Path) -> Path | None:
    cands = _entry_candidates(d)
    for c in cands:
        if c.name == "train_gpt.py":
            return c
    plain = [c for c in cands if not re.search(r"_(human|decode|decoded|readable|orig|original)\.py$", c.name)]
    return (plain or cands or [None])[0]


def _read_source(sub: "Submission", rel: str, limit: int = MAX_SOURCE_BYTES, what: str = "source") -> bytes | None:
    """The bytes of a code file through the no-follow reader; every refusal becomes a finding."""
    try:
        return sub.reader.read_bytes(rel, limit)
    except Refused as exc:
        if exc.kind in ("symlink", "special"):
            return None  # reported once for the whole folder (PG006)
        rule = "PG006" if exc.kind == "budget" else "PG001"
        detail = f"{what} file is {exc.detail}; it was not analysed. Ship a normal-sized script." if exc.kind in (
            "too_large", "budget") else f"cannot read {what} file ({exc.detail})."
        sub.findings.append(Finding(rule, "error", f"{rel}: {detail}", rel, 1, 1))
        return None


def _read_for_decoder(sub: "Submission", rel: str) -> bytes:
    """A file a wrapper reads its payload from (located through __file__): regular files of the folder only."""
    try:
        return sub.reader.read_bytes(rel, MAX_SOURCE_BYTES)
    except Refused as exc:
        raise DecodeError(f"payload file {exc}") from None


def _decode_text(data: bytes, rel: str, findings: list, what: str = "source") -> str | None:
    if b"\x00" in data:
        findings.append(
            Finding(
                "PG001",
                "error",
                f"{rel}: {what} file is binary (contains NUL bytes); expected UTF-8 "
                f"Python text. Commit the source, not a compiled or compressed file.",
                rel,
                1,
                1,
            )
        )
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        findings.append(
            Finding(
                "PG001",
                "error",
                f"{rel}: {what} file is not valid UTF-8 (byte {exc.start}); the "
                f"challenge counts code as UTF-8 text. Re-save it as UTF-8.",
                rel,
                1,
                1,
            )
        )
        return None
    if not text.strip():
        findings.append(
            Finding(
                "PG001",
                "error",
                f"{rel}: {what} file is empty; a submission must ship the script that produced the logs.",
                rel,
                1,
                1,
            )
        )
        return None
    return text


def parse_unit(unit: SourceUnit, findings: list) -> bool:
    try:
        parsed = parse_python(unit.text)
    except PythonSyntaxError as exc:
        file, _, _, note = unit.location(None)
        findings.append(
            Finding(
                "PG002",
                "error",
                f"{unit.file}: {note}does not parse as Python ({exc}); the auditor cannot check it. "
                "Fix the syntax error.",
                file,
                exc.line,
                exc.col,
            )
        )
        return False
    unit.module = parsed.module
    if parsed.text is not unit.text:
        unit.parsed_text, unit.line_map = parsed.text, parsed.line_map
    return True


def load_submission(root: Path, entry: Path | None, display: str, is_folder: bool) -> Submission:
    sub = Submission(root=root, entry=entry, display=display, is_folder=is_folder)
    if entry is not None:
        rel = entry.name
        raw = _read_source(sub, rel)
        text = None
        if raw is not None:
            sub.entry_bytes = len(raw)
            sub.entry_lines = raw.count(b"\n") + (0 if raw.endswith(b"\n") or not raw else 1)
            text = _decode_text(raw, rel, sub.findings)
        if text is None:
            # an empty script is a finding about the record (PG001, fail), not a submission we could not analyse
            sub.analysable = raw is not None and not raw.strip()
        else:
            unit = SourceUnit(
                rel=rel,
                text=text,
                kind="entry",
                counted=True,
                size_bytes=sub.entry_bytes or 0,
                line_count=sub.entry_lines or 0,
            )
            sub.units.append(unit)
            if parse_unit(unit, sub.findings):
                _expand(sub, unit, depth=0)
            else:
                sub.analysable = False
    if is_folder or _looks_like_record(sub):
        # a single train_gpt.py inside a record folder: its README, run scripts and logs still tell how it ran
        _load_folder_files(sub)
    _report_refused(sub)
    return sub


def _expand(sub: Submission, unit: SourceUnit, depth: int) -> None:
    """Decode wrappers in `unit` and follow the helper files it executes or imports."""
    decoded, errors = find_wrapped_sources(
        unit.module,
        lambda n: unit.location(n)[1:3],
        MAX_DECODED_BYTES,
        calls=[n for n, _ in unit.nodes(cst.Call)],
        budget=sub.decode_budget,
        file_rel=unit.rel,  # __file__ of decoded code is still its wrapper's file
        read_file=lambda rel: _read_for_decoder(sub, rel),
    )
    for line, col, msg in errors:
        note = unit.location(None)[3]
        sub.findings.append(
            Finding(
                "PG003",
                "error",
                f"{unit.file}: {note}self-extracting payload at line {line} could "
                f"not be decoded statically ({msg}); its code cannot be audited. Ship readable "
                f"code or a standard lzma/zlib/brotli + base85/base64 wrapper.",
                unit.file,
                line,
                col,
            )
        )
        if unit.kind in ("entry", "decoded") and not decoded:
            sub.analysable = False  # the code that runs is hidden in the payload
    for d in decoded:
        if depth >= MAX_DEPTH:
            sub.findings.append(
                Finding(
                    "PG003",
                    "error",
                    f"{unit.file}: wrappers nest deeper than {MAX_DEPTH} levels; stopped decoding.",
                    unit.file,
                    d.line,
                    d.col,
                )
            )
            break
        child = SourceUnit(
            rel=unit.rel,
            text=d.source,
            kind="decoded",
            counted=unit.counted,
            parent=unit,
            exec_line=d.line,
            exec_col=d.col,
            layers=d.layers,
            size_bytes=len(d.source.encode()),
            line_count=d.source.count("\n") + 1,
            label=f"{unit.rel}#decoded{sum(1 for u in sub.units if u.kind == 'decoded') + 1}",
        )
        if d.blob:  # a decoded constant that may be code: analysed when it parses, silently dropped otherwise
            if parse_unit(child, []):
                sub.units.append(child)
                _expand(sub, child, depth + 1)
            continue
        sub.units.append(child)
        if parse_unit(child, sub.findings):
            _expand(sub, child, depth + 1)
        elif unit.kind in ("entry", "decoded"):
            sub.analysable = False  # the code that runs is the payload, and it cannot be analysed
    if sub.root is None:
        return
    for target, node in _helper_refs(unit):
        if len(sub.units) > MAX_HELPERS:
            break
        _add_helper(sub, unit, target, node, depth)
    if sub.is_folder:
        for lit in _code_file_literals(unit):
            rel = _inside(lit)
            if rel is None or rel in sub.referenced_code:
                continue
            st = sub.reader.lstat(rel)
            if st is not None and stat.S_ISREG(st.st_mode):
                sub.referenced_code[rel] = st.st_size


def _inside(target: str) -> str | None:
    """`target` as a normalized POSIX path inside the submission folder, or None when it leaves it."""
    norm = os.path.normpath(target).replace(os.sep, "/")
    if not norm or norm.startswith("/") or norm == ".." or norm.startswith("../") or norm == ".":
        return None
    return norm


def _add_helper(sub: Submission, parent: SourceUnit, target: str, node, depth: int) -> None:
    candidates = [target]
    if not target.endswith(".py"):
        candidates = [target.replace(".", "/") + ".py", target.replace(".", "/") + "/__init__.py"]
    entry_rel = sub.entry.name if sub.entry is not None else None
    for cand in candidates:
        rel = _inside(cand)
        if rel is None:
            continue
        st = sub.reader.lstat(rel)
        if st is None or stat.S_ISDIR(st.st_mode):
            continue
        if rel == entry_rel:
            return
        if any(u.rel == rel and u.kind == "helper" for u in sub.units):
            return
        raw = _read_source(sub, rel)  # a symlinked or special helper is refused here (and reported as PG006)
        text = _decode_text(raw, rel, sub.findings) if raw is not None else None
        if text is None:
            return
        unit = SourceUnit(
            rel=rel,
            text=text,
            kind="helper",
            counted=False,
            parent=None,
            size_bytes=len(raw),
            line_count=text.count("\n") + 1,
        )
        file, line, col, _ = parent.location(node)
        unit.exec_line, unit.exec_col = line, col
        unit.layers = [f"loaded from {file}:{line}"]
        sub.units.append(unit)
        if parse_unit(unit, sub.findings):
            _expand(sub, unit, depth + 1)
        return


_PY_LIT = re.compile(r"^[\w./-]+\.py$")


def _string_literals(node) -> list:
    out = []
    for n in walk(node):
        if isinstance(n, cst.SimpleString):
            try:
                v = n.evaluated_value
            except Exception:
                continue
            if isinstance(v, str):
                out.append(v)
    return out


def _helper_refs(unit: SourceUnit) -> list:
    """(target, node): sibling files the unit executes (`exec(open(X).read())`, `runpy.run_path`) or imports."""
    refs = []
    for node, _ in unit.nodes(cst.Call, cst.Import, cst.ImportFrom):
        if type(node) is cst.Call:
            f = node.func
            fname = f.value if isinstance(f, cst.Name) else (f.attr.value if isinstance(f, cst.Attribute) else "")
            if fname in ("exec", "run_path", "import_module", "__import__", "execfile") and node.args:
                lits = _string_literals(node.args[0].value)
                if fname in ("import_module", "__import__"):
                    refs.extend((x, node) for x in lits if re.fullmatch(r"[\w.]+", x))
                    continue
                py = [x for x in lits if _PY_LIT.match(x)]
                # `__file__.replace("train_gpt.py", "train_gpt_decode.py")`: the replacement is the target
                if py:
                    refs.append((py[-1], node))
        elif type(node) is cst.Import:
            for alias in node.names:
                refs.append((dotted(alias.name), node))
        elif not node.relative and node.module is not None:
            refs.append((dotted(node.module), node))
    return refs


def _code_file_literals(unit: SourceUnit) -> list:
    out = []
    for n, _ in unit.nodes(cst.SimpleString):
        if not n.value.rstrip("'\"").endswith(_CODE_EXT):
            continue
        try:
            v = n.evaluated_value
        except Exception:
            continue
        if isinstance(v, str) and v.endswith(_CODE_EXT) and len(v) < 200 and "\n" not in v:
            out.append(v)
    return out


def _looks_like_record(sub: Submission) -> bool:
    try:
        names = os.listdir(sub.root)
    except OSError:
        return False
    return any(
        (n == "README.md" or (n.startswith("submission") and n.endswith(".json"))) and sub.reader.is_regular(n)
        for n in names
    )


def _load_folder_files(sub: Submission) -> None:
    for ent in sub.reader.walk(max_depth=3, skip_dirs=_SKIP_DIRS):
        rel = ent.rel
        name = rel.rsplit("/", 1)[-1]
        low = name.lower()
        parent_is_root = "/" not in rel
        if parent_is_root and low == "readme.md":
            sub.readme_rel = rel
            sub.readme_text = _read_plain(sub, rel) or ""
        elif parent_is_root and low.startswith("submission") and low.endswith(".json"):
            if sub.submission_json_rel is None or low == "submission.json":
                sub.submission_json_rel = rel
                text = _read_plain(sub, rel)
                sub.submission_json, sub.submission_json_error = None, None
                if text is None:
                    sub.submission_json_error = "cannot be read as UTF-8 text"
                else:
                    try:
                        sub.submission_json = json.loads(text)
                    except ValueError as exc:
                        sub.submission_json_error = f"is not valid JSON ({exc})"
        elif low.endswith(".sh"):
            sub.scripts[rel] = _read_plain(sub, rel) or ""
        elif Path(low).suffix in _LOG_SUFFIXES and not _NON_LOG_NAMES.match(low):
            text = _read_plain(sub, rel, MAX_LOG_BYTES)
            if text is None:
                continue
            info: LogInfo = parse_log(text, name)
            if info.steps or info.finals or info.total_size_bytes is not None or info.result:
                sub.logs[rel] = info
            else:
                sub.other_logs.append(rel)
    _report_refused(sub)


def _report_refused(sub: Submission) -> None:
    """PG006 for every symlink / special file met (once each), and when a folder budget cut the reading."""
    for rel, (_kind, detail) in sorted(sub.reader.refused.items()):
        if any(f.rule == "PG006" and f.file == rel for f in sub.findings):
            continue
        sub.findings.append(Finding(
            "PG006", "error", f"{rel}: {detail}. A submission must consist of regular files; the audit reads none "
            "through links or devices. Replace it with the file itself.", rel, 1, 1))
    for msg in sub.reader.truncated[:1]:
        sub.findings.append(Finding("PG006", "error", f"submission folder has {msg}; the audit is incomplete. "
                                    "Ship only the record's files.", "", 1, 1))


def _read_plain(sub: Submission, rel: str, limit: int = MAX_SOURCE_BYTES) -> str | None:
    try:
        data = sub.reader.read_bytes(rel, limit)
    except Refused as exc:
        if exc.kind == "budget":
            sub.reader.truncated.append(f"files over the {sub.reader.max_total_bytes}-byte total the audit reads")
        elif exc.kind in ("too_large", "error"):
            msg = f"{rel}: {exc.detail}; not read, so not checked."
            sub.findings.append(Finding("PG001", "warning", msg, rel, 1, 1))
        return None
    if b"\x00" in data[:4096]:
        return None
    return data.decode("utf-8", errors="replace")
