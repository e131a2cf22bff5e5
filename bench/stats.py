"""Bootstrap confidence intervals and paired significance tests, computed once here for every metric.

Default (SPEC §0.7): point estimate on the full data, 95 % percentile bootstrap CI over the metric's natural
items (1,000 seeded resamples), and a paired bootstrap against the base model: the same resampled indices
for base and variant; the change is significant when the CI of the difference excludes 0.

The paper's conventions are options: `ci="normal"` (bootstrap mean +/- 1.96 SD) with `value="bootstrap-mean"`,
and `significance="overlap"` (intervals of variant and base do not overlap).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench.api import Estimate

CI_METHODS = ("percentile", "normal")
VALUE_METHODS = ("point", "bootstrap-mean")
SIGNIFICANCE_METHODS = ("paired", "overlap")


@dataclass(frozen=True)
class Interval:
    value: float
    low: float
    high: float
    n: int
    resamples: int


@dataclass(frozen=True)
class StatsConfig:
    resamples: int = 1000
    seed: int = 0
    level: float = 0.95
    ci: str = "percentile"
    value: str = "point"
    significance: str = "paired"

    def __post_init__(self):
        for attr, allowed in (("ci", CI_METHODS), ("value", VALUE_METHODS), ("significance", SIGNIFICANCE_METHODS)):
            if getattr(self, attr) not in allowed:
                raise ValueError(f"{attr} must be one of {allowed}, got {getattr(self, attr)!r}")


def bootstrap_indices(strata: tuple[int, ...], resamples: int, seed: int) -> list[np.ndarray]:
    """One (resamples, n_s) array of indices drawn with replacement per stratum; deterministic in `seed`
    and the strata sizes, so a base model and a variant scored on the same items get the same resamples."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, n, size=(resamples, n)) if n > 0 else np.zeros((resamples, 0), int) for n in strata]


def _distribution(est: Estimate, cfg: StatsConfig, idx=None) -> np.ndarray:
    idx = bootstrap_indices(est.strata, cfg.resamples, cfg.seed) if idx is None else idx
    return np.asarray(est.statistic(idx), dtype=float)


def _interval(point: float, dist: np.ndarray, n: int, cfg: StatsConfig) -> Interval:
    finite = dist[np.isfinite(dist)]
    if finite.size == 0:
        return Interval(point, float("nan"), float("nan"), n, cfg.resamples)
    value = float(finite.mean()) if cfg.value == "bootstrap-mean" else point
    if cfg.ci == "normal":
        half = 1.959963984540054 * float(finite.std(ddof=1)) if finite.size > 1 else 0.0
        centre = float(finite.mean())
        return Interval(value, centre - half, centre + half, n, cfg.resamples)
    tail = (1.0 - cfg.level) / 2.0 * 100.0
    low, high = np.percentile(finite, [tail, 100.0 - tail])
    return Interval(value, float(low), float(high), n, cfg.resamples)


def interval(est: Estimate, cfg: StatsConfig = StatsConfig()) -> Interval:
    return _interval(est.point(), _distribution(est, cfg), sum(est.strata), cfg)


@dataclass(frozen=True)
class Comparison:
    delta: float  # variant - base (point estimates)
    low: float  # CI of the difference (paired) or nan (overlap)
    high: float
    significant: bool


def compare(variant: Estimate, base: Estimate, cfg: StatsConfig = StatsConfig()) -> Comparison:
    """Paired bootstrap of variant - base on the same resampled items."""
    if tuple(variant.strata) != tuple(base.strata):
        raise ValueError(f"cannot pair estimates over different items: {variant.strata} vs {base.strata}")
    idx = bootstrap_indices(variant.strata, cfg.resamples, cfg.seed)
    dv, db = _distribution(variant, cfg, idx), _distribution(base, cfg, idx)
    delta = variant.point() - base.point()
    if cfg.significance == "overlap":
        iv = _interval(variant.point(), dv, sum(variant.strata), cfg)
        ib = _interval(base.point(), db, sum(base.strata), cfg)
        sig = iv.high < ib.low or ib.high < iv.low
        return Comparison(delta, float("nan"), float("nan"), bool(sig))
    diff = _interval(delta, dv - db, sum(variant.strata), cfg)
    sig = diff.low > 0 or diff.high < 0
    return Comparison(delta, diff.low, diff.high, bool(sig))
