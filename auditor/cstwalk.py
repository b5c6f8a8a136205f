"""Fast read-only traversal of libcst trees.

`libcst`'s visitor machinery rebuilds every node it visits, which costs ~1 s per pass over a 3,000-line script;
the auditor only reads, so it walks the dataclass fields directly (an order of magnitude faster)."""

from __future__ import annotations

import dataclasses
import re

import libcst as cst

_SKIP = re.compile(
    r"whitespace|^lpar$|^rpar$|comma|semicolon|^header$|^footer$|leading_lines|lines_after|^colon$|"
    r"^equal$|^dot$|^lbracket$|^rbracket$|^lbrace$|^rbrace$|^newline$|^asynchronous$|^arrow$|^walrus$"
)
_FIELDS: dict = {}


def _fields(t) -> tuple:
    names = _FIELDS.get(t)
    if names is None:
        names = tuple(f.name for f in dataclasses.fields(t) if not _SKIP.search(f.name))
        _FIELDS[t] = names
    return names


_IS_NODE: dict = {}


def _is_node(t) -> bool:
    # CSTNode is an ABC: isinstance() through ABCMeta is slow, a per-type cache is not
    b = _IS_NODE.get(t)
    if b is None:
        b = _IS_NODE[t] = issubclass(t, cst.CSTNode)
    return b


def children(node):
    for name in _fields(type(node)):
        v = getattr(node, name, None)
        t = type(v)
        if t is list or t is tuple:
            for x in v:
                if _is_node(type(x)):
                    yield x
        elif v is not None and _is_node(t):
            yield v


def walk(node):
    """Pre-order iteration over `node` and all its descendants (whitespace and punctuation skipped)."""
    stack = [node]
    pop = stack.pop
    is_node = _IS_NODE
    while stack:
        n = pop()
        yield n
        t = type(n)
        names = _FIELDS.get(t)
        if names is None:
            names = _fields(t)
        kids = []
        for name in names:
            v = getattr(n, name, None)
            tv = type(v)
            if tv is list or tv is tuple:
                for x in v:
                    b = is_node.get(type(x))
                    if b is None:
                        b = _is_node(type(x))
                    if b:
                        kids.append(x)
            elif v is not None:
                b = is_node.get(tv)
                if b is None:
                    b = _is_node(tv)
                if b:
                    kids.append(v)
        if kids:
            kids.reverse()
            stack.extend(kids)


def index(module) -> dict:
    """One walk: {node type: [(node, inside_a_function)]}, so several consumers share a single traversal."""
    out: dict = {}
    stack = [(module, False)]
    pop = stack.pop
    fdef = cst.FunctionDef
    while stack:
        n, in_fn = pop()
        t = type(n)
        lst = out.get(t)
        if lst is None:
            lst = out[t] = []
        lst.append((n, in_fn))
        inner = in_fn or t is fdef
        kids = list(children(n))
        kids.reverse()
        stack.extend((k, inner) for k in kids)
    return out


def dotted(node) -> str:
    """`a.b.c` for a Name/Attribute chain; "" for anything else (calls, subscripts)."""
    if isinstance(node, cst.Name):
        return node.value
    if isinstance(node, cst.Attribute):
        return f"{dotted(node.value)}.{node.attr.value}"
    return ""


def find(node, types):
    return [n for n in walk(node) if isinstance(n, types)]
