"""Pair GRADIENDs on the synthetic planted-bias world (slow: each pair trains 3 seeds x 300 steps, the synthetic
defaults, cached in the test cache directory).

- every pair's encoder separates its two groups on the test split for every seed, and maps neutral text (the
  pair's sentences with another token masked, and sentences without a group word) near 0; the third group near 0
  is an expected failure on the current world (measured: |h| 0.45-0.8 for every pair);
- the selected RACE1 edit moves race SS toward 50; that gender SS does not move significantly is the acceptance
  claim, an expected failure on the current world (it moves: the figures in the test).

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

# measured per pair and seed (README): Cor_pair 0.974-0.999, Acc_pair >= 0.99, mean |h| neutral <= 0.13 (types 2, 3)
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


@pytest.mark.xfail(strict=True, reason="measured on the current world: the third group encodes at mean |h| 0.54 (RACE1), "
                   "0.52-0.53 (RACE2), 0.79-0.80 (RACE3), 0.53-0.59 (RELIGION1), 0.50-0.51 (RELIGION2), 0.45-0.46 "
                   "(RELIGION3) for every seed (the world's group sentences share templates); to be re-measured on the "
                   "new pin")  # fmt: skip
@pytest.mark.parametrize("name", sorted(PAIR_PLUGINS))
def test_encoder_maps_the_third_group_near_zero(synthetic, name):
    method = PAIR_PLUGINS[name]()
    ctx = _ctx(synthetic, method.bias_type)
    data = load(ctx.data_dir, method.bias_type)
    gradiend, _, _ = method.trained(synthetic, ctx, data)
    assert analyse_pair(synthetic, gradiend, data, method.pair).metrics["mean|h| third"] <= NEUTRAL


@pytest.fixture(scope="module")
def race1_ss(synthetic):
    """StereoSet race and gender SS of the base model and of the selected RACE1 (white/black) edit."""
    from metrics.stereoset import StereoSet

    method = PAIR_PLUGINS["gradiend-race-white-black"]()
    ctx = _ctx(synthetic, "race")
    edited = method.apply(synthetic, method.fit(synthetic, ctx))
    race = [StereoSet().score(s, ctx).estimates["ss_race"] for s in (synthetic, edited)]
    gender = [StereoSet().score(s, _ctx(synthetic, "gender")).estimates["ss_gender"] for s in (synthetic, edited)]
    cfg = StatsConfig(resamples=1000, seed=0)
    cmp_race, cmp_gender = compare(race[1], race[0], cfg), compare(gender[1], gender[0], cfg)
    print(f"\nrace SS {race[0].point():.1f} -> {race[1].point():.1f} (CI of the change [{cmp_race.low:+.1f}, "
          f"{cmp_race.high:+.1f}]); gender SS {gender[0].point():.1f} -> {gender[1].point():.1f} "
          f"([{cmp_gender.low:+.1f}, {cmp_gender.high:+.1f}])")  # fmt: skip
    return race, gender, cmp_race, cmp_gender


def test_race_pair_edit_moves_race_ss_toward_50(race1_ss):
    """Measured on the current world: race SS 100.0 -> 96.5, CI of the change [-6.7, -0.7] (the base model is at
    the ceiling: every item prefers the stereotype). To be re-measured on the new pin."""
    race, _, cmp_race, _ = race1_ss
    assert abs(race[1].point() - 50) < abs(race[0].point() - 50)
    assert cmp_race.significant and cmp_race.high < 0


@pytest.mark.xfail(strict=True, reason="measured on the current world: the selected RACE1 edit (h = 0, alpha = 0.5: the "
                   "decoder bias alone, at the grid's largest alpha) moves gender SS 89.4 -> 62.9, CI of the change "
                   "[-31.2, -21.5]; the claim is to be re-measured on the new pin")  # fmt: skip
def test_race_pair_edit_leaves_gender_ss(race1_ss):
    _, _, _, cmp_gender = race1_ss
    assert not cmp_gender.significant
