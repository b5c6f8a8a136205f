"""What a training step on validation tokens changes, and whether the change outlives the function that makes it.

The legality rules care about training only through its effect on later predictions. A backward() whose optimizer
updates only objects created inside the function (a throw-away LoRA / bias tensor / deep copy) and never handed
out (returned, stored on an attribute) cannot change what a later call scores; nor can training whose weights are
restored from a snapshot (`load_state_dict(saved)`) before the function moves on. Everything else (an optimizer
over a parameter's `.parameters()`, an optimizer built elsewhere, manual updates) is assumed to persist.
"""

from __future__ import annotations

import re

import libcst as cst

from auditor.cstwalk import walk
from auditor.flow_labels import GRAD, _root_names, last_name

_OPTIM = re.compile(
    r"^(SGD|ASGD|Adam|AdamW|Adamax|NAdam|RAdam|Adagrad|Adadelta|RMSprop|Rprop|LBFGS|SparseAdam|Lion|Adafactor|"
    r"Muon\w*|\w*Optimizer)$"
)
# calls that create a new tensor / object (the optimized thing is then local to the function)
_FRESH = {
    "zeros", "zeros_like", "ones", "ones_like", "randn", "randn_like", "rand", "empty", "empty_like", "full",
    "full_like", "tensor", "clone", "deepcopy", "Parameter", "ParameterList", "ParameterDict", "arange",
}  # fmt: skip
# methods that return (a view of) their receiver: `Lora(...).to(device)` is still the fresh Lora
_SAME = {"to", "cuda", "cpu", "float", "bfloat16", "half", "double", "requires_grad_", "detach", "contiguous",
         "train", "eval", "zero_", "normal_", "uniform_", "clone"}  # fmt: skip
_SNAPSHOT = re.compile(r"deepcopy|state_dict\(|\.clone\(|\.copy\(")


def _receiver_chain(node):
    """`A(...).to(d).train()` -> the innermost call A(...)."""
    while (
        isinstance(node, cst.Call)
        and isinstance(node.func, cst.Attribute)
        and node.func.attr.value in _SAME
        and isinstance(node.func.value, cst.Call)
    ):
        node = node.func.value
    return node


def _first_arg(call: cst.Call):
    for a in call.args:
        if a.keyword is None or a.keyword.value == "params":
            return a.value
    return None


def optimized_roots(prog, f, name: str, depth: int = 0):
    """Names whose tensors the optimizer held in `name` updates, or None when that cannot be told."""
    defs = f.defs.get(name, [])
    if not defs or depth > 4:
        return None
    out: set = set()
    for rhs in defs:
        if isinstance(rhs, cst.Name):
            sub = optimized_roots(prog, f, rhs.value, depth + 1)
            if sub is None:
                return None
            out |= sub
            continue
        if not isinstance(rhs, cst.Call):
            return None
        fname = last_name(rhs.func)
        if _OPTIM.match(fname or ""):
            arg = _first_arg(rhs)
            if arg is None:
                return None
            out |= _expand_list(f, arg)
            continue
        # an optimizer built by a first-party helper: `_build_opt(lora, args)` returning `Adam(lora.parameters())`
        mapped = _helper_optimizer(prog, fname, rhs)
        if mapped is None:
            return None
        out |= mapped
    return out


def _expand_list(f, arg) -> set:
    """Roots of an optimizer's params argument, one step through a local list it was built in (`[b]`, `ps`)."""
    roots = _root_names(arg)
    out = set(roots)
    for r in roots:
        for v in f.defs.get(r, [])[:4]:
            if isinstance(v, (cst.List, cst.Tuple, cst.ListComp, cst.GeneratorExp)):
                out |= _root_names(v)
    return out


def _helper_optimizer(prog, fname: str, call: cst.Call):
    for g in prog.by_name.get(fname, []):
        params = [p for p in g.params if p not in ("self", "cls")]
        for n in walk(g.node):
            if isinstance(n, cst.Return) and isinstance(n.value, cst.Call) and _OPTIM.match(last_name(n.value.func)):
                arg = _first_arg(n.value)
                roots = _root_names(arg) if arg is not None else set()
                if not roots or not roots <= set(params):
                    return None
                out = set()
                for r in roots:
                    i = params.index(r)
                    if i < len(call.args) and call.args[i].keyword is None:
                        out |= _root_names(call.args[i].value)
                    else:
                        return None
                return out
    return None


def is_local(prog, f, name: str, depth: int = 0) -> bool:
    """Is `name` an object this function creates (constructor call, fresh tensor, deep copy, GRAD tensor)?"""
    if name in f.params or "." in name or depth > 4:
        return False
    defs = f.defs.get(name, [])
    if not defs:
        return False
    for rhs in defs:
        if isinstance(rhs, cst.Name):
            if not is_local(prog, f, rhs.value, depth + 1):
                return False
            continue
        if not isinstance(rhs, cst.Call):
            return False
        inner = _receiver_chain(rhs)
        fname = last_name(inner.func)
        fresh = fname in _FRESH or (fname[:1].isupper() and not _OPTIM.match(fname)) or fname in prog.classes
        if not fresh and GRAD not in f.taint.get(name, frozenset()):
            return False
    return True


def _handed_out(f) -> set:
    """Names a function returns, yields or stores on an attribute / in a container (cached on the Func)."""
    cached = getattr(f, "_legality_handed_out", None)
    if cached is not None:
        return cached
    out: set = set()
    for n in walk(f.node) if not f.is_module else ():
        if isinstance(n, (cst.Return, cst.Yield)) and n.value is not None:
            out |= _root_names(n.value)
        elif isinstance(n, cst.Assign) and any(
            isinstance(t.target, (cst.Attribute, cst.Subscript)) for t in n.targets
        ):
            out |= _root_names(n.value)
    f._legality_handed_out = out
    return out


def _steps_for(f, site) -> list:
    """`opt.step()` calls that go with a backward site: in the same loops (or anywhere in the function)."""
    steps = [c for c in f.calls if c.name == "step" and not c.is_ref and "." in c.dotted]
    near = [c for c in steps if len(c.loops) >= len(site.loops) and all(a is b for a, b in zip(c.loops, site.loops))]
    return near or steps


def restored(f, site) -> bool:
    """Weights are put back from a snapshot after this training step (`model.load_state_dict(saved)`)."""
    for c in f.calls:
        if c.name != "load_state_dict" or c.is_ref or c.order <= site.order:
            continue
        # in the training's own loop nest or around it, after it (end of each window, or of the function)
        if len(c.loops) > len(site.loops) or not all(a is b for a, b in zip(c.loops, site.loops)):
            continue
        roots = set()
        for a in getattr(c.node, "args", ()):
            roots |= _root_names(a.value)
        for r in roots:
            if any(_SNAPSHOT.search(f.unit.code(v)) for v in f.defs.get(r, [])[:4]):
                return True
    return False


def train_effect(prog, f, site):
    """("persistent" | "local" | "restored", names the optimizer updates) of a backward site."""
    if restored(f, site):
        return "restored", set()
    steps = _steps_for(f, site)
    names: set = set()
    for c in steps:
        roots = optimized_roots(prog, f, c.dotted.rsplit(".", 1)[0])
        if roots is None:
            names = set()
            break
        names |= roots
    if steps and names:
        data = {r for r in names if r not in ("self",)}
        if all(is_local(prog, f, r) for r in data) and not (data & _handed_out(f)):
            return "local", data
    return "persistent", names


def uses_any(f, node, names: set) -> bool:
    """Does an expression (or the names it is computed from, a few assignments back) read any of `names`?"""
    seen = set(_root_names(node))
    frontier = set(seen)
    for _ in range(3):
        nxt = set()
        for r in frontier:
            for v in f.defs.get(r, [])[:4]:
                nxt |= _root_names(v)
        nxt -= seen
        seen |= nxt
        frontier = nxt
    return bool(seen & names)

