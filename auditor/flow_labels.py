"""Label names, the name/literal heuristics that mark data sources, and syntactic helpers shared by the flow
model (auditor.flow) and the label walker (auditor.taint)."""

from __future__ import annotations

import re

import libcst as cst

from auditor.cstwalk import children, walk

VAL, TRAIN, TGT, LOSS, GRAD, STATS, GATE, HASHT = "VAL", "TRAIN", "TGT", "LOSS", "GRAD", "STATS", "GATE", "HASHT"

_VAL_WORDS = {"val", "valid", "validation", "eval", "test"}
_TRAIN_WORDS = {"train", "training"}
_DATA_WORDS = {
    "tokens",
    "token",
    "toks",
    "tok",
    "ids",
    "data",
    "stream",
    "files",
    "file",
    "shards",
    "shard",
    "docs",
    "doc",
    "inputs",
    "set",
    "pattern",
    "glob",
    "loader",
    "dataset",
    "ds",
    "batches",
    "bytes",
}
# words that make a name a size/setting rather than data (`train_seq_len`, `train_batch_tokens`, `val_tokens_count`)
_SCALAR_WORDS = {
    "len",
    "length",
    "size",
    "count",
    "num",
    "n",
    "every",
    "lr",
    "steps",
    "step",
    "batch",
    "frac",
    "ratio",
    "bpb",
    "loss",
    "time",
    "ms",
    "seconds",
    "dim",
    "max",
    "min",
    "limit",
    "per",
    "stride",
    "total",
}
_TGT_NAMES = {
    "y",
    "ys",
    "tgt",
    "tgts",
    "target",
    "targets",
    "target_ids",
    "tgt_ids",
    "labels",
    "label",
    "next_tok",
    "next_token",
    "next_tokens",
    "y_batch",
    "yb",
    "y_true",
    "gold",
    "tgt_tok",
    "target_tokens",
    "y_ids",
    "tgt_tokens",
    "targ",
    "y_val",
    "yv",
}
_INPUT_NAMES = {
    "x",
    "xs",
    "inp",
    "inputs",
    "input_ids",
    "idx",
    "ids",
    "context",
    "ctx",
    "x_batch",
    "xb",
    "tokens_in",
    "input",
    "prev",
    "prev_ids",
}
_LOSS_CALL = re.compile(
    r"(?i)(loss|nll|entropy|logit|softmax|logprob|log_prob|forward|model|score|lm_head|^ce$|"
    r"_ce$|^m$|^net$|^gpt$|xent|predict|logp)"
)
_ACC_NAME = re.compile(r"(?i)(loss|nll|bpb|bits|logp|log_prob|xent|entropy|score|^ce|_ce|nats|total_l)")
_SANITIZERS = {
    "len",
    "numel",
    "size",
    "dim",
    "ndim",
    "shape",
    "dtype",
    "device",
    "item_size",
    "nelement",
    "isinstance",
    "type",
    "id",
    "print",
    "log0",
    "str",
    "repr",
    "format",
    "range",
}
_IO_CALL = re.compile(r"(?i)(load|read|open|fromfile|memmap|glob|next_batch|loader|stream|shard|take|next)")
_NET_MODULES = (
    "socket.",
    "urllib.request.",
    "urllib3.",
    "requests.",
    "http.client.",
    "httpx.",
    "aiohttp.",
    "huggingface_hub.",
    "torch.hub.",
    "ftplib.",
    "paramiko.",
    "wget.",
)
_NET_FUNCS = {"urlopen", "urlretrieve", "hf_hub_download", "snapshot_download", "load_dataset", "create_connection"}
_SHELL_NET = re.compile(r"\b(curl|wget|pip3?|git\s+clone|huggingface-cli|hf\s+download|scp|rsync|nc|ssh)\b")
_SAVE_FUNCS = {
    "torch.save",
    "pickle.dump",
    "pickle.dumps",
    "np.save",
    "numpy.save",
    "np.savez",
    "numpy.savez",
    "np.savez_compressed",
    "lzma.compress",
    "zlib.compress",
    "brotli.compress",
    "zstandard.compress",
    "torch.jit.save",
}


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


def _inner_loop_ids(nodes) -> set:
    """ids of nodes inside loops nested in the walked body (a pull there belongs to the inner loop)."""
    out = set()
    for n in nodes:
        if isinstance(n, (cst.For, cst.While)) and id(n) not in out:
            for m in walk(n.body):
                out.add(id(m))
    return out


_PULL_CALLS = {"next", "next_batch", "take", "get_batch", "__next__", "popleft", "pop", "sample_batch"}


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
        elif isinstance(n, cst.Call) and last_name(n.func) in _PULL_CALLS and id(n) not in _inner_loop_ids(nodes):
            # `x, y = next(val_iter)` / `val_stream.take(n)`: each iteration pulls fresh validation tokens
            pulled = _root_names(n.func.value) if isinstance(n.func, cst.Attribute) else set()
            for a in n.args:
                pulled |= _root_names(a.value)
            if any(VAL in taint.get(x, frozenset()) | name_source(x) for x in pulled):
                return True
        if isinstance(n, cst.Call):
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
