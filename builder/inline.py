"""Inline a first-party package into one self-contained module with libcst.

Starting from an entry module (``trainer.train``), follow ``from trainer.x import name`` imports, order the modules
topologically (dependencies first), drop intra-package imports, hoist and deduplicate stdlib/third-party imports
under one ``from __future__`` line, keep ``if __name__ == "__main__":`` only for the entry, refuse colliding
top-level names, and remove top-level functions/classes nothing references. Each module keeps a section banner
(``# ---- trainer/model.py ----``) so the output reads like a hand-written ``train_gpt.py``.
"""

from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import libcst as cst

from trainer.errors import PgolfError

# Python versions the shipped file must parse on (the challenge machine runs 3.12; users run 3.10+).
TARGET_VERSIONS = ((3, 10), (3, 11), (3, 12))


class InlineError(PgolfError):
    """The package cannot be inlined safely (cycle, name collision, unsupported import form)."""


@dataclass
class ModuleInfo:
    name: str  # dotted, e.g. trainer.model
    path: Path
    rel: str  # path shown in banners, e.g. trainer/model.py
    tree: cst.Module
    deps: list = field(default_factory=list)  # first-party modules in import order
    imported_names: dict = field(default_factory=dict)  # name -> source module
    body: list = field(default_factory=list)  # statements kept after import removal
    hoisted: list = field(default_factory=list)  # ("import", module, asname) | ("from", module, name, asname)
    future: list = field(default_factory=list)
    main_block: cst.BaseStatement | None = None
    docstring: cst.BaseStatement | None = None


def _dotted(node) -> str:
    if node is None:
        return ""
    if isinstance(node, cst.Name):
        return node.value
    if isinstance(node, cst.Attribute):
        return f"{_dotted(node.value)}.{node.attr.value}"
    raise InlineError(f"unsupported import target {cst.Module([]).code_for_node(node)!r}")


def _is_main_guard(stmt) -> bool:
    if not isinstance(stmt, cst.If) or not isinstance(stmt.test, cst.Comparison):
        return False
    t = stmt.test
    if len(t.comparisons) != 1 or not isinstance(t.comparisons[0].operator, cst.Equal):
        return False
    sides = [t.left, t.comparisons[0].comparator]
    names = [s.value for s in sides if isinstance(s, cst.Name)]
    strs = [s.evaluated_value for s in sides if isinstance(s, cst.SimpleString)]
    return names == ["__name__"] and strs == ["__main__"]


def _is_docstring(stmt) -> bool:
    return (
        isinstance(stmt, cst.SimpleStatementLine)
        and len(stmt.body) == 1
        and isinstance(stmt.body[0], cst.Expr)
        and isinstance(stmt.body[0].value, (cst.SimpleString, cst.ConcatenatedString))
    )


def _nested_first_party_imports(tree: ast.Module, package: str) -> list[str]:
    """First-party or relative imports below module top level (they cannot be inlined). Uses `ast` for speed."""
    problems = []
    for top in tree.body:
        for node in ast.walk(top):
            if node is top:
                continue
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").split(".")[0] == package):
                problems.append(f"first-party import inside a function or class: from {'.' * node.level}{node.module or ''} import ...")
            elif isinstance(node, ast.Import):
                problems.extend(f"first-party import inside a function or class: import {a.name}" for a in node.names if a.name.split(".")[0] == package)
    return problems


def module_path(root: Path, dotted: str) -> Path:
    parts = dotted.split(".")
    p = root.joinpath(*parts).with_suffix(".py")
    if p.is_file():
        return p
    pkg = root.joinpath(*parts, "__init__.py")
    if pkg.is_file():
        return pkg
    raise InlineError(f"module {dotted} not found under {root} (expected {p})")


def _parse(path: Path) -> cst.Module:
    try:
        return cst.parse_module(path.read_text(encoding="utf-8"))
    except cst.ParserSyntaxError as exc:
        raise InlineError(f"{path}:{exc.raw_line}: cannot parse: {exc.message}") from None


# id(libcst statement) -> (statement, [its `ast` statements]). The stdlib parser is much faster than walking libcst
# trees, so name analysis uses the `ast` twin of each original statement; the entry keeps the statement alive so
# its id cannot be reused. Rewritten statements (baked config, blanked help) are not here and get re-parsed.
_AST_TWINS: dict = {}


def _register_ast_twins(tree: cst.Module, nodes: list) -> None:
    k = 0
    for stmt in tree.body:
        n = len(stmt.body) if isinstance(stmt, cst.SimpleStatementLine) else 1
        _AST_TWINS[id(stmt)] = (stmt, nodes[k:k + n])
        k += n
    if k != len(nodes):  # never expected; fall back to re-parsing every statement of this module
        for stmt in tree.body:
            _AST_TWINS.pop(id(stmt), None)


def _ast_of(stmt) -> list:
    twin = _AST_TWINS.get(id(stmt))
    if twin is not None and twin[0] is stmt:
        return twin[1]
    return ast.parse(cst.Module(body=[stmt]).code).body


def _analyse(info: ModuleInfo, package: str, is_entry: bool) -> None:
    where = info.rel
    tree = ast.parse(info.path.read_text(encoding="utf-8"))
    problems = _nested_first_party_imports(tree, package)
    if problems:
        raise InlineError(f"{where}: {problems[0]} (expected top-level `from {package}.x import name`)")
    _register_ast_twins(info.tree, tree.body)
    for i, stmt in enumerate(info.tree.body):
        if i == 0 and _is_docstring(stmt):
            info.docstring = stmt
            continue
        if _is_main_guard(stmt):
            if is_entry:
                info.main_block = stmt
            continue
        if isinstance(stmt, cst.SimpleStatementLine) and any(isinstance(s, (cst.Import, cst.ImportFrom)) for s in stmt.body):
            if not all(isinstance(s, (cst.Import, cst.ImportFrom)) for s in stmt.body):
                raise InlineError(f"{where}: put imports on their own line: {info.tree.code_for_node(stmt).strip()!r}")
            for s in stmt.body:
                _classify_import(info, s, package)
            continue
        info.body.append(stmt)


def _classify_import(info: ModuleInfo, node, package: str) -> None:
    where = info.rel
    code = cst.Module([]).code_for_node(node).strip()
    if isinstance(node, cst.Import):
        for alias in node.names:
            mod = _dotted(alias.name)
            if mod.split(".")[0] == package:
                raise InlineError(f"{where}: `{code}`: use `from {mod} import name` for first-party modules")
            asname = _dotted(alias.asname.name) if alias.asname else None
            info.hoisted.append(("import", mod, asname))
        return
    if node.relative:
        raise InlineError(f"{where}: relative import `{code}` (expected `from {package}.x import name`)")
    mod = _dotted(node.module)
    if isinstance(node.names, cst.ImportStar):
        raise InlineError(f"{where}: `{code}`: star imports cannot be inlined; import names explicitly")
    if mod == "__future__":
        info.future.extend(a.name.value for a in node.names)
        return
    if mod.split(".")[0] == package:
        if mod == package:
            raise InlineError(f"{where}: `{code}`: import names from the defining module (from {package}.x import name)")
        for alias in node.names:
            if alias.asname:
                raise InlineError(f"{where}: `{code}`: first-party names cannot be aliased with `as` (inlining shares one namespace)")
            info.imported_names[alias.name.value] = mod
        if mod not in info.deps:
            info.deps.append(mod)
        return
    for alias in node.names:
        info.hoisted.append(("from", mod, _dotted(alias.name), _dotted(alias.asname.name) if alias.asname else None))


def collect_modules(root: Path, entry: str) -> list[ModuleInfo]:
    """The single-file set reachable from `entry`, dependencies first (a cycle is an error)."""
    _AST_TWINS.clear()
    root = Path(root)
    package = entry.split(".")[0]
    infos: dict[str, ModuleInfo] = {}
    order: list[str] = []
    state: dict[str, str] = {}

    def visit(name: str, chain: list[str]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "active":
            cyc = chain[chain.index(name):] + [name]
            raise InlineError(f"import cycle in the single-file set: {' -> '.join(cyc)}")
        state[name] = "active"
        path = module_path(root, name)
        info = ModuleInfo(name=name, path=path, rel=path.relative_to(root).as_posix(), tree=_parse(path))
        _analyse(info, package, is_entry=(name == entry))
        infos[name] = info
        for dep in info.deps:
            visit(dep, chain + [name])
        state[name] = "done"
        order.append(name)

    visit(entry, [])
    result = [infos[n] for n in order]
    _check_imported_names_exist(result, infos)
    return result


def top_level_bindings(stmts) -> list[str]:
    """Names a list of top-level statements binds (defs, classes, assignments, imports inside try/if)."""
    out: list[str] = []

    def targets(t) -> None:
        if isinstance(t, cst.Name):
            out.append(t.value)
        elif isinstance(t, (cst.Tuple, cst.List)):
            for el in t.elements:
                targets(el.value)

    def walk(stmt) -> None:
        if isinstance(stmt, (cst.FunctionDef, cst.ClassDef)):
            out.append(stmt.name.value)
        elif isinstance(stmt, cst.SimpleStatementLine):
            for s in stmt.body:
                if isinstance(s, cst.Assign):
                    for t in s.targets:
                        targets(t.target)
                elif isinstance(s, (cst.AnnAssign, cst.AugAssign)):
                    targets(s.target)
                elif isinstance(s, cst.Import):
                    for a in s.names:
                        out.append(_dotted(a.asname.name) if a.asname else _dotted(a.name).split(".")[0])
                elif isinstance(s, cst.ImportFrom) and not isinstance(s.names, cst.ImportStar):
                    for a in s.names:
                        out.append(_dotted(a.asname.name) if a.asname else a.name.value)
        elif isinstance(stmt, (cst.If, cst.Try, cst.With, cst.For, cst.While)):
            blocks = [stmt.body]
            for attr in ("orelse", "finalbody"):
                sub = getattr(stmt, attr, None)
                if sub is not None:
                    blocks.append(sub.body if isinstance(sub, (cst.Else, cst.Finally)) else sub)
            for h in getattr(stmt, "handlers", ()):
                blocks.append(h.body)
            for b in blocks:
                inner = b.body if hasattr(b, "body") else b
                if isinstance(inner, (list, tuple)):
                    for s in inner:
                        walk(s)
                elif isinstance(b, cst.If):
                    walk(b)

    for stmt in stmts:
        walk(stmt)
    return out


def _hoisted_name(rec) -> str:
    if rec[0] == "import":
        return rec[2] or rec[1].split(".")[0]
    return rec[3] or rec[2]


def _check_imported_names_exist(infos: list[ModuleInfo], by_name: dict) -> None:
    for info in infos:
        for name, mod in info.imported_names.items():
            target = by_name[mod]
            bound = set(top_level_bindings(target.body)) | set(target.imported_names) | {_hoisted_name(r) for r in target.hoisted}
            if name not in bound:
                raise InlineError(f"{info.rel}: `from {mod} import {name}`: {target.rel} defines no top-level {name!r}")


def check_name_collisions(infos: list[ModuleInfo]) -> None:
    """Every top-level name is defined by one module; hoisted imports agree with each other and with definitions."""
    owner: dict[str, str] = {}
    seen_compound: set[str] = set()
    for info in infos:
        stmts = []
        for stmt in info.body:
            if isinstance(stmt, (cst.Try, cst.If)):
                # An identical guarded import in several modules is emitted once, so it binds once.
                code = cst.Module([stmt]).code.strip()
                if code in seen_compound:
                    continue
                seen_compound.add(code)
            stmts.append(stmt)
        for name in dict.fromkeys(top_level_bindings(stmts)):
            if name in owner and owner[name] != info.rel:
                raise InlineError(
                    f"top-level name {name!r} is defined in both {owner[name]} and {info.rel}; "
                    f"rename one (names must be unique across the single-file set)"
                )
            owner[name] = info.rel
    imports: dict[str, tuple] = {}
    for info in infos:
        for rec in info.hoisted:
            name = _hoisted_name(rec)
            key = rec if rec[0] == "from" else (rec[0], rec[1] if rec[2] else rec[1].split(".")[0], rec[2])
            if name in imports and imports[name][0] != key and not (rec[0] == "import" and not rec[2] and imports[name][0][0] == "import" and not imports[name][0][2]):
                raise InlineError(f"{info.rel}: import binds {name!r} differently than {imports[name][1]}")
            imports.setdefault(name, (key, info.rel))
            if name in owner:
                raise InlineError(f"{info.rel}: import binds {name!r}, which {owner[name]} also defines at top level")


# ---------------------------------------------------------------------------------------------------------------
# dead-code removal (conservative: only top-level functions/classes that no code and no string literal mentions)

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _uses(stmt) -> set[str]:
    """Names a top-level statement uses: every Name node, plus every identifier inside a string literal
    (getattr(obj, "name") / globals()["name"] count as uses). A def's or class's own name is not a use."""
    names: set[str] = set()
    for node in (n for top in _ast_of(stmt) for n in ast.walk(top)):
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names.update(_IDENT.findall(node.value))
    return names


def remove_unreferenced(sections: list[tuple[str, list]], extra: list, cache: dict | None = None) -> tuple[list[tuple[str, list]], list[str]]:
    """Drop top-level defs/classes no other statement references, to a fixed point. Returns (sections, removed).

    `cache` maps id(statement) -> names it uses (statements are immutable, so one traversal each suffices)."""
    cache = {} if cache is None else cache

    def uses_of(stmt):
        key = id(stmt)
        if key not in cache:
            cache[key] = (stmt, _uses(stmt))
        return cache[key][1]

    removed: list[str] = []
    while True:
        flat = [(si, i, s) for si, (_, stmts) in enumerate(sections) for i, s in enumerate(stmts)]
        uses = [uses_of(s) for _, _, s in flat]
        extra_uses = set().union(*(uses_of(s) for s in extra)) if extra else set()
        dead = set()
        for k, (si, i, s) in enumerate(flat):
            if not isinstance(s, (cst.FunctionDef, cst.ClassDef)):
                continue
            name = s.name.value
            if name in extra_uses or any(name in u for j, u in enumerate(uses) if j != k):
                continue
            dead.add((si, i))
            removed.append(f"{sections[si][0]}:{name}")
        if not dead:
            return sections, removed
        sections = [(label, [s for i, s in enumerate(stmts) if (si, i) not in dead]) for si, (label, stmts) in enumerate(sections)]


# ---------------------------------------------------------------------------------------------------------------
# help strings nobody reads (configuration field helps exist for the CLI, which is never in the single-file set)

class _BlankArg(cst.CSTTransformer):
    def __init__(self, func: str, index: int, keyword: str):
        self.func, self.index, self.keyword = func, index, keyword
        self.count = 0

    def leave_Call(self, original, updated):
        if not (isinstance(updated.func, cst.Name) and updated.func.value == self.func):
            return updated
        args = list(updated.args)
        for i, a in enumerate(args):
            positional = a.keyword is None and a.star == ""
            hit = (positional and i == self.index) or (a.keyword is not None and a.keyword.value == self.keyword)
            if hit and isinstance(a.value, (cst.SimpleString, cst.ConcatenatedString)):
                args[i] = a.with_changes(value=cst.SimpleString('""'))
                self.count += 1
        return updated.with_changes(args=args)


def strip_unread_metadata(sections: list[tuple[str, list]], key: str = "help") -> tuple[list[tuple[str, list]], int]:
    """Blank the string passed for metadata `key` of a field factory (`def _f(default, env, help, ...): return
    field(..., metadata={"help": help, ...})`) when no remaining code reads that key. Returns (sections, count)."""
    stmts = [s for _, ss in sections for s in ss]
    trees = [_ast_of(s) for s in stmts]
    reads = sum(1 for t in trees for top in t for n in ast.walk(top) if isinstance(n, ast.Constant) and n.value == key)
    factory = None
    for t in trees:
        for fn in t:
            if not isinstance(fn, ast.FunctionDef):
                continue
            params = [a.arg for a in fn.args.args]
            for d in ast.walk(fn):
                if isinstance(d, ast.Dict):
                    for k, v in zip(d.keys, d.values):
                        if isinstance(k, ast.Constant) and k.value == key and isinstance(v, ast.Name) and v.id in params:
                            factory = (fn.name, params.index(v.id), v.id)
    # The factory's own dict key is the only permitted mention; any other is a reader (e.g. meta["help"]).
    if factory is None or reads != 1:
        return sections, 0
    tr = _BlankArg(*factory)

    def calls_factory(stmt) -> bool:
        return any(isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == factory[0]
                   for top in _ast_of(stmt) for n in ast.walk(top))

    # Only statements that call the factory are rewritten; the others keep their identity (and cached analysis).
    out = [(label, [s.visit(tr) if calls_factory(s) else s for s in ss]) for label, ss in sections]
    return out, tr.count


# ---------------------------------------------------------------------------------------------------------------
# baked configuration

def bake_assignment(stmts: list, config: dict, where: str) -> tuple[list, bool]:
    """Replace the value of the top-level `BAKED_CONFIG` assignment with a dict literal of `config`."""
    lines = ["{"] + [f"    {json_key!r}: {_literal(val)}," for json_key, val in config.items()] + ["}"]
    value = cst.parse_expression("\n".join(lines) if config else "{}")
    out, found = [], False
    for stmt in stmts:
        if isinstance(stmt, cst.SimpleStatementLine) and len(stmt.body) == 1:
            s = stmt.body[0]
            tgt = s.target if isinstance(s, cst.AnnAssign) else (s.targets[0].target if isinstance(s, cst.Assign) and len(s.targets) == 1 else None)
            if isinstance(tgt, cst.Name) and tgt.value == "BAKED_CONFIG":
                stmt = stmt.with_changes(body=[s.with_changes(value=value)])
                found = True
        out.append(stmt)
    return out, found


def _literal(v) -> str:
    if isinstance(v, bool) or v is None or isinstance(v, (int, str)):
        return repr(v)
    if isinstance(v, float):
        r = repr(v)
        if r in ("inf", "-inf", "nan"):
            raise InlineError(f"cannot bake non-finite float {r} into BAKED_CONFIG")
        return r
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_literal(x) for x in v) + "]"
    raise InlineError(f"cannot bake value {v!r} of type {type(v).__name__} into BAKED_CONFIG")


# ---------------------------------------------------------------------------------------------------------------

def _import_lines(infos: list[ModuleInfo], used: set[str] | None) -> list[str]:
    """Deduplicated hoisted imports in first-seen order: `import x` lines, then grouped `from x import a, b`."""
    plain: dict[tuple, None] = {}
    froms: dict[str, dict[tuple, None]] = {}
    for info in infos:
        for rec in info.hoisted:
            if rec[0] == "import":
                # Dropping a third-party `import a.b` could skip a side-effect import (e.g. kernel registration), so
                # only aliased forms and standard-library modules are dropped when their name is unused.
                if used is not None and _hoisted_name(rec) not in used and (rec[2] or rec[1].split(".")[0] in sys.stdlib_module_names):
                    continue
                plain.setdefault((rec[1], rec[2]), None)
            else:
                if used is not None and _hoisted_name(rec) not in used:
                    continue
                froms.setdefault(rec[1], {}).setdefault((rec[2], rec[3]), None)
    # Conventional layout: standard library first, then third-party; `import x` before `from x import y`; sorted.
    def third_party(mod: str) -> bool:
        return mod.split(".")[0] not in sys.stdlib_module_names

    groups: list[list[str]] = [[], []]
    for m, a in sorted(plain, key=lambda r: (third_party(r[0]), r[0], r[1] or "")):
        groups[third_party(m)].append(f"import {m}" + (f" as {a}" if a else ""))
    for mod in sorted(froms, key=lambda m: (third_party(m), m)):
        names = ", ".join(n + (f" as {a}" if a else "") for n, a in froms[mod])
        groups[third_party(mod)].append(f"from {mod} import {names}")
    return groups[0] + ([""] if groups[0] and groups[1] else []) + groups[1]


def _with_banner(stmts: list, label: str) -> list:
    if not stmts:
        return stmts
    first = stmts[0]
    banner = [cst.EmptyLine(), cst.EmptyLine(), cst.EmptyLine(comment=cst.Comment(f"# ---- {label} ----"))]
    leading = [ln for ln in first.leading_lines if ln.comment is not None]
    return [first.with_changes(leading_lines=banner + leading)] + stmts[1:]


@dataclass
class InlineResult:
    source: str
    modules: list  # module paths in output order
    removed: list  # "trainer/x.py:name" removed as unreferenced
    frozen: list = field(default_factory=list)  # fields a specialized build fixes (empty for a plain build)


def inline_package(root, entry: str = "trainer.train", baked_config: dict | None = None, drop_unreferenced: bool = True,
                   strip_help: bool = True, frozen: dict | None = None) -> InlineResult:
    """One module's source equivalent to running `entry` as a script, built from the package under `root`.

    drop_unreferenced: remove top-level defs/classes nothing references. strip_help: blank help strings of a
    field factory when nothing reads them (only the CLI does, and it is not shipped). frozen: field -> value to
    specialize to (builder.specialize: branches other values would take are removed, overrides are refused)."""
    try:
        return _inline(Path(root), entry, baked_config, drop_unreferenced, strip_help, frozen)
    finally:
        _AST_TWINS.clear()


def _inline(root: Path, entry: str, baked_config, drop_unreferenced: bool, strip_help: bool, frozen=None) -> InlineResult:
    infos = collect_modules(root, entry)
    check_name_collisions(infos)
    sections: list[tuple[str, list]] = []
    seen_compound: set[str] = set()
    baked = False
    for info in infos:
        body = info.body
        if baked_config is not None:
            body, found = bake_assignment(body, baked_config, info.rel)
            baked = baked or found
        kept = []
        for stmt in body:
            # Identical guarded imports (try: import zstandard ...) in several modules are kept once.
            if isinstance(stmt, (cst.Try, cst.If)):
                code = cst.Module([stmt]).code.strip()
                if code in seen_compound:
                    continue
                seen_compound.add(code)
            kept.append(stmt)
        sections.append((info.rel, kept))
    if baked_config is not None and not baked:
        raise InlineError("no top-level BAKED_CONFIG assignment in the single-file set; cannot bake the configuration")
    entry_info = infos[-1]
    tail = [entry_info.main_block] if entry_info.main_block is not None else []
    removed: list[str] = []
    cache: dict = {}
    frozen_names: list[str] = []
    if frozen:
        from builder.specialize import specialize_sections

        sections, tail, frozen_names = specialize_sections(sections, tail, frozen)
    if drop_unreferenced:
        sections, removed = remove_unreferenced(sections, tail, cache)
    if strip_help:
        sections, _n = strip_unread_metadata(sections)
        if frozen:  # a specialized build also blanks the CLI's option-group names (read only by the CLI)
            sections, _n = strip_unread_metadata(sections, key="group")
        # The cache holds each statement it analysed, so ids stay unique; only rewritten statements are new.
        for _, stmts in sections:
            for st in [*stmts, *tail]:
                cache.setdefault(id(st), (st, _uses(st)))
    used = set().union(*(cache[id(s)][1] for _, stmts in sections for s in stmts), *(cache[id(s)][1] for s in tail)) if drop_unreferenced else None

    futures = list(dict.fromkeys(n for info in infos for n in info.future))
    header: list[str] = []
    if entry_info.docstring is not None:
        header.append(cst.Module([entry_info.docstring]).code.strip())
        header.append("")
    if futures:
        header.append("from __future__ import " + ", ".join(futures))
        header.append("")
    header.extend(_import_lines(infos, used))
    body_stmts: list = []
    for label, stmts in sections:
        body_stmts.extend(_with_banner(stmts, label))
    if tail:
        body_stmts.extend(_with_banner(tail, f"{entry_info.rel} (entry point)"))
    code = "\n".join(header) + "\n" + cst.Module(body=body_stmts).code
    code = re.sub(r"\n{4,}", "\n\n\n", code).rstrip("\n") + "\n"
    check_parses(code, "inlined source")
    return InlineResult(source=code, modules=[i.rel for i in infos], removed=removed, frozen=frozen_names)


def check_parses(source: str, what: str) -> None:
    """The source must parse on every target Python version (the challenge machine and users' machines)."""
    for ver in TARGET_VERSIONS:
        try:
            ast.parse(source, feature_version=ver)
        except SyntaxError as exc:
            raise InlineError(f"{what} does not parse on Python {ver[0]}.{ver[1]}: line {exc.lineno}: {exc.msg}") from None
    compile(source, what, "exec")


# ---------------------------------------------------------------------------------------------------------------
# the real trainer

ENTRY = "trainer.train"
# Per-run or per-machine settings that must not become the shipped defaults (SEED is passed per run).
MACHINE_KEYS = ("run_id", "out_dir", "seed", "device")
PORTABLE_DIRS = {"data_path": "./data/datasets", "tokenizer_path": "./data/tokenizers"}


def trainer_root() -> Path:
    import trainer

    return Path(trainer.__file__).resolve().parent.parent


def baked_config_for(config: dict) -> dict:
    """The subset of a run's resolved configuration to bake: values differing from the defaults, machine-specific
    keys dropped, absolute data/tokenizer paths mapped to the challenge layout (./data/datasets/fineweb10B_<v>)."""
    from trainer.config import Hyperparameters

    defaults = {name: default for name, _t, default, _m in Hyperparameters.fields_meta()}
    unknown = sorted(set(config) - set(defaults))
    if unknown:
        raise InlineError(f"run configuration has keys this trainer does not know: {', '.join(unknown)}")
    out = {}
    for name, default in defaults.items():
        if name not in config or name in MACHINE_KEYS:
            continue
        value = config[name]
        if name in PORTABLE_DIRS and isinstance(value, str) and Path(value).is_absolute():
            # A challenge-layout name (fineweb10B_sp8192, fineweb_8192_bpe.model) keeps its variant under the
            # challenge's relative directory; any other local path is machine-specific and is not baked.
            base = Path(value).name
            value = f"{PORTABLE_DIRS[name]}/{base}" if re.fullmatch(r"fineweb10B_\w+|fineweb_\w+\.model", base) else default
        if value != default or type(value) is not type(default):
            out[name] = value
    return out
