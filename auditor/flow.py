"""Program model for the legality rules: functions, calls, reachability under the effective configuration, and a
small label (taint) analysis that follows where validation tokens, training tokens, targets and losses go.

Labels:
  VAL    derived from validation tokens          TRAIN  derived from training shards
  TGT    the realized target token(s)            LOSS   a model output / loss computed on some input
  GRAD   a tensor optimized in place (requires_grad / nn.Parameter)
  STATS  a table/cache built by counting tokens  GATE   derived from a comparison against the target
  HASHT  a hash/key that mixes the target with other values

Sites (what the rules look at), each with its function, loop nest, statement order and whether it is switched off
by a flag that is off in the run:
  train (backward on a loss), score (a loss accumulated into a reported sum), stats (a table updated from tokens),
  tgt_key (a key/hash containing the target used to index a cache), min_loss (min/oracle over two losses),
  read_train (training data read), net (network/hub access), save_val (validation tokens serialized).

Analysis is flow-insensitive inside a function with ordered weak updates (each function body is walked twice),
interprocedural through call arguments (params inherit argument labels, calls inherit callee return labels), and
bounded (a fixed number of global rounds) so that any input terminates quickly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import libcst as cst

from auditor.config import UNKNOWN, ConfigModel
from auditor.cstwalk import children, walk

VAL, TRAIN, TGT, LOSS, GRAD, STATS, GATE, HASHT = "VAL", "TRAIN", "TGT", "LOSS", "GRAD", "STATS", "GATE", "HASHT"

_VAL_WORDS = {"val", "valid", "validation", "eval", "test"}
_TRAIN_WORDS = {"train", "training"}
_DATA_WORDS = {"tokens", "token", "toks", "tok", "ids", "data", "stream", "files", "file", "shards", "shard", "docs",
               "doc", "inputs", "set", "pattern", "glob", "loader", "dataset", "ds", "batches", "bytes"}
# words that make a name a size/setting rather than data (`train_seq_len`, `train_batch_tokens`, `val_tokens_count`)
_SCALAR_WORDS = {"len", "length", "size", "count", "num", "n", "every", "lr", "steps", "step", "batch", "frac", "ratio",
                 "bpb", "loss", "time", "ms", "seconds", "dim", "max", "min", "limit", "per", "stride", "total"}
_TGT_NAMES = {"y", "ys", "tgt", "tgts", "target", "targets", "target_ids", "tgt_ids", "labels", "label", "next_tok",
              "next_token", "next_tokens", "y_batch", "yb", "y_true", "gold", "tgt_tok", "target_tokens", "y_ids",
              "tgt_tokens", "targ", "y_val", "yv"}
_INPUT_NAMES = {"x", "xs", "inp", "inputs", "input_ids", "idx", "ids", "context", "ctx", "x_batch", "xb", "tokens_in",
                "input", "prev", "prev_ids"}
_LOSS_CALL = re.compile(r"(?i)(loss|nll|entropy|logit|softmax|logprob|log_prob|forward|model|score|lm_head|^ce$|"
                        r"_ce$|^m$|^net$|^gpt$|xent|predict|logp)")
_ACC_NAME = re.compile(r"(?i)(loss|nll|bpb|bits|logp|log_prob|xent|entropy|score|^ce|_ce|nats|total_l)")
_SANITIZERS = {"len", "numel", "size", "dim", "ndim", "shape", "dtype", "device", "item_size", "nelement", "isinstance",
               "type", "id", "print", "log0", "log", "str", "repr", "format", "range"}
_IO_CALL = re.compile(r"(?i)(load|read|open|fromfile|memmap|glob|next_batch|loader|stream|shard|take|next)")
_NET_MODULES = ("socket.", "urllib.request.", "urllib3.", "requests.", "http.client.", "httpx.", "aiohttp.",
                "huggingface_hub.", "torch.hub.", "ftplib.", "paramiko.", "wget.")
_NET_FUNCS = {"urlopen", "urlretrieve", "hf_hub_download", "snapshot_download", "load_dataset", "create_connection"}
_SHELL_NET = re.compile(r"\b(curl|wget|pip3?|git\s+clone|huggingface-cli|hf\s+download|scp|rsync|nc|ssh)\b")
_SAVE_FUNCS = {"torch.save", "pickle.dump", "pickle.dumps", "np.save", "numpy.save", "np.savez", "numpy.savez",
               "np.savez_compressed", "lzma.compress", "zlib.compress", "brotli.compress", "zstandard.compress",
               "torch.jit.save"}


def _words(name: str) -> set:
    return {w for w in re.split(r"[^a-z0-9]+", name.lower()) if w}


def name_source(name: str) -> frozenset:
    w = _words(name)
    out = set()
    if w & _SCALAR_WORDS:
        return frozenset()
    if w & _DATA_WORDS or "valtokens" in w:
        if w & _VAL_WORDS:
            out.add(VAL)
        if w & _TRAIN_WORDS:
            out.add(TRAIN)
    return frozenset(out)


def dotted(node) -> str:
    if isinstance(node, cst.Name):
        return node.value
    if isinstance(node, cst.Attribute):
        base = dotted(node.value)
        return f"{base}.{node.attr.value}" if base else ""
    return ""


def last_name(node) -> str:
    if isinstance(node, cst.Name):
        return node.value
    if isinstance(node, cst.Attribute):
        return node.attr.value
    if isinstance(node, cst.Call):
        return last_name(node.func)
    if isinstance(node, cst.Subscript):
        return last_name(node.value)
    return ""


@dataclass(eq=False)
class Loop:
    node: object
    is_data: bool = False  # iterates over / selects validation data (a chunk/window/doc loop)
    var_names: set = field(default_factory=set)
    derived: set = field(default_factory=set)  # the loop variable and names computed from it in the body


@dataclass(eq=False)
class Site:
    kind: str
    func: "Func"
    node: object
    labels: frozenset
    loops: tuple
    order: int
    off: bool
    guards: tuple  # flag expressions (code text) that evaluate False and switch this site off
    branch: tuple  # ((if-node id, arm), ...) for mutual exclusion
    nograd: bool = False
    tgt_gate: bool = False
    detail: dict = field(default_factory=dict)


@dataclass(eq=False)
class Call:
    name: str  # last name of the callee
    dotted: str
    node: object
    order: int
    loops: tuple
    off: bool
    guards: tuple
    branch: tuple
    arg_labels: list  # [(param index or keyword, labels, code)]
    result_labels: frozenset = frozenset()
    is_ref: bool = False  # a function passed as a value, not called here


@dataclass(eq=False)
class Func:
    name: str
    node: object  # cst.FunctionDef or cst.Module (module-level code)
    unit: object
    params: list
    class_name: str | None = None
    parent: "Func | None" = None
    is_module: bool = False
    decorators: tuple = ()
    taint: dict = field(default_factory=dict)
    param_labels: dict = field(default_factory=dict)
    return_labels: frozenset = frozenset()
    sites: list = field(default_factory=list)
    calls: list = field(default_factory=list)
    defs: dict = field(default_factory=dict)  # name -> [rhs nodes]
    backward_roots: set = field(default_factory=set)
    reach: str = "dead"  # "on" | "off" | "dead"
    deep_copies: bool = False

    @property
    def qualname(self) -> str:
        return f"{self.class_name}.{self.name}" if self.class_name else self.name


class Program:
    def __init__(self, units: list, cfg: ConfigModel, rounds: int = 4):
        self.units = [u for u in units if u.module is not None]
        self.cfg = cfg
        self.funcs: list = []
        self.by_name: dict = {}
        self.classes: dict = {}  # class name -> [Func methods]
        self.aliases: dict = {}  # per unit id -> {local: dotted}
        self.guard_cache: dict = {}  # id(If) -> (value, code)
        for u in self.units:
            self._collect(u)
        self._analyse(rounds)
        self._reachability()

    # ---------------------------------------------------------------- collection
    def _collect(self, unit) -> None:
        aliases = {}
        mod = Func(name="<module>", node=unit.module, unit=unit, params=[], is_module=True)
        self.funcs.append(mod)
        stack = [(unit.module, mod, None)]
        while stack:
            node, owner, cls = stack.pop()
            kid_owner, kid_cls = owner, cls
            if isinstance(node, cst.Import):
                for a in node.names:
                    full = dotted(a.name)
                    local = a.asname.name.value if a.asname and isinstance(a.asname.name, cst.Name) else full.split(".")[0]
                    aliases[local] = full if a.asname else full.split(".")[0]
            elif isinstance(node, cst.ImportFrom):
                if node.module is not None and not isinstance(node.names, cst.ImportStar):
                    m = dotted(node.module)
                    for a in node.names:
                        n = dotted(a.name)
                        local = a.asname.name.value if a.asname and isinstance(a.asname.name, cst.Name) else n
                        aliases[local] = f"{m}.{n}"
            elif isinstance(node, cst.ClassDef):
                kid_cls = node.name.value
                self.classes.setdefault(kid_cls, [])
            elif isinstance(node, cst.FunctionDef):
                params = [p.name.value for p in list(node.params.posonly_params) + list(node.params.params)]
                params += [p.name.value for p in node.params.kwonly_params]
                decos = tuple(dotted(d.decorator.func if isinstance(d.decorator, cst.Call) else d.decorator)
                              for d in node.decorators)
                f = Func(name=node.name.value, node=node, unit=unit, params=params, class_name=cls,
                         parent=owner if not owner.is_module else None, decorators=decos)
                self.funcs.append(f)
                self.by_name.setdefault(f.name, []).append(f)
                if cls:
                    self.classes.setdefault(cls, []).append(f)
                kid_owner, kid_cls = f, None
            kids = list(children(node))
            kids.reverse()
            stack.extend((k, kid_owner, kid_cls) for k in kids)
        self.aliases[id(unit)] = aliases

    def resolve(self, unit, node) -> str:
        d = dotted(node)
        if not d:
            return ""
        head, _, rest = d.partition(".")
        full = self.aliases.get(id(unit), {}).get(head)
        if full:
            return f"{full}.{rest}" if rest else full
        return d

    # ---------------------------------------------------------------- analysis
    def _analyse(self, rounds: int) -> None:
        """Walk every function once, then re-walk only those whose parameter labels or callees' return labels
        changed (bounded rounds). Each walk records its sites/calls on its last pass."""
        for f in self.funcs:
            _Walker(self, f).run()
        for _ in range(rounds):
            dirty = set()
            for f in self.funcs:
                for c in f.calls:
                    for g in self.targets(c):
                        if _seed_params(g, c):
                            dirty.add(g)
            changed_ret = set()
            for g in list(dirty):
                before = g.return_labels
                _Walker(self, g).run()
                if g.return_labels != before:
                    changed_ret.add(g.name)
            if changed_ret:
                for f in self.funcs:
                    if f not in dirty and any(c.name in changed_ret for c in f.calls):
                        _Walker(self, f).run()
                        dirty.add(f)
            if not dirty:
                break

    def targets(self, call: Call) -> list:
        """Functions a call may reach (by name; methods by attribute name; classes -> __init__/forward)."""
        out = list(self.by_name.get(call.name, []))
        if call.name in self.classes:
            out += [m for m in self.classes[call.name] if m.name in ("__init__", "forward", "__call__")]
        return out

    def _reachability(self) -> None:
        from collections import deque

        state = {}
        q = deque()
        for f in self.funcs:
            if f.is_module:
                state[f] = "on"
                q.append(f)
        # nested functions run when their parent runs (closures, local helpers)
        while q:
            f = q.popleft()
            st = state[f]
            for c in f.calls:
                nst = "off" if (st == "off" or c.off) else "on"
                for g in self.targets(c):
                    if state.get(g) == "on" or state.get(g) == nst:
                        continue
                    if state.get(g) == "off" and nst == "off":
                        continue
                    state[g] = nst
                    q.append(g)
        for f in self.funcs:
            f.reach = state.get(f, "dead")
            if f.reach == "dead" and f.parent is not None and state.get(f.parent) in ("on", "off"):
                f.reach = "dead"

    # ---------------------------------------------------------------- queries
    def live_sites(self, kind=None):
        for f in self.funcs:
            if f.reach == "dead":
                continue
            for s in f.sites:
                if kind is None or s.kind == kind:
                    yield s

    def is_off(self, site: Site) -> bool:
        return site.off or site.func.reach == "off"


def _seed_params(g: Func, c: Call) -> bool:
    changed = False
    params = list(g.params)
    if params and params[0] in ("self", "cls") and (g.class_name or c.dotted.count(".")):
        params = params[1:]
    for key, labels, _code in c.arg_labels:
        if not labels:
            continue
        if isinstance(key, int):
            if key >= len(params):
                continue
            pname = params[key]
        else:
            if key not in g.params:
                continue
            pname = key
        cur = g.param_labels.get(pname, frozenset())
        new = cur | labels
        if pname in _TGT_NAMES and VAL in new:
            new = new | {TGT}
        if new != cur:
            g.param_labels[pname] = frozenset(new)
            changed = True
    return changed


_GRAD_OFF = {"no_grad", "inference_mode"}


class _Walker:
    """One pass over a function body: labels, guards, loops, calls and sites."""

    def __init__(self, prog: Program, func: Func):
        self.prog = prog
        self.f = func
        self.unit = func.unit
        self._rec = False
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
        passes = 2
        for i in range(passes):
            self.order = 0
            self._rec = i == passes - 1
            if self._rec:
                self.f.sites, self.f.calls = [], []
            self.block(stmts)

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
                self.block([b for b in s.body.body if not isinstance(b, cst.FunctionDef)] if isinstance(s.body, cst.IndentedBlock) else [])
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
        it = self.expr(s.iter)
        loop = Loop(node=s)
        targets = _target_names(s.target)
        loop.var_names = set(targets)
        is_range = isinstance(s.iter, cst.Call) and last_name(s.iter) == "range"
        self._assign_names(targets, it, s.target)
        selects = self._rec and _loop_selects_data(s, targets, self, loop)
        loop.is_data = (VAL in it and not is_range) or selects
        self.loops.append(loop)
        self.block(self._body(s.body))
        self.loops.pop()
        if s.orelse is not None:
            self.block(self._body(s.orelse.body))

    def while_stmt(self, s: cst.While) -> None:
        self.expr(s.test)
        loop = Loop(node=s)
        assigned = _assigned_in(s.body) if self._rec else set()
        loop.var_names = assigned
        loop.is_data = self._rec and _loop_selects_data(s, assigned, self, loop)
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
                self.f.return_labels = frozenset(self.f.return_labels | labels)

    def aug_assign(self, s: cst.AugAssign) -> None:
        labels = self.expr(s.value)
        target = s.target
        tname = dotted(target) or last_name(target)
        if isinstance(target, cst.Subscript):
            idx_labels = frozenset().union(*[self.expr(e.slice.value) for e in target.slice if isinstance(e.slice, cst.Index)] or [frozenset()])
            base = dotted(target.value) or last_name(target.value)
            if (VAL in idx_labels or VAL in labels) and LOSS not in labels:
                self._site("stats", s, idx_labels | labels, table=base)
                self._taint(base, frozenset({STATS}) | self._get(base))
            return
        self._taint(tname, self._get(tname) | labels)
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
        if isinstance(target, (cst.Tuple, cst.List)) and isinstance(value, (cst.Tuple, cst.List)) and len(target.elements) == len(value.elements):
            for te, ve in zip(target.elements, value.elements):
                self._assign(te.value, ve.value, self.expr(ve.value))
            return
        if isinstance(target, cst.Subscript):
            base = dotted(target.value) or last_name(target.value)
            idx = frozenset().union(*[self.expr(e.slice.value) for e in target.slice if isinstance(e.slice, cst.Index)] or [frozenset()])
            if VAL in idx and LOSS not in labels and _is_count_update(value, base):
                self._site("stats", target, idx | labels, table=base)
                self._taint(base, self._get(base) | {STATS})
            if VAL in labels and LOSS not in labels and re.search(r"(?i)state_dict|sd$|artifact|payload|buffers?", base):
                self._site("save_val", target, labels)
            keep = labels if base.split(".")[-1] in _TGT_NAMES else labels - {TGT}
            self._taint(base, self._get(base) | keep)
            return
        names = _target_names(target)
        self._assign_names(names, labels, target, value)

    def _assign_names(self, names, labels, target_node, value=None) -> None:
        for n in names:
            lab = set(labels)
            short = n.split(".")[-1]
            if VAL in lab and (short in _TGT_NAMES or (value is not None and _is_shift_slice(value)
                                                         and self._stream_base(value.value))):
                lab.add(TGT)
            elif short not in _TGT_NAMES and value is not None and isinstance(value, cst.Subscript) and _is_input_slice(value):
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
        return bool(self.loops or self.guards)

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
            if HASHT in idx:
                self._site("tgt_key", node, idx)
            lab = set(base)
            if VAL in base and _is_shift_slice(node) and self._stream_base(node.value):
                lab.add(TGT)
            if TGT in idx and LOSS in base:
                lab.add("TGATHER")
            if STATS in base:
                lab.add(STATS)
            # indexing a table with tokens: result depends on those tokens
            lab |= (idx & {VAL, TRAIN, STATS})
            return frozenset(lab)
        if isinstance(node, cst.BinaryOperation):
            left, right = ex(node.left), ex(node.right)
            lab = left | right
            if isinstance(node.operator, (cst.BitXor, cst.Multiply, cst.Modulo, cst.LeftShift, cst.Add, cst.BitOr)):
                if (TGT in left and _mixes(right, node.right)) or (TGT in right and _mixes(left, node.left)):
                    if LOSS not in lab:
                        lab = lab | {HASHT}
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
            if isinstance(node, cst.Tuple) and any(TGT in p for p in parts) and any(TGT not in p and p & {VAL} for p in parts):
                lab = lab | {HASHT}
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
        if isinstance(node, (cst.ListComp, cst.GeneratorExp, cst.SetComp)):
            lab = frozenset()
            comp = node.for_in
            while comp is not None:
                it = ex(comp.iter)
                self._assign_names(_target_names(comp.target), it, comp.target)
                for cond in comp.ifs:
                    ex(cond.test)
                lab |= it
                comp = comp.inner_for_in
            return lab | ex(node.elt)
        if isinstance(node, cst.DictComp):
            comp = node.for_in
            lab = frozenset()
            while comp is not None:
                it = ex(comp.iter)
                self._assign_names(_target_names(comp.target), it, comp.target)
                lab |= it
                comp = comp.inner_for_in
            return lab | ex(node.key) | ex(node.value)
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
        self.f.calls.append(Call(name=name, dotted=dotted(node), node=node, order=self.order, loops=tuple(self.loops),
                                 off=self._off(), guards=self._offguards(), branch=tuple(self.branch), arg_labels=[],
                                 is_ref=True))

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
            if a.keyword is None and isinstance(a.value, (cst.Name, cst.Attribute)) and last_name(a.value) in self.prog.by_name and fn_ref_at is None and not self._get(dotted(a.value)):
                fn_ref_at = i
        pos_args = [(k, lab, a) for k, lab, a in args if isinstance(k, int)]
        if name in _SANITIZERS or full in ("len",):
            result = frozenset()
        else:
            result = all_args | recv
        if name in ("gather", "take_along_dim") and TGT in all_args and (LOSS in recv or LOSS in all_args):
            result = result | {"TGATHER"}
        if name == "hash" and TGT in all_args:
            result = result | {HASHT}
        if TGT in result and name in ("where",) and pos_args and GATE in pos_args[0][1]:
            result = result | {GATE}
        # model / loss calls on data produce losses
        if (VAL in all_args or TRAIN in all_args or VAL in recv) and (_LOSS_CALL.search(name or "") or name == "__call__"):
            result = result | {LOSS}
        if isinstance(func, cst.Name) and func.value in self.f.taint and LOSS not in result and (VAL in all_args or TRAIN in all_args):
            result = result | {LOSS}  # calling a model object held in a variable
        # requires_grad tensors / parameters
        if name in ("Parameter",) or any(k == "requires_grad" and _is_true(a.value) for k, _lab, a in args) or name == "requires_grad_":
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
                c = Call(name=g.name, dotted=dotted(fn), node=fn, order=self.order, loops=tuple(self.loops), off=self._off(),
                         guards=self._offguards(), branch=tuple(self.branch),
                         arg_labels=[(k - fn_ref_at - 1 if isinstance(k, int) else k, lab, self.unit.code(a.value))
                                     for k, lab, a in args if not isinstance(k, int) or k > fn_ref_at])
                if self._rec:
                    self.f.calls.append(c)
        # sites
        result = self._call_sites(node, name, full, recv, args, all_args, frozenset(result))
        if self._rec:
            c = Call(name=name, dotted=dotted(func), node=node, order=self.order, loops=tuple(self.loops), off=self._off(),
                     guards=self._offguards(), branch=tuple(self.branch),
                     arg_labels=[(k, lab, self.unit.code(a.value)) for k, lab, a in args], result_labels=result)
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
        elif name in ("add_", "append", "extend", "add") and isinstance(node.func, cst.Attribute) and VAL in all_args and LOSS in all_args:
            acc = dotted(node.func.value) or last_name(node.func.value)
            self._score(node, acc, all_args, args[0][2].value if args else node)
        elif re.search(r"(?i)sink", name or "") and VAL in all_args:
            self._site("score", node, all_args | {LOSS}, acc=name, roots=set())
        if name in ("index_add_", "scatter_add_", "scatter_add", "index_put_", "put_", "bincount", "histc", "update",
                    "Counter", "unique") or full in ("np.add.at", "numpy.add.at"):
            if VAL in all_args or (name in ("update",) and VAL in recv):
                if LOSS not in all_args:
                    base = dotted(node.func.value) if isinstance(node.func, cst.Attribute) else ""
                    result |= {STATS}
                    self._site("stats", node, all_args | recv, table=base)
                    if base:
                        self._taint(base, self._get(base) | {STATS})
        pos = [lab for k, lab, _a in args if isinstance(k, int)]
        if name in ("min", "minimum", "fmin", "amin") and len(pos) >= 2 and sum(1 for p in pos if LOSS in p and VAL in p) >= 2:
            self._site("min_loss", node, all_args, how=name)
        if name == "where" and len(pos) == 3 and GATE not in pos[0] and LOSS in pos[1] and LOSS in pos[2] and VAL in all_args:
            code = self.unit.code(args[0][2].value)
            if "<" in code or ">" in code:
                self._site("min_loss", node, all_args, how="where")
        if (VAL in all_args or TGT in all_args) and (HASHT in all_args) and name in ("get", "setdefault", "__contains__", "lookup", "query"):
            self._site("tgt_key", node, all_args)
        if TRAIN in (all_args | recv) and _IO_CALL.search(name or "") and LOSS not in all_args:
            via_params = frozenset().union(*self.f.param_labels.values()) if self.f.param_labels else frozenset()
            named = any(TRAIN in name_source(r) for r in _root_names(node)) or any(
                TRAIN in self._expr(a.value, 99) for _k, _l, a in args if isinstance(a.value, cst.SimpleString))
            self._site("read_train", node, all_args | recv, intrinsic=named or TRAIN not in via_params)
        # network / hub access
        if full.startswith(_NET_MODULES) or name in _NET_FUNCS or full in ("urllib.request.urlopen",):
            self._site("net", node, frozenset(), what=full or name)
        elif full.startswith(("subprocess.", "os.system", "os.popen", "os.exec")) or name in ("system", "popen", "check_output", "check_call", "run", "Popen", "call") and full.startswith(("subprocess", "os")):
            text = " ".join(_string_literals(node))
            if _SHELL_NET.search(text):
                self._site("net", node, frozenset(), what=f"{full}({text[:60]!r})")
        # validation tokens serialized into the artifact
        if full in _SAVE_FUNCS or name in ("tofile", "register_buffer") or (full.endswith(".save") and full.startswith("torch")):
            for k, lab, a in args:
                if VAL in lab and LOSS not in lab:
                    self._site("save_val", node, lab, what=full or name)
                    break
        return result

    # -------------------------------------------------------------- helpers
    def _off(self) -> bool:
        return any(v is not UNKNOWN and not v for v, _ in self.guards)

    def _offguards(self) -> tuple:
        return tuple(code for v, code in self.guards if v is not UNKNOWN and not v)

    def _site(self, kind, node, labels, **detail) -> None:
        if not self._rec:
            return
        self.f.sites.append(Site(kind=kind, func=self.f, node=node, labels=frozenset(labels), loops=tuple(self.loops),
                                 order=self.order, off=self._off(), guards=self._offguards(), branch=tuple(self.branch),
                                 nograd=self.nograd, tgt_gate=self.tgt_gate > 0, detail=detail))


# ------------------------------------------------------------------ syntactic helpers


def _is_true(node) -> bool:
    return isinstance(node, cst.Name) and node.value == "True"


def _mixes(labels, node) -> bool:
    """The other operand of a hash with the target: something data-dependent (not a constant)."""
    if isinstance(node, (cst.Integer, cst.Float)):
        return False
    if isinstance(node, cst.Name) and node.value.isupper():
        return False
    return bool(labels & {VAL, TRAIN, STATS}) or isinstance(node, (cst.Subscript, cst.BinaryOperation))


def _is_count_update(value, base: str) -> bool:
    """`d[k] = d.get(k, 0) + 1`, `t[k] = t[k] + 1`."""
    if isinstance(value, cst.BinaryOperation) and isinstance(value.operator, cst.Add):
        code = cst.Module(body=[]).code_for_node(value)
        return base.split(".")[-1] in code
    return False


def _string_literals(node) -> list:
    out = []
    for n in walk(node):
        if isinstance(n, cst.SimpleString):
            try:
                v = n.evaluated_value
                if isinstance(v, str):
                    out.append(v)
            except Exception:
                pass
    return out


def _target_names(t) -> list:
    if isinstance(t, cst.Name):
        return [t.value]
    if isinstance(t, cst.Attribute):
        d = dotted(t)
        return [d] if d else []
    if isinstance(t, (cst.Tuple, cst.List)):
        out = []
        for e in t.elements:
            out += _target_names(e.value)
        return out
    if isinstance(t, cst.StarredElement):
        return _target_names(t.value)
    return []


def _root_names(node) -> set:
    """Variable names an expression reads (attribute names excluded: `loss.item()` -> {loss})."""
    out = set()
    if node is None:
        return out
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, cst.Name):
            out.add(n.value)
        elif isinstance(n, cst.Attribute):
            stack.append(n.value)
        else:
            stack.extend(children(n))
    return out


def _assigned_in(body) -> set:
    out = set()
    for n in walk(body):
        if isinstance(n, cst.Assign):
            for t in n.targets:
                out.update(_target_names(t.target))
        elif isinstance(n, cst.AugAssign):
            out.update(_target_names(n.target))
    return out


def _slice_parts(node: cst.Subscript):
    for el in node.slice:
        yield el.slice


def _has_plus_one(node) -> bool:
    code = cst.Module(body=[]).code_for_node(node) if node is not None else ""
    return bool(re.search(r"\+\s*1\b", code)) or (isinstance(node, cst.Integer) and node.value == "1")


def _is_shift_slice(node) -> bool:
    """`t[1:]`, `t[s + 1:e + 1]`, `t[i + 1]`, `t[:, 1:]`: the next-token (target) view of a token tensor."""
    if not isinstance(node, cst.Subscript):
        return False
    parts = list(_slice_parts(node))
    if not parts:
        return False
    last = parts[-1]
    if isinstance(last, cst.Slice):
        return last.lower is not None and _has_plus_one(last.lower)
    if isinstance(last, cst.Index):
        v = last.value
        return isinstance(v, cst.BinaryOperation) and isinstance(v.operator, cst.Add) and _has_plus_one(v.right)
    return False


def _is_input_slice(node) -> bool:
    parts = list(_slice_parts(node))
    if not parts:
        return False
    last = parts[-1]
    return isinstance(last, cst.Slice) and not (last.lower is not None and _has_plus_one(last.lower))


def _loop_selects_data(loop, loop_vars, walker, info=None) -> bool:
    """A loop whose variable selects which validation tokens are used (chunk/window/doc loop), as opposed to a
    repetition (epoch) loop: its variable, or names derived from it in the body, index validation data."""
    derived = set(v.split(".")[-1] for v in loop_vars)
    if not derived:
        return False
    body = loop.body
    # propagate: names assigned from expressions that mention derived names (two rounds cover chains)
    assigns = []
    nodes = list(walk(body))
    for n in nodes:
        if isinstance(n, cst.Assign):
            assigns.append((sum((_target_names(t.target) for t in n.targets), []), _root_names(n.value)))
        elif isinstance(n, cst.AugAssign):
            assigns.append((_target_names(n.target), _root_names(n.value)))
        elif isinstance(n, cst.For):
            assigns.append((_target_names(n.target), _root_names(n.iter)))
        elif isinstance(n, cst.CompFor):
            assigns.append((_target_names(n.target), _root_names(n.iter)))
    for _ in range(3):
        for targets, roots in assigns:
            if roots & derived:
                derived.update(t.split(".")[-1] for t in targets)
    if info is not None:
        info.derived = set(derived)
    taint = walker.f.taint
    for n in nodes:
        if isinstance(n, cst.Subscript):
            base = dotted(n.value) or last_name(n.value)
            if VAL in taint.get(base, frozenset()) | name_source(base.split(".")[-1] if base else ""):
                idx = set()
                for el in n.slice:
                    idx |= _root_names(el.slice)
                if idx & derived:
                    return True
        elif isinstance(n, cst.Call):
            labs = set()
            roots = set()
            for a in n.args:
                r = _root_names(a.value)
                roots |= r
                for x in r:
                    labs |= taint.get(x, frozenset())
            hit = roots & derived
            if VAL in labs and hit and not hit <= {x for x in roots if VAL in taint.get(x, frozenset())}:
                return True
    return False
