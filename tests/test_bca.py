"""BCa intervals (bench.stats, the default): the levels and bounds equal scipy.stats' own BCa computation
(`scipy.stats._resampling._bca_interval`, its jackknife and bias correction) given the same bootstrap
replicates, for one and for several strata, a discrete statistic with ties, a paired difference and a mean over
seeds; the percentile interval stays available; a degenerate distribution falls back to the percentile levels."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats._resampling import _bca_interval

from bench.api import Estimate
from bench.stats import (StatsConfig, bootstrap_indices, compare, compare_over_seeds, interval, interval_over_seeds,
                         jackknife)

CFG = StatsConfig(resamples=2000, seed=3)
TAIL = 0.025


def scipy_bounds(statistic_of_indices, strata, dist):
    """scipy's BCa bounds for a statistic of index arrays: the data are the items' indices 0..n_s-1."""
    data = tuple(np.arange(n, dtype=float) for n in strata)

    def stat(*samples, axis=-1):
        samples = [np.moveaxis(np.asarray(s), axis, -1) for s in samples]
        shape = np.broadcast_shapes(*(s.shape[:-1] for s in samples))
        flat = [np.broadcast_to(s, shape + s.shape[-1:]).reshape(-1, s.shape[-1]).astype(int) for s in samples]
        return np.asarray(statistic_of_indices(flat), dtype=float).reshape(shape)

    a1, a2, _ = _bca_interval(data, stat, axis=-1, alpha=TAIL, theta_hat_b=np.asarray(dist, float), batch=None, xp=np)
    return np.percentile(dist, [100 * float(a1), 100 * float(a2)])


def skewed(n, seed):
    return np.random.default_rng(seed).lognormal(sigma=1.0, size=n)


def test_one_stratum_mean_of_a_skewed_sample_equals_scipy():
    x = skewed(40, 0)
    est = Estimate((40,), lambda idx: x[idx[0]].mean(axis=1))
    got = interval(est, CFG)
    dist = est.statistic(bootstrap_indices(est.strata, CFG.resamples, CFG.seed))
    np.testing.assert_allclose([got.low, got.high], scipy_bounds(est.statistic, est.strata, dist), rtol=1e-12)
    pct = interval(est, StatsConfig(resamples=2000, seed=3, ci="percentile"))
    assert got.high > pct.high  # right-skewed: BCa moves the interval right of the percentile one


def effect_size(x, y, a, b):
    """A SEAT-like bounded statistic over four strata (difference of means over the pooled SD)."""

    def stat(idx):
        xs, ys = x[idx[0]] * a[idx[2]].mean(1)[:, None], y[idx[1]] * b[idx[3]].mean(1)[:, None]
        return (xs.mean(1) - ys.mean(1)) / np.concatenate([xs, ys], axis=1).std(axis=1, ddof=1)

    return stat


def test_four_strata_effect_size_equals_scipy():
    rng = np.random.default_rng(1)
    x, y, a, b = rng.normal(1.0, 1, 8), rng.normal(0, 1, 8), rng.normal(1, 0.3, 8), rng.normal(1, 0.3, 8)
    est = Estimate((8, 8, 8, 8), effect_size(x, y, a, b))
    got = interval(est, CFG)
    dist = est.statistic(bootstrap_indices(est.strata, CFG.resamples, CFG.seed))
    np.testing.assert_allclose([got.low, got.high], scipy_bounds(est.statistic, est.strata, dist), rtol=1e-12)


def test_discrete_statistic_with_ties_equals_scipy():
    hits = (np.random.default_rng(2).random(120) < 0.8).astype(float)  # an SS-like share of items
    est = Estimate((120,), lambda idx: 100 * hits[idx[0]].mean(axis=1))
    got = interval(est, CFG)
    dist = est.statistic(bootstrap_indices(est.strata, CFG.resamples, CFG.seed))
    assert np.mean(dist == est.point()) > 0.02  # ties with the point estimate do occur
    np.testing.assert_allclose([got.low, got.high], scipy_bounds(est.statistic, est.strata, dist), rtol=1e-12)


def test_paired_difference_equals_scipy_on_the_difference_statistic():
    v, b = skewed(60, 4), skewed(60, 5)
    variant, base = Estimate((60,), lambda idx: v[idx[0]].mean(1)), Estimate((60,), lambda idx: b[idx[0]].mean(1))
    got = compare(variant, base, CFG)

    def diff(idx):
        return v[idx[0]].mean(1) - b[idx[0]].mean(1)

    dist = diff(bootstrap_indices((60,), CFG.resamples, CFG.seed))
    np.testing.assert_allclose([got.low, got.high], scipy_bounds(diff, (60,), dist), rtol=1e-12)
    assert got.significant == (got.low > 0 or got.high < 0)


def test_mean_over_seeds_uses_the_item_jackknife_of_the_seed_mean():
    xs = [skewed(30, s) for s in range(3)]
    ests = [Estimate((30,), lambda idx, x=x: x[idx[0]].mean(1)) for x in xs]
    got = interval_over_seeds(ests, CFG)
    pct = interval_over_seeds(ests, StatsConfig(resamples=2000, seed=3, ci="percentile"))
    assert got.value == pct.value and (got.low, got.high) != (pct.low, pct.high)
    jack = jackknife(lambda idx: np.mean([x[idx[0]].mean(1) for x in xs], axis=0), (30,))
    by_hand = np.mean([jackknife(e.statistic, (30,))[0] for e in ests], axis=0)
    np.testing.assert_allclose(jack[0], by_hand, rtol=1e-12)
    cmp = compare_over_seeds(ests, [ests[0]], CFG)
    assert np.isfinite(cmp.low) and np.isfinite(cmp.high)


def test_jackknife_leaves_each_item_out_once_per_stratum():
    x, y = np.arange(5.0), np.arange(3.0) * 10
    jack = jackknife(lambda idx: x[idx[0]].sum(1) + y[idx[1]].sum(1), (5, 3))
    np.testing.assert_array_equal(jack[0], x.sum() - x + y.sum())
    np.testing.assert_array_equal(jack[1], x.sum() + y.sum() - y)


def test_degenerate_distribution_gives_the_percentile_levels():
    est = Estimate((10,), lambda idx: np.full(len(idx[0]), 100.0))  # every replicate equals the point
    got = interval(est, CFG)
    assert got.low == got.high == 100.0


def distinct_share(idx: np.ndarray) -> np.ndarray:
    return np.array([len(np.unique(row)) for row in idx]) / idx.shape[1]


def test_an_estimate_beyond_its_central_replicates_ends_the_interval_instead_of_falling_outside():
    # a statistic shrunk by resampling itself (like SEAT's mean |d| with resampled attribute sets): the share of
    # distinct items is 1 on the data and about 0.63 on every resample, so nearly every replicate lies below the
    # estimate; uncapped, BCa would read both bounds from above it
    x = np.random.default_rng(6).normal(size=30)
    est = Estimate((30,), lambda idx: 1.2 * distinct_share(idx[0]) + x[idx[0]].mean(1))
    dist = est.statistic(bootstrap_indices(est.strata, CFG.resamples, CFG.seed))
    below = np.mean(dist < est.point())
    assert 0.975 < below < 1.0
    got = interval(est, CFG)
    assert got.low <= got.value <= got.high
    assert got.low == pytest.approx(np.percentile(dist, 97.5), rel=1e-12)  # the capped bias correction
    pct = interval(est, StatsConfig(resamples=2000, seed=3, ci="percentile"))
    assert pct.high < pct.value  # the percentile interval misses it


def test_unknown_ci_method_is_refused():
    with pytest.raises(ValueError, match="ci must be one of"):
        StatsConfig(ci="studentized")
