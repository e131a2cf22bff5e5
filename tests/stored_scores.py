"""Round trip of a metric's Scores through the cache's safe format (bench.serialize), and the check that nothing
changed: bit-identical point estimates, bootstrap distributions, intervals, items, extras and notes."""
from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from bench.api import Scores
from bench.api import load_scores, save_scores
from bench.stats import StatsConfig, bootstrap_indices, interval


def round_trip(scores: Scores, folder: Path | None = None, allowed: tuple[str, ...] | None = None) -> Scores:
    if allowed is None:  # as the runner does: the statistic's own top-level package (metrics) and bench
        est = next(iter(scores.estimates.values()), None)
        func = getattr(est.statistic, "func", est.statistic) if est is not None else None
        allowed = (func.__module__.split(".")[0],) if func is not None else ()
    if folder is None:
        with tempfile.TemporaryDirectory() as tmp:
            return round_trip(scores, Path(tmp) / "scores", allowed)
    save_scores(scores, folder, allowed)
    return load_scores(folder, allowed)


def assert_identical(a: Scores, b: Scores, resamples: int = 100) -> None:
    assert type(b) is Scores and a.metric == b.metric
    assert a.extras == b.extras and a.notes == b.notes
    assert list(a.estimates) == list(b.estimates)
    cfg = StatsConfig(resamples=resamples, seed=0)
    for name, ea in a.estimates.items():
        eb = b.estimates[name]
        assert ea.strata == eb.strata and type(ea.strata) is type(eb.strata), name
        np.testing.assert_array_equal(np.float64(ea.point()), np.float64(eb.point()), err_msg=name)  # NaN == NaN
        assert np.float64(ea.point()).tobytes() == np.float64(eb.point()).tobytes(), name
        idx = bootstrap_indices(ea.strata, resamples, 0)
        da, db = np.asarray(ea.statistic(idx)), np.asarray(eb.statistic(idx))
        assert da.dtype == db.dtype and da.tobytes() == db.tobytes(), name
        np.testing.assert_equal(dataclasses.astuple(interval(ea, cfg)), dataclasses.astuple(interval(eb, cfg)))
    if a.items is None:
        assert b.items is None
    else:
        pd.testing.assert_frame_equal(a.items, b.items, check_exact=True)

