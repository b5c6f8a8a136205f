"""Seed statistics and the challenge's significance test, in the standard library (scipy is not a runtime dep).

The record bar: beat the SOTA by at least 0.005 nats with p < 0.01. We test H0: mean(sota) - mean(ours) <= margin
against H1: the improvement exceeds the margin, with Welch's unequal-variance t statistic and the
Welch-Satterthwaite degrees of freedom. With a single SOTA value (no spread known) the test reduces to a one-sample
t-test of our seeds against that value (df = n - 1), which is the same formula with the second variance zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from trainer.errors import PgolfError

RECORD_MARGIN_NATS = 0.005
RECORD_P_VALUE = 0.01


def mean(xs) -> float:
    xs = list(xs)
    return math.fsum(xs) / len(xs)


def sample_std(xs) -> float:
    """Unbiased (n-1) standard deviation; 0.0 for a single value."""
    xs = list(xs)
    if len(xs) < 2:
        return 0.0
    m = mean(xs)
    return math.sqrt(math.fsum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    ln_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(ln_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(ln_front) * _betacf(b, a, 1.0 - x) / b


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with `df` degrees of freedom."""
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return tail if t > 0 else 1.0 - tail


@dataclass
class WelchResult:
    t: float
    df: float
    p_value: float  # one-sided: P(improvement <= margin) evidence against
    delta: float  # mean(b) - mean(a)


def welch_one_sided(a, b, margin: float = 0.0) -> WelchResult:
    """One-sided Welch test of H1: mean(b) - mean(a) > margin (a: ours, lower is better; b: the reference)."""
    a, b = list(a), list(b)
    if len(a) < 2:
        raise PgolfError(f"significance test needs at least 2 seeds of our runs, got {len(a)}")
    if not b:
        raise PgolfError("significance test needs at least one reference value")
    va, vb = sample_std(a) ** 2 / len(a), (sample_std(b) ** 2 / len(b) if len(b) > 1 else 0.0)
    delta = mean(b) - mean(a)
    se = math.sqrt(va + vb)
    if se == 0.0:
        t = math.inf if delta > margin else (-math.inf if delta < margin else 0.0)
        return WelchResult(t=t, df=float(len(a) + len(b) - 2), p_value=0.0 if delta > margin else 1.0, delta=delta)
    t = (delta - margin) / se
    den = (va * va / (len(a) - 1)) + ((vb * vb / (len(b) - 1)) if len(b) > 1 else 0.0)
    df = (va + vb) ** 2 / den if den > 0 else float(len(a) - 1)
    return WelchResult(t=t, df=df, p_value=t_sf(t, df), delta=delta)


def bytes_per_token(val_loss: float, val_bpb: float) -> float:
    """Validation bytes per token implied by one run's (nats/token, bits/byte) pair."""
    if val_bpb <= 0 or val_loss <= 0:
        raise PgolfError(f"cannot convert between nats and bpb from val_loss={val_loss}, val_bpb={val_bpb}")
    return val_loss / (val_bpb * math.log(2.0))


def significance(our_losses, our_bpbs, sota_bpbs) -> dict:
    """Delta vs the SOTA in bpb and nats, and the one-sided Welch p-value that it exceeds 0.005 nats.

    The SOTA is given in bpb (as leaderboards list it); it is converted to nats per token with the validation
    bytes/token ratio of our own runs (the same tokenizer and validation set make it the same ratio)."""
    bpt = mean(bytes_per_token(l, b) for l, b in zip(our_losses, our_bpbs))
    sota_losses = [x * math.log(2.0) * bpt for x in sota_bpbs]
    res = welch_one_sided(our_losses, sota_losses, RECORD_MARGIN_NATS)
    return {
        "sota_val_bpb": mean(sota_bpbs),
        "delta_bpb": mean(sota_bpbs) - mean(our_bpbs),
        "delta_nats": res.delta,
        "margin_nats": RECORD_MARGIN_NATS,
        "t_statistic": res.t,
        "welch_df": res.df,
        "p_value": res.p_value,
        "significant": bool(res.p_value < RECORD_P_VALUE),
    }
