"""Specialize the inlined trainer to one run's feature switches (`pgolf build --specialize`).

A plain built train_gpt.py carries every preset's code paths because any environment variable can switch them on.
Specializing freezes the *feature switches* of the baked configuration: in the built file, setting the environment
variable of a frozen field to another value stops the run with one line (`error: TTT_ENABLED=0: ...`), so the
branches the frozen values can never reach are provably dead and are removed:

1. `h.<field>` of a frozen field (``h`` being the Hyperparameters object every trainer function receives) becomes
   its frozen literal;
2. constant expressions fold (`not`, comparisons, `and`/`or` short-circuit, `x if c else y`), `if`/`elif`/`else`
   with a constant test keep only the taken branch;
3. the inliner then drops top-level defs/classes and imports nothing references any more.

Genuinely free knobs (paths, seed, run id, iterations, wall clock, learning rates, sizes, ...) keep reading the
environment. Numeric switches whose 0 means "off" (EVAL_STRIDE, LATE_QAT_THRESHOLD, ...) are frozen only when
the run has them off; when on, their value stays free.
"""

from __future__ import annotations

import ast
import math
import re

import libcst as cst

from trainer.errors import PgolfError

# Fields that select code paths (booleans and choices): always frozen.
SWITCHES = (
    "mlp_activation", "tie_embeddings", "ln_scale", "smear_gate", "ve_enabled", "gated_attention", "value_residual",
    "unet_skips", "ortho_init", "param_banks", "distributed_muon", "ema_enabled", "ema_warmup", "ema_reset_on_qat",
    "swa_enabled", "qat_enabled", "bit_pack", "compressor", "gptq_enabled", "gptq_calib_source", "ttt_enabled",
    "ttt_optimizer", "ttt_cosine", "ttt_freeze_embed",
)
# Numeric fields where 0 (or "") switches a feature off: frozen only when the run has them off.
OFF_WHEN_ZERO = (
    "late_qat_threshold", "qat_start_frac", "post_qat_seconds", "ttt_ema_decay", "grad_clip_norm",
    "bigram_vocab_size", "xsa_last_n", "rope_dims", "byte_shuffle", "eval_stride", "logit_softcap",
    "quant_clip_search", "gptq_reserve_seconds", "muon_wd", "adam_wd", "lr_warmup_steps", "ttt_freeze_blocks",
)
# The name trainer functions give the Hyperparameters object.
HP_NAME = "h"


class SpecializeError(PgolfError):
    """The source cannot be specialized safely."""


def frozen_values(baked: dict) -> dict:
    """field -> value the specialized file fixes, from the baked configuration (values as the file resolves them)."""
    from trainer.config import Hyperparameters

    out = {}
    for name, _t, default, _m in Hyperparameters.fields_meta():
        value = type(default)(baked.get(name, default))
        if name in SWITCHES or (name in OFF_WHEN_ZERO and not value):
            out[name] = value
    return out


# ------------------------------------------------------------------------------------------------ constant folding

_ATOMIC = (cst.Name, cst.Attribute, cst.Call, cst.Subscript, cst.Integer, cst.Float, cst.SimpleString,
           cst.ConcatenatedString, cst.FormattedString, cst.Tuple, cst.List, cst.Dict, cst.Set)
_UNSET = object()
_CONVERSIONS = {"bool": bool, "int": int, "float": float}


def _literal_node(value) -> cst.BaseExpression | None:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        node = cst.parse_expression(repr(value))
        return _paren(node)
    return None


def _paren(node: cst.BaseExpression) -> cst.BaseExpression:
    """`node` safe to put where its parent expression was (a branch or operand may bind looser than its slot)."""
    if isinstance(node, _ATOMIC) or node.lpar:
        return node
    return node.with_changes(lpar=[cst.LeftParen()], rpar=[cst.RightParen()])


_NON_LITERAL = (cst.Attribute, cst.Call, cst.Subscript, cst.FormattedString, cst.Lambda, cst.ListComp,
                cst.GeneratorExp, cst.DictComp, cst.SetComp, cst.Await, cst.Yield, cst.NamedExpr)


def _literal_only(node) -> bool:
    """Cheap pre-check before generating code: no names (other than True/False/None), calls or attributes."""
    if isinstance(node, _NON_LITERAL) or (isinstance(node, cst.Name) and node.value not in ("True", "False", "None")):
        return False
    return all(_literal_only(c) for c in node.children)


def _const(node) -> object:
    """The value of a literal-only expression, or _UNSET."""
    if isinstance(node, cst.Name) and node.value in ("True", "False", "None"):
        return {"True": True, "False": False, "None": None}[node.value]
    if isinstance(node, (cst.Integer, cst.Float, cst.SimpleString, cst.ConcatenatedString, cst.UnaryOperation,
                         cst.Comparison, cst.BooleanOperation, cst.Tuple, cst.BinaryOperation)):
        if not _literal_only(node):
            return _UNSET
        code = cst.Module([]).code_for_node(node)
        try:
            tree = ast.parse(code.strip(), mode="eval")
        except SyntaxError:
            return _UNSET
        allowed = (ast.Expression, ast.Constant, ast.UnaryOp, ast.Compare, ast.BoolOp, ast.Tuple, ast.BinOp,
                   ast.Load, ast.cmpop, ast.unaryop, ast.boolop, ast.operator)
        if not all(isinstance(n, allowed) for n in ast.walk(tree)):
            return _UNSET
        if any(isinstance(n, ast.BinOp) and isinstance(n.op, (ast.Pow, ast.LShift, ast.Mult)) for n in ast.walk(tree)):
            return _UNSET  # no constant can blow up in size or time
        try:
            return eval(compile(tree, "<const>", "eval"), {"__builtins__": {}})  # literals and operators only
        except Exception:
            return _UNSET
    return _UNSET


class _Specializer(cst.CSTTransformer):
    def __init__(self, frozen: dict):
        self.frozen = frozen
        self.substituted: set[str] = set()
        self.folded = 0
        self.in_fstring = 0
        self.elifs: set[int] = set()
        self.fold_conversions = True
        self.self_consts: dict = {}  # class name -> {attr: literal value}
        self.class_stack: list[str] = []
        self.in_target = 0
        self.scope: list[str] = []
        self.skip_names: set[int] = set()
        self.param_consts: dict = {}  # top-level function/class -> {param: literal}
        self.class_names: set[str] = set()

    # An f-string keeps its expressions (a substituted string literal could clash with the f-string's quotes).
    def visit_FormattedString(self, node):
        self.in_fstring += 1

    def leave_FormattedString(self, original, updated):
        self.in_fstring -= 1
        return updated

    # h.<frozen field> -> literal (never as an assignment target; checked by the caller)
    def leave_Attribute(self, original, updated):
        if self.in_fstring:
            return updated
        if (self.class_stack and not self.in_target and isinstance(updated.value, cst.Name)
                and updated.value.value == "self"):
            consts = self.self_consts.get(self.class_stack[-1], {})
            if updated.attr.value in consts:
                node = _literal_node(consts[updated.attr.value])
                if node is not None:
                    self.folded += 1
                    return node
        if isinstance(updated.value, cst.Name) and updated.value.value == HP_NAME and updated.attr.value in self.frozen:
            node = _literal_node(self.frozen[updated.attr.value])
            if node is not None:
                self.substituted.add(updated.attr.value)
                return node
        return updated

    def _fold(self, updated):
        v = _const(updated)
        if v is _UNSET or not isinstance(v, (bool, int, float, str, type(None))):
            return updated
        node = _literal_node(v)
        if node is None:
            return updated
        self.folded += 1
        return node

    def leave_Call(self, original, updated):
        # bool(0), int(1.0), float(1): the conversions a substituted field often sits in (names never rebound).
        if (isinstance(updated.func, cst.Name) and updated.func.value in _CONVERSIONS and self.fold_conversions
                and len(updated.args) == 1 and updated.args[0].keyword is None and updated.args[0].star == ""):
            v = _const(updated.args[0].value)
            if v is not _UNSET and isinstance(v, (bool, int, float)):
                node = _literal_node(_CONVERSIONS[updated.func.value](v))
                if node is not None:
                    self.folded += 1
                    return node
        return updated

    # self.<attr> of a class whose only assignment of that attribute is `self.<attr> = <literal>` in __init__
    def visit_ClassDef(self, node):
        self.class_stack.append(node.name.value)
        self.scope.append(node.name.value)
        self.skip_names.add(id(node.name))

    def leave_ClassDef(self, original, updated):
        self.class_stack.pop()
        self.scope.pop()
        return updated

    # parameters every call passes the same literal (top-level functions and class __init__)
    def visit_FunctionDef(self, node):
        self.scope.append(node.name.value)
        self.skip_names.add(id(node.name))

    def leave_FunctionDef(self, original, updated):
        self.scope.pop()
        return updated

    def visit_Param(self, node):
        self.skip_names.add(id(node.name))

    def visit_Arg(self, node):
        if node.keyword is not None:
            self.skip_names.add(id(node.keyword))

    def visit_Attribute(self, node):
        self.skip_names.add(id(node.attr))

    def _param_map(self) -> dict:
        if not self.param_consts or not self.scope:
            return {}
        m = self.param_consts.get(self.scope[0], {})
        if m and self.scope[0] in self.class_names:  # a class: only its __init__ reads the parameters
            return m if len(self.scope) >= 2 and self.scope[1] == "__init__" else {}
        return m

    def leave_Name(self, original, updated):
        if self.in_fstring or id(original) in self.skip_names:
            return updated
        m = self._param_map()
        if updated.value in m:
            node = _literal_node(m[updated.value])
            if node is not None:
                self.folded += 1
                return node
        return updated

    def visit_AssignTarget(self, node):
        self.in_target += 1

    def leave_AssignTarget(self, original, updated):
        self.in_target -= 1
        return updated

    def leave_UnaryOperation(self, original, updated):
        if isinstance(updated.operator, cst.Minus) and isinstance(updated.expression, (cst.Integer, cst.Float)):
            return updated  # a negative literal is already as small as it gets
        return self._fold(updated)

    def leave_Comparison(self, original, updated):
        return self._fold(updated)

    def leave_BooleanOperation(self, original, updated):
        left = _const(updated.left)
        if left is _UNSET:
            return updated
        self.folded += 1
        is_and = isinstance(updated.operator, cst.And)
        # `a and b` is a when a is falsy, else b; `a or b` is a when a is truthy, else b (value semantics).
        if bool(left) != is_and:
            return _paren(updated.left)
        return _paren(updated.right)

    def leave_IfExp(self, original, updated):
        test = _const(updated.test)
        if test is _UNSET:
            return updated
        self.folded += 1
        return _paren(updated.body if test else updated.orelse)

    def visit_If(self, node):
        if isinstance(node.orelse, cst.If):
            self.elifs.add(id(node.orelse))

    def leave_If(self, original, updated):
        if id(original) in self.elifs:
            return updated  # an elif cannot become a sequence; the `if` that owns the chain folds it
        # Fold constant elif tests first: a true one becomes the final `else`, a false one is skipped.
        orelse = updated.orelse
        while isinstance(orelse, cst.If):
            t = _const(orelse.test)
            if t is _UNSET:
                break
            self.folded += 1
            orelse = cst.Else(body=orelse.body) if t else orelse.orelse
        if orelse is not updated.orelse:
            updated = updated.with_changes(orelse=orelse)
        test = _const(updated.test)
        if test is _UNSET:
            return updated
        self.folded += 1
        if test:
            return cst.FlattenSentinel(_block_statements(updated.body))
        if updated.orelse is None:
            return cst.RemoveFromParent()
        if isinstance(updated.orelse, cst.If):  # elif: becomes a plain if in the parent block
            return updated.orelse
        return cst.FlattenSentinel(_block_statements(updated.orelse.body))

    def leave_IndentedBlock(self, original, updated):
        body = list(updated.body)
        # Statements after a return/raise/continue/break in the same block never run (folding exposes these).
        for i, st in enumerate(body):
            if isinstance(st, cst.SimpleStatementLine) and any(
                    isinstance(x, (cst.Return, cst.Raise, cst.Continue, cst.Break)) for x in st.body):
                body = body[:i + 1]
                break
        if not body:
            body = [cst.SimpleStatementLine([cst.Pass()])]
        return updated.with_changes(body=body) if len(body) != len(updated.body) or not updated.body else updated


def _block_statements(block) -> list:
    if isinstance(block, cst.SimpleStatementSuite):
        return [cst.SimpleStatementLine(body=list(block.body))]
    return list(block.body)


def _trees(stmts: list) -> list:
    from builder.inline import _ast_of

    return [t for s in stmts for t in _ast_of(s)]


def _assigned_fields(stmts: list) -> set[str]:
    """Fields of `h` assigned anywhere (h.x = ..., h.x += ..., setattr(h, "x", ...)): those cannot be frozen."""
    out = set()
    from builder.inline import _ast_of

    for stmt in stmts:
        for node in (n for top in _ast_of(stmt) for n in ast.walk(top)):
            targets = []
            if isinstance(node, ast.Assign):
                targets = node.targets
            elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
                targets = [node.target]
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("setattr", "delattr"):
                if node.args and isinstance(node.args[0], ast.Name) and node.args[0].id == HP_NAME and len(node.args) > 1 \
                        and isinstance(node.args[1], ast.Constant):
                    out.add(node.args[1].value)
            for t in targets:
                for sub in ast.walk(t):
                    if isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Name) and sub.value.id == HP_NAME:
                        out.add(sub.attr)
    return out


def _rebound_names(trees: list) -> set[str]:
    """Names bound anywhere (assignment, parameter, def, class, import, loop or with target)."""
    out = set()
    for t in trees:
        for n in ast.walk(t):
            if isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del)):
                out.add(n.id)
            elif isinstance(n, ast.arg):
                out.add(n.arg)
            elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                out.add(n.name)
            elif isinstance(n, ast.alias):
                out.add((n.asname or n.name).split(".")[0])
    return out


def _self_constants(trees: list) -> dict:
    """{class: {attr: value}} for attributes whose only assignment in the whole file (to any object, in any class,
    `del` and `setattr` included; no computed setattr and no `__dict__`/`vars` anywhere) is a direct
    `self.attr = <literal>` statement of that class's __init__. Reading such an attribute in the class's own body
    is then the literal (getattr reads stay valid: the assignment is kept)."""
    nodes = [n for t in trees for n in ast.walk(t)]
    count: dict[str, int] = {}
    for n in nodes:
        targets = []
        if isinstance(n, ast.Assign):
            targets = n.targets
        elif isinstance(n, (ast.AugAssign, ast.AnnAssign)):
            targets = [n.target]
        elif isinstance(n, ast.Delete):
            targets = n.targets
        elif isinstance(n, (ast.For, ast.AsyncFor, ast.comprehension)):
            targets = [n.target]
        elif isinstance(n, ast.withitem) and n.optional_vars is not None:
            targets = [n.optional_vars]
        elif isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in ("setattr", "delattr"):
            if len(n.args) < 2 or not isinstance(n.args[1], ast.Constant):
                return {}  # a computed attribute name could be anything
            count[str(n.args[1].value)] = count.get(str(n.args[1].value), 0) + 1
        elif isinstance(n, ast.Attribute) and n.attr == "__dict__" or isinstance(n, ast.Name) and n.id == "vars":
            return {}  # instance dictionaries written directly
        elif isinstance(n, ast.ClassDef):
            for st in n.body:  # class-level attributes also bind the name
                for tn in ast.walk(st) if isinstance(st, (ast.Assign, ast.AnnAssign)) else ():
                    if isinstance(tn, ast.Name) and isinstance(tn.ctx, ast.Store):
                        count[tn.id] = count.get(tn.id, 0) + 2
        for t in targets:
            for sub in ast.walk(t):
                if isinstance(sub, ast.Attribute):
                    count[sub.attr] = count.get(sub.attr, 0) + 1
    out: dict = {}
    for t in trees:
        for cls in (t if isinstance(t, list) else [t]):
            if not isinstance(cls, ast.ClassDef):
                continue
            for fn in cls.body:
                if not (isinstance(fn, ast.FunctionDef) and fn.name == "__init__" and fn.args.args):
                    continue
                me = fn.args.args[0].arg
                for st in fn.body:
                    if (isinstance(st, ast.Assign) and len(st.targets) == 1 and isinstance(st.targets[0], ast.Attribute)
                            and isinstance(st.targets[0].value, ast.Name) and st.targets[0].value.id == me
                            and isinstance(st.value, ast.Constant) and isinstance(st.value.value, (bool, int, float, str, type(None)))):
                        attr = st.targets[0].attr
                        if count.get(attr) == 1 and not attr.startswith("__"):
                            out.setdefault(cls.name, {})[attr] = st.value.value
    return out


def _constant_params(trees: list) -> dict:
    """{top-level function or class: {param: literal}} for parameters every call in the file passes the same
    literal (or leaves at the same literal default). Only names that are never used except as the callee of a
    plain call (no *args/**kwargs at the call, none in the signature), never rebound, never subclassed or
    decorated, and whose parameter is never reassigned or shadowed inside the body."""
    tops: dict = {}
    for t in trees:
        if isinstance(t, ast.FunctionDef) and not t.decorator_list:
            tops[t.name] = (t, 0)
        elif isinstance(t, ast.ClassDef) and not t.decorator_list:
            init = [f for f in t.body if isinstance(f, ast.FunctionDef) and f.name == "__init__"]
            if len(init) == 1 and not init[0].decorator_list:
                tops[t.name] = (init[0], 1)
    nodes = [n for t in trees for n in ast.walk(t)]
    loads: dict[str, int] = {}
    calls: dict[str, list] = {}
    for n in nodes:
        if isinstance(n, ast.Name) and n.id in tops:
            if isinstance(n.ctx, ast.Load):
                loads[n.id] = loads.get(n.id, 0) + 1
            else:
                tops.pop(n.id)  # rebound somewhere
        elif isinstance(n, ast.Call) and isinstance(n.func, ast.Name):
            calls.setdefault(n.func.id, []).append(n)
        elif isinstance(n, ast.ClassDef):
            for b in n.bases:
                if isinstance(b, ast.Name):
                    tops.pop(b.id, None)
        elif isinstance(n, ast.Constant) and isinstance(n.value, str):
            for word in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", n.value):
                tops.pop(word, None)  # globals()["name"] and friends
        elif isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name in tops and tops[n.name][0] is not n:
            if not (isinstance(n, ast.ClassDef) and tops[n.name][1] == 1):
                tops.pop(n.name)  # defined twice
    out: dict = {}
    for name, (fn, skip) in tops.items():
        sites = calls.get(name, [])
        if not sites or loads.get(name, 0) != len(sites):
            continue
        a = fn.args
        if a.vararg or a.kwarg or a.posonlyargs or a.kwonlyargs:
            continue
        params = [x.arg for x in a.args][skip:]
        defaults = dict(zip([x.arg for x in a.args][len(a.args) - len(a.defaults):], a.defaults))
        values: dict = {}
        ok = True
        for c in sites:
            if any(isinstance(x, ast.Starred) for x in c.args) or any(k.arg is None for k in c.keywords):
                ok = False
                break
            given = dict(zip(params, c.args))
            given.update((k.arg, k.value) for k in c.keywords)
            for p in params:
                v = given.get(p, defaults.get(p))
                key = (type(v.value), v.value) if isinstance(v, ast.Constant) and isinstance(
                    v.value, (bool, int, float, str, type(None))) else None
                values.setdefault(p, []).append(key)
        if not ok:
            continue
        inner = [n for st in fn.body for n in ast.walk(st)]
        bound = {n.id for n in inner if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load)}
        bound |= {n.arg for n in inner if isinstance(n, ast.arg)}
        bound |= {n.name for n in inner if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))}
        bound |= {x for n in inner if isinstance(n, (ast.Global, ast.Nonlocal)) for x in n.names}
        bound |= {(n.asname or n.name).split(".")[0] for n in inner if isinstance(n, ast.alias)}
        for p, keys in values.items():
            if keys[0] is not None and all(k == keys[0] for k in keys) and p not in bound:
                out.setdefault(name, {})[p] = keys[0][1]
    return out


# ------------------------------------------------------------------------------------------------ the frozen check

def _guard_method(frozen_names: list[str]) -> cst.FunctionDef:
    """`__post_init__` for the Hyperparameters dataclass: a frozen field resolved to another value stops the run."""
    names = "{" + ",".join(repr(n) for n in frozen_names) + "}"
    code = (
        "def __post_init__(self):\n"
        "    for n, _t, d, m in self.fields_meta():\n"
        "        v = type(d)(BAKED_CONFIG.get(n, d))\n"
        f"        if n in {names} and getattr(self, n) != v:\n"
        "            raise ConfigError(f\"{m['env']}={getattr(self, n)!r}: this train_gpt.py was specialized to "
        "{m['env']}={v!r} and the code for other values was removed (build without --specialize to change it)\")\n"
    )
    return cst.parse_statement(code)


def _add_guard(stmt, frozen_names: list[str]):
    if not (isinstance(stmt, cst.ClassDef) and stmt.name.value == "Hyperparameters"):
        return stmt, False
    body = list(stmt.body.body)
    if any(isinstance(s, cst.FunctionDef) and s.name.value == "__post_init__" for s in body):
        raise SpecializeError("Hyperparameters already defines __post_init__; cannot add the frozen-switch check")
    return stmt.with_changes(body=stmt.body.with_changes(body=body + [_guard_method(frozen_names)])), True


def specialize_sections(sections: list[tuple[str, list]], tail: list, frozen: dict) -> tuple[list, list, list[str]]:
    """Substitute frozen fields and fold constant branches in every statement. Returns (sections, tail, frozen
    field names actually substituted, which the added check enforces)."""
    from builder.inline import _ast_of

    all_stmts = [s for _, ss in sections for s in ss] + list(tail)
    assigned = _assigned_fields(all_stmts)
    frozen = {k: v for k, v in frozen.items() if k not in assigned}
    tr = _Specializer(frozen)

    def may_change(stmt) -> bool:
        # Untouched statements keep their identity (and the inliner's cached analysis of them); only those that
        # read a frozen field, convert a constant, or belong to a class with literal attributes are rewritten.
        for n in (n for top in _ast_of(stmt) for n in ast.walk(top)):
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == HP_NAME and n.attr in frozen:
                return True
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in _CONVERSIONS \
                    and n.args and isinstance(n.args[0], ast.Constant):
                return True
            if isinstance(n, ast.ClassDef) and n.name in tr.self_consts:
                return True
            if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name in tr.param_consts:
                return True
        return False

    def visit_all(stmts):
        new = []
        for s in stmts:
            if not may_change(s):
                new.append(s)
                continue
            r = s.visit(tr)
            if isinstance(r, cst.FlattenSentinel):
                new.extend(r.nodes)
            elif not isinstance(r, cst.RemovalSentinel):
                new.append(r)
        return new

    tr.fold_conversions = not (set(_CONVERSIONS) & _rebound_names(_trees(all_stmts)))
    out_sections = [(label, visit_all(stmts)) for label, stmts in sections]
    new_tail = visit_all(tail)
    # Further passes: attributes that folding made literal (self.banked = False) fold where their class reads them;
    # parameters every call now passes as the same literal fold inside their function. Repeat while that helps.
    for _round in range(4):
        trees = _trees([s for _, ss in out_sections for s in ss] + new_tail)
        tr.class_names = {t.name for t in trees if isinstance(t, ast.ClassDef)}
        tr.self_consts, tr.param_consts = _self_constants(trees), _constant_params(trees)
        if not tr.self_consts and not tr.param_consts:
            break
        before = tr.folded
        out_sections = [(label, visit_all(stmts)) for label, stmts in out_sections]
        new_tail = visit_all(new_tail)
        if tr.folded == before:
            break
    names = sorted(tr.substituted)
    found = False
    if names:
        guarded = []
        for label, stmts in out_sections:
            ss = []
            for s in stmts:
                s, hit = _add_guard(s, names)
                found = found or hit
                ss.append(s)
            guarded.append((label, ss))
        out_sections = guarded
        if not found:
            raise SpecializeError("no top-level Hyperparameters class in the single-file set; cannot enforce frozen switches")
    return out_sections, new_tail, names
