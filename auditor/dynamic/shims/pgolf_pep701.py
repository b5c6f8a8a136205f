"""Run Python 3.12 f-strings (PEP 701: a replacement field reusing the enclosing quote, nested f-strings reusing
quotes) under 3.11 by re-quoting only the strings inside replacement fields; semantics and line numbers unchanged.

`downgrade(source)` returns the rewritten source, or None when some string cannot be re-quoted (a backslash or a
comment inside a field, more nesting than the four quote styles allow) or the result still does not compile.
`install()` wraps builtins.compile/exec/eval in the dynamic-audit child: on a PEP 701 SyntaxError they retry once
with the downgraded source, else the original error stands (the auditor turns it into PG902).
"""

# no `from __future__` import here: compile/exec called from this module would pass its flags to the submission's code
import __future__
import builtins
import re
import sys

# the messages 3.11 gives for PEP 701 syntax (same shapes as auditor/dynamic/analyze.py's _PEP701)
PEP701_ERROR = re.compile(r"f-string|unterminated string|unmatched|expecting '}'")
_QUOTES = ("'", '"', "'''", '"""')


class _Fail(Exception):
    pass


def _fits(q: str, body: str, enclosing: tuple[str, ...]) -> bool:
    """Can `body` (a string's raw text, nested in f-strings delimited by `enclosing`) be delimited by `q` in 3.11?"""
    if len(q) == 1 and (q in body or "\n" in body):
        return False
    if len(q) == 3 and (q in body or body.endswith(q[0])):
        return False
    text = q + body + q
    # 3.11 finds an f-string's end before parsing its fields: no enclosing delimiter may appear inside them
    return not any(d in text for d in enclosing)


def _simple(node, enclosing: tuple[str, ...]):
    body = node.raw_value
    if "\\" in body:  # 3.11: no backslash anywhere in a replacement field
        raise _Fail
    for q in (node.quote, *_QUOTES):
        if _fits(q, body, enclosing):
            return node if q == node.quote else node.with_changes(value=node.prefix + q + body + q)
    raise _Fail


def _own_text(parts) -> str:
    import libcst as cst

    out = []
    for p in parts:
        if isinstance(p, cst.FormattedStringText):
            out.append(p.value)
        elif p.format_spec:
            out.append(_own_text(p.format_spec))
    return "".join(out)


def _parts(parts, enclosing: tuple[str, ...]):
    import libcst as cst

    new = []
    for p in parts:
        if isinstance(p, cst.FormattedStringExpression):
            p = p.with_changes(expression=p.expression.visit(_transformer(enclosing)),
                               format_spec=_parts(p.format_spec, enclosing) if p.format_spec else p.format_spec)
        new.append(p)
    return new


def _fstring(node, enclosing: tuple[str, ...]):
    prefix, orig = node.start[: len(node.start) - len(node.end)], node.end
    body = _own_text(node.parts)
    if enclosing and "\\" in body:
        raise _Fail
    # the outermost f-string keeps its quotes; a nested one tries its own first, then every other style
    for q in ((orig,) if not enclosing else (orig, *_QUOTES)):
        if enclosing and not _fits(q, body, enclosing):
            continue
        try:
            parts = _parts(node.parts, (*enclosing, q))
        except _Fail:
            continue
        return node.with_changes(start=prefix + q, end=q, parts=parts)
    raise _Fail


def _transformer(enclosing: tuple[str, ...]):
    import libcst as cst

    class T(cst.CSTTransformer):
        def visit_FormattedString(self, node):
            return False  # _fstring rewrites the whole subtree with the right enclosing quotes

        def leave_FormattedString(self, original, updated):
            return _fstring(original, enclosing)

        def leave_SimpleString(self, original, updated):
            return _simple(original, enclosing) if enclosing else updated

    return T()


def downgrade(source: str | bytes) -> str | None:
    """The source with every PEP 701 f-string re-quoted for Python 3.11, or None if that is impossible."""
    if isinstance(source, (bytes, bytearray)):
        try:
            source = bytes(source).decode("utf-8")
        except UnicodeDecodeError:
            return None
    try:
        import libcst as cst

        new = cst.parse_module(source).visit(_transformer(())).code
    except _Fail:
        return None
    except Exception:  # noqa: BLE001 - libcst cannot parse it: nothing to downgrade
        return None
    if new == source:
        return None
    try:
        _ORIG["compile"](new, "<pep701>", "exec", 0x400, True)  # 0x400 = ast.PyCF_ONLY_AST: syntax check only
    except (SyntaxError, ValueError):
        return None
    return new


_ORIG = {"compile": builtins.compile, "exec": builtins.exec, "eval": builtins.eval}


def _retry(source, e: SyntaxError):
    """The downgraded source when `e` is a PEP 701 error that re-quoting fixes, else None."""
    if not PEP701_ERROR.search(str(e.msg or "")):
        return None
    return downgrade(source)


_FUTURE_FLAGS = 0
for _name in __future__.all_feature_names:
    _FUTURE_FLAGS |= getattr(__future__, _name).compiler_flag


def _caller_flags(depth: int = 2) -> int:
    """The `from __future__` flags of the code calling the wrapper, which the builtin would have inherited."""
    return sys._getframe(depth).f_code.co_flags & _FUTURE_FLAGS


def _compile(source, filename, mode, flags=0, dont_inherit=False, optimize=-1, **kw):
    if not dont_inherit:
        flags |= _caller_flags()
    try:
        return _ORIG["compile"](source, filename, mode, flags, True, optimize, **kw)
    except SyntaxError as e:
        if not isinstance(source, (str, bytes, bytearray)):
            raise
        new = _retry(source, e)
        if new is None:
            raise
        return _ORIG["compile"](new, filename, mode, flags, True, optimize, **kw)


def _run(kind: str, mode: str):
    def run(source, globals=None, locals=None, *args, **kw):  # noqa: A002 - builtin signature
        if globals is None:  # the caller's namespace, as the builtin would use
            f = sys._getframe(1)
            globals, locals = f.f_globals, f.f_locals if locals is None else locals
        if isinstance(source, (str, bytes, bytearray)):
            if kind == "eval" and isinstance(source, str):
                source = source.lstrip(" \t")  # the builtin eval ignores leading blanks
            flags = _caller_flags()
            try:
                source = _ORIG["compile"](source, "<string>", mode, flags, True)
            except SyntaxError as e:
                new = _retry(source, e)
                if new is None:
                    raise
                source = _ORIG["compile"](new, "<string>", mode, flags, True)
        return _ORIG[kind](source, globals, locals, *args, **kw)

    run.__name__ = run.__qualname__ = kind
    return run


def install() -> None:
    """Only where the running Python predates PEP 701."""
    if sys.version_info >= (3, 12):
        return
    builtins.compile = _compile
    builtins.exec = _run("exec", "exec")
    builtins.eval = _run("eval", "eval")
