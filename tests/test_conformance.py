"""One conformance suite for every registered method and metric (the `check_estimator` of this project).

Static checks run for every plugin in milliseconds; the behavioural checks fit / score every plugin on the
synthetic world with the plugin's `quick` options.
"""
from __future__ import annotations

import json
import math
import pickle

import numpy as np
import pytest
import torch

from bench.api import EVERY_CAPABILITY, Column, Debiaser, Metric, NotApplicable, Scores
from bench.registry import METHODS, METRICS
from bench.stats import StatsConfig, interval
from stored_scores import assert_identical, round_trip

METHOD_NAMES = METHODS.names()
METRIC_NAMES = METRICS.names()


def _round_trip(obj):
    config = obj.config()
    json.dumps(config)  # part of every cache key
    assert type(obj)(**config).config() == config
    assert type(obj).__name__ in repr(obj)
    pickle.loads(pickle.dumps(obj))


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_method_contract(name):
    cls = METHODS.get(name)
    assert isinstance(cls, type) and issubclass(cls, Debiaser)
    assert cls.label, "a method needs a label for the tables"
    assert cls.group in (0, 1, 2, 3)
    assert cls.changes in ("nothing", "weights", "representation", "output")
    assert cls.serves <= EVERY_CAPABILITY
    assert cls.model_kinds and cls.model_kinds <= {"mlm", "clm"}
    _round_trip(cls())
    _round_trip(cls(**cls.quick))


@pytest.mark.parametrize("name", METRIC_NAMES)
def test_metric_contract(name):
    cls = METRICS.get(name)
    assert isinstance(cls, type) and issubclass(cls, Metric)
    requires = (cls.requires,) if isinstance(cls.requires, str) else cls.requires
    assert requires and set(requires) <= EVERY_CAPABILITY
    subs = [c.submetric for c in cls.columns]
    assert len(subs) == len(set(subs))
    for col in cls.columns:
        assert isinstance(col, Column) and col.goal in ("50", "0", "max") and col.label
    _round_trip(cls())
    _round_trip(cls(**cls.quick))


def _param_snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in METHOD_NAMES if METHODS.get(n).changes != "nothing"])
def test_method_behaviour_on_synthetic(name, synthetic, tmp_path):
    from bench.run.request import RunRequest
    from bench.run.runner import Runner

    lines: list[str] = []
    types = METHODS.get(name).bias_types  # a method of another type only (a race pair GRADIEND) runs for its type
    bias_type = "gender" if types is None or "gender" in types else sorted(types)[0]
    runner = Runner(RunRequest(models=["synthetic"], methods=[name], metrics=[], device="cpu", bias_type=bias_type,
                               options={name: dict(METHODS.get(name).quick)}, progress=False), echo=lines.append)  # fmt: skip
    ctx = runner.context(synthetic)
    before = _param_snapshot(synthetic.model)
    out = runner.debias(synthetic, name, ctx)  # raises IdenticalSubject if nothing changed
    after = _param_snapshot(synthetic.model)
    assert all(torch.equal(before[k], after[k]) for k in before), "apply() must not mutate its input"
    assert synthetic.transforms == () and synthetic.logits_transform is None
    assert not out.same_as(synthetic)
    assert out.capabilities <= METHODS.get(name).serves
    assert out.method == name and out.identity != synthetic.identity
    # the artifact is stored as data (never a pickle) and loads back from the cache to the same subject
    again = runner.debias(synthetic, name, ctx)
    assert f"  {name}: cached artifact" in lines and not any("damaged" in line for line in lines), lines
    assert again.identity == out.identity and not again.same_as(synthetic)
    if METHODS.get(name).changes == "weights":
        assert again.same_as(out)


@pytest.mark.slow
@pytest.mark.parametrize("name", METRIC_NAMES)
def test_metric_behaviour_on_synthetic(name, synthetic):
    from bench.run.request import RunRequest
    from bench.run.runner import Runner

    cls = METRICS.get(name)
    runner = Runner(RunRequest(models=["synthetic"], methods=[], metrics=[name], device="cpu",
                               options={name: dict(cls.quick)}, progress=False), echo=lambda m: None)  # fmt: skip
    try:
        scores = cls(**cls.quick).score(synthetic, runner.context(synthetic))
    except NotApplicable as e:  # e.g. a GLUE task whose data is not in the data directory
        pytest.skip(f"{name}: {e}")
    assert isinstance(scores, Scores)
    for col in cls.columns:
        assert col.submetric in scores.estimates
    again = round_trip(scores)  # the runner caches Scores as data (bench.serialize), never a pickle
    assert_identical(scores, again)
    scores = again
    cfg = StatsConfig(resamples=50)
    for sub, est in scores.estimates.items():
        point = est.point()
        assert math.isfinite(point), sub
        dist = np.asarray(est.statistic([np.zeros((3, n), dtype=int) for n in est.strata]))
        assert dist.shape == (3,), f"{sub}: statistic must return one value per resample"
        iv = interval(est, cfg)
        assert iv.n == sum(est.strata)
