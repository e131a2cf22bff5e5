"""Coverage of the bootstrap intervals (issue 21, item 4): how often the nominal 95 % interval of each method
(`percentile`, `bca`) contains the known true value, at this project's set sizes, with the metrics' own
statistics (metrics.seat.sentences_statistic, metrics.crows.crows_statistic, metrics.stereoset's SS).

Worlds with a known truth:
- SEAT: unit-normalised Gaussian sentence embeddings (d = 24) whose targets X, Y lean along one direction and
  whose attributes A, B along it too; 8 sentences per target and attribute set (the issue's 8 + 8 targets), one
  test, the signed effect size. Truth: the effect size of the same populations at 2,000 sentences per set (mean of
  three draws). Two strengths: a moderate effect and a strong one near the statistic's bound (about 2).
- CrowS gender: 262 pairs (the real file's gender pairs), each more-stereotypical with probability 0.6. Truth 60.
- StereoSet gender: 255 items over 10 target terms with the real dev file's items per term (21 to 30), each term
  with its own share of stereotype preference p_t drawn from U(0.5, 0.95); SS is the macro mean over the terms
  (metrics.stereoset's statistic). Truth: 100 mean_t p_t. (A world of 40 terms of 1 to 20 items, where terms drop
  out of resamples, biases the bootstrap itself: there BCa's bias correction misfires, 0.867 against the
  percentile's 0.937 at 1,000 x 1,000; the real files' gender terms are not like that.)
Per world, `datasets` independent data sets, each with its own bootstrap (`resamples` replicates, the same for
both methods); coverage = share of data sets whose interval contains the truth. With 1,000 data sets the Monte
Carlo standard error of a coverage near 0.95 is about 0.007.

Full mode (`--benchmark-enable`): 1,000 data sets x 1,000 resamples per world. Tiny mode (the plain test
command): 40 x 200, the same code, coverage only checked to be a share.
"""
from __future__ import annotations

import time
from functools import partial

import numpy as np
import pytest

from bench.api import Estimate
from bench.stats import StatsConfig, interval
from metrics.crows import crows_statistic
from metrics.seat import sentences_statistic
from metrics.stereoset import stereoset_statistic

DIM = 24


def _unit(v):
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def seat_sets(rng, n, lean, attribute_lean):
    u = np.eye(DIM)[0]
    x = _unit(rng.normal(size=(n, DIM)) + lean * u)
    y = _unit(rng.normal(size=(n, DIM)) - lean * u)
    a = _unit(rng.normal(size=(n, DIM)) + attribute_lean * u)
    b = _unit(rng.normal(size=(n, DIM)) - attribute_lean * u)
    return x, y, a, b


def seat_estimate(x, y, a, b) -> Estimate:
    cosines = ((x @ a.T, x @ b.T, y @ a.T, y @ b.T),)
    return Estimate((len(x), len(y), len(a), len(b)), partial(sentences_statistic, cosines=cosines, how="signed"))


def seat_world(lean, attribute_lean):
    def truth(rng):
        return float(np.mean([seat_estimate(*seat_sets(rng, 2000, lean, attribute_lean)).point() for _ in range(3)]))

    def data(rng):
        return seat_estimate(*seat_sets(rng, 8, lean, attribute_lean))

    return truth, data


def crows_world():
    def data(rng):
        biased = (rng.random(262) < 0.6).astype(float)
        return Estimate((262,), partial(crows_statistic, biased=biased))

    return (lambda rng: 60.0), data


# items per target term of the real StereoSet dev file's gender examples (255 items over 10 terms)
GENDER_TERM_SIZES = (21, 22, 23, 25, 26, 26, 27, 27, 28, 30)


def stereoset_world(sizes=GENDER_TERM_SIZES):
    shares = np.random.default_rng(12345).uniform(0.5, 0.95, size=len(sizes))
    term = np.repeat(np.arange(len(sizes)), sizes).astype(np.int64)

    def data(rng):
        pro = (rng.random(term.size) < shares[term]).astype(float)
        return Estimate((term.size,), partial(stereoset_statistic, term=term, n_terms=len(sizes), pro=pro,
                                              related=np.full(term.size, 2.0), kind="ss"))  # fmt: skip

    return (lambda rng: 100.0 * float(shares.mean())), data


WORLDS = {
    "SEAT moderate (8+8, 8+8)": seat_world(lean=0.35, attribute_lean=1.0),
    "SEAT strong (8+8, 8+8)": seat_world(lean=1.0, attribute_lean=1.5),
    "CrowS gender (262 pairs)": crows_world(),
    "StereoSet gender (255 items)": stereoset_world(),
}


def coverage(world, datasets: int, resamples: int, seed: int = 0) -> dict:
    truth_of, data_of = world
    truth = truth_of(np.random.default_rng([seed, 1]))
    rng = np.random.default_rng([seed, 2])
    hits = {"percentile": 0, "bca": 0}
    outside = {"percentile": 0, "bca": 0}  # point estimate outside its own interval
    for k in range(datasets):
        est = data_of(rng)
        for method in hits:
            iv = interval(est, StatsConfig(resamples=resamples, seed=k, ci=method))
            hits[method] += iv.low <= truth <= iv.high
            outside[method] += not (iv.low <= iv.value <= iv.high)
    return {"truth": truth, **{m: hits[m] / datasets for m in hits}, **{f"outside_{m}": outside[m] for m in outside}}


def test_ci_coverage(full):
    datasets, resamples = (1000, 1000) if full else (40, 200)
    t0 = time.perf_counter()
    lines = [f"{'world':32s} {'truth':>8s} {'percentile':>10s} {'BCa':>6s} {'outside pct/BCa':>16s}"]
    results = {}
    for name, world in WORLDS.items():
        r = coverage(world, datasets, resamples)
        results[name] = r
        lines.append(f"{name:32s} {r['truth']:8.3f} {r['percentile']:10.3f} {r['bca']:6.3f} "
                     f"{r['outside_percentile']:>8d}/{r['outside_bca']:<7d}")  # fmt: skip
    print(f"\ncoverage of nominal 95 % intervals ({datasets} data sets x {resamples} resamples, "
          f"{time.perf_counter() - t0:.0f} s)\n" + "\n".join(lines))
    for r in results.values():
        assert 0.0 <= r["percentile"] <= 1.0 and 0.0 <= r["bca"] <= 1.0
