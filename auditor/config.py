"""Effective configuration of the run: the code's defaults overridden by what the run actually used.

Sources, lowest precedence first:
1. code defaults: `os.environ.get("NAME", default)` / `os.getenv` / env helpers anywhere in the code (class
   `Hyperparameters`, module constants, `__init__`), including decoded wrappers and helper files;
2. a `BAKED_CONFIG = {...}` literal (pgolf-built scripts bake the run's resolved configuration);
3. README run commands and run scripts (`TTT_ENABLED=1 torchrun ... train_gpt.py`, `export X=1`);
4. the logs: environment/hyperparameter lines the run printed (`  TTT_ENABLED=1`, `  ttt_enabled: True`,
   `ttt_epochs:3 ...`) - what really ran.

`ConfigModel.eval(node, unit)` evaluates a guard expression (`args.ttt_enabled`, `int(os.environ.get("X","0"))`,
`h.ttt_epochs > 0 and not last`) to True/False/UNKNOWN under that configuration; flow.py uses it to decide whether
flag-guarded code runs.
"""

from __future__ import annotations

import ast
import re

import libcst as cst

from auditor import logtemplates
from auditor.cstwalk import walk
from auditor.logs import env_assignments

UNKNOWN = object()
MAX_COMMAND_CHARS = 4096  # README/run-script lines longer than this are not run commands
_CONTINUATION = re.compile(r"\\[ \t]*\r?\n")
_SMOKE = re.compile(r"(?i)\b(?:quick|smoke|sanity|debug|dry[- ]run|toy)\b|\btest run\b")
_ASSIGNMENT = re.compile(r"[A-Z][A-Z0-9_]*=\S+")


def _only_assignments(line: str) -> bool:
    """`A=1 B=2` alone on a line (tokens checked one by one: a single regex over the line backtracks
    exponentially on `A=A=A=...`)."""
    toks = line.split()
    return bool(toks) and all(_ASSIGNMENT.fullmatch(t) for t in toks)
_ENV_NAME = re.compile(r"^[A-Z][A-Z0-9_]{1,}$")
ADAPTATION_WORDS = ("ttt", "slot")  # log words of test-time training / per-window optimization (challenge logs)
_FLAG_NOISE = {"enabled", "enable", "use", "flag", "on", "do", "apply", "run", "mode", "is"}


def _to_py(text):
    """A printed value as Python: '1' -> 1, '0.5' -> 0.5, 'True' -> True, otherwise the string."""
    if text is None:
        return None
    s = str(text).strip()
    low = s.lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        return ast.literal_eval(s)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return s


def _as_int(v):
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, (int, float)):
        return int(v)
    if isinstance(v, str):
        low = v.strip().lower()
        if low in ("true", "yes", "on"):
            return 1
        if low in ("false", "no", "off", ""):
            return 0
        return int(float(low))
    raise ValueError(v)


def _as_float(v):
    if isinstance(v, str) and v.strip().lower() in ("true", "false"):
        return float(v.strip().lower() == "true")
    return float(v)


def _as_bool(v):
    return bool(v)


class ConfigModel:
    def __init__(self):
        self.attr_expr: dict = {}  # attribute or constant name -> (expr node, unit)
        self.attr_env: dict = {}  # attribute -> ENV name
        self.defaults: dict = {}  # ENV -> default as printed text (None when not a literal)
        self.overrides: dict = {}  # ENV -> (value text, source)
        self.printed_attrs: dict = {}  # attribute -> value printed in a log
        self.log_sources: set = set()  # rel paths of the logs that supplied overrides
        self.markers: set = set()  # feature words the logs show ran (ttt, sliding, ngram, ...)
        self._evaluating: set = set()
        self._const_seen: set = set()
        self.env_helpers: set = set()  # local helpers wrapping os.environ (`E = lambda k, d: os.environ.get(k, d)`)
        self.helper_kinds: dict = {}  # helper name -> how it parses the string it reads (see _parse_kind)
        self.parse_kinds: dict = {}  # ENV -> how the script parses its value: ("int",) ("float",) ("bool",)
        # ("eq", truthy literals, lower) or ("str",); the log/README value is exported in a form that parse accepts
        self.templates = None  # the script's f-strings (auditor.logtemplates), set by build_config
        self.resolver = None
        self.template_lines: dict = {}  # ENV -> (log rel, line) where the script's own format string printed it

    # ---------------------------------------------------------------- building
    def scan_unit(self, unit) -> None:
        if unit.module is None:
            return
        for node, _ in unit.nodes(cst.FunctionDef, cst.Assign):
            if type(node) is cst.FunctionDef:
                body = node.body
                if not isinstance(body, cst.IndentedBlock) or len(body.body) > 4:
                    continue  # env helpers are one-liners
                name = node.name.value
            elif isinstance(node.value, cst.Lambda) and isinstance(node.targets[0].target, cst.Name):
                body, name = node.value, node.targets[0].target.value
            else:
                continue
            if any((type(n) is cst.Name and n.value in ("environ", "getenv")) for n in walk(body)):
                self.env_helpers.add(name)
                ret = body.body if isinstance(body, cst.Lambda) else _return_expr(body)
                kind = _parse_kind(ret, _is_any_env_read) if ret is not None else None
                if kind is not None and kind != ("str",):
                    self.helper_kinds[name] = kind
        for node, in_fn in unit.nodes(cst.Assign, cst.AnnAssign, cst.Call):
            t = type(node)
            if t is cst.Assign:
                for tg in node.targets:
                    self._assign(tg.target, node.value, unit, in_fn)
            elif t is cst.AnnAssign:
                if node.value is not None:
                    self._assign(node.target, node.value, unit, in_fn)
            else:
                env = _env_read(node, self.env_helpers)
                if env is not None:
                    name, default = env
                    if name not in self.defaults or self.defaults[name] is None:
                        self.defaults[name] = default

    def _assign(self, target, value, unit, in_function: bool = False) -> None:
        name = None
        if isinstance(target, cst.Name):
            name = target.value
        elif isinstance(target, cst.Attribute):
            name = target.attr.value
        if name is None:
            return
        if name == "BAKED_CONFIG" and isinstance(value, cst.Dict):
            for el in value.elements:
                if isinstance(el, cst.DictElement):
                    try:
                        k = ast.literal_eval(unit.code(el.key))
                        v = ast.literal_eval(unit.code(el.value))
                    except Exception:
                        continue
                    if isinstance(k, str):
                        key = k if _ENV_NAME.match(k) else k.upper()
                        self.overrides.setdefault(key, (_fmt(v), "BAKED_CONFIG"))
            return
        envs = [e for e in (_env_name(n, self.env_helpers) for n in walk(value)) if e is not None]
        if envs:
            self.attr_expr.setdefault(name, (value, unit))
            self.attr_env.setdefault(name, envs[0])
            for env in envs:
                kind = _parse_kind(value, lambda n, e=env: _reads_env(n, e, self.env_helpers))
                if kind is not None and (env not in self.parse_kinds or self.parse_kinds[env] == ("str",)):
                    self.parse_kinds[env] = kind
            if len(envs) == 1 and isinstance(value, cst.Call):
                helper = value.func.value if isinstance(value.func, cst.Name) else None
                if helper in self.helper_kinds and self.parse_kinds.get(envs[0], ("str",)) == ("str",):
                    self.parse_kinds[envs[0]] = self.helper_kinds[helper]
        elif not in_function and isinstance(value, (cst.Integer, cst.Float, cst.SimpleString, cst.Name)):
            # module/class constants (`TTT_ENABLED = 0`, `USE_NGRAM = False`) are flags too; a name assigned
            # twice at top level is ambiguous and dropped
            if isinstance(value, cst.Name) and value.value not in ("True", "False", "None"):
                return
            if name in self._const_seen:
                self.attr_expr.pop(name, None) if name not in self.attr_env else None
                return
            self._const_seen.add(name)
            if name not in self.attr_expr:
                self.attr_expr[name] = (value, unit)

    def add_text_overrides(self, text: str, source: str) -> None:
        """README / run script: env assignments on command lines (joined across backslash continuations). Commands
        introduced as a quick/smoke/debug test are not the submitted run and are skipped; so are absurdly long
        lines (every pattern here stays linear in the text's size)."""
        context: list = []  # the last few non-empty lines (headings, comments) before a command
        for line in _CONTINUATION.sub(" ", text).splitlines():
            s = line.strip()
            if not s or len(s) > MAX_COMMAND_CHARS:
                continue
            is_cmd = not s.startswith("#") and (
                "torchrun" in s or "train_gpt" in s or s.startswith("export ") or _only_assignments(s))
            if is_cmd and not any(_SMOKE.search(c) for c in context[-3:] + [s]):
                for k, v in env_assignments(s).items():
                    if "$" not in v:  # `SEED=$SEED`: the shell's value, unknown here
                        self.overrides[k] = (v, source)
            if not is_cmd:
                context.append(s)

    def add_log(self, info, source: str) -> None:
        self.log_sources.add(source)
        for k, v in info.env.items():
            if _ENV_NAME.match(k) and str(v).strip() != "None":
                self.overrides[k] = (v, source)
        for k, v in info.hyperparameters.items():
            self.printed_attrs[k] = v
            env = self.attr_env.get(k)  # `  ttt_on: True` printed for `ttt_on = ...os.environ.get("TTT_ENABLED")`
            if env is not None and env != k.upper() and str(v).strip() != "None":
                self.overrides[env] = (v, source)
        if self.templates is not None and info.messages:
            # strongest evidence, so applied last: the line came from this f-string, this placeholder is that setting
            for env, (v, line) in logtemplates.printed_values(self.templates, self.resolver, info.messages).items():
                if str(v).strip() != "None" and self.accepted(env, v) is not None:
                    self.overrides[env] = (v, source)
                    self.template_lines[env] = (source, line)
        for lb in list(info.finals) + list(info.markers):
            self.markers.update(w for w in re.split(r"[^a-z0-9]+", lb.lower()) if w)
        if info.ttt_elapsed_s is not None:
            self.markers.add("ttt")

    # ---------------------------------------------------------------- queries
    def env_value(self, env: str):
        if env in self.overrides:
            v = self.accepted(env, self.overrides[env][0])
            if v is not None:
                return v
        return self.defaults.get(env)

    def accepted(self, env: str, text) -> str:
        """A value as printed (a log's `ttt_enabled: True`, `iterations: 20000.0`) in the form the script's own parsing
        of `env` accepts and reads the same way: `bool(int(os.environ.get(...)))` and `int(...)` get "1"/"0",
        `os.environ.get(...) == "1"` gets "1"/"0", `.lower() in ("true", "yes")` gets "true"/"false". Texts the
        script already accepts are returned unchanged; None when the script could not parse it at all (a log event
        such as `late_qat:enabled` read for an `int(...)` setting): such a value is not the setting."""
        v = _accepted(self.parse_kinds.get(env, ("str",)), text)
        kind = self.parse_kinds.get(env, ("str",))[0]
        try:
            if kind == "int":
                int(v)
            elif kind == "float":
                float(v)
        except ValueError:
            return None
        return v

    def effective(self, include_defaults: bool = False) -> dict:
        """ENV -> value the run used, as a string the script's own parsing accepts (what `--dynamic` exports): the
        assignments from BAKED_CONFIG, README/run scripts and logs (logs win; README smoke-test commands are not
        the run), and, with include_defaults, every env var the code reads with its default."""
        out = {k: v for k, v in self.defaults.items() if v is not None} if include_defaults else {}
        read = set(self.defaults) | set(self.attr_env.values())
        for k, (v, src) in self.overrides.items():
            if src in self.log_sources and k not in read:
                continue  # a log's `model_params:17059912` / `val_bpb:enabled` is not an env var the script reads
            a = self.accepted(k, v)
            if a is not None:
                out[k] = a
        return dict(sorted(out.items()))

    def source_of(self, env: str) -> str:
        if env in self.overrides:
            return self.overrides[env][1]
        return "code default"

    def attr_value(self, name: str):
        if name in self.printed_attrs:
            return _to_py(self.printed_attrs[name])
        env = self.attr_env.get(name)
        if env is not None and env in self.overrides and name not in self.attr_expr:
            return _to_py(self.overrides[env][0])
        if name in self.attr_expr and name not in self._evaluating:
            expr, unit = self.attr_expr[name]
            self._evaluating.add(name)
            try:
                return self.eval(expr, unit)
            finally:
                self._evaluating.discard(name)
        if _ENV_NAME.match(name) and name in self.overrides:
            return _to_py(self.overrides[name][0])
        return UNKNOWN

    def adaptation_logged(self) -> bool:
        """Did the run's logs show an adaptation on validation data running (a `ttt...`/`slot...` line, TTT time)?"""
        return any(w in self.markers for w in ADAPTATION_WORDS)

    def observed(self, flag_names) -> bool:
        """Did the logs show the feature named by these flags running (e.g. `ttt_enabled` and a `legal_ttt` line)?"""
        for name in flag_names:
            words = [w for w in re.split(r"[^a-z0-9]+", name.lower()) if w and w not in _FLAG_NOISE and len(w) > 2]
            if words and all(w in self.markers for w in words):
                return True
        return False

    def eval(self, node, unit=None):
        try:
            return self._eval(node, 0)
        except Exception:
            return UNKNOWN

    def _eval(self, node, depth):
        if depth > 40:
            return UNKNOWN
        ev = lambda n: self._eval(n, depth + 1)  # noqa: E731
        if isinstance(node, cst.Integer):
            return int(node.value.replace("_", ""), 0)
        if isinstance(node, cst.Float):
            return float(node.value.replace("_", ""))
        if isinstance(node, (cst.SimpleString, cst.ConcatenatedString)):
            v = node.evaluated_value
            return v if isinstance(v, str) else UNKNOWN
        if isinstance(node, cst.Name):
            if node.value in ("True", "False", "None"):
                return {"True": True, "False": False, "None": None}[node.value]
            return self.attr_value(node.value)
        if isinstance(node, cst.Attribute):
            return self.attr_value(node.attr.value)
        if isinstance(node, cst.Subscript):
            env = _environ_subscript(node)
            if env is not None:
                v = self.env_value(env)
                return v if v is not None else UNKNOWN
            return UNKNOWN
        if isinstance(node, cst.UnaryOperation):
            v = ev(node.expression)
            if v is UNKNOWN:
                return UNKNOWN
            if isinstance(node.operator, cst.Not):
                return not v
            if isinstance(node.operator, cst.Minus):
                return -v
            return UNKNOWN
        if isinstance(node, cst.BooleanOperation):
            left = ev(node.left)
            if isinstance(node.operator, cst.And):
                if left is not UNKNOWN and not left:
                    return left
                right = ev(node.right)
                if right is not UNKNOWN and not right:
                    return right
                return UNKNOWN if UNKNOWN in (left, right) else right
            if left is not UNKNOWN and left:
                return left
            right = ev(node.right)
            if right is not UNKNOWN and right:
                return right
            return UNKNOWN if UNKNOWN in (left, right) else right
        if isinstance(node, cst.Comparison):
            left = ev(node.left)
            for target in node.comparisons:
                right = ev(target.comparator)
                if left is UNKNOWN or right is UNKNOWN:
                    return UNKNOWN
                op = target.operator
                if isinstance(op, (cst.In, cst.NotIn)):
                    try:
                        res = left in right
                    except TypeError:
                        return UNKNOWN
                    res = res if isinstance(op, cst.In) else not res
                else:
                    l2, r2 = left, right
                    if isinstance(l2, str) and isinstance(r2, (int, float)) and not isinstance(r2, bool):
                        l2 = _as_float(l2)
                    if isinstance(r2, str) and isinstance(l2, (int, float)) and not isinstance(l2, bool):
                        r2 = _as_float(r2)
                    res = {
                        cst.Equal: lambda a, b: a == b,
                        cst.NotEqual: lambda a, b: a != b,
                        cst.GreaterThan: lambda a, b: a > b,
                        cst.GreaterThanEqual: lambda a, b: a >= b,
                        cst.LessThan: lambda a, b: a < b,
                        cst.LessThanEqual: lambda a, b: a <= b,
                        cst.Is: lambda a, b: a is b,
                        cst.IsNot: lambda a, b: a is not b,
                    }.get(type(op))
                    if res is None:
                        return UNKNOWN
                    res = res(l2, r2)
                if not res:
                    return False
                left = right
            return True
        if isinstance(node, (cst.Tuple, cst.List, cst.Set)):
            vals = [ev(e.value) for e in node.elements]
            return UNKNOWN if any(v is UNKNOWN for v in vals) else tuple(vals)
        if isinstance(node, cst.IfExp):
            test = ev(node.test)
            if test is UNKNOWN:
                return UNKNOWN
            return ev(node.body) if test else ev(node.orelse)
        if isinstance(node, cst.Call):
            return self._eval_call(node, depth)
        return UNKNOWN

    def _eval_call(self, node: cst.Call, depth):
        r = _env_read(node, self.env_helpers)
        if r is not None:
            name, default = r
            v = self.env_value(name)
            if name in self.overrides:
                return v
            if len(node.args) >= 2:
                return self._eval(node.args[1].value, depth + 1)
            return v if v is not None else None
        f = node.func
        fname = f.value if isinstance(f, cst.Name) else None
        if fname in ("int", "float", "bool", "str") and len(node.args) == 1:
            v = self._eval(node.args[0].value, depth + 1)
            if v is UNKNOWN:
                return UNKNOWN
            return {"int": _as_int, "float": _as_float, "bool": _as_bool, "str": str}[fname](v)
        if isinstance(f, cst.Attribute) and f.attr.value in ("lower", "upper", "strip") and not node.args:
            v = self._eval(f.value, depth + 1)
            return getattr(v, f.attr.value)() if isinstance(v, str) else UNKNOWN
        return UNKNOWN


_TRUE_WORDS = ("1", "true", "yes", "on", "y", "t")


def _truth(text):
    """True/False for a printed boolean-ish value ('True', '1', 'false', '0.0'), None when it is not one."""
    low = str(text).strip().lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off", "none", ""):
        return False
    try:
        return float(low) != 0.0
    except ValueError:
        return None


def _accepted(kind, text) -> str:
    s = str(text).strip()
    k = kind[0]
    if k in ("int", "float"):
        try:
            float(s)
        except ValueError:
            t = _truth(s)
            return s if t is None else ("1" if t else "0")
        if k == "int":
            try:
                int(s)
            except ValueError:
                f = float(s)
                return str(int(f)) if f == int(f) else s
        return s
    if k == "bool":  # bool(os.environ.get(...)): any non-empty string is true
        t = _truth(s)
        return s if t is None else ("1" if t else "")
    if k == "eq":  # os.environ.get(...) == "1" / .lower() in ("1", "true")
        truthy, lower = kind[1], kind[2]
        if (s.lower() if lower else s) in truthy:
            return s
        t = _truth(s)
        if t is None:
            return s
        if t:
            return truthy[0]
        return next((w for w in ("0", "false", "no", "off") if w not in truthy), "")
    if k == "str":
        if s in ("True", "False"):  # a Python bool printed back: the shell-style flag the code most likely reads
            return "1" if s == "True" else "0"
        return s
    return s


def _is_any_env_read(node) -> bool:
    """Inside an env helper: `os.environ.get(k, d)` / `os.getenv(k)` / `os.environ[k]` with any key."""
    if isinstance(node, cst.Call):
        f = node.func
        return isinstance(f, cst.Attribute) and (
            (f.attr.value in ("get", "pop") and _is_environ(f.value)) or f.attr.value == "getenv")
    return isinstance(node, cst.Subscript) and _is_environ(node.value)


def _reads_env(node, env: str, helpers) -> bool:
    return _env_name(node, helpers) == env


def _return_expr(body):
    """The returned expression of a one-statement helper (`return int(os.environ.get(k, d))`)."""
    for st in getattr(body, "body", ()):
        if isinstance(st, cst.SimpleStatementLine):
            for small in st.body:
                if isinstance(small, cst.Return) and small.value is not None:
                    return small.value
    return None


def _parse_kind(expr, is_read, depth: int = 0):
    """How `expr` parses the string that `is_read` identifies: the first conversion applied to it. ("int",),
    ("float",), ("bool",), ("eq", truthy literals, lowered) or ("str",); None when `expr` does not read it."""
    if expr is None or depth > 12:
        return None
    if is_read(expr):
        return ("str",)
    if isinstance(expr, cst.Call):
        f = expr.func
        fname = f.value if isinstance(f, cst.Name) else None
        if fname in ("int", "float", "bool") and expr.args:
            inner = _parse_kind(expr.args[0].value, is_read, depth + 1)
            if inner is None:
                return None
            return (fname,) if inner[0] == "str" else inner
        if isinstance(f, cst.Attribute) and f.attr.value in ("lower", "strip", "upper"):
            inner = _parse_kind(f.value, is_read, depth + 1)
            if inner == ("str",):
                return ("lower",) if f.attr.value == "lower" else inner
            return inner
    if isinstance(expr, cst.Comparison) and len(expr.comparisons) == 1:
        inner = _parse_kind(expr.left, is_read, depth + 1)
        if inner in (("str",), ("lower",)):
            comp = expr.comparisons[0]
            lits = _string_literals(comp.comparator)
            if lits and isinstance(comp.operator, (cst.Equal, cst.In)):
                return ("eq", tuple(lits), inner == ("lower",))
            if lits and isinstance(comp.operator, (cst.NotEqual, cst.NotIn)):
                # `!= "0"`: everything but these literals is true
                truthy = tuple(w for w in _TRUE_WORDS if w not in lits) or ("1",)
                return ("eq", truthy, inner == ("lower",))
            return ("str",)
    for kid in _kids(expr):
        k = _parse_kind(kid, is_read, depth + 1)
        if k is not None:
            return ("str",) if k == ("lower",) else k
    return None


def _kids(node):
    from auditor.cstwalk import children

    try:
        return [k for k in children(node) if isinstance(k, cst.BaseExpression)]
    except Exception:
        return []


def _string_literals(node) -> list:
    if isinstance(node, cst.SimpleString):
        v = node.evaluated_value
        return [v] if isinstance(v, str) else []
    if isinstance(node, (cst.Tuple, cst.List, cst.Set)):
        out = []
        for e in node.elements:
            out += _string_literals(e.value)
        return out
    return []


def _fmt(v) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    return str(v)


def _is_environ(node) -> bool:
    return (isinstance(node, cst.Attribute) and node.attr.value == "environ") or (
        isinstance(node, cst.Name) and node.value == "environ"
    )


def _env_read(node: cst.Call, helpers=frozenset()):
    """(ENV, default text|None) for `os.environ.get("X", d)`, `os.getenv("X", d)`, `env_helper("X", d)`."""
    f = node.func
    if not node.args or not isinstance(node.args[0].value, cst.SimpleString):
        return None
    try:
        name = node.args[0].value.evaluated_value
    except Exception:
        return None
    if not isinstance(name, str) or not _ENV_NAME.match(name):
        return None
    is_env = False
    if isinstance(f, cst.Attribute):
        if f.attr.value in ("get", "setdefault", "pop") and _is_environ(f.value):
            is_env = True
        elif f.attr.value == "getenv":
            is_env = True
    fname = f.value if isinstance(f, cst.Name) else (f.attr.value if isinstance(f, cst.Attribute) else "")
    if not is_env and (re.search(r"(?i)env", fname or "") or fname in helpers):
        is_env = True
    if not is_env:
        return None
    default = None
    if len(node.args) >= 2:
        d = node.args[1].value
        try:
            if isinstance(d, (cst.SimpleString, cst.Integer, cst.Float)):
                default = _fmt(ast.literal_eval(_node_code(d)))
            elif isinstance(d, cst.Name) and d.value in ("True", "False"):
                default = "1" if d.value == "True" else "0"
        except Exception:
            default = None
    return name, default


def _env_name(node, helpers=frozenset()):
    """ENV read by `node` (a call of os.environ.get / getenv / an env helper, or `os.environ["X"]`), else None."""
    if isinstance(node, cst.Call):
        r = _env_read(node, helpers)
        return r[0] if r is not None else None
    if isinstance(node, cst.Subscript):
        return _environ_subscript(node)
    return None


def _environ_subscript(node: cst.Subscript):
    if not _is_environ(node.value) or len(node.slice) != 1:
        return None
    sl = node.slice[0].slice
    if isinstance(sl, cst.Index) and isinstance(sl.value, cst.SimpleString):
        v = sl.value.evaluated_value
        if isinstance(v, str) and _ENV_NAME.match(v):
            return v
    return None


def _node_code(node) -> str:
    return cst.Module(body=[]).code_for_node(node)


def build_config(sub) -> ConfigModel:
    """The ConfigModel of a loaded submission (auditor.source.Submission)."""
    cfg = ConfigModel()
    for unit in sub.units:
        cfg.scan_unit(unit)
    if sub.logs:
        cfg.templates = logtemplates.build_index(sub.units)
        cfg.resolver = logtemplates.EnvResolver(sub.units, lambda n, h=cfg.env_helpers: _env_name(n, h))
    if sub.readme_text:
        cfg.add_text_overrides(sub.readme_text, sub.readme_rel or "README.md")
    for rel, text in sorted(sub.scripts.items()):
        cfg.add_text_overrides(text, rel)
    for rel, info in sorted(sub.logs.items()):
        cfg.add_log(info, rel)
    return cfg


def effective_config(submission, include_defaults: bool = False) -> dict:
    """Env assignments the run used (BAKED_CONFIG < README/run scripts < logs); with include_defaults, the code's
    defaults for every other env var it reads are included too (defaults overridden by the run).

    `submission` is an `auditor.source.Submission` or a path (folder or train_gpt.py)."""
    cfg = config_of(submission)
    return cfg.effective(include_defaults) if cfg is not None else {}


def config_of(submission) -> ConfigModel | None:
    """The ConfigModel of a Submission or of a path (folder or train_gpt.py); None when nothing is found there."""
    if not hasattr(submission, "units"):
        from pathlib import Path

        from auditor.source import discover, load_submission

        found = discover([Path(submission)])
        if not found:
            return None
        submission = load_submission(*found[0])
    return build_config(submission)
