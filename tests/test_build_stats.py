"""Welch's one-sided test and the t distribution, checked against scipy (scipy is a test-only dependency)."""

from __future__ import annotations

import math

import pytest

from builder.stats import betainc, mean, sample_std, significance, t_sf, welch_one_sided

scipy_stats = pytest.importorskip("scipy.stats")
scipy_special = pytest.importorskip("scipy.special")


@pytest.mark.parametrize("df", [1.0, 2.0, 3.31, 4.9, 10.0, 57.5])
@pytest.mark.parametrize("t", [-6.0, -1.3, 0.0, 0.4, 1.96, 3.5, 12.0])
def test_t_survival_matches_scipy(t, df):
    assert t_sf(t, df) == pytest.approx(float(scipy_stats.t.sf(t, df)), rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("a,b,x", [(0.5, 0.5, 0.3), (2.0, 0.5, 0.9), (10.0, 0.5, 0.99), (1.5, 7.0, 0.05)])
def test_incomplete_beta_matches_scipy(a, b, x):
    assert betainc(a, b, x) == pytest.approx(float(scipy_special.betainc(a, b, x)), rel=1e-10)


@pytest.mark.parametrize(
    "ours,ref",
    [
        ([2.010, 2.012, 2.009], [2.030, 2.031, 2.027, 2.033]),
        ([1.8897, 1.8911, 1.8879], [1.8968, 1.8975, 1.8960]),
        ([2.5, 2.52, 2.49, 2.51, 2.505], [2.52, 2.55]),
    ],
)
def test_welch_matches_scipy(ours, ref):
    margin = 0.005
    got = welch_one_sided(ours, ref, margin)
    import numpy as np

    want = scipy_stats.ttest_ind(np.array(ref) - margin, np.array(ours), equal_var=False, alternative="greater")
    assert got.t == pytest.approx(float(want.statistic), rel=1e-9)
    assert got.p_value == pytest.approx(float(want.pvalue), rel=1e-8)
    assert got.df == pytest.approx(float(want.df), rel=1e-9)


def test_single_reference_value_is_a_one_sample_test():
    ours = [2.010, 2.012, 2.009]
    got = welch_one_sided(ours, [2.03], 0.005)
    want = scipy_stats.ttest_1samp(ours, 2.03 - 0.005, alternative="less")
    assert got.p_value == pytest.approx(float(want.pvalue), rel=1e-8)
    assert got.df == 2.0


def test_significance_converts_bpb_to_nats_with_our_ratio():
    # bytes/token 2.4 for every seed: loss = bpb * ln2 * 2.4
    bpbs = [1.1190, 1.1195, 1.1201]
    losses = [b * math.log(2) * 2.4 for b in bpbs]
    sig = significance(losses, bpbs, [1.1300])
    assert sig["delta_bpb"] == pytest.approx(1.1300 - mean(bpbs))
    assert sig["delta_nats"] == pytest.approx((1.1300 - mean(bpbs)) * math.log(2) * 2.4)
    assert sig["significant"] == (sig["p_value"] < 0.01)
    assert sample_std([1.0]) == 0.0


def test_needs_two_seeds():
    from trainer.errors import PgolfError

    with pytest.raises(PgolfError, match="at least 2 seeds"):
        welch_one_sided([2.0], [2.1], 0.005)
