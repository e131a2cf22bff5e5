"""Bootstrap replicates of a run's rows, recomputed from the cached per-item scores, for statistics across rows
(the mean-rank CI of reports/rank_table.py).

Every row of a run's seed is resampled with the item indices its CI was read from (`bench.stats.replicates`:
`bootstrap_indices` of its strata and the run's seed), so each replicate draws the items once and every method
and base model scored on those items is evaluated on that one draw. Nothing is computed that is not cached: a
row whose scores are not in the cache (another machine's run, a cleared cache) is missing from the result, and
the caller falls back to what the rows alone can give. Runs over several seeds give nothing (their cells are
means over seeds; their two-stage bootstrap is not re-run here).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.errors import BenchError
from bench.registry import make_metric
from bench.run.request import RunRequest
from bench.stats import StatsConfig, replicates


def item_replicates(run_dir: Path, resamples: int, cache_dir=None, data_dir=None) -> dict[tuple, np.ndarray]:
    """(model, method chain, sub-metric) -> the R = `resamples` replicates of that row, for every row of the run
    whose scores are cached; {} when the run directory has no manifest or runs several seeds."""
    from bench.models.loading import light_subject
    from bench.run.export import read_manifest
    from bench.run.plan import _fit_status, make_plan
    from bench.run.unit import UnitWorker

    try:
        manifest = read_manifest(Path(run_dir))
        cache_dir = cache_dir if cache_dir is not None else manifest.get("cache_dir")
        data_dir = data_dir if data_dir is not None else manifest["request"].get("data_dir")
        request = RunRequest(**{**manifest["request"], "cache_dir": cache_dir, "data_dir": data_dir, "progress": False})
        worker = UnitWorker(request, echo=lambda _m: None)
    except (BenchError, TypeError, KeyError):
        return {}
    plan = make_plan(worker.request)
    if len(plan.seeds) != 1 or resamples <= 0:
        return {}
    cfg = StatsConfig(**{**worker.request.stats, "seed": plan.seeds[0], "resamples": resamples})
    out: dict[tuple, np.ndarray] = {}
    light: dict = {}
    for u in plan.units:
        if u.model not in light:
            light[u.model] = light_subject(u.model, worker.data_dir, worker.cache.root)
        if light[u.model] is None:
            continue
        _, subject, na = _fit_status(worker, light[u.model], u)
        if subject is None or na:
            continue
        for metric_name in u.metrics:
            metric = make_metric(metric_name, worker.request.options.get(metric_name))
            try:
                key = worker.score_key(metric_name, metric, subject, worker.context(subject, u.seed))
            except BenchError:
                continue
            scores = worker.cached_scores(metric_name, key)
            for sub, est in ({} if scores is None else scores.estimates).items():
                out[(u.model, u.chain, sub)] = replicates(est, cfg)
    return out
