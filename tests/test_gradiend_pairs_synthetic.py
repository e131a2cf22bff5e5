"""Pair GRADIENDs on the synthetic planted-bias world (slow: each pair trains 3 seeds x 300 steps, the synthetic
defaults, cached in the test cache directory).

- every pair's encoder separates its two groups on the test split for every seed, and maps neutral text (the
  pair's sentences with another token masked, and sentences without a group word) near 0;
- the selected RACE1 edit moves race SS toward 50 (or keeps it) while gender SS does not move significantly.

Thresholds were measured on the world pinned before issue 20's re-pin (generator "5", weights 49c030ec59199db7);
they are expected to be re-measured on the new pin (see methods/gradiend/README.md for the figures).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.api import Context
from bench.stats import StatsConfig, compare
from methods.gradiend.model import Gradiend
from methods.gradiend.pair_method import PAIR_PLUGINS
from methods.gradiend.pairs import analyse_pair
from methods.gradiend.pairs_data import load

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

# measured per pair and seed (README): Cor_pair 0.96-0.99, Acc_pair >= 0.98, mean |h| neutral <= 0.11 (types 2, 3)
COR_PAIR, ACC_PAIR, NEUTRAL = 0.9, 0.95, 0.25


def _ctx(subject, bias_type):
    return Context(data_dir=Path(subject.data_dir), cache_dir=Path(os.environ["BENCH_CACHE_DIR"]), progress=False,
                   bias_type=bias_type)  # fmt: skip


@pytest.mark.parametrize("name", sorted(PAIR_PLUGINS))
def test_encoder_separates_its_pair_for_every_seed(synthetic, name):
    method = PAIR_PLUGINS[name]()
    ctx = _ctx(synthetic, method.bias_type)
    data = load(ctx.data_dir, method.bias_type)
    _, summary, folder = method.trained(synthetic, ctx, data)
    for run in summary["runs"]:
        gradiend, _ = Gradiend.load(folder / f"seed-{run['seed']}" / "best")
        m = analyse_pair(synthetic, gradiend, data, method.pair).metrics
        print(name, run["seed"], {k: round(v, 3) for k, v in m.items()})
        assert m["Cor_pair"] >= COR_PAIR and m["Acc_pair"] >= ACC_PAIR
        assert m["mean|h| neutral"] <= NEUTRAL and m["mean|h| masked-neutral"] <= NEUTRAL
        assert min(m["mean|h| first"], m["mean|h| second"]) > 2 * m["mean|h| neutral"]


def test_race_pair_edit_moves_race_ss_but_not_gender_ss(synthetic):
    """Acceptance claim (expected to be re-measured on the new pin: on the current world the base model's race SS
    is at the ceiling, every item prefers the stereotype)."""
    from metrics.stereoset import StereoSet

    method = PAIR_PLUGINS["gradiend-race-white-black"]()
    ctx = _ctx(synthetic, "race")
    edited = method.apply(synthetic, method.fit(synthetic, ctx))
    cfg = StatsConfig(resamples=1000, seed=0)
    race = [StereoSet().score(s, ctx).estimates["ss_race"] for s in (synthetic, edited)]
    gender_ctx = _ctx(synthetic, "gender")
    gender = [StereoSet().score(s, gender_ctx).estimates["ss_gender"] for s in (synthetic, edited)]
    cmp_race, cmp_gender = compare(race[1], race[0], cfg), compare(gender[1], gender[0], cfg)
    print(f"race SS {race[0].point():.1f} -> {race[1].point():.1f} (CI of the change [{cmp_race.low:+.1f}, "
          f"{cmp_race.high:+.1f}]); gender SS {gender[0].point():.1f} -> {gender[1].point():.1f} "
          f"([{cmp_gender.low:+.1f}, {cmp_gender.high:+.1f}])")  # fmt: skip
    assert abs(race[1].point() - 50) <= abs(race[0].point() - 50)
    assert not cmp_gender.significant
