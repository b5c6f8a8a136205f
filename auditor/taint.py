"""The label walker: one pass over a function body computing labels (VAL, TRAIN, TGT, LOSS, ...), guards, loops,
calls and sites. Used by auditor.flow.Program; see its docstring for the labels and sites."""

from __future__ import annotations

import re

import libcst as cst

from auditor.config import UNKNOWN
from auditor.flow import Call, Func, Loop, Program, Site
from auditor.flow_labels import (
    _ACC_NAME,
    _INPUT_NAMES,
    _IO_CALL,
    _LOSS_CALL,
    _NET_FUNCS,
    _NET_MODULES,
    _SANITIZERS,
    _SAVE_FUNCS,
    _SHELL_NET,
    _TGT_NAMES,
    GATE,
    GRAD,
    HASHT,
    LOSS,
    STATS,
    TGT,
    TRAIN,
    VAL,
    _assigned_in,
    _is_count_update,
    _is_input_slice,
    _is_shift_slice,
    _is_true,
    _loop_selects_data,
    _mixes,
    _root_names,
    _string_literals,
    _target_names,
    dotted,
    last_name,
    name_source,
)
from auditor.cstwalk import walk

_GRAD_OFF = {"no_grad", "inference_mode"}
_TUPK = "TUPK"  # a tuple of the target and other data: a target-keyed lookup when used as a key


def _stream_reads(f, node, depth: int = 3) -> list:
    """[(stream, index code, index roots, behind)] of subscripts an expression reads, directly or through the
    assignments (and `h ^= ...` updates) of the names it uses, a few levels back. `behind`: the index is an offset
    back from a position (`s[pos - k]`, `s[off:off + n]` with `off = start - (n - 1) + k`)."""
    out, seen, frontier = [], set(), [node]
    for _ in range(depth):
        nxt = []
        for n in frontier:
            for sub in walk(n):
                if isinstance(sub, cst.Subscript) and isinstance(sub.value, (cst.Name, cst.Attribute)):
                    code = f.unit.code(sub.slice[0].slice) if sub.slice else ""
                    roots = set()
                    for el in sub.slice:
                        roots |= _root_names(el.slice)
                    behind = "-" in code.split(":")[0] or any(
                        "-" in f.unit.code(v) for r in roots for v in f.defs.get(r, [])[:3]
                    )
                    out.append((dotted(sub.value), code, roots, behind))
            for r in _root_names(n) - seen:
                seen.add(r)
                nxt += f.defs.get(r, [])[:4] + f.augs.get(r, [])[:4]
        frontier = nxt
        if not frontier:
            break
    return out


def _hash_mix(node: cst.BinaryOperation) -> bool:
    """`h ^ (tok * P)` or `h * P + tok`: how hashed n-gram keys combine a context hash with one more token (index
    arithmetic such as `starts[:, None] + cols` is no hash)."""
    if isinstance(node.operator, cst.BitXor):
        return True
    if isinstance(node.operator, (cst.Add, cst.BitOr)):
        return any(isinstance(n, cst.BinaryOperation) and isinstance(n.operator, cst.Multiply) for n in walk(node))
    return False


_FLOAT_FUNCS = {"exp", "log", "log1p", "expm1", "sqrt", "softmax", "log_softmax", "sigmoid", "tanh"}


def _floaty(node) -> bool:
    """Real-valued arithmetic (float literals, exp/log...): a product that is no integer hash."""
    return any(
        isinstance(n, cst.Float) or (isinstance(n, cst.Call) and last_name(n.func) in _FLOAT_FUNCS) for n in walk(node)
    )


def _exp_terms(node) -> bool:
    return any(isinstance(n, cst.Call) and last_name(n.func) == "exp" for n in walk(node))


def _extends_context(f, left, right) -> bool:
    """`ctx_hash ^ (s[pos] * prime)` where ctx_hash mixes `s[pos - k]`: a key of the context plus the token that
    follows it (the token being predicted when the key is looked up), as opposed to a key of context tokens only."""
    a, b = _stream_reads(f, left), _stream_reads(f, right)
    for x, y in ((a, b), (b, a)):
        back = [(s, roots) for s, _c, roots, behind in x if behind and roots]
        ahead = [(s, roots) for s, code, roots, behind in y if not behind and roots and "-" not in code]
        for s1, r1 in back:
            for s2, r2 in ahead:
                if s1 == s2 and (r1 | {v for r in r1 for d in f.defs.get(r, [])[:3] for v in _root_names(d)}) & r2:
                    return True
    return False


class _Walker:
    """One pass over a function body: labels, guards, loops, calls and sites."""

    def __init__(self, prog: Program, func: Func):
        self.prog = prog
        self.f = func
        self.unit = func.unit
        self._rec = False
        self._pass = 0
        self.order = 0
        self.loops: list = []
        self.guards: list = []  # (value, code)
        self.branch: list = []
        self.nograd = any(d.endswith(("no_grad", "inference_mode")) for d in func.decorators)
        self.tgt_gate = 0
        if func.parent is not None:
            for k, v in func.parent.taint.items():
                func.taint.setdefault(k, v)
        for p, labels in func.param_labels.items():
            func.taint[p] = frozenset(func.taint.get(p, frozenset()) | labels)
        for p in func.params:
            src = name_source(p)
            if src:
                func.taint[p] = frozenset(func.taint.get(p, frozenset()) | src)

    # -------------------------------------------------------------- driver
    def run(self) -> None:
        stmts = self.f.node.body if self.f.is_module else self._body(self.f.node.body)
        # a second pass only matters when loops carry labels from the end of a body back to its start
        for i in range(2):
            self._pass = i
            self.order = 0
            self._seen_loop = False
            self._rec = True
            self.f.sites, self.f.calls = [], []
            self.block(stmts)
            if not self._seen_loop:
                break

    def block(self, stmts) -> None:
        for s in stmts:
            self.stmt(s)

    # -------------------------------------------------------------- statements
    def stmt(self, s) -> None:
        self.order += 1
        if isinstance(s, cst.SimpleStatementLine):
            for small in s.body:
                self.small(small)
        elif isinstance(s, (cst.FunctionDef, cst.ClassDef)):
            if isinstance(s, cst.ClassDef) and self.f.is_module:
                # class bodies run at definition: nested function defs are separate Funcs
                self.block(
                    [b for b in s.body.body if not isinstance(b, cst.FunctionDef)]
                    if isinstance(s.body, cst.IndentedBlock)
                    else []
                )
            return
        elif isinstance(s, cst.If):
            self.if_stmt(s)
        elif isinstance(s, (cst.For,)):
            self.for_stmt(s)
        elif isinstance(s, cst.While):
            self.while_stmt(s)
        elif isinstance(s, cst.With):
            self.with_stmt(s)
        elif isinstance(s, cst.Try) or type(s).__name__ == "TryStar":
            self.block(s.body.body)
            for h in s.handlers:
                self.block(h.body.body)
            if s.orelse:
                self.block(s.orelse.body.body)
            if s.finalbody:
                self.block(s.finalbody.body.body)
        elif type(s).__name__ == "Match":
            self.expr(s.subject)
            for case in s.cases:
                self.block(case.body.body)
        else:
            body = getattr(s, "body", None)
            if isinstance(body, cst.IndentedBlock):
                self.block(body.body)

    @staticmethod
    def _body(node):
        if isinstance(node, cst.IndentedBlock):
            return node.body
        if isinstance(node, cst.SimpleStatementSuite):
            return [cst.SimpleStatementLine(body=node.body)]
        return []

    def if_stmt(self, s: cst.If) -> None:
        test_labels = self.expr(s.test)
        self._keep_better(s)
        cached = self.prog.guard_cache.get(id(s))
        if cached is None:
            code = self.unit.code(s.test)
            main_guard = "__name__" in code and "__main__" in code
            value = True if main_guard else self.prog.cfg.eval(s.test, self.unit)
            if value is not UNKNOWN and not value and self._observed(s.test):
                value = UNKNOWN  # the logs show the feature ran
            cached = self.prog.guard_cache[id(s)] = (value, code)
        value, code = cached
        gate = TGT in test_labels or GATE in test_labels
        self.guards.append((value, code))
        self.branch.append((id(s), 0))
        self.tgt_gate += gate
        self.block(self._body(s.body))
        self.tgt_gate -= gate
        self.branch.pop()
        self.guards.pop()
        if s.orelse is not None:
            neg = UNKNOWN if value is UNKNOWN else (not value)
            self.guards.append((neg, f"not ({code})"))
            self.branch.append((id(s), 1))
            self.tgt_gate += gate
            if isinstance(s.orelse, cst.If):
                self.if_stmt(s.orelse)
            else:
                self.block(self._body(s.orelse.body))
            self.tgt_gate -= gate
            self.branch.pop()
            self.guards.pop()

    def _keep_better(self, s: cst.If) -> None:
        """`if new_nll < old_nll: scored[t] = new_nll`: two losses of the same token compared and the better one
        written into the per-token scores (an oracle choice, like min())."""
        t = s.test
        if not (
            isinstance(t, cst.Comparison)
            and len(t.comparisons) == 1
            and isinstance(t.comparisons[0].operator, (cst.LessThan, cst.GreaterThan, cst.LessThanEqual,
                                                       cst.GreaterThanEqual))
        ):
            return
        a, b = self.expr(t.left), self.expr(t.comparisons[0].comparator)
        if not (LOSS in a and LOSS in b and VAL in (a | b)):
            return
        names = _root_names(t.left) | _root_names(t.comparisons[0].comparator)
        for n in walk(s.body):
            if isinstance(n, cst.Assign) and any(isinstance(x.target, cst.Subscript) for x in n.targets):
                if _root_names(n.value) & names:
                    self._site("min_loss", s, a | b, how="if-comparison")
                    return

    def _observed(self, test) -> bool:
        names = []
        for n in walk(test):
            if isinstance(n, cst.Name):
                names.append(n.value)
            elif isinstance(n, cst.SimpleString):
                try:
                    v = n.evaluated_value
                    if isinstance(v, str):
                        names.append(v)
                except Exception:
                    pass
        return self.prog.cfg.observed(names)

    def for_stmt(self, s: cst.For) -> None:
        self._seen_loop = True
        it = self.expr(s.iter)
        loop = Loop(node=s)
        targets = _target_names(s.target)
        loop.var_names = set(targets)
        is_range = isinstance(s.iter, cst.Call) and last_name(s.iter) == "range"
        self._assign_names(targets, it, s.target)
        # computed on the last pass only (a loop always triggers a second pass)
        selects = self._pass > 0 and _loop_selects_data(s, targets, self, loop)
        loop.is_data = (VAL in it and not is_range) or selects
        self.loops.append(loop)
        self.block(self._body(s.body))
        self.loops.pop()
        if s.orelse is not None:
            self.block(self._body(s.orelse.body))

    def while_stmt(self, s: cst.While) -> None:
        self._seen_loop = True
        self.expr(s.test)
        loop = Loop(node=s)
        assigned = _assigned_in(s.body) if self._pass > 0 else set()
        loop.var_names = assigned
        loop.is_data = self._pass > 0 and _loop_selects_data(s, assigned, self, loop)
        self.loops.append(loop)
        self.block(self._body(s.body))
        self.loops.pop()

    def with_stmt(self, s: cst.With) -> None:
        prev = self.nograd
        for item in s.items:
            self.expr(item.item)
            n = last_name(item.item)
            if n in _GRAD_OFF:
                self.nograd = True
            elif n == "enable_grad":
                self.nograd = False
            if item.asname is not None:
                self._assign_names(_target_names(item.asname.name), self.expr(item.item), item.asname.name)
        self.block(self._body(s.body))
        self.nograd = prev

    def small(self, s) -> None:
        if isinstance(s, cst.Assign):
            labels = self.expr(s.value)
            for t in s.targets:
                self._assign(t.target, s.value, labels)
        elif isinstance(s, cst.AnnAssign):
            if s.value is not None:
                self._assign(s.target, s.value, self.expr(s.value))
        elif isinstance(s, cst.AugAssign):
            self.aug_assign(s)
        elif isinstance(s, cst.Expr):
            self.expr(s.value)
        elif isinstance(s, cst.Return):
            if s.value is not None:
                labels = self.expr(s.value)
                if isinstance(s.value, cst.Tuple):
                    # which element carries a target-extended key (`return ctx_idx, full_idx`); returning several
                    # values is no key made of them
                    elems = tuple(HASHT in self.expr(e.value) for e in s.value.elements)
                    if not any(elems):
                        labels = labels - {HASHT, _TUPK}
                self.f.return_labels = frozenset(self.f.return_labels | labels)
                if isinstance(s.value, cst.Tuple):
                    prev = self.f.return_hasht
                    if prev is not None and len(prev) == len(elems):
                        elems = tuple(a or b for a, b in zip(prev, elems))
                    self.f.return_hasht = elems

    def aug_assign(self, s: cst.AugAssign) -> None:
        labels = self.expr(s.value)
        target = s.target
        tname = dotted(target) or last_name(target)
        if isinstance(target, cst.Subscript):
            idx_labels = frozenset().union(
                *[self.expr(e.slice.value) for e in target.slice if isinstance(e.slice, cst.Index)] or [frozenset()]
            )
            base = dotted(target.value) or last_name(target.value)
            if (VAL in idx_labels or VAL in labels) and LOSS not in labels:
                self._site("stats", s, idx_labels | labels, table=base)
                self._taint(base, frozenset({STATS}) | self._get(base))
            elif isinstance(s.operator, (cst.AddAssign, cst.SubtractAssign)) and VAL in labels and LOSS in labels:
                # a per-document / per-position buffer of losses (`doc_loss[b] += nll.sum()`) is scoring too
                self._taint(base, self._get(base) | labels)
                self._score(s, base, labels, s.value)
            return
        self._taint(tname, self._get(tname) | labels)
        if tname:
            vals = self.f.augs.setdefault(tname, [])
            if len(vals) < 8 and all(v is not s.value for v in vals):
                vals.append(s.value)
        if isinstance(s.operator, (cst.AddAssign, cst.SubtractAssign)) and VAL in labels and LOSS in labels:
            self._score(s, tname, labels, s.value)

    def _score(self, node, acc: str, labels, value_node) -> None:
        if not _ACC_NAME.search(acc.split(".")[-1] or ""):
            return
        roots = _root_names(value_node)
        if roots & self.f.backward_roots and not self.nograd:
            return  # logging the training loss, not scoring
        self._site("score", node, labels, acc=acc, roots=roots)

    # -------------------------------------------------------------- assignment
    def _assign(self, target, value, labels) -> None:
        if (
            isinstance(target, (cst.Tuple, cst.List))
            and isinstance(value, (cst.Tuple, cst.List))
            and len(target.elements) == len(value.elements)
        ):
            for te, ve in zip(target.elements, value.elements):
                self._assign(te.value, ve.value, self.expr(ve.value))
            return
        if isinstance(target, cst.Subscript):
            base = dotted(target.value) or last_name(target.value)
            idx = frozenset().union(
                *[self.expr(e.slice.value) for e in target.slice if isinstance(e.slice, cst.Index)] or [frozenset()]
            )
            if VAL in idx and LOSS not in labels and _is_count_update(value, base):
                self._site("stats", target, idx | labels, table=base)
                self._taint(base, self._get(base) | {STATS})
            if (
                VAL in labels
                and LOSS not in labels
                and re.search(r"(?i)state_dict|sd$|artifact|payload|buffers?", base)
            ):
                self._site("save_val", target, labels)
            keep = labels if base.split(".")[-1] in _TGT_NAMES else labels - {TGT}
            self._taint(base, self._get(base) | keep)
            return
        names = _target_names(target)
        if isinstance(target, (cst.Tuple, cst.List)) and isinstance(value, cst.Call) and HASHT in labels:
            per = self._hasht_elements(value, len(target.elements))
            if per is not None:
                for e, has in zip(target.elements, per):
                    self._assign_names(_target_names(e.value), labels if has else labels - {HASHT}, e.value, value)
                return
        self._assign_names(names, labels, target, value)

    def _hasht_elements(self, call, n: int):
        """Per unpacked element, whether the callee's returned tuple carries HASHT there (None: unknown)."""
        out = None
        for g in self.prog.by_name.get(last_name(call.func), []):
            if g.return_hasht is None or len(g.return_hasht) != n:
                return None
            out = g.return_hasht if out is None else tuple(a or b for a, b in zip(out, g.return_hasht))
        return out

    def _assign_names(self, names, labels, target_node, value=None) -> None:
        for n in names:
            lab = set(labels)
            short = n.split(".")[-1]
            if VAL in lab and (
                short in _TGT_NAMES or (value is not None and _is_shift_slice(value) and self._stream_base(value.value))
            ):
                lab.add(TGT)
            elif (
                short not in _TGT_NAMES
                and value is not None
                and isinstance(value, cst.Subscript)
                and _is_input_slice(value)
            ):
                lab.discard(TGT)
            lab |= name_source(short)
            self._taint(n, frozenset(lab) | (self._get(n) if self._weak() else frozenset()))
            if value is not None:
                self.f.defs.setdefault(n, [])
                if len(self.f.defs[n]) < 8 and all(v is not value for v in self.f.defs[n]):
                    self.f.defs[n].append(value)

    def _stream_base(self, base) -> bool:
        """Is `base` a token stream whose shifted view is the next-token target (`chunk[1:]`), rather than the model
        input inside a model/embedding method (`input_ids[..., 1:]` is the current token of a bigram hash)?"""
        if self.f.class_name is not None:
            return False
        name = (dotted(base) or last_name(base)).split(".")[-1].lower()
        return name not in _INPUT_NAMES

    def _weak(self) -> bool:
        # strong (overwriting) updates only on straight-line code of the first pass: later passes must keep what
        # loops carried back to the initialisations (`counts = zeros()` ... `counts[y] += 1` in the loop)
        return bool(self.loops or self.guards or self._pass)

    def _get(self, name: str) -> frozenset:
        return self.f.taint.get(name, frozenset())

    def _taint(self, name: str, labels) -> None:
        if name:
            self.f.taint[name] = frozenset(labels)

    # -------------------------------------------------------------- expressions
    def expr(self, node) -> frozenset:
        try:
            return self._expr(node, 0)
        except RecursionError:
            return frozenset()

    def _expr(self, node, depth) -> frozenset:
        lab = self._expr1(node, depth)
        if _TUPK in lab and not isinstance(node, (cst.Tuple, cst.Name)):
            lab = lab - {_TUPK}  # a (target, context) tuple is a key where it is used directly, not what it feeds
        return lab

    def _expr1(self, node, depth) -> frozenset:
        if node is None or depth > 200:
            return frozenset()
        ex = lambda n: self._expr(n, depth + 1)  # noqa: E731
        if isinstance(node, cst.Name):
            lab = self._get(node.value) | name_source(node.value)
            if node.value in self.prog.by_name and node.value not in self.f.taint:
                self._ref(node)
            return lab
        if isinstance(node, cst.Attribute):
            d = dotted(node)
            lab = self._get(d) if d else frozenset()
            base = ex(node.value)
            if node.attr.value in _SANITIZERS:
                return frozenset()
            if node.attr.value in self.prog.by_name and d not in self.f.taint:
                self._ref(node)
            return lab | name_source(node.attr.value) | base
        if isinstance(node, (cst.SimpleString, cst.ConcatenatedString, cst.FormattedString)):
            if isinstance(node, cst.FormattedString):
                for part in node.parts:
                    if isinstance(part, cst.FormattedStringExpression):
                        ex(part.expression)
                return frozenset()
            try:
                v = node.evaluated_value
            except Exception:
                v = None
            if isinstance(v, str):
                lv = v.lower()
                if "fineweb_val" in lv or re.search(r"(^|[/_])val_\d*\*?\.bin|_val_\*", lv):
                    return frozenset({VAL})
                if "fineweb_train" in lv or re.search(r"(^|[/_])train_\d*\*?\.bin|_train_\*", lv):
                    return frozenset({TRAIN})
            return frozenset()
        if isinstance(node, cst.Call):
            return self.call(node, depth)
        if isinstance(node, cst.Subscript):
            base = ex(node.value)
            idx = frozenset()
            for el in node.slice:
                sl = el.slice
                if isinstance(sl, cst.Index):
                    idx |= ex(sl.value)
                elif isinstance(sl, cst.Slice):
                    idx |= ex(sl.lower) | ex(sl.upper) | ex(sl.step)
            if HASHT in idx or _TUPK in idx:
                self._site("tgt_key", node, idx)
            lab = set(base)
            if VAL in base and _is_shift_slice(node) and self._stream_base(node.value):
                lab.add(TGT)
            if TGT in idx and (LOSS in base or STATS in base):
                lab.add("TGATHER")  # a probability/count read at the realized target
            elif TGT in idx and not base & {LOSS, STATS}:
                lab.add("TLUT")  # a per-token property of the realized target (its byte length, its bytes)
            if STATS in base:
                lab.add(STATS)
            # indexing a table with tokens: result depends on those tokens
            lab |= idx & {VAL, TRAIN, STATS}
            return frozenset(lab)
        if isinstance(node, cst.BinaryOperation):
            left, right = ex(node.left), ex(node.right)
            lab = left | right
            if isinstance(node.operator, cst.Divide) and LOSS in left and "TLUT" in right:
                lab = lab | {"SPREAD"}  # a log-probability divided by the realized token's byte count
            elif isinstance(node.operator, cst.Add) and ("SPREAD" in left) != ("SPREAD" in right):
                other = right if "SPREAD" in left else left
                if other & {LOSS, STATS} and _exp_terms(node.left) and _exp_terms(node.right):
                    # p = lam * exp(token_lp / n_bytes) + (1 - lam) * exp(byte_model_lp)
                    self._site("byte_mix", node, lab)
            if isinstance(node.operator, (cst.BitXor, cst.Multiply, cst.Modulo, cst.LeftShift, cst.Add, cst.BitOr)):
                concat = isinstance(node.left, (cst.List, cst.Tuple)) or isinstance(node.right, (cst.List, cst.Tuple))
                # `p_top * (exp(b) - 1)` is arithmetic on a probability, not a key: plain products need a hash op
                scalar = isinstance(node.operator, cst.Multiply) and _floaty(node)
                if not concat and not scalar and (
                    (TGT in left and _mixes(right, node.right)) or (TGT in right and _mixes(left, node.left))
                ):
                    if LOSS not in lab:
                        lab = lab | {HASHT}
                elif (
                    _hash_mix(node)
                    and self._pass > 0
                    and VAL in lab
                    and LOSS not in lab
                    and _extends_context(self.f, node.left, node.right)
                ):
                    lab = lab | {HASHT}  # context hash extended by the token that follows the context
            return frozenset(lab)
        if isinstance(node, cst.UnaryOperation):
            return ex(node.expression)
        if isinstance(node, cst.BooleanOperation):
            return ex(node.left) | ex(node.right)
        if isinstance(node, cst.Comparison):
            parts = [ex(node.left)] + [ex(c.comparator) for c in node.comparisons]
            lab = frozenset().union(*parts)
            # a gate on the target: the target compared with another data-dependent value (a prediction, a cache
            # entry); comparisons with constants (`y != pad_id`, `y >= 0`) are masks
            if any(TGT in p for p in parts) and any(TGT not in p and p & {VAL, LOSS, STATS, TRAIN} for p in parts):
                lab = lab | {GATE}
            return frozenset(lab - {TGT})
        if isinstance(node, (cst.Tuple, cst.List, cst.Set)):
            parts = [ex(e.value) for e in node.elements]
            lab = frozenset().union(*parts) if parts else frozenset()
            if (
                isinstance(node, cst.Tuple)
                and any(TGT in p for p in parts)
                and any(TGT not in p and p & {VAL} for p in parts)
            ):
                lab = lab | {_TUPK}  # a key only where it is used as one (an index, a .get() key)
            return lab
        if isinstance(node, cst.Dict):
            lab = frozenset()
            for el in node.elements:
                if isinstance(el, cst.DictElement):
                    lab |= ex(el.key) | ex(el.value)
                else:
                    lab |= ex(el.value)
            return lab
        if isinstance(node, cst.IfExp):
            t = ex(node.test)
            lab = ex(node.body) | ex(node.orelse)
            return lab | ({GATE} if TGT in t or GATE in t else frozenset())
        if isinstance(node, (cst.ListComp, cst.GeneratorExp, cst.SetComp, cst.DictComp)):
            # comprehension variables are local to the comprehension: bind, evaluate, restore
            saved = {}
            lab = frozenset()
            comp = node.for_in
            while comp is not None:
                it = ex(comp.iter)
                for n in _target_names(comp.target):
                    saved.setdefault(n, self.f.taint.get(n))
                    self.f.taint[n] = frozenset(it)
                for cond in comp.ifs:
                    ex(cond.test)
                lab |= it
                comp = comp.inner_for_in
            if isinstance(node, cst.DictComp):
                lab |= ex(node.key) | ex(node.value)
            else:
                lab |= ex(node.elt)
            for n, v in saved.items():
                if v is None:
                    self.f.taint.pop(n, None)
                else:
                    self.f.taint[n] = v
            return lab
        if isinstance(node, cst.Lambda):
            return ex(node.body)
        if isinstance(node, cst.Await):
            return ex(node.expression)
        if isinstance(node, cst.NamedExpr):
            lab = ex(node.value)
            self._assign(node.target, node.value, lab)
            return lab
        if isinstance(node, cst.StarredElement):
            return ex(node.value)
        return frozenset()

    def _ref(self, node) -> None:
        if not self._rec:
            return
        name = last_name(node)
        self.f.calls.append(
            self._call_obj(
                name=name,
                dotted=dotted(node),
                node=node,
                order=self.order,
                loops=tuple(self.loops),
                off=self._off(),
                guards=self._offguards(),
                branch=tuple(self.branch),
                arg_labels=[],
                is_ref=True,
            )
        )

    def call(self, node: cst.Call, depth: int) -> frozenset:
        func = node.func
        name = last_name(func)
        full = self.prog.resolve(self.unit, func)
        recv = frozenset()
        if isinstance(func, cst.Attribute):
            recv = self._expr(func.value, depth + 1)
        args = []
        all_args = frozenset()
        fn_ref_at = None
        for i, a in enumerate(node.args):
            lab = self._expr(a.value, depth + 1)
            all_args |= lab
            key = a.keyword.value if a.keyword is not None else i
            args.append((key, lab, a))
            if (
                a.keyword is None
                and isinstance(a.value, (cst.Name, cst.Attribute))
                and last_name(a.value) in self.prog.by_name
                and fn_ref_at is None
                and not self._get(dotted(a.value))
            ):
                fn_ref_at = i
        pos_args = [(k, lab, a) for k, lab, a in args if isinstance(k, int)]
        if name in _SANITIZERS or full in ("len",):
            result = frozenset()
        else:
            # `load_validation_tokens(...)`, `get_val_batches(...)`: the callee's name says what it returns
            result = all_args | recv | name_source(name or "")
            for _k, _lab, a in args:  # nanoGPT style `get_batch("val")`
                if isinstance(a.value, cst.SimpleString):
                    v = a.value.value.strip("\"'").lower()
                    if v in ("val", "valid", "validation"):
                        result = result | {VAL}
                    elif v == "train":
                        result = result | {TRAIN}
        if name in ("gather", "take_along_dim") and TGT in all_args and (LOSS in recv or LOSS in all_args):
            result = result | {"TGATHER"}
        if name == "hash" and TGT in all_args:
            result = result | {HASHT}
        if name == "repeat" and len(pos_args) >= 2 and LOSS in pos_args[0][1] and "TLUT" in pos_args[1][1]:
            result = result | {"SPREAD"}
        if (
            name in ("append", "extend", "appendleft")
            and isinstance(func, cst.Attribute)
            and all_args
            and len(node.args) == 1
            and not isinstance(node.args[0].value, (cst.Tuple, cst.List, cst.GeneratorExp, cst.ListComp))
        ):
            recv_name = dotted(func.value)
            if recv_name:  # `lp_list.append(-nll)`: the list holds what is appended (records are left alone)
                self._taint(recv_name, self._get(recv_name) | (all_args - {HASHT, _TUPK}))  # an element is no key
        if TGT in result and name in ("where",) and pos_args and GATE in pos_args[0][1]:
            result = result | {GATE}
        # model / loss calls on data produce losses
        if (VAL in all_args or TRAIN in all_args or VAL in recv) and (
            _LOSS_CALL.search(name or "") or name == "__call__"
        ):
            result = result | {LOSS}
        if (
            isinstance(func, cst.Name)
            and func.value in self.f.taint
            and LOSS not in result
            and (VAL in all_args or TRAIN in all_args)
        ):
            result = result | {LOSS}  # calling a model object held in a variable
        # requires_grad tensors / parameters
        if (
            name in ("Parameter",)
            or any(k == "requires_grad" and _is_true(a.value) for k, _lab, a in args)
            or name == "requires_grad_"
        ):
            result = result | {GRAD}
        if full.endswith("deepcopy"):
            self.f.deep_copies = True
        # callee summaries
        if self.prog.by_name.get(name) or name in self.prog.classes:
            for g in self.prog.by_name.get(name, []):
                via_params = frozenset().union(*g.param_labels.values()) if g.param_labels else frozenset()
                result = result | (g.return_labels - via_params)
        if fn_ref_at is not None:
            # `timed_eval(label, fn, *args)`: the arguments after a function reference are its arguments
            fn = args[fn_ref_at][2].value
            for g in self.prog.by_name.get(last_name(fn), []):
                c = self._call_obj(
                    name=g.name,
                    dotted=dotted(fn),
                    node=fn,
                    order=self.order,
                    loops=tuple(self.loops),
                    off=self._off(),
                    guards=self._offguards(),
                    branch=tuple(self.branch),
                    arg_labels=[
                        (k - fn_ref_at - 1 if isinstance(k, int) else k, lab, dotted(a.value))
                        for k, lab, a in args
                        if not isinstance(k, int) or k > fn_ref_at
                    ],
                )
                if self._rec:
                    self.f.calls.append(c)
        # sites
        result = self._call_sites(node, name, full, recv, args, all_args, frozenset(result))
        if self._rec:
            c = self._call_obj(
                name=name,
                dotted=dotted(func),
                node=node,
                order=self.order,
                loops=tuple(self.loops),
                off=self._off(),
                guards=self._offguards(),
                branch=tuple(self.branch),
                arg_labels=[(k, lab, dotted(a.value)) for k, lab, a in args],
                result_labels=result,
            )
            self.f.calls.append(c)
        return frozenset(result)

    def _call_sites(self, node, name, full, recv, args, all_args, result) -> None:
        if name == "backward" and isinstance(node.func, cst.Attribute):
            root = _root_names(node.func.value)
            self.f.backward_roots |= root
            self._site("train", node, recv | all_args, roots=root)
        elif full in ("torch.autograd.grad", "autograd.grad") and args:
            root = _root_names(args[0][2].value)
            self.f.backward_roots |= root
            self._site("train", node, args[0][1], roots=root)
        elif (
            name in ("add_", "append", "extend", "add")
            and isinstance(node.func, cst.Attribute)
            and VAL in all_args
            and LOSS in all_args
        ):
            acc = dotted(node.func.value) or last_name(node.func.value)
            self._score(node, acc, all_args, args[0][2].value if args else node)
        elif re.search(r"(?i)sink", name or "") and VAL in all_args:
            self._site("score", node, all_args | {LOSS}, acc=name, roots=set())
        if name in (
            "index_add_",
            "scatter_add_",
            "scatter_add",
            "index_put_",
            "put_",
            "bincount",
            "histc",
            "update",
            "Counter",
            "unique",
        ) or full in ("np.add.at", "numpy.add.at"):
            if VAL in all_args or (name in ("update",) and VAL in recv):
                if LOSS not in all_args:
                    base = dotted(node.func.value) if isinstance(node.func, cst.Attribute) else ""
                    result |= {STATS}
                    self._site("stats", node, all_args | recv, table=base)
                    if base:
                        self._taint(base, self._get(base) | {STATS})
        pos = [lab for k, lab, _a in args if isinstance(k, int)]
        if (
            name in ("min", "minimum", "fmin", "amin", "max", "maximum", "fmax", "amax")
            and len(pos) >= 2
            and (sum(1 for p in pos if LOSS in p and VAL in p) >= 2 or sum(1 for p in pos if "TGATHER" in p) >= 2)
        ):
            self._site("min_loss", node, all_args, how=name)
        if (
            name == "where"
            and len(pos) == 3
            and GATE not in pos[0]
            and LOSS in pos[1]
            and LOSS in pos[2]
            and VAL in all_args
        ):
            code = self.unit.code(args[0][2].value)
            if "<" in code or ">" in code:
                self._site("min_loss", node, all_args, how="where")
        if (
            (VAL in all_args or TGT in all_args)
            and (HASHT in all_args or _TUPK in all_args)
            and name in ("get", "setdefault", "__contains__", "lookup", "query")
        ):
            self._site("tgt_key", node, all_args)
        if TRAIN in (all_args | recv) and _IO_CALL.search(name or "") and LOSS not in all_args:
            via_params = frozenset().union(*self.f.param_labels.values()) if self.f.param_labels else frozenset()
            named = any(TRAIN in name_source(r) for r in _root_names(node)) or any(
                TRAIN in self._expr(a.value, 99) for _k, _l, a in args if isinstance(a.value, cst.SimpleString)
            )
            self._site("read_train", node, all_args | recv, intrinsic=named or TRAIN not in via_params)
        # network / hub access
        if full.startswith(_NET_MODULES) or name in _NET_FUNCS or full in ("urllib.request.urlopen",):
            self._site("net", node, frozenset(), what=full or name)
        elif (
            full.startswith(("subprocess.", "os.system", "os.popen", "os.exec"))
            or name in ("system", "popen", "check_output", "check_call", "run", "Popen", "call")
            and full.startswith(("subprocess", "os"))
        ):
            text = " ".join(_string_literals(node))
            if _SHELL_NET.search(text):
                self._site("net", node, frozenset(), what=f"{full}({text[:60]!r})")
        # validation tokens serialized into the artifact
        if (
            full in _SAVE_FUNCS
            or name in ("tofile", "register_buffer")
            or (full.endswith(".save") and full.startswith("torch"))
        ):
            for k, lab, a in args:
                if VAL in lab and LOSS not in lab:
                    self._site("save_val", node, lab, what=full or name)
                    break
        return result

    # -------------------------------------------------------------- helpers
    def _call_obj(self, **kw) -> Call:
        return Call(unit=self.unit, owner_class=self.f.class_name, **kw)

    def _off(self) -> bool:
        return any(v is not UNKNOWN and not v for v, _ in self.guards)

    def _offguards(self) -> tuple:
        return tuple(code for v, code in self.guards if v is not UNKNOWN and not v)

    def _site(self, kind, node, labels, **detail) -> None:
        if not self._rec:
            return
        self.f.sites.append(
            Site(
                kind=kind,
                func=self.f,
                node=node,
                labels=frozenset(labels),
                loops=tuple(self.loops),
                order=self.order,
                off=self._off(),
                guards=self._offguards(),
                branch=tuple(self.branch),
                nograd=self.nograd,
                tgt_gate=self.tgt_gate > 0,
                detail=detail,
            )
        )
