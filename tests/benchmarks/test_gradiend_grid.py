"""The (h, alpha) decoder grid costs little more than the model evaluations it runs.

`run_grid` edits the model in place (theta0 + alpha * dec(h), one pass per tensor from a flat copy of theta0)
and restores it at the end; the target is total grid time < 1.5 x the time of the same number of plain
`DecoderEvaluator.evaluate()` calls on the unedited model.
- synthetic world: the full 15 x 16 grid + base (241 evaluations) with the world's own GENEUTRAL/GENTYPES;
- random bert-base (n = 109 M, where an edit touches 0.4 GB per pass): 4 grid points (one h, four alphas, as
  the grid's 16 alphas per h) + base, on small evaluation sets (64 GENEUTRAL-style sentences, 16 GENTYPES-style
  templates built from the data directory's corpus). The paper's grid evaluates 10,000 sentences per point,
  where the edits weigh ~100x less; the printout also gives the cost per edit.
Run with `pytest tests/benchmarks/test_gradiend_grid.py --benchmark-enable -s`; without --benchmark-enable (its tiny
mode) a 2 x 2 grid on the synthetic world and a 2-layer BERT, the same checks, no ratio asserted.
"""
from __future__ import annotations

import time

import pytest

from methods.gradiend.data import load
from methods.gradiend.decoder_eval import ALPHA_VALUES, H_VALUES, DecoderEvaluator, run_grid
from methods.gradiend.model import Gradiend
from methods.gradiend.params import ParamSet
from tests.benchmarks.conftest import TINY_BERT

TINY_GRID = ((-1.0, 1.0), (-0.01, 0.01))  # the plain test command: 5 models, the same restore check


def _overhead(subject, evaluator, h_values, alpha_values, benchmark=None):
    params = ParamSet.select(subject.model)
    gradiend = Gradiend.initialised(params.n, 0)
    before = params.flatten()
    points = 1 + len(h_values) * len(alpha_values)
    t0 = time.perf_counter()
    for _ in range(points):
        evaluator.evaluate()
    alone = time.perf_counter() - t0
    if benchmark is not None:
        result = benchmark.pedantic(run_grid, args=(subject, gradiend, evaluator),
                                    kwargs={"h_values": h_values, "alpha_values": alpha_values}, rounds=1)  # fmt: skip
    else:
        result = run_grid(subject, gradiend, evaluator, h_values=h_values, alpha_values=alpha_values)
    assert len(result.table) == points
    assert params.flatten().equal(before), "the grid restores the model bit for bit"
    return points, alone, result.timings


@pytest.fixture
def one_thread():
    """One intra-op thread (restored after): on a shared 2-core machine two threads per small forward pass
    oversubscribe the cores and make the timings mostly noise."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_full_grid_on_synthetic_world(benchmark, synthetic, one_thread, full):
    grid = (H_VALUES, ALPHA_VALUES) if full else TINY_GRID
    evaluator = DecoderEvaluator(synthetic, load(synthetic.data_dir), lms_max_sentences=500 if full else 50)
    points, alone, t = _overhead(synthetic, evaluator, *grid, benchmark)
    ratio = t["total"] / alone
    print(f"\nsynthetic world, {points} models ({evaluator.n_masked} LMS masks, {len(evaluator.type_items)} GENTYPES): "
          f"grid {t['total']:.1f}s vs {points} evaluations alone {alone:.1f}s -> {ratio:.3f}x "
          f"(edits + restore {t['edit']:.2f}s)")  # fmt: skip
    benchmark.extra_info.update({"ratio": ratio, **t, "evaluations_alone": alone})
    if full:
        assert ratio < 1.5


def test_grid_edits_on_bert_base(data_dir, one_thread, full):
    import dataclasses

    from bench.models.loading import load_subject

    subject = load_subject("random:bert-base-uncased" if full else TINY_BERT, data_dir=data_dir)
    data = load(data_dir)
    data = dataclasses.replace(data, gentypes=data.gentypes[:16])  # small evaluations: edits weigh more
    evaluator = DecoderEvaluator(subject, data, lms_max_sentences=64, batch_size=16)
    points, alone, t = _overhead(subject, evaluator, (1.0,), (-0.05, -0.01, 0.01, 0.05))
    ratio = t["total"] / alone
    print(f"\nrandom bert-base, {points} models ({evaluator.n_masked} LMS masks, {len(evaluator.type_items)} GENTYPES): "
          f"grid {t['total']:.1f}s vs evaluations alone {alone:.1f}s -> {ratio:.3f}x "
          f"(edits + restore {t['edit']:.2f}s, {t['edit'] / (points - 1):.3f}s per edit)")  # fmt: skip
    if full:
        assert ratio < 1.5
