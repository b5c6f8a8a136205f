"""Probes inside the child: which validation positions feed each forward, backward and score, and when.

Validation positions are recognised by content: the harness writes a validation stream whose token trigrams are all
unique (and absent from the training stream), so any integer tensor slice of it maps back to stream positions.

- Ledger: a backward whose loss saw val targets marks them *trained* in the values of the tensors it updates
  (weight version += 1 per backward / optimizer step); restoring remembered values restores their trained set. A
  forward over val inputs *scores* the targets not yet scored in the current sweep (sliding-window context is not a
  score); a no-grad window whose targets were all scored already starts a new sweep. A scored target that the current
  weights were trained on is a score-after-update.
- Captures: per-position scores as the script computes them under no-grad: `cross_entropy`/`nll_loss` with
  reduction='none' (value = NLL) and `torch.log`/`Tensor.log` (value = log p), mapped to positions by the last
  scored targets of matching size. The flip and normalization probes compare these across runs.
- Phase clock: train-data optimizer steps (a backward with no val targets), shard reads (see pgolf_guard).
"""

from __future__ import annotations

import time
import weakref

import numpy as np
import torch
import torch.nn.functional as F

import pgolf_guard

R: dict = {}  # the current run's state; reset by begin_run


def begin_run(val_tokens: np.ndarray, vocab: int) -> None:
    v = np.asarray(val_tokens, dtype=np.int64)
    base = max(int(vocab), int(v.max()) + 1, 2)
    keys = v[:-2] * base * base + v[1:-1] * base + v[2:]
    order = np.argsort(keys, kind="stable")
    R.clear()
    R.update(
        val=v, base=base, keys=keys[order], kpos=order.astype(np.int64), n=len(v),
        trained=np.zeros(len(v), dtype=bool), scored_version=np.full(len(v), -1, dtype=np.int64),
        trained_version=np.full(len(v), -1, dtype=np.int64),
        version=0, backwards=0, opt_steps=0, val_train_backwards=0, train_backwards=0,
        pending_ce=[], pending_emb=[], frontier=-1, last_emb_key=None,
        scored=0, tainted=0, tainted_first=[], tainted_detail=[], sweeps=0, tainted_versions=[],
        last_targets=None, captures=[], t0=time.time(), t_first_train=None, t_last_train=None,
        t_first_score_after_train=None, t_last_score=None, last_backward_was_train=False,
        trained_events=0, first_trained_positions=[], new_mask=np.zeros(len(v), dtype=bool),
        in_sweep=np.zeros(len(v), dtype=bool), grad_seed=np.zeros(len(v), dtype=bool), segments=[], seg_closed=True,
        score_events=0, trained_at_event=np.full(len(v), -1, dtype=np.int64), collected=False, dead_by_shape={},
        lineage={}, by_ptr={}, table={}, dead_union=np.zeros(len(v), dtype=bool),
    )


def _lookup(t: torch.Tensor) -> np.ndarray | None:
    """Val-stream position of every element of an integer tensor (-1 where unknown), same shape."""
    if not R or t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        return None
    if t.numel() < 3 or t.numel() > 50_000_000:
        return None
    a = t.detach().to("cpu").reshape(-1).to(torch.int64).numpy()
    base, keys, kpos = R["base"], R["keys"], R["kpos"]
    if a.min() < 0 or a.max() >= base:
        a = np.clip(a, 0, base - 1)
    k = a[:-2] * base * base + a[1:-1] * base + a[2:]
    idx = np.searchsorted(keys, k)
    idx = np.minimum(idx, len(keys) - 1)
    hit = keys[idx] == k
    start = np.where(hit, kpos[idx], -1)  # position of element i for trigram starting at i
    pos = np.full(a.shape[0], -1, dtype=np.int64)
    pos[:-2] = start
    # the last two elements (and any trigram broken by a row boundary) come from the trigram ending at them
    end = np.full(a.shape[0], -1, dtype=np.int64)
    end[2:] = np.where(hit, kpos[idx] + 2, -1)
    pos = np.where(pos >= 0, pos, end)
    return pos.reshape(tuple(t.shape))


def _grad_mode() -> bool:
    return torch.is_grad_enabled() and not torch.is_inference_mode_enabled()


def _score_rows(pos: np.ndarray, grad: bool = False) -> None:
    """A forward over validation inputs scores its targets not yet scored in the current sweep (a sliding window's
    context, or a document's earlier chunks in a batch of documents, were scored before). Under no_grad a window
    whose targets were all scored already starts a new sweep (rescoring). A forward with grad (whose per-token losses
    a script may report and then train on, as in score-then-adapt LoRA TTT) scores new targets too, but re-running
    known positions with grad is training, not a score. Known, never trained positions run with grad may be the first
    chunks of a new pass (a LoRA TTT evaluation after a plain one, scored from its grad forward): when the next no-grad
    window starts a sweep and holds more than those, the sweep starts with them already scored."""
    rows = pos.reshape(-1, pos.shape[-1]) if pos.ndim >= 1 else pos.reshape(1, -1)
    now = time.time()
    all_targets = []
    trained = live_trained()
    R["new_mask"] = np.zeros(R["n"], dtype=bool)
    for row in rows:
        t = row[row >= 0] + 1
        t = t[t < R["n"]]
        if t.size == 0:
            continue
        all_targets.append(t)
        new = t[~R["in_sweep"][t]]
        revisit = False
        if new.size == 0 and grad:
            mine = t[trained[t]]
            # never-trained positions run with grad may be the first chunks of a new pass: remembered, not counted yet
            R["grad_seed"][t[~R["trained"][t]]] = True
            if mine.size == 0:
                continue
            # positions the current weights were trained on, run again with grad: another training epoch, unless
            # other positions were scored since that training (a later pass over the document whose losses are
            # reported: score-every-epoch TTT)
            if not (R["trained_at_event"][mine] < R["score_events"]).any():
                continue
            revisit = True
        if new.size == 0:
            R["sweeps"] += 1
            R["collected"] = False
            seed = R["grad_seed"]
            rest = t[~seed[t]]
            R["in_sweep"][:] = False
            if seed.any() and rest.size and not revisit:  # a pass whose first chunks were scored with grad
                R["in_sweep"] |= seed
                new = rest
            else:
                new = t
            seed[:] = False
        elif not grad:
            R["grad_seed"][:] = False
        R["in_sweep"][new] = True
        R["score_events"] += 1
        R["seg_closed"] = R["seg_closed"] or not grad  # an evaluation (no-grad scoring) ends a training segment
        R["frontier"] = max(R["frontier"], int(new.max()))
        R["scored"] += int(new.size)
        R["scored_version"][new] = R["version"]
        R["new_mask"][new] = True
        bad = new[trained[new]]
        if bad.size and not R["collected"]:  # freed adapted copies held only by reference cycles: collect, recheck
            import gc

            gc.collect()
            R["collected"] = True
            trained = live_trained()
            bad = new[trained[new]]
        if bad.size:
            R["tainted"] += int(bad.size)
            if len(R["tainted_first"]) < 10:
                take = bad[: 10 - len(R["tainted_first"])]
                R["tainted_first"].extend(int(x) for x in take)
                R["tainted_detail"].extend([int(x), int(R["trained_version"][x]), R["version"]] for x in take)
            if len(R["tainted_versions"]) < 5:
                R["tainted_versions"].append(R["version"])
    if all_targets and not grad:
        R["last_targets"] = np.concatenate(all_targets)
        full = rows + 1
        R["last_targets_full"] = np.where((rows >= 0) & (full < R["n"]), full, -1)
        if R["t_last_train"] is not None and R["t_first_score_after_train"] is None:
            R["t_first_score_after_train"] = now
        R["t_last_score"] = now


def _on_embedding(inp) -> None:
    if not isinstance(inp, torch.Tensor) or inp.is_floating_point():
        return
    pos = _lookup(inp)
    if pos is None or not (pos >= 0).any():
        return
    if _grad_mode():
        t = pos[pos >= 0] + 1
        R["pending_emb"].append(t[t < R["n"]])
        _score_rows(pos if pos.ndim >= 1 else pos.reshape(1), grad=True)
        return
    try:
        ver = inp._version
    except RuntimeError:  # inference tensors carry no version counter
        ver = -1
    key = (inp.data_ptr(), tuple(inp.shape), ver, R["backwards"], hash(pos.tobytes()))
    if key == R["last_emb_key"]:
        return  # the same ids embedded twice in one forward (value embeddings, bigram tables)
    R["last_emb_key"] = key
    _score_rows(pos if pos.ndim >= 1 else pos.reshape(1))


def _capture(kind: str, values: torch.Tensor, positions: np.ndarray | None, fresh_only: bool = False) -> None:
    if len(R.get("captures", ())) >= 20000:
        return
    v = values.detach().to("cpu").float().reshape(-1).numpy()
    if positions is None:
        lt = R.get("last_targets_full")
        if lt is not None and lt.size == v.size:
            positions = lt.reshape(-1)
        elif R.get("last_targets") is not None and R["last_targets"].size == v.size:
            positions = R["last_targets"]
        elif lt is not None and v.size % lt.shape[0] == 0 and v.size < lt.size:
            # scored tail of each window ([B, T] sliced to [B, s])
            s = v.size // lt.shape[0]
            positions = lt[:, -s:].reshape(-1)
        else:
            return
    positions = np.asarray(positions, dtype=np.int64).reshape(-1)
    keep = positions >= 0
    fresh = keep.copy()
    fresh[keep] = R["new_mask"][positions[keep]]
    if fresh.any():  # scores of a forward the ledger saw: only the positions it newly scored (not the context)
        keep = fresh
    elif fresh_only:
        return
    R["captures"].append((kind, positions[keep].copy(), v[keep].copy()))


_orig_ce = F.cross_entropy


def _on_ce(target, out, reduction, logits=None, kwargs=None) -> None:
    if not isinstance(target, torch.Tensor) or target.is_floating_point():
        return
    pos = _lookup(target)
    if pos is None:
        return
    if _grad_mode():
        p = pos[pos >= 0]
        if p.size:
            R["pending_ce"].append(p)
        if reduction == "none" and isinstance(out, torch.Tensor) and out.numel() == pos.size:
            keep = pos.reshape(-1) >= 0
            _capture("nll", out.reshape(-1)[torch.from_numpy(keep)], pos.reshape(-1)[keep], fresh_only=True)
        return
    if reduction != "none" and logits is not None:  # a mean/sum still is a sum of these per-position NLLs
        kw = {k: v for k, v in (kwargs or {}).items() if k in ("ignore_index", "label_smoothing")}
        out = _orig_ce(logits.detach().float(), target, reduction="none", **kw)
    if isinstance(out, torch.Tensor) and out.numel() == pos.size:
        keep = pos.reshape(-1) >= 0
        if keep.any():
            _capture("nll", out.reshape(-1)[torch.from_numpy(keep)], pos.reshape(-1)[keep])


def _on_backward(roots=(), inputs=None) -> None:
    if not R:
        return
    pend = R["pending_ce"] or R["pending_emb"]
    R["backwards"] += 1
    R["version"] += 1
    if pend:
        p = np.unique(np.concatenate(pend))
        if p.size:
            _mark_leaves(inputs if inputs is not None else _leaves(roots), p)
            R["trained_at_event"][p] = R["score_events"]
            newly = p[~R["trained"][p]]
            if len(R["first_trained_positions"]) < 5 and newly.size:
                R["first_trained_positions"].append([int(newly.min()), int(newly.max()), R["version"]])
            R["trained"][p] = True
            R["trained_version"][newly] = R["version"]
            R["val_train_backwards"] += 1
            R["trained_events"] += 1
            R["last_backward_was_train"] = False
    else:
        R["train_backwards"] += 1
        R["last_backward_was_train"] = True
        now = time.time()
        R["t_last_train"] = now
        if R["t_first_train"] is None:
            R["t_first_train"] = now
        R["t_first_score_after_train"] = None
        # training segments: consecutive train-data steps with no scoring in between (a script that trains, evaluates
        # and trains again has two; reading validation data between them is not reading it during training)
        if R["segments"] and not R["seg_closed"]:
            R["segments"][-1][1] = now
        elif len(R["segments"]) < 2000:
            R["segments"].append([now, now])
        R["seg_closed"] = False
    R["pending_ce"] = []
    R["pending_emb"] = []


# ---- weight lineage: which validation positions the *current values* of each trained tensor have seen -------------
# A val backward marks the leaves of its graph (parameters, SLOT deltas, LoRA adapters); the values each had just
# before are remembered by content hash. Copying remembered values back (load_state_dict, copy_) restores that set:
# a context-only adaptation whose weights are restored after each window leaves nothing trained. Unknown values
# (dequantized, averaged) keep what the tensor had and inherit what every trained tensor currently holds.


def _tensors(x) -> tuple:
    if isinstance(x, torch.Tensor):
        return (x,)
    return tuple(t for t in (x or ()) if isinstance(t, torch.Tensor))


def _leaves(roots) -> list:
    """Leaf tensors (AccumulateGrad variables) reachable from the roots' autograd graphs."""
    out, seen = [], set()
    stack = [r.grad_fn for r in roots if getattr(r, "grad_fn", None) is not None]
    while stack:
        fn = stack.pop()
        if fn is None or id(fn) in seen:
            continue
        seen.add(id(fn))
        var = getattr(fn, "variable", None)
        if isinstance(var, torch.Tensor):
            out.append(var)
        stack.extend(nxt for nxt, _ in getattr(fn, "next_functions", ()) if nxt is not None)
    for r in roots:
        if r.grad_fn is None and r.requires_grad:
            out.append(r)
    return out


def _digest(t: torch.Tensor):
    if t.numel() == 0 or t.numel() > 20_000_000:
        return None
    import hashlib

    raw = t.detach().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes()
    return (str(t.dtype), tuple(t.shape), hashlib.blake2b(raw, digest_size=16).digest())


def _entry(t: torch.Tensor, create: bool = True):
    key = id(t)
    e = R["lineage"].get(key)
    if e is None and create:
        def gone(_ref, key=key, ptr=t.data_ptr(), shape=tuple(t.shape)):
            dead = R.get("lineage", {}).pop(key, None)
            if dead is not None:
                R["dead_union"] |= dead[1]
                prev = R["dead_by_shape"].get(shape)
                R["dead_by_shape"][shape] = dead[1].copy() if prev is None else (prev | dead[1])
            if R.get("by_ptr", {}).get(ptr) == key:
                R["by_ptr"].pop(ptr, None)

        e = [weakref.ref(t, gone), np.zeros(R["n"], dtype=bool)]
        R["lineage"][key] = e
    if e is not None and t.data_ptr():
        R["by_ptr"][t.data_ptr()] = key
    return e


def _mark_leaves(leaves, positions: np.ndarray) -> None:
    for t in leaves:
        e = _entry(t)
        h = _digest(t)
        if h is not None:
            R["table"].setdefault(h, e[1].copy())
        e[1][positions] = True


def live_trained() -> np.ndarray:
    """Positions trained into the values of the tensors alive now (what a forward right now can have seen)."""
    out = np.zeros(R["n"], dtype=bool)
    for ref, tr in list(R.get("lineage", {}).values()):
        if ref() is not None:
            out |= tr
    return out


def _held(shape) -> np.ndarray:
    """What every trained tensor of this shape holds now (the dead ones as they were when freed): the tensors whose
    values a load of unknown content can derive from (a LoRA adapter's positions never flow into a base weight)."""
    out = np.zeros(R["n"], dtype=bool)
    for ref, tr in list(R.get("lineage", {}).values()):
        t = ref()
        if t is not None and tuple(t.shape) == shape:
            out |= tr
    dead = R["dead_by_shape"].get(shape)
    return out if dead is None else (out | dead)


def _reassess(params) -> None:
    for t in params:
        e = _entry(t, create=False)
        h = _digest(t)
        if h is not None and h in R["table"]:
            if e is None:
                e = _entry(t)
            e[1] = R["table"][h].copy()
            continue
        held = _held(tuple(t.shape))
        if held.any():  # unknown values while a trained tensor of this shape exists: conservatively inherit it
            e = e or _entry(t)
            e[1] |= held


def _on_copy(t: torch.Tensor) -> None:
    key = R["by_ptr"].get(t.data_ptr())
    e = R["lineage"].get(key) if key is not None else None
    if e is None or e[0]() is None:
        return
    _reassess([e[0]()])


def _on_opt_step(*a, **k) -> None:
    if R:
        R["opt_steps"] += 1
        R["version"] += 1
        if R["last_backward_was_train"]:
            R["t_last_train"] = time.time()
            if R["segments"] and not R["seg_closed"]:
                R["segments"][-1][1] = R["t_last_train"]


_busy = [False]  # with a TorchFunctionMode active torch re-dispatches to the (patched) public API: observe once


def _quiet(fn, *a, **k):
    """Call an original torch function with observation suspended (its re-dispatch and internals are not events)."""
    prev = _busy[0]
    _busy[0] = True
    try:
        return fn(*a, **k)
    finally:
        _busy[0] = prev


def _observe(fn, *a) -> None:
    if not R or _busy[0]:
        return
    _busy[0] = True
    try:
        fn(*a)
    except Exception:  # noqa: BLE001 - a probe must never change the script's behaviour
        pass
    finally:
        _busy[0] = False


def install() -> None:
    emb, ce, nll = F.embedding, F.cross_entropy, F.nll_loss
    tlog, tmeth = torch.log, torch.Tensor.log
    tb, ab, ag = torch.Tensor.backward, torch.autograd.backward, torch.autograd.grad

    def embedding(input, weight, *a, **k):
        _observe(_on_embedding, input)
        return _quiet(emb, input, weight, *a, **k)

    def cross_entropy(input, target, *a, **k):
        busy = _busy[0]
        out = _quiet(ce, input, target, *a, **k)
        if not busy:
            _observe(_on_ce, target, out, k.get("reduction", a[4] if len(a) > 4 else "mean"), input, k)
        return out

    def nll_loss(input, target, *a, **k):
        busy = _busy[0]
        out = _quiet(nll, input, target, *a, **k)
        if not busy:
            _observe(_on_ce, target, out, k.get("reduction", a[4] if len(a) > 4 else "mean"), None, k)
        return out

    def _log_obs(x, out):
        if not _grad_mode() and isinstance(x, torch.Tensor) and x.is_floating_point() and x.numel() < 10_000_000:
            _capture("logp", out, None)

    def log(x, *a, **k):
        busy = _busy[0]
        out = _quiet(tlog, x, *a, **k)
        if not busy:
            _observe(_log_obs, x, out)
        return out

    def log_method(self, *a, **k):
        busy = _busy[0]
        out = _quiet(tmeth, self, *a, **k)
        if not busy:
            _observe(_log_obs, self, out)
        return out

    def backward(self, *a, **k):
        _observe(_on_backward, (self,))
        return _quiet(tb, self, *a, **k)

    def autograd_backward(tensors, *a, **k):
        _observe(_on_backward, _tensors(tensors), _tensors(k["inputs"]) if k.get("inputs") is not None else None)
        return _quiet(ab, tensors, *a, **k)

    def autograd_grad(outputs, inputs, *a, **k):
        _observe(_on_backward, _tensors(outputs), _tensors(inputs))
        return _quiet(ag, outputs, inputs, *a, **k)

    load_sd = torch.nn.Module.load_state_dict
    copy_ = torch.Tensor.copy_

    def load_state_dict(self, *a, **k):
        out = load_sd(self, *a, **k)
        _observe(_reassess, list(self.parameters()))
        return out

    def tensor_copy_(self, *a, **k):
        out = copy_(self, *a, **k)
        if R.get("by_ptr") and not _busy[0]:
            _observe(_on_copy, self)
        return out

    torch.nn.Module.load_state_dict = load_state_dict
    torch.Tensor.copy_ = tensor_copy_

    F.embedding = embedding
    F.cross_entropy = cross_entropy
    F.nll_loss = nll_loss
    torch.log = log
    torch.Tensor.log = log_method
    torch.Tensor.backward = backward
    torch.autograd.backward = autograd_backward
    torch.autograd.grad = autograd_grad
    from torch.optim.optimizer import register_optimizer_step_post_hook

    register_optimizer_step_post_hook(_on_opt_step)
    _wrap_readers()


def _wrap_readers() -> None:
    """Shard reads that bypass Python's `open` (numpy/torch C readers) are reported to the guard's trace."""
    for mod, name in ((np, "fromfile"), (np, "load"), (torch, "from_file"), (torch, "load")):
        orig = getattr(mod, name)

        def wrapper(file, *a, _orig=orig, _name=name, **k):
            pgolf_guard.note_shard(file, _name)
            return _orig(file, *a, **k)

        setattr(mod, name, wrapper)
    mm = np.memmap

    class memmap(mm):
        def __new__(subtype, filename, *a, **k):
            pgolf_guard.note_shard(filename, "memmap")
            return mm.__new__(subtype, filename, *a, **k)

    np.memmap = memmap


def _runs(a: np.ndarray) -> list:
    """Run-length form [[first_position, last_position, value], ...] of a per-position array (-1 = never)."""
    out, start = [], 0
    for i in range(1, len(a) + 1):
        if i == len(a) or a[i] != a[start]:
            if a[start] != -1:
                out.append([start, i - 1, int(a[start])])
            start = i
    return out[:2000]


def summary() -> dict:
    """JSON-able summary of the current run (captures returned separately)."""
    if not R:
        return {}
    keys = ("scored", "tainted", "tainted_first", "sweeps", "version", "backwards", "opt_steps", "val_train_backwards",
            "train_backwards", "t0", "t_first_train", "t_last_train", "t_first_score_after_train", "t_last_score",
            "tainted_versions", "first_trained_positions", "tainted_detail")
    out = {k: R[k] for k in keys}
    out["score_versions"] = _runs(R["scored_version"])  # the ledger: weight version that scored each position
    out["train_versions"] = _runs(R["trained_version"])  # ... and the version whose update first used it
    out["trained_positions"] = int(R["trained"].sum())
    out["train_segments"] = [[float(a), float(b)] for a, b in R["segments"]]
    out["n_val"] = int(R["n"])
    return out
