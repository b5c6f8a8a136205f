"""Parse Python source into a libcst tree, also when libcst rejects code that CPython accepts.

libcst's grammar is stricter than CPython's in corners that minifiers produce (`x=(a if b else c)if d else e` fails
its whitespace validation). The audit must analyse such code, not give up on it:

1. CPython's own parser (`ast`) checks the code first. It is the guard for hostile input: it refuses 200+ nested
   brackets that would crash libcst's native parser with a segfault. Code it rejects for other reasons may be newer
   syntax than this interpreter's (3.12 f-strings under 3.11): libcst, whose grammar is newer, gets a try.
2. libcst parses the text as is.
3. Else a space is inserted around keywords glued to the previous/next token (`)if` -> `) if`): only columns move,
   every line keeps its number.
4. Else the code is re-rendered by `ast.unparse` and parsed again; `line_map` maps each rendered line back to the
   line of the original statement (matched by walking the two ASTs, which have the same shape).
"""

from __future__ import annotations

import ast
import io
import keyword
import tokenize
import warnings
from dataclasses import dataclass

import libcst as cst


class PythonSyntaxError(Exception):
    def __init__(self, message: str, line: int, col: int):
        super().__init__(message)
        self.line, self.col = max(1, line or 1), max(1, col or 1)


@dataclass
class Parsed:
    module: cst.Module
    text: str  # the text the tree was parsed from (the original, or its normalized form)
    line_map: list | None  # None: lines are the original's; else line_map[i] = original line of parsed line i+1
    how: str  # "libcst" | "spaced" | "unparsed"


def _cpython_check(text: str) -> ast.Module:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "invalid escape sequence", "1if" deprecation: not the audit's business
            return compile(text, "<submission>", "exec", ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
                           dont_inherit=True)
    except SyntaxError as exc:
        raise PythonSyntaxError(exc.msg or "invalid syntax", exc.lineno or 1, exc.offset or 1) from None
    except (MemoryError, RecursionError) as exc:  # "too complex": CPython itself gives up
        raise PythonSyntaxError(f"too deeply nested for Python's parser ({type(exc).__name__})", 1, 1) from None
    except ValueError as exc:  # NUL bytes and the like
        raise PythonSyntaxError(str(exc), 1, 1) from None


def _libcst(text: str):
    try:
        return cst.parse_module(text)
    except (cst.ParserSyntaxError, cst.CSTValidationError, ValueError, RecursionError):
        return None


def _spaced(text: str) -> str | None:
    """`text` with a space between a keyword and a token glued to it on the same line (None when nothing changes)."""
    try:
        toks = [t for t in tokenize.generate_tokens(io.StringIO(text).readline)
                if t.type not in (tokenize.NL, tokenize.COMMENT, tokenize.INDENT, tokenize.DEDENT)]
    except (tokenize.TokenError, SyntaxError):
        return None
    inserts: set = set()  # (row, col) where a space goes
    for prev, tok in zip(toks, toks[1:]):
        if prev.end != tok.start or prev.type == tokenize.NEWLINE:
            continue
        if (tok.type == tokenize.NAME and keyword.iskeyword(tok.string)) or (
            prev.type == tokenize.NAME and keyword.iskeyword(prev.string)
            and tok.type not in (tokenize.OP, tokenize.NEWLINE, tokenize.ENDMARKER)
        ):
            inserts.add(tok.start)
    if not inserts:
        return None
    lines = text.splitlines(keepends=True)
    for row, col in sorted(inserts, reverse=True):
        line = lines[row - 1]
        lines[row - 1] = line[:col] + " " + line[col:]
    return "".join(lines)


def _stmt_lines(tree: ast.AST) -> list:
    return [n.lineno for n in ast.walk(tree) if isinstance(n, (ast.stmt, ast.expr)) and hasattr(n, "lineno")]


def _unparsed(tree: ast.Module, text_lines: int) -> tuple[str, list] | None:
    try:
        out = ast.unparse(tree) + "\n"
        again = ast.parse(out)
    except (ValueError, SyntaxError, RecursionError, MemoryError):
        return None
    n_out = out.count("\n") + 1
    old, new = _stmt_lines(tree), _stmt_lines(again)
    line_map = [0] * n_out
    if len(old) == len(new):  # same shape: node i of one walk is node i of the other
        for o, n in zip(old, new):
            if 1 <= n <= n_out and not line_map[n - 1]:
                line_map[n - 1] = o
    last = 1
    for i, v in enumerate(line_map):  # lines without a node of their own (else:, decorators) take the previous one
        if v:
            last = v
        else:
            line_map[i] = last
    return out, [min(max(1, v), max(1, text_lines)) for v in line_map]


def parse(text: str) -> Parsed:
    """A libcst tree of `text`; PythonSyntaxError when neither CPython nor libcst accepts it."""
    try:
        tree = _cpython_check(text)
    except PythonSyntaxError as exc:
        # This interpreter may be older than the submission's (3.12 f-strings): libcst may still parse it, except
        # where CPython gave up on nesting, which would crash libcst's native parser.
        if "nested" in str(exc) or "too complex" in str(exc) or "too deeply" in str(exc):
            raise
        module = _libcst(text)
        if module is None:
            raise
        return Parsed(module, text, None, "libcst")
    module = _libcst(text)
    if module is not None:
        return Parsed(module, text, None, "libcst")
    spaced = _spaced(text)
    if spaced is not None:
        module = _libcst(spaced)
        if module is not None:
            return Parsed(module, spaced, None, "spaced")
    rendered = _unparsed(tree, text.count("\n") + 1)
    if rendered is not None:
        module = _libcst(rendered[0])
        if module is not None:
            return Parsed(module, rendered[0], rendered[1], "unparsed")
    raise PythonSyntaxError("valid Python that the audit's parser (libcst) cannot represent", 1, 1)
