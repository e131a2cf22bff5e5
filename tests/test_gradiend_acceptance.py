"""Acceptance of GRADIEND on the synthetic planted-bias world (slow: trains GRADIEND and runs the decoder grid
once; both are cached in the test cache directory and shared by the tests below and by later runs).

- encoder: Cor_GENTER >= 0.85 and Acc_GENTER >= 0.93 on the GENTER test split (pinned world: 0.889, 0.943);
- GRADIEND-BPI moves StereoSet's gender SS toward 50 (the paired-bootstrap CI of the change excludes 0) while
  the overall LMS stays within 5 points of the base model;
- GRADIEND-FPI and GRADIEND-MPI move P(F) - P(M) in opposite directions (FPI up, MPI down);
- `bench run --methods gradiend --models synthetic --metrics stereoset` runs end to end.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bench.api import Context
from bench.stats import StatsConfig, compare, interval
from methods.gradiend import GradiendBPI, GradiendFPI, GradiendMPI
from methods.gradiend.data import load
from methods.gradiend.decoder_eval import DecoderEvaluator
from methods.gradiend.encoder_eval import analyse

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread while these tests run (restored after): on a shared 2-core machine two threads per
    small forward/backward pass oversubscribe the cores and run ~10x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def ctx(synthetic):
    return Context(data_dir=Path(synthetic.data_dir), cache_dir=Path(os.environ["BENCH_CACHE_DIR"]), progress=False)


@pytest.fixture(scope="module")
def fitted(synthetic, ctx):
    return {cls.criterion: (cls(), cls().fit(synthetic, ctx)) for cls in (GradiendBPI, GradiendFPI, GradiendMPI)}


def test_encoder_separates_the_genders(synthetic, ctx, fitted):
    """On the pinned world (generator "5", weights 49c030ec59199db7) the three training seeds reach val r 0.9125,
    0.9129, 0.9126; test split Cor_GENTER 0.889, Acc_GENTER 0.943 (283 of 300 rows). The training is float32,
    but on fixed weights its per-seed r agreed to 3 decimals across CPU-kernel settings (measured on generator
    "4": AVX-512 vs. ATEN_CPU_CAPABILITY=default with MKL/oneDNN at AVX2, 2 vs. 3 threads), so Cor >= 0.85 (the
    paper: 0.908-1.0 on real models) leaves 0.04, Acc >= 0.93 four rows, val r >= 0.9 0.012. Re-measured when
    the world was re-pinned with race and religion planted (generator "4" gave Cor 0.892, Acc 0.962, so Acc's
    threshold moved from 0.95 with the world, keeping its margin of rows)."""
    gradiend, summary, _ = GradiendBPI().trained(synthetic, ctx)
    report = analyse(synthetic, gradiend, load(ctx.data_dir), split="test", neutral_max=1000)
    print("\n" + report.table())
    assert report.metrics["Cor_GENTER"] >= 0.85
    assert report.metrics["Acc_GENTER"] >= 0.93
    assert summary["val_cor"] >= 0.9


def test_bpi_moves_gender_ss_toward_50_and_keeps_lms(synthetic, ctx, fitted):
    from metrics.stereoset import StereoSet

    method, artifact = fitted["bpi"]
    debiased = method.apply(synthetic, artifact)
    print("\n" + artifact.summary["selection"])
    base, new = StereoSet().score(synthetic, ctx), StereoSet().score(debiased, ctx)
    cfg = StatsConfig(resamples=1000, seed=0)
    ss_base, ss_new = base.estimates["ss_gender"].point(), new.estimates["ss_gender"].point()
    cmp = compare(new.estimates["ss_gender"], base.estimates["ss_gender"], cfg)
    lms_base, lms_new = base.estimates["lms"].point(), new.estimates["lms"].point()
    print(f"gender SS {ss_base:.1f} -> {ss_new:.1f} (change {cmp.delta:+.1f}, CI [{cmp.low:+.1f}, {cmp.high:+.1f}]), "
          f"LMS {lms_base:.1f} -> {lms_new:.1f}; h={artifact.h}, alpha={artifact.alpha}")  # fmt: skip
    assert abs(ss_new - 50) < abs(ss_base - 50)
    assert cmp.significant
    toward = -1 if ss_base > 50 else 1  # the CI of the change excludes 0 on the side of 50
    assert (cmp.high < 0) if toward < 0 else (cmp.low > 0)
    assert abs(lms_new - lms_base) <= 5
    assert interval(new.estimates["lms"], cfg).n == interval(base.estimates["lms"], cfg).n


def test_fpi_and_mpi_steer_in_opposite_directions(synthetic, ctx, fitted):
    evaluator = DecoderEvaluator(synthetic, load(ctx.data_dir), lms_max_sentences=200)
    base = evaluator.evaluate()
    gap = {}
    for crit in ("fpi", "mpi"):
        method, artifact = fitted[crit]
        edited = DecoderEvaluator(method.apply(synthetic, artifact), load(ctx.data_dir), lms_max_sentences=200).evaluate()
        gap[crit] = (edited["P(F)"] - edited["P(M)"]) - (base["P(F)"] - base["P(M)"])
    print(f"\nchange of P(F) - P(M): FPI {gap['fpi']:+.4f}, MPI {gap['mpi']:+.4f}")
    assert gap["fpi"] > 0 > gap["mpi"]


def test_bench_run_end_to_end(tmp_path, fitted):
    from bench.cli import main

    out = tmp_path / "run"
    try:
        main(["run", "--methods", "gradiend", "--models", "synthetic", "--metrics", "stereoset", "--out", str(out),
              "--device", "cpu", "--resamples", "200", "--no-progress"])  # fmt: skip
    except SystemExit as e:
        assert e.code == 0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    ss = {r["method"]: r for r in rows if r["metric"] == "stereoset" and r["submetric"] == "ss_gender"}
    assert set(ss) == {"base", "gradiend-bpi"}
    assert ss["gradiend-bpi"]["significant"] is not None and ss["gradiend-bpi"]["label"] == "GRADIEND-BPI"
    assert (out / "leaderboard.md").is_file()
