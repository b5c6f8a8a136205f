"""PG4xx evaluation legality: each predicted distribution depends only on the artifact and the strict prefix, is a
full normalized distribution, each token is scored before any update that used it, in one left-to-right pass.

Works on the flow model (auditor.flow): `train` sites (backward on a loss computed from validation tokens), `score`
sites (a validation loss accumulated into the reported sum), loops (chunk/window/doc loops select data; epoch loops
repeat), and calls to functions that train/score (followed transitively). One shared pass (`analyse`, memoized on
the AuditContext) computes the findings of every PG4xx rule; each rule class reports its own.
"""

from __future__ import annotations

import re

from auditor.findings import Finding
from auditor.flow import GATE, GRAD, LOSS, STATS, VAL
from auditor.flow import _root_names as _roots
from auditor.rules.base import Rule, register
from auditor.rules.legality_state import train_effect, uses_any
from auditor.rules.legality_examples import ILLEGAL_EXAMPLES, LEGAL_EXAMPLES, examples  # noqa: F401

_CALIB_NAME = re.compile(r"(?i)(hessian|calib|gptq)")
# an earlier chunk (`ci - 1`, `chunks[i-1]`, `prev_`, `last_`); `reshape(-1)` / `[:-1]` are no step back
_PREV = re.compile(r"(?i)([\w\])]\s*-\s*1\b|\bprev|\blast_)")
_CTX_ONLY = re.compile(r"\[\s*(?:[^\[\]]*,\s*)?:\s*[A-Za-z_][\w.]*\s*(?:-\s*\d+\s*)?(?:,[^\[\]]*)?\]")


class Summary:
    """Per-function transitive facts: trains on validation tokens / scores them (any path, and with flags on)."""

    def __init__(self, prog):
        self.prog = prog
        self.trains = {f: [False, False] for f in prog.funcs}  # [any, on]
        self.scores = {f: [False, False] for f in prog.funcs}
        self.stats = {f: [False, False] for f in prog.funcs}
        self.effect = {}  # train site -> ("persistent" | "local" | "restored", names the optimizer updates)
        for f in prog.funcs:
            for s in f.sites:
                if s.kind == "train" and VAL in s.labels:
                    self.effect[s] = train_effect(prog, f, s)
                    if self.effect[s][0] != "persistent":
                        continue  # a throw-away adapter or restored weights: callers never see the change
                    self.trains[f][0] = True
                    self.trains[f][1] |= not s.off
                elif s.kind == "score":
                    self.scores[f][0] = True
                    self.scores[f][1] |= not s.off
                elif s.kind == "stats" and VAL in s.labels:
                    self.stats[f][0] = True
                    self.stats[f][1] |= not s.off
        # quantization calibration (GPTQ Hessians, activation statistics): forward hooks or calibration helpers;
        # fed with validation tokens before the scoring it adapts the weights to those tokens
        self.calib = {
            f: bool(_CALIB_NAME.search(f.name))
            or any(c.name in ("register_forward_hook", "register_forward_pre_hook") for c in f.calls)
            for f in prog.funcs
        }
        for _ in range(12):
            changed = False
            for f in prog.funcs:
                for c in f.calls:
                    if c.is_ref:
                        continue
                    for g in prog.targets(c):
                        if g is f:
                            continue
                        for table in (self.trains, self.scores, self.stats):
                            a, o = table[f]
                            na = a or table[g][0]
                            no = o or (table[g][1] and not c.off)
                            if (na, no) != (a, o):
                                table[f][0], table[f][1] = na, no
                                changed = True
            if not changed:
                break
        for _ in range(6):
            changed = False
            for f in prog.funcs:
                if not self.calib[f] and any(
                    self.calib[g] for c in f.calls if not c.is_ref for g in prog.targets(c) if g is not f
                ):
                    self.calib[f] = changed = True
            if not changed:
                break

    def kind(self, g) -> str:
        t, s = self.trains[g][0], self.scores[g][0]
        return "ttt" if t and s else "train" if t else "score" if s else ""


class Event:
    calib = False
    effect = ("persistent", set())

    def __init__(
        self, kind, order, loops, off, guards, unit, node, labels=frozenset(), callee=None, call=None, site=None
    ):
        self.kind, self.order, self.loops, self.off, self.guards = kind, order, loops, off, guards
        self.unit, self.node, self.labels, self.callee, self.call, self.site = unit, node, labels, callee, call, site


def _events(f, summ):
    ev = []
    for s in f.sites:
        if s.kind == "train" and VAL in s.labels:
            e = Event("train", s.order, s.loops, s.off, s.guards, f.unit, s.node, s.labels, site=s)
            e.effect = summ.effect.get(s, e.effect)
            ev.append(e)
        elif s.kind == "score":
            ev.append(Event("score", s.order, s.loops, s.off, s.guards, f.unit, s.node, s.labels, site=s))
    for c in f.calls:
        if c.is_ref:
            continue
        for g in summ.prog.targets(c):
            if g is f:
                continue
            k = summ.kind(g)
            if not k:
                if summ.calib[g] and any(VAL in lab and LOSS not in lab for _k, lab, _c in c.arg_labels):
                    e = Event("train", c.order, c.loops, c.off, c.guards, f.unit, c.node, callee=g, call=c)
                    e.calib = True
                    ev.append(e)
                    break
                continue
            table = summ.trains if k == "train" else summ.scores
            off = c.off or not (table[g][1] or (k == "ttt" and summ.trains[g][1]))
            ev.append(Event(k, c.order, c.loops, off, c.guards, f.unit, c.node, callee=g, call=c))
            break
    return sorted(ev, key=lambda e: e.order)


def _common_loops(a, b):
    out = []
    for x, y in zip(a, b):
        if x is y:
            out.append(x)
        else:
            break
    return out


def _level(*events, base="error"):
    return "note" if any(e.off or e.unit is None for e in events) else base


def _off_note(*events) -> str:
    guards = [g for e in events for g in e.guards]
    if any(e.off for e in events):
        why = f"`{guards[0]}` is false" if guards else "a flag is off"
        return f" (switched off in this run: {why}; it would be an error if enabled)"
    return ""


def _fname(e) -> str:
    return e.callee.qualname if e.callee is not None else "this function"


def _model_overlap(a, b) -> bool:
    """Do two calls pass the same (non-data) object, e.g. the same model? Unknown -> True."""
    if a.call is None or b.call is None:
        return True
    na = {code for _k, lab, code in a.call.arg_labels if not lab and code}
    nb = {code for _k, lab, code in b.call.arg_labels if not lab and code}
    models = {x for x in na | nb if re.search(r"(?i)model|net|gpt|module", x)}
    if not models:
        return True
    return bool(na & nb & models)


def _data_roots(f, e, depth: int = 5) -> set:
    """Names the data of an event derives from in its function (through assignments, a few levels deep)."""
    if e.call is not None:
        seen = set()
        for a in e.node.args if hasattr(e.node, "args") else ():
            seen |= _roots(a.value)
    elif e.site is not None:
        seen = set(e.site.detail.get("roots", ()))
    else:
        return set()
    frontier = set(seen)
    for _ in range(depth):
        nxt = set()
        for r in frontier:
            for v in f.defs.get(r, []):
                nxt |= _roots(v)
        nxt -= seen
        if not nxt:
            break
        seen |= nxt
        frontier = nxt
    return seen


def _context_only(f, t) -> bool:
    """The optimized loss uses only context positions strictly before the scored ones (`y[:, :s]`)."""
    roots = set(t.site.detail.get("roots", ())) if t.site is not None else set()
    seen, texts = set(), []
    frontier = list(roots)
    for _ in range(3):
        nxt = []
        for r in frontier:
            if r in seen:
                continue
            seen.add(r)
            for v in f.defs.get(r, []):
                code = f.unit.code(v)
                texts.append(code)
                nxt += re.findall(r"[A-Za-z_]\w*", code)
        frontier = nxt
    joined = "\n".join(texts)
    return bool(_CTX_ONLY.search(joined)) and not re.search(r"\[\s*(?:[^\[\]]*,\s*)?[A-Za-z_][\w.]*\s*:\s*\]", joined)


def analyse(ctx) -> list:
    """Findings of all PG4xx rules for one submission (call through `_findings`, which shares one run)."""
    prog = ctx.prog
    if prog is None:
        return []
    summ = Summary(prog)
    out: list = []
    seen = set()

    def add(rule, e, msg, level=None):
        lvl = level or _level(e)
        fnd = _finding(e, rule, lvl, msg + (_off_note(e) if lvl == "note" else ""))
        key = (fnd.rule, fnd.file, fnd.line, fnd.col)
        if key not in seen:
            seen.add(key)
            out.append(fnd)

    for f in prog.funcs:
        if f.reach == "dead":
            continue
        ev = _events(f, summ)
        if f.reach == "off":
            for e in ev:
                e.off = True
        trains = [e for e in ev if e.kind in ("train", "ttt")]
        scores = [e for e in ev if e.kind in ("score", "ttt")]
        for t in trains:
            for s in scores:
                if t is s:
                    continue
                common = _common_loops(t.loops, s.loops)
                lvl = _level(t, s)
                # PG402: an epoch/repeat loop around both the adaptation and the scoring
                repeat = [lp for lp in common if not lp.is_data]
                if repeat and t.kind == "train" and s.kind == "score":
                    add(
                        "PG402",
                        s,
                        f"the reported loss is accumulated inside a repetition loop "
                        f"(`{f.unit.code(repeat[0].node).splitlines()[0].strip()[:60]}`) that also trains on the same "
                        f"validation tokens in {f.qualname}; after the first pass every token is scored by a model "
                        f"that has already been trained on it. Score each chunk exactly once, before any epoch of "
                        f"training on it (score-first TTT), and accumulate the loss outside the epoch loop.",
                        lvl,
                    )
                    continue
                if t.order >= s.order:
                    continue
                if t.kind == "ttt" and s.kind in ("score", "ttt"):
                    if common or t.callee is None or (t.callee.deep_copies and not _model_overlap(t, s)):
                        continue
                    add(
                        "PG403",
                        s,
                        f"{_fname(s)} scores the validation set again after {t.callee.qualname} "
                        f"(line {_line(t)}) adapted the weights on those same tokens (rescoring after TTT, or "
                        f"'pre-quantization TTT' whose weights are then quantized and scored); the second pass sees "
                        f"weights trained on the tokens it scores. Report the single score-first TTT pass and never "
                        f"evaluate, quantize or serialize the adapted weights.",
                        lvl,
                    )
                    continue
                if t.kind != "train":
                    continue
                if common:
                    inner = common[-1]
                    troots = _data_roots(f, t)
                    if inner.derived and not (troots & inner.derived):
                        continue  # trains on data not selected by this iteration (earlier, already scored docs)
                    code = (
                        t.unit.code(t.node)
                        + " "
                        + " ".join(
                            t.unit.code(v)
                            for r in (t.site.detail.get("roots", ()) if t.site else ())
                            for v in f.defs.get(r, [])[:2]
                        )
                    )
                    if _PREV.search(code):
                        continue  # trains on an earlier chunk than the one scored next
                    if t.site is not None and _context_only(f, t):
                        continue  # trains only on context positions before the scored ones (already scored)
                    if GRAD in t.labels:
                        add(
                            "PG405",
                            t,
                            f"per-window parameters (requires_grad tensor / nn.Parameter) are optimized in "
                            f"{f.qualname} against positions of the window that are then scored below (line order); "
                            f"the scored distribution already saw its targets. Optimize only on context positions "
                            f"strictly before the scored ones (e.g. `y[:, :s]`), or score first.",
                            lvl,
                        )
                        continue
                    how = (
                        f"calls {t.callee.qualname}, which trains on validation tokens,"
                        if t.callee is not None
                        else "trains on validation tokens (backward at this line)"
                    )
                    add(
                        "PG401",
                        t,
                        f"{f.qualname} {how} before the same chunk is scored later in the loop "
                        f"(line {_line(s)}); each token must be scored before any update that used it. Move the "
                        f"scoring of the chunk before its training step (score-first TTT).",
                        lvl,
                    )
                    continue
                if t.effect[0] == "restored":
                    continue  # the weights are put back from a snapshot before anything after the loop scores
                if t.site is not None and any(
                    x is not s and x.order < t.order and _common_loops(x.loops, t.loops) for x in scores
                ):
                    add(
                        "PG403",
                        s,
                        f"{f.qualname} scores the validation tokens a second time (this line) after its "
                        f"score-first adaptation loop trained on them (line {_line(t)}); the reported number must come "
                        f"from the single pass that scored each token before training on it. Report the first "
                        f"pass and drop the rescoring.",
                        lvl,
                    )
                    continue
                if t.calib:
                    add(
                        "PG401",
                        t,
                        f"{f.qualname} calls {t.callee.qualname}, which collects quantization statistics "
                        f"(GPTQ Hessians / calibration) from validation tokens before they are scored ({_fname(s)} "
                        f"at line {_line(s)}); the quantized weights are then fitted to the tokens they are scored on. "
                        f"Calibrate on training shards (inside the training budget) or on self-generated tokens.",
                        lvl,
                    )
                    continue
                if t.site is not None and t.effect[0] == "local" and not _scoring_reads(f, s, t.effect[1]):
                    names = ", ".join(f"`{n}`" for n in sorted(t.effect[1])[:3])
                    add(
                        "PG401",
                        t,
                        f"{f.qualname} trains a throw-away object ({names}, created here and never handed out) on "
                        f"validation tokens before they are scored ({_fname(s)} at line {_line(s)}); the scored "
                        f"weights are not updated by it, so the reported score does not depend on it. Disputed: "
                        f"touching validation tokens before scoring them at all (e.g. a compile warm-up); warm up "
                        f"on dummy or training tokens to avoid the question.",
                        "warning" if lvl == "error" else lvl,
                    )
                    continue
                what = f"calls {t.callee.qualname}, which trains" if t.callee is not None else "trains"
                add(
                    "PG401",
                    t,
                    f"{f.qualname} {what} on validation tokens before they are scored "
                    f"({_fname(s)} at line {_line(s)}); fine-tuning on validation data before "
                    f"quantization/serialization or evaluation leaks the targets into the weights. Train only on "
                    f"training shards; adapt at eval time only on tokens already scored.",
                    lvl,
                )
        # PG404: the target inside a key, or a gate depending on the target
        for site in f.sites:
            if site.kind == "tgt_key" and (VAL in site.labels or summ.scores[f][0]):
                e = _site_event(f, site)
                add(
                    "PG404",
                    e,
                    f"a cache/hash key in {f.qualname} includes the realized target token; the predicted "
                    f"probability then depends on the token being predicted (an oracle lookup). Key caches on "
                    f"context tokens only and read the full next-token distribution from them.",
                )
            elif site.kind == "score" and (GATE in site.labels or site.tgt_gate):
                e = _site_event(f, site)
                add(
                    "PG404",
                    e,
                    f"the loss accumulated in {f.qualname} is selected or mixed by a condition on the "
                    f"target token (`== y` / `y in cache`); gates and mixing weights must not depend on the target. "
                    f"Compute gates from the context only and mix full distributions.",
                )
            elif site.kind == "byte_mix" and VAL in site.labels:
                e = _site_event(f, site)
                add(
                    "PG404",
                    e,
                    f"{f.qualname} mixes a byte-level model with the neural model's log-probability of the realized "
                    f"token spread over that token's bytes (divided by its byte count); this scores only the "
                    f"observed token's bytes, not a normalized distribution over the next token (every byte "
                    f"sequence the vocabulary could produce). Mix full next-token distributions (token level), or "
                    f"derive a proper byte distribution from the full token distribution.",
                )
            elif (
                site.kind == "min_loss"
                and (any(x.kind == "score" for x in f.sites) or _running_best(f, site))
                and not _lse_shift(f, site)
            ):
                e = _site_event(f, site)
                add(
                    "PG403",
                    e,
                    f"{f.qualname} keeps the better of several predictions of the same token "
                    f"({site.detail.get('how')} over losses or probabilities read at the realized target); choosing "
                    f"the pass, model or n-gram order that happened to score the target best is an oracle. Commit to "
                    f"one prediction per token, chosen from the context only.",
                )
        # PG404: p(target) = count(context, target) / count(context) read from two count tables
        for node in _target_count_ratios(f):
            e = Event("tcount", 0, (), f.reach == "off", (), f.unit, node)
            add(
                "PG404",
                e,
                f"{f.qualname} computes the n-gram probability of the realized token as a count looked up with the "
                f"target (`{f.unit.code(node)[:60]}`) over a separately kept context count; only the observed "
                f"token's probability exists, never a distribution over the vocabulary that provably sums to one "
                f"(the rulings on target-keyed caches). Read a full row of next-token counts for the context and "
                f"normalize it.",
            )
        # PG406: statistics from the validation stream built before the scoring loop, then read by it
        stats = [s for s in f.sites if s.kind == "stats" and VAL in s.labels]
        score_sites = [s for s in f.sites if s.kind == "score" and STATS in s.labels]
        for b in stats:
            for s in score_sites:
                common = _common_loops(b.loops, s.loops)
                if b.order < s.order and common and _same_token_index(f, b, s):
                    e = _site_event(f, b)
                    add(
                        "PG406",
                        e,
                        f"{f.qualname} adds the token to its cache/statistics before that same token is "
                        f"scored (line {_line(_site_event(f, s))}); the prediction then already contains its target. "
                        f"Score the position first, then update the cache with it.",
                    )
                    break
                if b.order < s.order and not common:
                    e = _site_event(f, b)
                    add(
                        "PG406",
                        e,
                        f"{f.qualname} builds counts/statistics over the validation tokens in a pass that "
                        f"finishes before they are scored (line {_line(_site_event(f, s))}); every prediction then "
                        f"uses future tokens. Update caches only with tokens already scored, inside the scoring loop.",
                    )
                    break
        # interprocedural two-pass: a stats-building call before a scoring call that receives the table
        calls = sorted([c for c in f.calls if not c.is_ref], key=lambda c: c.order)
        for i, c in enumerate(calls):
            gs = prog.targets(c)
            if not any(summ.stats[g][0] and not summ.scores[g][0] for g in gs):
                continue
            for d in calls[i + 1 :]:
                if d.order <= c.order or _common_loops(c.loops, d.loops):
                    continue
                if any(summ.scores[g][0] for g in prog.targets(d)) and any(
                    STATS in lab for _k, lab, _c in d.arg_labels
                ):
                    e = Event("stats", c.order, c.loops, c.off or f.reach == "off", c.guards, f.unit, c.node)
                    add(
                        "PG406",
                        e,
                        f"{f.qualname} builds statistics from the whole validation stream "
                        f"({c.name}) and then passes them to {d.name}, which scores the same tokens (two-pass). "
                        f"Build caches online from already-scored tokens only.",
                    )
                    break
    return out


def _scoring_reads(f, s, names: set) -> bool:
    """Does a scoring event use any of `names` (e.g. the adapter a warm-up trained)? Unknown -> True."""
    if s.call is not None:
        return any(code.split(".")[0] in names for _k, _lab, code in s.call.arg_labels if code) or uses_any(
            f, s.node, names
        )
    if s.site is not None:
        return uses_any(f, s.node, names)
    return True


def _lookups(f, node, depth: int = 2) -> list:
    """[(table, key node)] of `t[k]` / `t.get(k)` reads in an expression and, `depth` assignments back, in the
    expressions of the names it uses."""
    import libcst as cst

    from auditor.cstwalk import walk
    from auditor.flow_labels import dotted

    out, frontier, seen = [], [node], set()
    for _ in range(depth + 1):
        nxt = []
        for n in frontier:
            for sub in walk(n):
                if isinstance(sub, cst.Subscript) and sub.slice and isinstance(sub.slice[-1].slice, cst.Index):
                    out.append((dotted(sub.value) or f.unit.code(sub.value), sub.slice[-1].slice.value))
                elif (
                    isinstance(sub, cst.Call)
                    and isinstance(sub.func, cst.Attribute)
                    and sub.func.attr.value == "get"
                    and sub.args
                ):
                    out.append((dotted(sub.func.value) or f.unit.code(sub.func.value), sub.args[0].value))
            for r in _roots(n) - seen:
                seen.add(r)
                nxt += f.defs.get(r, [])[:3]
        frontier = nxt
    return out


def _target_keyed(f, key) -> bool:
    from auditor.flow import TGT

    return any(TGT in f.taint.get(r, frozenset()) and LOSS not in f.taint.get(r, frozenset()) for r in _roots(key))


def _target_count_ratios(f) -> list:
    """`(count + 1) / (total + V)` where count = counts[ctx].get(target) and total = totals[ctx]: the realized token's
    probability from two separately kept count tables."""
    import libcst as cst

    from auditor.cstwalk import walk

    if f.is_module or f.reach == "dead" or not any("TGT" in v for v in f.taint.values()):
        return []
    out = []
    for n in walk(f.node):
        if not (isinstance(n, cst.BinaryOperation) and isinstance(n.operator, cst.Divide)):
            continue
        num, den = _lookups(f, n.left), _lookups(f, n.right)
        if not num or not den:
            continue
        t_num = {b for b, k in num if _target_keyed(f, k)}
        t_den = {b for b, k in den if _target_keyed(f, k)}
        if t_num and not t_den and {b for b, _k in den} - t_num and "sum(" not in f.unit.code(n.right):
            out.append(n)
    return out


def _running_best(f, site) -> bool:
    """`best[i] = torch.minimum(best[i], nll)`: a per-token buffer keeps the best loss over passes (what is reported
    is computed from the buffer, whatever the accumulator is called)."""
    import libcst as cst

    from auditor.cstwalk import walk

    if not isinstance(site.node, cst.Call):
        return False
    arg_roots = set().union(*[_roots(a.value) for a in site.node.args]) if site.node.args else set()
    for n in walk(f.node):
        if isinstance(n, cst.Assign) and n.value is site.node:
            for t in n.targets:
                if isinstance(t.target, cst.Subscript) and _roots(t.target.value) & arg_roots:
                    return True
    return False


def _lse_shift(f, site) -> bool:
    """`m = max(a, b)` used only as the log-sum-exp shift (`m + log(w*exp(a - m) + ...)`): a mixture, no oracle."""
    names = [n for n, vals in f.defs.items() if any(v is site.node for v in vals)]
    if len(names) != 1:
        return False
    m = re.escape(names[0])
    code = f.unit.code(f.node)
    return bool(re.search(r"exp\([^()]*-\s*" + m + r"\b", code))


def _same_token_index(f, b, s) -> bool:
    """Do a cache update and a score read index the same token (`row[toks[t]] += 1` ... `p[toks[t]]`)?"""
    from auditor.cstwalk import walk
    import libcst as cst

    def subs(node):
        return {
            f.unit.code(n.slice[0].slice)
            for n in walk(node)
            if type(n) is cst.Subscript and n.slice and isinstance(n.slice[0].slice, cst.Index)
        }

    shared = subs(b.node) & subs(s.node)
    return any(x and not _PREV.search(x) and not x.strip().lstrip("-").isdigit() for x in shared)


def _site_event(f, site):
    return Event(
        site.kind,
        site.order,
        site.loops,
        site.off or f.reach == "off",
        site.guards,
        f.unit,
        site.node,
        site.labels,
        site=site,
    )


def _line(e) -> int:
    try:
        return e.unit.location(e.node)[1]
    except Exception:
        return 0


def _finding(e, rule, level, msg) -> Finding:
    file, line, col, note = e.unit.location(e.node)
    return Finding(rule, level, note + msg, file, line, col)



def _findings(facts) -> list:
    return facts.memo("legality.findings", lambda: analyse(facts))


class _Legality(Rule):
    """A PG4xx rule: its findings come from the one shared legality pass."""

    def check(self, facts):
        return [f for f in _findings(facts) if f.rule == self.id]


@register
class PG401(_Legality):
    id, level = "PG401", "error"
    title = "weights updated on validation tokens before those tokens are scored"
    why = (
        "Each token must be scored before any update that used it: test-time training, fine-tuning before "
        "quantization, or calibration (GPTQ Hessians) on validation tokens that are scored afterwards puts their "
        "targets into the weights (maintainer rulings on pre-evaluation and pre-quantization TTT)."
    )
    fix = (
        "Train only on training shards; at evaluation time adapt only on tokens already scored (score each chunk "
        "under no_grad first, then train on it, never on the last one)."
    )
    LEGAL, ILLEGAL = examples("PG401")


@register
class PG402(_Legality):
    id, level = "PG402", "error"
    title = "reported score computed after adapting on the same tokens (multi-epoch scoring)"
    why = (
        "A repetition (epoch) loop around both the adaptation and the accumulation of the reported loss scores "
        "every token after the model has already trained on it in an earlier epoch."
    )
    fix = "Score each chunk exactly once, before any epoch of training on it, and accumulate outside the epoch loop."
    LEGAL, ILLEGAL = examples("PG402")


@register
class PG403(_Legality):
    id, level = "PG403", "error"
    title = "more than one scoring pass over tokens that feed the report"
    why = (
        "The report must come from one left-to-right pass: rescoring tokens after adapting on them, or keeping the "
        "best of several predictions of the same token (min over passes / orders), is an oracle."
    )
    fix = "Report the single score-first pass; commit to one prediction per token, chosen from the context only."
    LEGAL, ILLEGAL = examples("PG403")


@register
class PG404(_Legality):
    id, level = "PG404", "error"
    title = "scoring reads the realized target (target in a cache key / gate)"
    why = (
        "The predicted distribution may depend only on the artifact and the strict prefix and must be a full "
        "normalized distribution over the vocabulary; a cache key, gate or mixing weight that uses the realized "
        "target scores a probability that was chosen knowing the answer."
    )
    fix = "Key caches and compute gates from context tokens only, and mix full next-token distributions."
    LEGAL, ILLEGAL = examples("PG404")


@register
class PG405(_Legality):
    id, level = "PG405", "error"
    title = "per-window parameters optimized on the positions that are then scored"
    why = (
        "Per-window deltas / logit biases (SLOT-style) optimized against the targets of the positions that are "
        "then scored leak those targets into their own predictions."
    )
    fix = "Optimize per-window parameters only on context positions strictly before the scored ones (`y[:, :s]`)."
    LEGAL, ILLEGAL = examples("PG405")


@register
class PG406(_Legality):
    id, level = "PG406", "error"
    title = "cache/statistics built from the whole validation stream, then used to score it"
    why = (
        "Counts or caches built over validation tokens before those tokens are scored (two-pass n-gram caches, "
        "priors over the whole stream, a cache updated with the token before it is scored) use future tokens."
    )
    fix = "Update caches online, only with tokens already scored, inside the scoring loop."
    LEGAL, ILLEGAL = examples("PG406")
