"""The rows of a run, built in one place: per seed from a metric's Scores (value, bootstrap CI, paired comparison
with the base model), aggregated over seeds (from each seed's cached Scores), n/a and error rows. Every row has
the fields of bench.run.schema.ROW_SCHEMA."""
from __future__ import annotations

import platform
from typing import Callable

from bench import __version__
from bench import stats as stats_module
from bench.errors import BenchError
from bench.files import stable_hash
from bench.registry import METHODS
from bench.run.checks import check_bootstrap_memory
from bench.run.request import RunRequest
from bench.stats import StatsConfig, compare, interval


def versions() -> dict:
    import torch
    import transformers

    return {"bench": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version()}  # fmt: skip


class RowBuilder:
    """Rows of one run request. `cached_scores(metric, key)`: a seed's Scores from the score cache (None when
    missing or damaged), for the rows aggregated over seeds."""

    def __init__(self, request: RunRequest, cached_scores: Callable, cache_root):
        self.request, self.cached_scores, self.cache_root = request, cached_scores, cache_root
        self.versions = versions()

    def stats_for(self, seed: int) -> StatsConfig:
        """The bootstrap of a seed's rows uses that seed (one seed: exactly the run's StatsConfig)."""
        return StatsConfig(seed=seed, **self.request.stats)

    def common(self, model, method_spec, metric_name, seed, runtime, note) -> dict:
        parts = method_spec.split("+")
        classes = [METHODS.get(p) for p in parts]
        label = " + ".join(c.label or c.name for c in classes)
        group = 0 if method_spec == "base" else (3 if len(parts) > 1 else classes[0].group)
        return dict(
            model=model, method=method_spec, label=label, group=group, metric=metric_name, seed=seed,
            bias_type=self.request.bias_type,
            runtime_s=round(runtime, 3), config_hash=stable_hash(self.request.options.get(metric_name, {})),
            versions=self.versions, note=note,
        )  # fmt: skip

    @staticmethod
    def ok_row(common: dict, sub: str, note: str, value: float | None = None, iv=None, cmp=None) -> dict:
        """One result row: with a bootstrap interval `iv` (and a comparison with base `cmp`), or a plain `value`
        without CI (a metric's extras)."""
        row = dict(common, submetric=sub, status="ok", value=value, ci_low=None, ci_high=None, n=None, resamples=None,
                   delta=None, delta_low=None, delta_high=None, significant=None, note=note)  # fmt: skip
        if iv is not None:
            row.update(value=iv.value, ci_low=iv.low, ci_high=iv.high, n=iv.n, resamples=iv.resamples)
        if cmp is not None:
            row.update(delta=cmp.delta, delta_low=cmp.low, delta_high=cmp.high, significant=cmp.significant)
        return row

    @staticmethod
    def na(common: dict) -> list[dict]:
        return [dict(common, submetric=None, status="n/a", value=None, ci_low=None, ci_high=None, n=None,
                     resamples=None, delta=None, delta_low=None, delta_high=None, significant=None)]  # fmt: skip

    def for_scores(self, model, subject, metric_name, scores, base_scores, runtime, note="", seed=None) -> list[dict]:
        seed = self.request.seed if seed is None else seed
        stats = self.stats_for(seed)
        method_spec = subject.method
        common = self.common(model, method_spec, metric_name, seed, runtime, note)
        if scores is None:
            return self.na(common)
        rows = []
        notes = scores.notes or {}
        items = max((sum(est.strata) for est in scores.estimates.values()), default=0)
        check_bootstrap_memory(stats.resamples, items, f"{model} / {method_spec} / {metric_name}")
        for sub, est in scores.estimates.items():
            iv = interval(est, stats)
            cmp = None
            if base_scores is not None and method_spec != "base" and sub in base_scores.estimates:
                cmp = compare(est, base_scores.estimates[sub], stats)
            rows.append(self.ok_row(common, sub, notes.get(sub, note), iv=iv, cmp=cmp))
        for sub, value in scores.extras.items():
            rows.append(self.ok_row(common, sub, notes.get(sub, note), float(value)))
        return rows

    def aggregate(self, model: str, chain: str, metric_name: str, per_seed: list[dict]) -> list[dict]:
        """Rows of one (model, chain, metric) over the run's seeds: `per_seed` holds, per seed in run order, what
        the unit reported ({"score_key", "base_score_key", "note", "runtime_s"}). Values and CIs come from
        bench.stats.interval_over_seeds / compare_over_seeds on the Scores of each seed (reloaded from the score
        cache); the rows have the fields of a seed's rows with seed null, `seeds` and `aggregate: true`."""
        seeds = list(self.request.seeds)
        cfg = self.stats_for(seeds[0])
        runtime = sum(p.get("runtime_s") or 0.0 for p in per_seed)
        note = next((p.get("note") for p in per_seed if p.get("note")), "")
        common = dict(self.common(model, chain, metric_name, None, runtime, note), seeds=seeds, aggregate=True)
        keys = [p.get("score_key") for p in per_seed]
        if any(k is None for k in keys):
            return self.na(common)
        scores = [self.cached_scores(metric_name, k) for k in keys]
        if any(s is None for s in scores):
            raise BenchError(f"{model} / {chain} / {metric_name}: a seed's scores are missing from the cache "
                             f"({self.cache_root}); rerun to recompute them")  # fmt: skip
        base = None
        base_keys = [p.get("base_score_key") for p in per_seed]
        if chain != "base" and all(k is not None for k in base_keys):
            base = [self.cached_scores(metric_name, k) for k in base_keys]
            base = None if any(b is None for b in base) else base
        notes = scores[0].notes or {}
        rows = []
        for sub in scores[0].estimates:
            if not all(sub in s.estimates for s in scores):
                continue
            ests = [s.estimates[sub] for s in scores]
            iv = stats_module.interval_over_seeds(ests, cfg)
            cmp = None
            if base is not None and all(sub in b.estimates for b in base):
                cmp = stats_module.compare_over_seeds(ests, [b.estimates[sub] for b in base], cfg)
            rows.append(self.ok_row(common, sub, notes.get(sub, note), iv=iv, cmp=cmp))
        for sub in scores[0].extras:
            values = [float(s.extras[sub]) for s in scores if sub in s.extras]
            if len(values) == len(scores):
                rows.append(self.ok_row(common, sub, notes.get(sub, note) or "mean over seeds",
                                         sum(values) / len(values)))  # fmt: skip
        return rows


    def error(self, model: str, chain: str, metric: str, seed: int, e: BaseException) -> dict:
        common = self.common(model, chain, metric, seed, 0.0, f"error: {e}")
        return dict(self.na(common)[0], status="error")

