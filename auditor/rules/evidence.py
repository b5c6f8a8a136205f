"""What a clean legality check saw, for the review comment ("checked and found clean"): where the score-first
adaptation loop scores and then updates, which single function scores, and what normalizes the scores.

Descriptive only: these statements never change a finding or a verdict. They read the flow model (auditor.flow:
functions, their score/train sites and calls) and are added by run_rules for a rule that reported no error or
warning. A rule class can say more through its own `clean(facts)`."""

from __future__ import annotations

from auditor.flow_labels import VAL

_NORMALIZERS = ("cross_entropy", "log_softmax", "nll_loss", "softmax", "logsumexp")


def _live(prog):
    return [f for f in prog.funcs if f.reach == "on"]


def _at(f, node) -> str:
    file, line, _col, _note = f.unit.location(node)
    return f"{file}:{line}"


def _score_first(prog) -> list:
    out = []
    trains_on_val = False
    for f in _live(prog):
        trains = [s for s in f.sites if s.kind == "train" and VAL in s.labels and not s.off]
        scores = [s for s in f.sites if s.kind == "score" and not s.off]
        trains_on_val |= bool(trains)
        for t in trains:
            loops = {id(lp) for lp in t.loops}
            first = [s for s in scores if s.order < t.order and loops & {id(lp) for lp in s.loops}]
            if first:
                out.append(f"score-first adaptation in {f.qualname}: each chunk is scored at {_at(f, first[0].node)} "
                           f"before the update at {_at(f, t.node)}")
                break
    if not trains_on_val:
        out.append("no update on validation tokens is reachable from the entry point")
    return out[:3]


def _single_pass(prog) -> list:
    scorers = [f for f in _live(prog) if any(s.kind == "score" and not s.off for s in f.sites)]
    if len(scorers) == 1:
        f = scorers[0]
        site = next(s for s in f.sites if s.kind == "score" and not s.off)
        return [f"one scoring function reachable: {f.qualname} (scores at {_at(f, site.node)})"]
    if scorers:
        return [f"scoring functions reachable: {', '.join(sorted({f.qualname for f in scorers}))}; none of them "
                "rescores tokens after an update on them"]
    return []


def _normalized(prog) -> list:
    for f in _live(prog):
        if not any(s.kind == "score" and not s.off for s in f.sites):
            continue
        for c in f.calls:
            if c.name in _NORMALIZERS and not c.off:
                return [f"scores come from {c.name} over the vocabulary in {f.qualname} ({_at(f, c.node)}); no cache "
                        "key or gate reads the target"]
    return []


EVIDENCE = {"PG401": _score_first, "PG403": _single_pass, "PG404": _normalized}


def statements(rid: str, facts) -> list:
    fn = EVIDENCE.get(rid)
    if fn is None or getattr(facts, "prog", None) is None:
        return []
    try:
        return [str(x) for x in fn(facts.prog)]
    except Exception:  # descriptive only: a gap here must not turn a finished audit into a crash
        return []
