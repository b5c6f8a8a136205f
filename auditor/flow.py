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

from dataclasses import dataclass, field

import libcst as cst

from auditor.config import ConfigModel
from auditor.cstwalk import children
from auditor.flow_labels import (
    GATE,
    GRAD,
    HASHT,
    LOSS,
    STATS,
    TGT,
    TRAIN,
    VAL,
    _root_names,
    _TGT_NAMES,  # noqa: F401
    dotted,
    last_name,
    name_source,
)


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
    unit: object = None
    owner_class: str | None = None


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
    return_hasht: tuple | None = None  # per element of a returned tuple: does it carry HASHT (None: not a tuple)
    sites: list = field(default_factory=list)
    calls: list = field(default_factory=list)
    defs: dict = field(default_factory=dict)  # name -> [rhs nodes]
    augs: dict = field(default_factory=dict)  # name -> [rhs of `name op= rhs`] (hashes built up in a loop)
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
        self._targets_cache: dict = {}
        self.unit_modules = {_module_name(u.rel) for u in self.units if u.kind != "decoded"}
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
                    local = (
                        a.asname.name.value if a.asname and isinstance(a.asname.name, cst.Name) else full.split(".")[0]
                    )
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
                decos = tuple(
                    dotted(d.decorator.func if isinstance(d.decorator, cst.Call) else d.decorator)
                    for d in node.decorators
                )
                f = Func(
                    name=node.name.value,
                    node=node,
                    unit=unit,
                    params=params,
                    class_name=cls,
                    parent=owner if not owner.is_module else None,
                    decorators=decos,
                )
                self.funcs.append(f)
                self.by_name.setdefault(f.name, []).append(f)
                if cls:
                    self.classes.setdefault(cls, []).append(f)
                kid_owner, kid_cls = f, None
            if type(node) is cst.SimpleStatementLine:
                # definitions and imports are statements: only descend into imports here, never expressions
                stack.extend((k, kid_owner, kid_cls) for k in node.body if type(k) in (cst.Import, cst.ImportFrom))
                continue
            kids = [k for k in children(node) if not _is_expr(type(k))]
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
        from auditor.taint import _Walker

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
                before = (g.return_labels, g.return_hasht)
                _Walker(self, g).run()
                if (g.return_labels, g.return_hasht) != before:
                    changed_ret.add(g.name)
            if changed_ret:
                # callers see the new return labels (also callers walked earlier in this round, before the callee)
                for f in self.funcs:
                    if f.name not in changed_ret and any(c.name in changed_ret for c in f.calls):
                        _Walker(self, f).run()
                        dirty.add(f)
            if not dirty:
                break

    def targets(self, call: Call) -> list:
        """Functions a call may reach. `f()` -> module-level functions/classes named f (classes: __init__, forward,
        __call__); `self.m()` -> methods m of the caller's class (else any class); `obj.m()` -> methods named m;
        `mod.f()` of a first-party module -> its functions; calls into third-party modules (`subprocess.run`,
        `torch.save`) reach nothing here."""
        key = (id(call.unit), call.dotted, call.name, call.owner_class)
        cached = self._targets_cache.get(key)
        if cached is not None:
            return cached
        d = call.dotted or call.name
        head, _, rest = d.partition(".")
        cands = self.by_name.get(call.name, [])
        aliases = self.aliases.get(id(call.unit), {}) if call.unit is not None else {}
        ctor = [m for m in self.classes.get(call.name, []) if m.name in ("__init__", "forward", "__call__")]
        if head in aliases:
            full = aliases[head]
            internal = any(full == m or full.startswith(m + ".") for m in self.unit_modules)
            out = [f for f in cands if f.class_name is None] + ctor if internal else []
        elif not rest:
            out = [f for f in cands if f.class_name is None] + ctor
        elif head in ("self", "cls"):
            out = [f for f in cands if f.class_name == call.owner_class] or [f for f in cands if f.class_name]
        else:
            out = [f for f in cands if f.class_name]
        self._targets_cache[key] = out
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


def _module_name(rel: str) -> str:
    p = rel[:-3] if rel.endswith(".py") else rel
    p = p.replace("\\", "/").replace("/", ".")
    return p[: -len(".__init__")] if p.endswith(".__init__") else p


_EXPR_T: dict = {}


def _is_expr(t) -> bool:
    b = _EXPR_T.get(t)
    if b is None:
        b = _EXPR_T[t] = issubclass(t, cst.BaseExpression)
    return b
