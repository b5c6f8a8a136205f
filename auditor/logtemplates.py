"""Settings a run printed through the script's own format strings.

A log line such as `lora_ttt_batched: short=2393 long=3857 ... lr=0.01 epochs=3 chunk=256` says what ran only to a
reader who knows which expression produced each number. The script itself says so: the line came from
`log_fn(f"lora_ttt_batched: ... lr={ttt_lr} epochs={ttt_epochs} chunk={chunk_size}")`. Every f-string of the code is
a template; a log line that matches one binds each placeholder's expression to the printed text, and an expression
that is an environment read (`args.ttt_enabled` for `ttt_enabled = bool(int(os.environ.get("TTT_ENABLED", "0")))`,
or a parameter every caller binds to such a read) gives that environment variable's value in the run.

Matching is linear in the line: literal pieces are found left to right with `str.find`, no regex backtracking.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

import libcst as cst

from auditor.cstwalk import walk

MAX_TEMPLATES = 5000
MAX_CHECKS = 100_000  # template-vs-line comparisons per submission (real records need ~10,000): bounds hostile input
MAX_PREFIX_KEY = 3  # templates are indexed by the first characters of their leading literal
_CONVERSIONS = ("int", "float", "bool", "str")


@dataclass
class Template:
    parts: list  # literal pieces, one more than the placeholders
    exprs: list  # placeholder expression nodes
    func: object  # the innermost enclosing cst.FunctionDef, or None
    unit: object


@dataclass
class TemplateIndex:
    by_prefix: dict = field(default_factory=dict)  # first MAX_PREFIX_KEY chars of the leading literal -> [Template]
    checks_left: int = MAX_CHECKS

    def match(self, line: str):
        """[(Template, [printed text per placeholder])] for every template the stripped line fully matches."""
        out = []
        for t in self.by_prefix.get(line[:MAX_PREFIX_KEY], ()):
            if self.checks_left <= 0:
                break
            self.checks_left -= 1
            vals = _split(line, t.parts)
            if vals is not None:
                out.append((t, vals))
        return out


def _split(line: str, parts: list):
    first, last = parts[0], parts[-1]
    if not line.startswith(first) or not line.endswith(last) or len(line) < len(first) + len(last):
        return None
    pos, end, vals = len(first), len(line) - len(last), []
    for lit in parts[1:-1]:
        k = line.find(lit, pos, end)
        if k < 0:
            return None
        vals.append(line[pos:k])
        pos = k + len(lit)
    vals.append(line[pos:end])
    if any(not v.strip() for v in vals):
        return None
    return vals


def _literal(text: str, raw: bool):
    """The characters a literal piece of an f-string prints (`{{` is `{`, escapes decoded); None when unsure."""
    text = text.replace("{{", "{").replace("}}", "}")
    if raw or "\\" not in text:
        return text
    try:
        v = ast.literal_eval('"""' + text.replace('"', '\\"') + '"""')
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    return v if isinstance(v, str) else None


def _flatten(node, out: list) -> bool:
    """Append ("lit", text) / ("expr", node) pieces of a (concatenated) string; False when a piece is not plain."""
    if isinstance(node, cst.ConcatenatedString):
        return _flatten(node.left, out) and _flatten(node.right, out)
    if isinstance(node, cst.SimpleString):
        v = node.evaluated_value
        if not isinstance(v, str):
            return False
        out.append(("lit", v))
        return True
    if isinstance(node, cst.FormattedString):
        raw = "r" in node.prefix.lower()
        for p in node.parts:
            if isinstance(p, cst.FormattedStringText):
                v = _literal(p.value, raw)
                if v is None:
                    return False
                out.append(("lit", v))
            else:
                out.append(("expr", p.expression, p.conversion))
        return True
    return False


def _template(node, func, unit):
    pieces: list = []
    if not _flatten(node, pieces) or not any(p[0] == "expr" for p in pieces):
        return None
    parts, exprs, cur = [], [], ""
    for p in pieces:
        if p[0] == "lit":
            cur += p[1]
        else:
            parts.append(cur)
            exprs.append(p[1])
            cur = ""
    parts.append(cur)
    parts[0], parts[-1] = parts[0].lstrip(), parts[-1].rstrip()
    # a leading literal anchors the line; placeholders with nothing between them cannot be told apart
    if len(parts[0]) < MAX_PREFIX_KEY or "\n" in "".join(parts) or any(not p for p in parts[1:-1]):
        return None
    return Template(parts, exprs, func, unit)


def build_index(units) -> TemplateIndex:
    idx = TemplateIndex()
    n = 0
    for unit in units:
        if unit.module is None:
            continue
        inner: dict = {}  # id(string node) -> innermost enclosing function (outer defs are visited first)
        for fn, _ in unit.nodes(cst.FunctionDef):
            for sub in walk(fn.body):
                if isinstance(sub, (cst.FormattedString, cst.ConcatenatedString)):
                    inner[id(sub)] = fn
        seen: set = set()
        for node, _ in unit.nodes(cst.ConcatenatedString, cst.FormattedString):
            if id(node) in seen:
                continue
            if isinstance(node, cst.ConcatenatedString):
                seen.update(id(s) for s in walk(node))
            t = _template(node, inner.get(id(node)), unit)
            if t is None:
                continue
            idx.by_prefix.setdefault(t.parts[0][:MAX_PREFIX_KEY], []).append(t)
            n += 1
            if n >= MAX_TEMPLATES:
                return idx
    return idx


class EnvResolver:
    """Which environment variable an expression's value *is* (not merely depends on)."""

    def __init__(self, units, env_read):
        self.env_read = env_read  # node -> ENV name when the node reads it (auditor.config's recogniser)
        self.direct: dict = {}  # name -> {ENV} from `name = <conversions of an env read>`
        self.other: set = set()  # names also assigned something that is not a plain env read
        self.calls: dict = {}  # function name -> [cst.Call]
        for unit in units:
            if unit.module is None:
                continue
            # names bound by loops, augmented assignments, walrus and `with ... as` are not settings
            for node, _ in unit.nodes(cst.For, cst.CompFor, cst.AugAssign, cst.NamedExpr, cst.AsName):
                tgt = node.name if isinstance(node, cst.AsName) else node.target
                for n in walk(tgt):
                    if isinstance(n, cst.Name):
                        self.other.add(n.value)
                    elif isinstance(n, cst.Attribute):
                        self.other.add(n.attr.value)
            for node, _ in unit.nodes(cst.Assign, cst.AnnAssign, cst.Call):
                if isinstance(node, cst.Call):
                    f = node.func
                    name = f.value if isinstance(f, cst.Name) else f.attr.value if isinstance(f, cst.Attribute) \
                        else None
                    if name is not None:
                        self.calls.setdefault(name, []).append(node)
                    continue
                targets = [t.target for t in node.targets] if isinstance(node, cst.Assign) else [node.target]
                if node.value is None:
                    continue
                env = self._direct(node.value)
                for tg in targets:
                    name = tg.value if isinstance(tg, cst.Name) else tg.attr.value if isinstance(tg, cst.Attribute) \
                        else None
                    if name is None:
                        continue
                    if env is None:
                        self.other.add(name)
                    else:
                        self.direct.setdefault(name, set()).add(env)

    def _direct(self, value):
        """ENV when `value` is an env read under conversions (`bool(int(os.environ.get("X", "0")))`)."""
        node = value
        for _ in range(6):
            env = self.env_read(node)
            if env is not None:
                return env
            if isinstance(node, cst.Call) and len(node.args) == 1:
                f = node.func
                if isinstance(f, cst.Name) and f.value in _CONVERSIONS:
                    node = node.args[0].value
                    continue
            if isinstance(node, cst.Call) and not node.args and isinstance(node.func, cst.Attribute) and \
                    node.func.attr.value in ("lower", "strip", "upper"):
                node = node.func.value
                continue
            return None
        return None

    def env_of(self, expr, func, depth: int = 0):
        if depth > 3:
            return None
        if isinstance(expr, cst.Attribute):
            name = expr.attr.value
        elif isinstance(expr, cst.Name):
            name = expr.value
            if name in self.other:
                return None  # reassigned somewhere (`chunk_size = min(chunk_size, 64)`): the printed value may differ
            if func is not None:
                bound = self._param(name, func, depth)
                if bound is not False:
                    return bound
        else:
            return self._direct(expr)
        envs = self.direct.get(name, set())
        if len(envs) == 1 and name not in self.other:
            return next(iter(envs))
        return None

    def _param(self, name, func, depth):
        """For a parameter of `func`: the ENV every call site binds it to (None when unknown); False when `name` is
        not a parameter."""
        params = func.params
        plist = list(params.posonly_params) + list(params.params)
        allp = plist + list(params.kwonly_params)
        if not any(p.name.value == name for p in allp):
            return False
        pos = next((i for i, p in enumerate(plist) if p.name.value == name), None)
        found = set()
        for call in self.calls.get(func.name.value, []):
            arg = None
            for i, a in enumerate(call.args):
                if a.keyword is not None:
                    if a.keyword.value == name:
                        arg = a.value
                elif a.star == "" and pos is not None and i == pos - _self_offset(func, call):
                    arg = a.value
            if arg is None:
                return None  # a call leaves it at the default (or passes it through *args): not one env
            found.add(self.env_of(arg, None, depth + 1))
        if len(found) == 1:
            return next(iter(found))
        return None


def _self_offset(func, call) -> int:
    """`obj.method(a)` binds `a` to the second parameter."""
    plist = list(func.params.posonly_params) + list(func.params.params)
    if isinstance(call.func, cst.Attribute) and plist and plist[0].name.value in ("self", "cls"):
        return 1
    return 0


def printed_values(index: TemplateIndex, resolver: EnvResolver, messages) -> dict:
    """ENV -> (printed text, 1-based line) from log lines `messages` [(line, stripped text)]; the last line wins."""
    out: dict = {}
    for lineno, text in messages:
        for t, vals in index.match(text):
            for expr, val in zip(t.exprs, vals):
                env = resolver.env_of(expr, t.func)
                if env is not None:
                    v = val.strip()
                    if len(v) >= 2 and v[0] == v[-1] and v[0] in "'\"":
                        v = v[1:-1]  # printed with !r
                    out[env] = (v, lineno)
    return out
