"""The mean-rank CI from the cached per-item scores (issue 21, item 4): the replicates are exactly the draws the
rows' own CIs were read from, every method is re-ranked on each draw (checked against ranks computed by hand), and
without the cache the table says it fell back to the normal approximation of the rows."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from bench.run.replicates import item_replicates
from reports import rank_table

SUITE = """models = ["synthetic"]
methods = ["base", "inlp", "sentence-debias"]
metrics = ["stereoset", "seat"]
seed = 0
[options.inlp]
n_iterations = 4
per_class = 150
[options.sentence-debias]
max_pairs = 200
[stats]
resamples = 200
ci = "percentile"
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory, synthetic):
    folder = tmp_path_factory.mktemp("rank-items")
    (folder / "suite.toml").write_text(SUITE)
    proc = subprocess.run([sys.executable, "-m", "bench.cli", "run", "--suite", folder / "suite.toml", "--out",
                           folder / "run", "--cache-dir", folder / "cache", "--data-dir", synthetic.data_dir,
                           "--no-progress"], capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (folder / "run" / "results.jsonl").read_text().splitlines()]
    return folder, [r for r in rows if r["status"] == "ok" and r.get("ci_low") is not None]


def test_replicates_are_the_draws_of_the_rows_own_cis(run, synthetic):
    folder, rows = run
    items = item_replicates(folder / "run", 200, cache_dir=folder / "cache", data_dir=synthetic.data_dir)
    assert {(r["model"], r["method"], r["submetric"]) for r in rows} <= set(items)
    for r in rows:  # the rows' CIs are percentile CIs of 200 replicates: the same replicates give the same bounds
        low, high = np.percentile(items[(r["model"], r["method"], r["submetric"])], [2.5, 97.5])
        assert (low, high) == pytest.approx((r["ci_low"], r["ci_high"]), rel=1e-12, abs=1e-12), r["submetric"]


def hand_ranks(values: dict, goal: str) -> dict:
    """Proportional ranks i/(n-1) of one (model, metric): 1 = best, ties share the mean position."""
    bad = {m: abs(v - 50) if goal == "50" else abs(v) if goal == "0" else -v for m, v in values.items()}
    n = len(bad)
    return {m: (sum(b > bm for b in bad.values()) + (sum(b == bm for b in bad.values()) - 1) / 2) / (n - 1)
            for m, bm in bad.items()}  # fmt: skip


def test_rank_ci_reranks_every_method_on_each_item_draw(run, synthetic, monkeypatch):
    folder, rows = run
    monkeypatch.setenv("BENCH_CACHE_DIR", str(folder / "cache"))
    items = item_replicates(folder / "run", 200, data_dir=synthetic.data_dir)
    table = rank_table.build(rows, resamples=200, items=items)
    assert table.ci_source == "items"
    methods = ["base", "inlp", "sentence-debias"]
    subs = [(sub, goal) for sub, _, goal in table.rank_metrics]
    means = np.zeros((200, len(methods)))
    for r in range(200):
        per_metric = []
        for sub, goal in subs:
            ranks = hand_ranks({m: items[("synthetic", m, sub)][r] for m in methods}, goal)
            per_metric.append([ranks[m] for m in methods])
        means[r] = np.mean(per_metric, axis=0)
    for j, m in enumerate(methods):
        low, high = np.percentile(means[:, j], [2.5, 97.5])
        assert table.ci[m]["mean"] == pytest.approx((low, high), abs=1e-12), m
    # the run wrote its rank table the same way (the manifest says where its cache was)
    assert "bootstrap replicates of the items" in (folder / "run" / "rank.md").read_text()


def test_without_the_cache_the_rank_ci_says_it_is_the_normal_approximation(run, tmp_path, synthetic):
    folder, rows = run
    items = item_replicates(folder / "run", 200, cache_dir=tmp_path / "empty", data_dir=synthetic.data_dir)
    assert items == {}
    text = rank_table.render(rows, "md", resamples=200, items=items)
    assert "normal approximation" in text and "replicates of the items" not in text
    assert all(math.isfinite(v) for v in rank_table.build(rows, resamples=200, items=items).ci["base"]["mean"])
