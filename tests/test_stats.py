"""bench.stats against straightforward bootstrap computations."""
from functools import partial

import numpy as np
import pytest

from bench.api import Estimate
from bench.stats import StatsConfig, bootstrap_indices, compare, interval


def _mean_stat(values, idx):
    return values[idx[0]].mean(axis=1)


def _mean_estimate(values):
    return Estimate((len(values),), partial(_mean_stat, np.asarray(values, float)))


def test_percentile_interval_matches_a_loop():
    rng = np.random.default_rng(1)
    values = rng.normal(size=50)
    cfg = StatsConfig(resamples=500, seed=7, ci="percentile")
    iv = interval(_mean_estimate(values), cfg)
    # straightforward: the same draws, one resample at a time
    draws = np.random.default_rng(7).integers(0, 50, size=(500, 50))
    dist = np.array([values[d].mean() for d in draws])
    assert iv.value == pytest.approx(values.mean(), abs=1e-12)
    assert iv.low == pytest.approx(np.percentile(dist, 2.5), abs=1e-12)
    assert iv.high == pytest.approx(np.percentile(dist, 97.5), abs=1e-12)
    assert iv.low <= iv.value <= iv.high and iv.n == 50 and iv.resamples == 500


def test_normal_interval_and_bootstrap_mean_options():
    values = np.arange(20, dtype=float)
    cfg = StatsConfig(resamples=300, seed=0, ci="normal", value="bootstrap-mean")
    iv = interval(_mean_estimate(values), cfg)
    draws = np.random.default_rng(0).integers(0, 20, size=(300, 20))
    dist = values[draws].mean(axis=1)
    assert iv.value == pytest.approx(dist.mean())
    assert iv.high - iv.low == pytest.approx(2 * 1.959963984540054 * dist.std(ddof=1))


def test_indices_are_deterministic_and_per_stratum():
    a = bootstrap_indices((3, 5), 10, 4)
    b = bootstrap_indices((3, 5), 10, 4)
    assert [x.shape for x in a] == [(10, 3), (10, 5)]
    assert all((x == y).all() for x, y in zip(a, b))
    assert a[0].max() < 3 and a[1].max() < 5


def test_paired_comparison_detects_a_shift_and_not_noise():
    rng = np.random.default_rng(3)
    base = rng.normal(size=200)
    same = compare(_mean_estimate(base), _mean_estimate(base), StatsConfig(resamples=400))
    assert same.delta == 0 and same.low == 0 and same.high == 0 and not same.significant
    shifted = compare(_mean_estimate(base + 0.3), _mean_estimate(base), StatsConfig(resamples=400))
    assert shifted.significant and shifted.low > 0
    # pairing matters: a tiny consistent shift is significant paired, but the intervals overlap
    tiny = compare(_mean_estimate(base + 0.01), _mean_estimate(base), StatsConfig(resamples=400))
    overlap = compare(_mean_estimate(base + 0.01), _mean_estimate(base), StatsConfig(resamples=400, significance="overlap"))
    assert tiny.significant and not overlap.significant


def test_pairing_requires_the_same_items():
    with pytest.raises(ValueError):
        compare(_mean_estimate([1.0, 2.0]), _mean_estimate([1.0, 2.0, 3.0]))


def test_bad_stats_option():
    with pytest.raises(ValueError):
        StatsConfig(ci="bootstrap-t")
