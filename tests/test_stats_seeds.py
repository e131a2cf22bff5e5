"""bench.stats over seeds: the two-stage (seeds, then items) bootstrap of `interval_over_seeds` and the paired
`compare_over_seeds`. Equalities are checked in float64; statistical behaviour with tolerances derived in the
comments (numpy's generators give the same draws on every machine, so these tests are deterministic)."""
from functools import partial

import numpy as np
import pytest

from bench.api import Estimate
from bench.stats import (
    StatsConfig,
    _distribution,
    _seed_distribution,
    compare,
    compare_over_seeds,
    interval,
    interval_over_seeds,
)

EPS = np.finfo(float).eps


def _mean_stat(values, idx):
    return values[idx[0]].mean(axis=1)


def _mean_estimate(values):
    return Estimate((len(values),), partial(_mean_stat, np.asarray(values, float)))


def _strata_mean_stat(values, idx):  # mean over strata of each stratum's mean (a pooled, stratified estimate)
    return np.mean([v[i].mean(axis=1) for v, i in zip(values, idx)], axis=0)


def _two_strata(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return Estimate((len(a), len(b)), partial(_strata_mean_stat, (a, b)))


CONFIGS = [
    StatsConfig(resamples=300, seed=3),
    StatsConfig(resamples=300, seed=0, ci="normal", value="bootstrap-mean"),
    StatsConfig(resamples=300, seed=5, significance="overlap"),
    StatsConfig(resamples=300, seed=1, seed_items="independent"),
]


@pytest.mark.parametrize("cfg", CONFIGS)
def test_one_seed_is_exactly_todays_interval_and_comparison(cfg):
    rng = np.random.default_rng(2)
    base, variant = _two_strata(rng.normal(size=30), rng.normal(size=7)), None
    variant = _two_strata(rng.normal(size=30) + 0.2, rng.normal(size=7))
    assert interval_over_seeds([variant], cfg) == interval(variant, cfg)
    got, want = compare_over_seeds([variant], [base], cfg), compare(variant, base, cfg)
    assert got.delta == want.delta and got.significant == want.significant
    assert (got.low, got.high) == (want.low, want.high) or (np.isnan(got.low) and np.isnan(want.low))


@pytest.mark.parametrize("seed_items", ["shared", "independent"])
def test_the_general_procedure_reduces_to_todays_draws_for_one_seed(seed_items):
    # not only the one-seed shortcut: the two-stage distribution itself is today's, bit for bit
    est = _two_strata(np.arange(12.0) ** 2, np.arange(5.0))
    cfg = StatsConfig(resamples=200, seed=9, seed_items=seed_items)
    (dist,) = _seed_distribution([[est]], cfg)
    assert np.array_equal(dist, _distribution(est, cfg))


def test_identical_seeds_give_the_single_seed_interval():
    # Every seed is scored on the same items, so S identical runs carry the information of one: each replicate is
    # (sum_s c_s x_r) / S with sum_s c_s = S, i.e. x_r up to the rounding of S products, a sum of S terms and a
    # division: |error| <= (2 S + 1) eps |x_r| <= 8 S eps max|x| (percentiles interpolate monotonically).
    rng = np.random.default_rng(4)
    values = rng.normal(loc=3.0, size=80)
    cfg = StatsConfig(resamples=1000, seed=11)
    for S in (2, 3, 7):
        one, many = interval(_mean_estimate(values), cfg), interval_over_seeds([_mean_estimate(values)] * S, cfg)
        tol = 8 * S * EPS * np.abs(values).max()
        assert many.value == pytest.approx(one.value, abs=tol)
        assert many.low == pytest.approx(one.low, abs=tol) and many.high == pytest.approx(one.high, abs=tol)
        assert (many.n, many.resamples) == (one.n, one.resamples)


def test_independent_items_per_seed_match_the_pooled_item_bootstrap():
    # seed_items="independent" with S identical seeds: each replicate is the mean of S independent item
    # bootstraps, which has the law of a stratified bootstrap of the S copies pooled (S strata of n items).
    # Both are Monte Carlo estimates from R = 4000 draws: a 2.5 % quantile has SE ~ sqrt(.025 * .975 / R) /
    # phi(1.96) sigma_b = 0.042 sigma_b (normal approximation), a difference of two 0.06 sigma_b; we allow 5 SE.
    rng = np.random.default_rng(6)
    values = rng.normal(size=60)
    S, R = 3, 4000
    ests = [_mean_estimate(values)] * S
    pooled = Estimate((len(values),) * S, partial(_strata_mean_stat, (values,) * S))
    iv = interval_over_seeds(ests, StatsConfig(resamples=R, seed=1, seed_items="independent"))
    ref = interval(pooled, StatsConfig(resamples=R, seed=2))
    sigma_b = values.std() / np.sqrt(len(values) * S)
    assert iv.value == pytest.approx(values.mean(), abs=8 * S * EPS * np.abs(values).max())
    assert abs(iv.low - ref.low) < 0.3 * sigma_b and abs(iv.high - ref.high) < 0.3 * sigma_b
    # and it is ~sqrt(S) narrower than one seed's CI, which is why "shared" (the default) is right for seeds
    # scored on the same items
    one = interval(_mean_estimate(values), StatsConfig(resamples=R, seed=1))
    assert (iv.high - iv.low) / (one.high - one.low) == pytest.approx(1 / np.sqrt(S), rel=0.15)


def test_between_seed_variance_dominates_when_items_are_nearly_noiseless():
    # seed means spread by ~1, item noise 1e-4: the CI is the seed bootstrap's, orders of magnitude wider than
    # one seed's item CI. Reference: a percentile bootstrap of the S seed means with its own generator; both
    # from R = 4000 draws, so their endpoints agree to Monte Carlo error (5 SE of a difference of two quantiles,
    # 0.3 sigma of the seed-mean bootstrap, as above) plus the item noise (< 1e-3).
    rng = np.random.default_rng(8)
    S, R = 6, 4000
    means = rng.normal(size=S)
    ests = [_mean_estimate(m + 1e-4 * rng.normal(size=40)) for m in means]
    iv = interval_over_seeds(ests, StatsConfig(resamples=R, seed=0))
    draws = np.random.default_rng(123).integers(0, S, size=(R, S))
    ref = np.percentile(means[draws].mean(axis=1), [2.5, 97.5])
    sigma_b = means.std() / np.sqrt(S)
    assert iv.value == pytest.approx(np.mean([e.point() for e in ests]), abs=1e-12)
    assert abs(iv.low - ref[0]) < 0.3 * sigma_b + 1e-3 and abs(iv.high - ref[1]) < 0.3 * sigma_b + 1e-3
    one = interval(ests[0], StatsConfig(resamples=R, seed=0))
    assert (iv.high - iv.low) > 100 * (one.high - one.low)


def test_coverage_over_simulated_experiments():
    # 200 simulated experiments: S = 10 seeds whose true means vary around 0 with SD 1 (seed effect), 50 items of
    # SD 0.3 each. The percentile bootstrap of a mean of 10 units covers ~0.90, not 0.95 (its variance is
    # (S-1)/S of the textbook one and t_9 has heavier tails: P(|t_9| < 1.96 sqrt(0.9)) = 0.904); the SD of a
    # coverage over 200 experiments is 0.021, so >= 0.80 holds with ~5 SD margin (measured 0.87-0.90 over
    # simulation seeds 0-4). One seed's item-only CI ignores the seed effect and covers < 0.1 (measured).
    cfg = StatsConfig(resamples=1000, seed=0)
    rng = np.random.default_rng(0)
    hits = hits_one = 0
    for _ in range(200):
        ests = [_mean_estimate(rng.normal() + 0.3 * rng.normal(size=50)) for _ in range(10)]
        iv, one = interval_over_seeds(ests, cfg), interval(ests[0], cfg)
        hits += iv.low <= 0 <= iv.high
        hits_one += one.low <= 0 <= one.high
    assert hits / 200 >= 0.80
    assert hits_one / 200 <= 0.25


@pytest.mark.parametrize("seed_items", ["shared", "independent"])
def test_paired_delta_of_identical_subjects_is_exactly_zero(seed_items):
    rng = np.random.default_rng(5)
    ests = [_mean_estimate(rng.normal(size=40) + k) for k in range(4)]
    copies = [_mean_estimate(e.statistic.args[0].copy()) for e in ests]  # equal data, other objects
    cfg = StatsConfig(resamples=500, seed_items=seed_items)
    for base in (ests, copies):
        c = compare_over_seeds(ests, base, cfg)
        assert (c.delta, c.low, c.high, c.significant) == (0.0, 0.0, 0.0, False)
    single = [_mean_estimate(rng.normal(size=40))]
    c = compare_over_seeds(single * 3, single, cfg)  # one base estimate shared by every seed
    assert (c.delta, c.low, c.high, c.significant) == (0.0, 0.0, 0.0, False)


def test_pairing_is_by_seed_and_by_item():
    # Each seed's base has its own large offset (e.g. fine-tuning seeds) and items vary a lot; the variant is its
    # seed's base + 0.05 on every item. Paired on the same seed draws and item indices, the difference is
    # exactly 0.05 in every replicate (up to rounding), so it is significant with a CI of width ~0; the
    # intervals of variant and base overlap widely.
    rng = np.random.default_rng(7)
    bases = [rng.normal(size=100) * 2 + 5 * rng.normal() for _ in range(3)]
    base = [_mean_estimate(b) for b in bases]
    variant = [_mean_estimate(b + 0.05) for b in bases]
    c = compare_over_seeds(variant, base, StatsConfig(resamples=500))
    assert c.delta == pytest.approx(0.05, abs=1e-12) and c.significant
    assert c.low == pytest.approx(0.05, abs=1e-12) and c.high == pytest.approx(0.05, abs=1e-12)
    assert not compare_over_seeds(variant, base, StatsConfig(resamples=500, significance="overlap")).significant
    # a single base estimate pairs with every seed: delta = mean_s v_s - b
    c1 = compare_over_seeds(variant, base[:1], StatsConfig(resamples=500))
    assert c1.delta == pytest.approx(np.mean([v.point() for v in variant]) - base[0].point(), abs=1e-12)


def test_bad_seed_inputs():
    e = _mean_estimate([1.0, 2.0, 3.0])
    with pytest.raises(ValueError):
        interval_over_seeds([])
    with pytest.raises(ValueError):
        compare_over_seeds([e, e, e], [e, e])  # base: one per seed or a single one
    with pytest.raises(ValueError):
        compare_over_seeds([e, e], [_mean_estimate([1.0, 2.0])] * 2)  # different items
    with pytest.raises(ValueError):
        StatsConfig(seed_items="crossed")


def test_seeds_scored_on_different_items_get_their_own_draws():
    # e.g. a metric that samples its items by seed: other strata sizes, independent item draws for those seeds
    rng = np.random.default_rng(9)
    ests = [_mean_estimate(rng.normal(size=n)) for n in (30, 30, 45)]
    cfg = StatsConfig(resamples=400)
    iv = interval_over_seeds(ests, cfg)
    assert iv.value == pytest.approx(np.mean([e.point() for e in ests]), abs=1e-12)
    assert iv.low < iv.value < iv.high and iv.n == 30
    assert interval_over_seeds(ests, cfg) == iv  # deterministic
    c = compare_over_seeds(ests, ests, cfg)
    assert (c.delta, c.low, c.high) == (0.0, 0.0, 0.0)
