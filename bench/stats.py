"""Bootstrap confidence intervals and paired significance tests, computed once here for every metric.

Default: point estimate on the full data, 95 % BCa bootstrap CI over the metric's natural items (1,000 seeded
resamples), and a paired bootstrap against the base model: the same resampled indices for base and variant;
the change is significant when the (BCa) CI of the difference excludes 0.

BCa (bias-corrected and accelerated; Efron & Tibshirani 1993, 14.3 and Eq. 15.36, the formulas of
scipy.stats.bootstrap): the percentiles alpha_1,2 = Phi(z0 + (z0 + z)/(1 - a (z0 + z))) of the same bootstrap
distribution, z = Phi^-1(0.025), Phi^-1(0.975); z0 = Phi^-1 of the share of replicates below the point estimate
(ties count half); the acceleration a from a jackknife over the same resampling units: each stratum's items left
out one at a time (the other strata whole), a = sum_j sum_i U_ji^3 / n_j^3 / (6 (sum_j sum_i U_ji^2 / n_j^2)^1.5),
U_ji = (n_j - 1)(mean_i theta_ji - theta_ji). For a paired difference the jackknife values are the variant's
minus the base's on the same left-out item. Where the estimate lies beyond the central 1 - 2 tail of its own
replicates, z0 is capped at +/- Phi^-1(1 - tail), so that the interval ends at (not past) the estimate
(measured: SEAT of CDA + SentenceDebias in the ICLR suite on the synthetic world, 1.109 with 99.6 % of its
replicates below it; uncapped BCa gave [1.132, 1.244], the percentile interval [0.687, 1.092]). For a mean over seeds (shared items) the jackknife leaves an item out
of every seed at once; with seeds on other items (other strata, or seed_items="independent") a = 0 (bias
correction only). Why BCa by default: the percentile interval of a bounded, biased statistic can sit beside its
estimate (SEAT's effect size over 8 + 8 targets: CDA + SentenceDebias 1.109 [0.687, 1.092] in the ICLR suite on
the synthetic world); the coverage simulation (tests/benchmarks/test_ci_coverage.py) measures both at this
project's set sizes. `ci="percentile"` is SPEC §0.7's former default.

The paper's conventions are options: `ci="normal"` (bootstrap mean +/- 1.96 SD) with `value="bootstrap-mean"`,
and `significance="overlap"` (intervals of variant and base do not overlap).

Seeds (`interval_over_seeds`, `compare_over_seeds`): a cell run with S seeds reports the mean over the seeds of
each seed's point estimate, with a CI that includes the variance between seeds: a two-stage bootstrap. Each of
the R replicates (1) draws S seeds with replacement (numpy generator seeded with `[cfg.seed, 0]`), then (2)
resamples the items: one draw of item indices per replicate, `bootstrap_indices(strata, R, cfg.seed)` exactly
as for one seed, applied to every drawn seed, because every seed is scored on the same test items (the test
set's sampling error is common to the seeds; drawing items independently per seed would shrink the CI of S
identical runs by sqrt(S)). The replicate's value is the mean over the S drawn seeds of their statistic on
those indices (a seed drawn twice counts twice). Estimates over other strata (seeds scored on other items) get
their own draws (generator `[cfg.seed, 1, k]`, k-th distinct strata). `StatsConfig(seed_items="independent")`
instead draws the items independently for each of the S drawn positions (generator `[cfg.seed, 1, j]` for
j >= 1, `cfg.seed` for j = 0): the nested bootstrap for seeds scored on different, independently sampled items.
The paired comparison uses the same seed draws and the same item indices for a variant seed and the base
estimate of that seed (`base` holds one estimate per seed, paired by position, or a single estimate shared by
every seed: the base model does not depend on the seed); per replicate the difference of the two seed means.
`cfg.seed` is the bootstrap seed of the aggregate (the runner passes the run's first seed). With one
estimate both functions return exactly `interval` / `compare` (the same draws, bit for bit). With
few seeds the between-seed part is coarse (S = 3 seeds have 10 distinct multisets, and the bootstrap variance
of a mean of S draws is (S-1)/S of the textbook one): read such CIs as indicative.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.special import ndtr, ndtri

from bench.api import Estimate

JACKKNIFE_BLOCK = 4_000_000  # index entries per statistic call of the jackknife (bounds its memory)

CI_METHODS = ("bca", "percentile", "normal")
VALUE_METHODS = ("point", "bootstrap-mean")
SIGNIFICANCE_METHODS = ("paired", "overlap")
SEED_ITEM_METHODS = ("shared", "independent")


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
    ci: str = "bca"
    value: str = "point"
    significance: str = "paired"
    seed_items: str = "shared"  # over seeds: one item draw per replicate for all seeds, or one per drawn seed

    def __post_init__(self):
        for attr, allowed in (("ci", CI_METHODS), ("value", VALUE_METHODS), ("significance", SIGNIFICANCE_METHODS),
                              ("seed_items", SEED_ITEM_METHODS)):
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


def _interval(point: float, dist: np.ndarray, n: int, cfg: StatsConfig, jackknife=None) -> Interval:
    """`jackknife`: a callable giving the per-stratum leave-one-out values (only called for BCa)."""
    finite = dist[np.isfinite(dist)]
    if finite.size == 0:
        return Interval(point, float("nan"), float("nan"), n, cfg.resamples)
    value = float(finite.mean()) if cfg.value == "bootstrap-mean" else point
    if cfg.ci == "normal":
        half = 1.959963984540054 * float(finite.std(ddof=1)) if finite.size > 1 else 0.0
        centre = float(finite.mean())
        return Interval(value, centre - half, centre + half, n, cfg.resamples)
    tail = (1.0 - cfg.level) / 2.0
    levels = [tail, 1.0 - tail]
    if cfg.ci == "bca":
        levels = bca_levels(point, finite, jackknife() if jackknife is not None else [], tail)
    low, high = np.percentile(finite, [100.0 * levels[0], 100.0 * levels[1]])
    return Interval(value, float(low), float(high), n, cfg.resamples)


def bca_levels(point: float, dist: np.ndarray, jack: Sequence[np.ndarray], tail: float) -> list[float]:
    """The BCa percentile levels (alpha_1, alpha_2) for a two-sided interval with `tail` in each tail (see the
    module docstring); `jack`: per stratum the leave-one-out values. A degenerate distribution (every replicate
    on one side of the point) gives the percentile levels: there is no bias to correct that it can measure."""
    below = (np.count_nonzero(dist < point) + np.count_nonzero(dist <= point)) / (2.0 * dist.size)
    if not 0.0 < below < 1.0 or not np.isfinite(point):
        return [tail, 1.0 - tail]
    # An estimate beyond the central interval of its own replicates (|z0| > z_(1-tail): the bootstrap of a bounded
    # statistic shrunk by resampling, e.g. SEAT's mean |d| with resampled attribute sets) would put the whole BCa
    # interval past the estimate; z0 is capped there, which puts the estimate on the interval's near end.
    z_edge = float(ndtri(1.0 - tail))
    z0 = float(np.clip(ndtri(below), -z_edge, z_edge))
    num = den = 0.0
    for values in jack:
        values = np.asarray(values, dtype=float)
        values = values[np.isfinite(values)]
        if values.size < 2:
            continue
        u = (values.size - 1) * (values.mean() - values)
        num += float(np.sum(u**3)) / values.size**3
        den += float(np.sum(u**2)) / values.size**2
    a = num / (6.0 * den**1.5) if den > 0 else 0.0
    levels = []
    for z in (float(ndtri(tail)), float(ndtri(1.0 - tail))):
        shifted = z0 + z
        denominator = 1.0 - a * shifted  # <= 0 only for an extreme acceleration: the level goes to its end
        levels.append(float(ndtr(z0 + shifted / denominator)) if denominator > 0 else float(z > 0))
    return levels


def jackknife(statistic, strata: Sequence[int]) -> list[np.ndarray]:
    """Per stratum, the statistic with each of its items left out in turn (other strata whole): n_s values."""
    out = []
    for s, n in enumerate(strata):
        if n < 2:
            out.append(np.zeros(0))
            continue
        keep = np.arange(n)[None, :].repeat(n, axis=0)[~np.eye(n, dtype=bool)].reshape(n, n - 1)
        block = max(1, JACKKNIFE_BLOCK // max(1, sum(strata)))
        values = []
        for start in range(0, n, block):
            rows = keep[start : start + block]
            idx = [rows if k == s else np.arange(m)[None, :].repeat(len(rows), axis=0) for k, m in enumerate(strata)]
            values.append(np.asarray(statistic(idx), dtype=float))
        out.append(np.concatenate(values))
    return out


def replicates(est: Estimate, cfg: StatsConfig = StatsConfig()) -> np.ndarray:
    """The R bootstrap replicates of `est` that its interval is read from (the same item indices for every
    estimate over the same strata with the same cfg: what statistics across rows resample jointly)."""
    return _distribution(est, cfg)


def interval(est: Estimate, cfg: StatsConfig = StatsConfig()) -> Interval:
    return _interval(est.point(), _distribution(est, cfg), sum(est.strata), cfg,
                     lambda: jackknife(est.statistic, est.strata))


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

    def jack():
        return [v - b for v, b in zip(jackknife(variant.statistic, variant.strata),
                                      jackknife(base.statistic, base.strata))]  # fmt: skip

    return _comparison(variant.point(), base.point(), dv, db, sum(variant.strata), cfg, jack)


def _comparison(pv: float, pb: float, dv: np.ndarray, db: np.ndarray, n: int, cfg: StatsConfig,
                jack=None) -> Comparison:  # fmt: skip
    """Variant vs. base from their point values and paired bootstrap distributions (cfg.significance); `jack`
    gives the difference's jackknife values (BCa)."""
    delta = pv - pb
    if cfg.significance == "overlap":
        iv, ib = _interval(pv, dv, n, cfg), _interval(pb, db, n, cfg)
        sig = iv.high < ib.low or ib.high < iv.low
        return Comparison(delta, float("nan"), float("nan"), bool(sig))
    diff = _interval(delta, dv - db, n, cfg, jack)
    sig = diff.low > 0 or diff.high < 0
    return Comparison(delta, diff.low, diff.high, bool(sig))


# ---- seeds as a grid axis (see the module docstring) -----------------------------------------------------------
def _seed_draws(n_seeds: int, cfg: StatsConfig) -> np.ndarray:
    """(R, S): the seeds drawn (with replacement) at each of the S positions of each replicate."""
    return np.random.default_rng([cfg.seed, 0]).integers(0, n_seeds, size=(cfg.resamples, n_seeds))


def _seed_counts(n_seeds: int, cfg: StatsConfig) -> np.ndarray:
    """(R, S): how often each seed is drawn in each replicate."""
    draws = _seed_draws(n_seeds, cfg)
    counts = np.zeros((cfg.resamples, n_seeds), dtype=np.int64)
    np.add.at(counts, (np.arange(cfg.resamples)[:, None], draws), 1)
    return counts


def _seed_distribution(groups: Sequence[Sequence[Estimate]], cfg: StatsConfig) -> list[np.ndarray]:
    """For each group (the variant's estimates, the base's, one per seed, all of the same length S): the R
    replicate values mean_j stat_{s_j}(items_j), with the same seed draws s_j and item indices for every group."""
    n_seeds = len(groups[0])
    counts = _seed_counts(n_seeds, cfg)
    out = [np.zeros(cfg.resamples) for _ in groups]
    if cfg.seed_items == "shared":
        streams: dict[tuple, object] = {}  # strata -> generator seed: the first (the seeds' items) gets cfg.seed
        cache: dict[int, np.ndarray] = {}  # a single base estimate stands for every seed: one evaluation
        for g, ests in enumerate(groups):
            for s, est in enumerate(ests):
                key = tuple(est.strata)
                seed = streams.setdefault(key, cfg.seed if not streams else [cfg.seed, 1, len(streams)])
                if id(est) not in cache:
                    cache[id(est)] = _distribution(est, cfg, bootstrap_indices(key, cfg.resamples, seed))
                drawn = counts[:, s]
                out[g] += drawn * np.where(drawn > 0, cache[id(est)], 0.0)  # an undrawn seed's nan drops out
        return [o / n_seeds for o in out]
    # independent: position j draws seed s_j and its own items; each seed is scored on the replicates that drew it
    draws = _seed_draws(n_seeds, cfg)
    for j in range(n_seeds):
        seed = cfg.seed if j == 0 else [cfg.seed, 1, j]
        indices: dict[tuple, list[np.ndarray]] = {}
        for s in range(n_seeds):
            rows = np.flatnonzero(draws[:, j] == s)
            if rows.size == 0:
                continue
            for g, ests in enumerate(groups):
                key = tuple(ests[s].strata)
                if key not in indices:
                    indices[key] = bootstrap_indices(key, cfg.resamples, seed)
                idx = indices[key]
                out[g][rows] += np.asarray(ests[s].statistic([i[rows] for i in idx]), dtype=float)
    return [o / n_seeds for o in out]


def _mean_point(estimates: Sequence[Estimate]) -> float:
    return float(np.mean([e.point() for e in estimates]))


def interval_over_seeds(estimates: Sequence[Estimate], cfg: StatsConfig = StatsConfig()) -> Interval:
    """The mean over seeds of each seed's point estimate, with a two-stage (seeds, then items) bootstrap CI.
    `n` is the number of items of one seed. One estimate: exactly `interval(estimates[0], cfg)`."""
    estimates = list(estimates)
    if not estimates:
        raise ValueError("interval_over_seeds needs at least one estimate")
    if len(estimates) == 1:
        return interval(estimates[0], cfg)
    (dist,) = _seed_distribution([estimates], cfg)
    return _interval(_mean_point(estimates), dist, sum(estimates[0].strata), cfg, lambda: _seed_jackknife(estimates, cfg))


def compare_over_seeds(
    estimates: Sequence[Estimate], base: Sequence[Estimate], cfg: StatsConfig = StatsConfig()
) -> Comparison:
    """Paired two-stage bootstrap of (mean over seeds of the variant) - (mean over seeds of the base): the same
    seed draws and item indices for a variant seed and its base estimate. `base`: one estimate per seed (paired
    by position) or a single one for every seed. One estimate each: exactly `compare(estimates[0], base[0], cfg)`."""
    estimates, base = list(estimates), list(base)
    if not estimates or not base:
        raise ValueError("compare_over_seeds needs at least one estimate on each side")
    if len(base) not in (1, len(estimates)):
        raise ValueError(f"base must hold one estimate per seed ({len(estimates)}) or a single one, got {len(base)}")
    if len(estimates) == 1:
        return compare(estimates[0], base[0], cfg)
    paired = base if len(base) == len(estimates) else base * len(estimates)
    for v, b in zip(estimates, paired):
        if tuple(v.strata) != tuple(b.strata):
            raise ValueError(f"cannot pair estimates over different items: {v.strata} vs {b.strata}")
    dv, db = _seed_distribution([estimates, paired], cfg)

    def jack():
        return [v - b for v, b in zip(_seed_jackknife(estimates, cfg), _seed_jackknife(paired, cfg))]

    return _comparison(_mean_point(estimates), _mean_point(base), dv, db, sum(estimates[0].strata), cfg, jack)


def _seed_jackknife(estimates: Sequence[Estimate], cfg: StatsConfig) -> list[np.ndarray]:
    """Jackknife of the mean over seeds, each item left out of every seed at once (shared items only; else
    none: BCa then corrects the bias alone, a = 0)."""
    strata = tuple(estimates[0].strata)
    if cfg.seed_items != "shared" or any(tuple(e.strata) != strata for e in estimates):
        return []
    per_seed = [jackknife(e.statistic, strata) for e in estimates]
    return [np.mean([seed[k] for seed in per_seed], axis=0) for k in range(len(strata))]
