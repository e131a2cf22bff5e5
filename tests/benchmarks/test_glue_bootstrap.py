"""GLUE bootstrap: the vectorised task statistic (sums of per-example indicator/moment features over each
resample) vs the straightforward way (bias-bench: one scikit-learn/scipy call per resample and seed).

Sizes are those of the real validation sets (CoLA 1,043 MCC, MRPC 408 F1, STS-B 1,500 Pearson, QNLI 5,463
accuracy), 3 seeds, 1,000 resamples; predictions are synthetic (only their size matters for speed; the values
are checked equal). Run with `pytest tests/benchmarks/test_glue_bootstrap.py --benchmark-enable -s`; without
--benchmark-enable it runs 20 resamples (its tiny mode).
"""
from __future__ import annotations

import functools
import time

import numpy as np
import pytest
from scipy.stats import pearsonr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from bench.stats import bootstrap_indices
from metrics.glue_tasks import task_statistic

REFERENCE = {"mcc": matthews_corrcoef, "f1": f1_score, "pearson": lambda y, p: pearsonr(y, p)[0], "accuracy": accuracy_score}
CASES = [("cola", "mcc", 1043), ("mrpc", "f1", 408), ("stsb", "pearson", 1500), ("qnli", "accuracy", 5463)]
RESAMPLES, SEEDS = 1000, 3
TINY_RESAMPLES = 20  # the plain test command: the same sizes and checks, fewer resamples


def _case(metric, n):
    rng = np.random.default_rng(0)
    if metric == "pearson":
        y = rng.uniform(0, 5, n)
        return y, np.stack([y + rng.normal(0, 1.5, n) for _ in range(SEEDS)])
    y = rng.integers(0, 2, n)
    return y, np.stack([np.where(rng.random(n) < 0.7, y, 1 - y) for _ in range(SEEDS)])


def straightforward(metric, y, preds, idx):
    fn = REFERENCE[metric]
    return np.array([100 * np.mean([fn(y[i], p[i]) for p in preds]) for i in idx])


@pytest.mark.parametrize("task,metric,n", CASES)
def test_vectorised_bootstrap_vs_sklearn_loop(benchmark, task, metric, n, full):
    resamples = RESAMPLES if full else TINY_RESAMPLES
    y, preds = _case(metric, n)
    idx = bootstrap_indices((n,), resamples, seed=0)
    stat = functools.partial(task_statistic, metric=metric, num_labels=2, labels=(y,), predictions=(preds,))
    t0 = time.perf_counter()
    ours = benchmark.pedantic(stat, args=(idx,), rounds=1, iterations=1)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = straightforward(metric, y, preds, idx[0])
    t_ref = time.perf_counter() - t0
    np.testing.assert_allclose(ours, ref, atol=1e-9)
    print(f"\nGLUE bootstrap {task} ({metric}, n={n}, {SEEDS} seeds x {resamples} resamples): ours {t_ours:.3f}s, "
          f"scikit-learn/scipy loop {t_ref:.2f}s -> {t_ref / t_ours:.0f}x")  # fmt: skip
    if full:
        assert t_ours < t_ref
