"""Seeds as a grid axis: `--seeds 0,1` (or a suite's `seeds = [...]`) runs every unit once per seed, stores rows
per seed, and writes rows aggregated over the seeds (bench.stats.interval_over_seeds / compare_over_seeds) once
every seed of a cell is in. One seed gives exactly the rows of a run without the seed axis."""
from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch

from bench.api import EMBED, Column, Debiaser, Estimate, Metric, Scores, statistic
from bench.registry import METHODS, METRICS, register_method, register_metric
from ci_runs import REPO, bench_cli, ci_args, ci_reference, comparable, rows  # noqa: F401
from cli_helpers import run_bench
from tests.test_runner_cli import Scale

TOKENIZER_DIR = REPO.parent / "shared" / "data" / "models" / "bert-base-uncased-tokenizer"


@statistic
def _mean_rows(values, idx):
    return values[idx[0]].mean(axis=1)


class SeedNorm(Metric):
    """Norms of a few first hidden states, perturbed by a seed-dependent noise (as a seeded metric would be)."""

    requires = EMBED
    columns = (Column("NORM", "norm", "0", 2),)

    def score(self, subject, ctx):
        enc = subject.tokenizer(["a b c", "d e", "f g h", "i j k l", "m"], return_tensors="pt", padding=True)
        with torch.inference_mode():
            h = subject.hidden_states(enc.input_ids, enc.attention_mask)[:, 0].norm(dim=-1).numpy().astype(float)
        h = h + np.random.default_rng(ctx.seed).normal(0, 0.01, len(h))
        return Scores("seed-norm", {"norm": Estimate((len(h),), partial(_mean_rows, h))}, extras={"count": len(h)})


class SeedScale(Debiaser):
    """A factor that depends on the fit's seed (as a trained method's artifact does)."""

    label = "SeedScale"
    changes = "representation"

    def fit(self, subject, ctx):
        return {"factor": 0.5 + 0.1 * ctx.seed}

    def apply(self, subject, artifact):
        return subject.with_transform(Scale(artifact["factor"]))


@pytest.fixture(scope="module", autouse=True)
def plugins():
    if "seed-norm" not in METRICS:
        register_metric("seed-norm")(SeedNorm)
    if "seed-scale" not in METHODS:
        register_method("seed-scale")(SeedScale)
    yield
    METRICS.unregister("seed-norm")
    METHODS.unregister("seed-scale")


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-bert")
    BertForMaskedLM(BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=32, max_position_embeddings=32)).save_pretrained(path)  # fmt: skip
    BertTokenizerFast.from_pretrained(TOKENIZER_DIR).save_pretrained(path)
    return path


def _args(model, tmp_path, out, *seed_args):
    return ["run", "--models", model, "--methods", "seed-scale", "--metrics", "seed-norm", "--data-dir", tmp_path,
            "--cache-dir", tmp_path / "cache", "--resamples", "100", "--out", out, *seed_args]  # fmt: skip


def test_seeds_give_rows_per_seed_and_aggregated_rows(tiny_model_dir, tmp_path, capsys):
    from bench.run.request import RunRequest
    from bench.run.runner import Runner
    from bench.stats import StatsConfig, compare_over_seeds, interval_over_seeds

    grid = tmp_path / "grid"
    assert run_bench(_args(tiny_model_dir, tmp_path, grid, "--seeds", "0,1"), capsys)[0] == 0
    got = rows(grid)
    assert [(r["method"], r["seed"], r["submetric"]) for r in got] == [
        ("base", 0, "norm"), ("base", 0, "count"), ("seed-scale", 0, "norm"), ("seed-scale", 0, "count"),
        ("base", 1, "norm"), ("base", 1, "count"), ("seed-scale", 1, "norm"), ("seed-scale", 1, "count"),
        ("base", None, "norm"), ("base", None, "count"), ("seed-scale", None, "norm"), ("seed-scale", None, "count"),
    ]  # fmt: skip
    per_seed, agg = got[:8], got[8:]
    assert all("aggregate" not in r and "seeds" not in r for r in per_seed)
    assert all(r["aggregate"] is True and r["seeds"] == [0, 1] and r["seed"] is None for r in agg)
    assert set(agg[0]) - {"seeds", "aggregate"} == set(per_seed[0])  # the fields of a seed's row, plus two
    # seed 0's rows are the rows of a one-seed run with seed 0
    single = tmp_path / "single"
    assert run_bench(_args(tiny_model_dir, tmp_path, single, "--seed", "0"), capsys)[0] == 0
    assert comparable(per_seed[:4]) == comparable(rows(single))
    # the aggregated values are the seeds engineer's statistics on each seed's Scores (from the score cache)
    runner = Runner(RunRequest(models=[str(tiny_model_dir)], methods=["seed-scale"], metrics=["seed-norm"],
                               data_dir=str(tmp_path), cache_dir=str(tmp_path / "cache"), stats={"resamples": 100}),
                    echo=lambda m: None)  # fmt: skip
    base = runner.base_subject(str(tiny_model_dir))
    scores, base_scores = [], []
    for seed in (0, 1):
        ctx = runner.context(base, seed)
        base_scores.append(runner.scores(base, "seed-norm", ctx).estimates["norm"])
        scores.append(runner.scores(runner.debias(base, "seed-scale", ctx), "seed-norm", ctx).estimates["norm"])
    cfg = StatsConfig(seed=0, resamples=100)
    iv, cmp = interval_over_seeds(scores, cfg), compare_over_seeds(scores, base_scores, cfg)
    row = agg[2]
    assert (row["value"], row["ci_low"], row["ci_high"], row["n"]) == (iv.value, iv.low, iv.high, iv.n)
    assert (row["delta"], row["delta_low"], row["delta_high"], row["significant"]) == (cmp.delta, cmp.low, cmp.high, cmp.significant)
    assert agg[3]["value"] == 5.0  # extras: the mean over seeds


def test_one_seed_is_todays_run(tiny_model_dir, tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert run_bench(_args(tiny_model_dir, tmp_path, a, "--seeds", "3"), capsys)[0] == 0
    assert run_bench(_args(tiny_model_dir, tmp_path, b, "--seed", "3"), capsys)[0] == 0
    assert comparable(rows(a)) == comparable(rows(b)) and all("aggregate" not in r for r in rows(a))
    assert (a / "manifest.json").read_text() == (b / "manifest.json").read_text()


def test_missing_aggregate_rows_are_written_by_the_next_run(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "grid"
    args = _args(tiny_model_dir, tmp_path, out, "--seeds", "0,1")
    assert run_bench(args, capsys)[0] == 0
    full = (out / "results.jsonl").read_text()
    lines = full.splitlines(keepends=True)
    (out / "results.jsonl").write_text("".join(lines[:4] + lines[8:10]))  # driver died: seed 1 and 1 aggregate lost
    code, _, err = run_bench(args, capsys)
    assert code == 0, err
    assert comparable(rows(out)) == comparable([__import__("json").loads(l) for l in lines])


@pytest.mark.parametrize("args, message", [
    (["--seed", "1", "--seeds", "0,1"], "--seed or --seeds"),
    (["--seeds", "0,x"], "--seeds must be"),
    (["--seeds", "0,-1"], "seeds must be a list of non-negative integers"),
])  # fmt: skip
def test_bad_seeds(args, message, tmp_path, capsys):
    code, _, err = run_bench(["run", "--models", "synthetic", "--cache-dir", tmp_path, *args], capsys)
    assert code == 2 and message in err


def test_suite_seeds(tmp_path):
    from bench.errors import BenchError
    from bench.run.suite import load_suite

    good = tmp_path / "good.toml"
    good.write_text('models = ["synthetic"]\nseeds = [0, 1, 2]\n')
    assert load_suite(str(good))["seeds"] == [0, 1, 2]
    for text, message in [('seeds = [0]\nseed = 0\n', "not both"), ('seeds = []\n', "non-empty"),
                          ('seeds = [0, "1"]\n', "non-negative integers")]:  # fmt: skip
        bad = tmp_path / "bad.toml"
        bad.write_text(text)
        with pytest.raises(BenchError, match=message):
            load_suite(str(bad))


@pytest.mark.slow
def test_ci_suite_over_two_seeds(ci_reference, tmp_path):
    ref, cache = ci_reference
    out = tmp_path / "grid"
    done = bench_cli(ci_args(out, cache, "--seeds", "0,1"))
    assert done.returncode == 0, done.stderr[-3000:]
    got = rows(out)
    seed0 = [r for r in got if r["seed"] == 0]
    assert comparable(seed0) == comparable(rows(ref))  # seed 0 of the grid = today's one-seed run
    cells = {(r["method"], r["metric"], r["submetric"]) for r in seed0}
    assert {(r["method"], r["metric"], r["submetric"]) for r in got if r["seed"] == 1} == cells
    agg = [r for r in got if r.get("aggregate")]
    assert {(r["method"], r["metric"], r["submetric"]) for r in agg} == cells
    assert all(r["seeds"] == [0, 1] and r["seed"] is None for r in agg)
    ss = {r["method"]: r for r in agg if r["submetric"] == "ss_gender"}
    assert ss["base"]["ci_low"] <= ss["base"]["value"] <= ss["base"]["ci_high"]
    assert ss["cda"]["delta"] is not None
    assert [r.get("aggregate", False) for r in got] == sorted(r.get("aggregate", False) for r in got)  # aggregates last
