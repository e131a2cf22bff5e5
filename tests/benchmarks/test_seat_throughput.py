"""SEAT on a full-size BERT (random weights of the real bert-base-uncased config) vs the reference way.

Reference = bias-bench's encoding: one sentence per forward pass (here each distinct sentence once, which is
kinder to the reference than bias-bench, which re-encodes the sets shared between tests), then python-loop
effect sizes. Ours = `SEAT.score`: deduplicated, length-sorted batches, vectorised statistics, plus the
100,000-sample permutation test of all six tests (work the reference timing does not even include).

Both sides run with one intra-op thread, set here and restored afterwards: on a shared 2-core machine two
threads per forward pass oversubscribe the cores and make small forward passes several times slower.
Run with `pytest tests/benchmarks/test_seat_throughput.py --benchmark-enable -s`.
"""
from __future__ import annotations

import json
import statistics
import time

import pytest
import torch

from bench.api import Context
from bench.models import load_subject
from metrics.seat import GENDER_TESTS, SEAT, SETS
from tests.test_seat import ref_effect_size, ref_embed
from tests.tokenizers_fixture import single_thread  # noqa: F401


@pytest.fixture(scope="module")
def bert_base(data_dir):
    return load_subject("random:bert-base-uncased", data_dir=data_dir, device="cpu")


def reference_seat(subject, data_dir):
    """{test: d} from one forward pass per distinct sentence and python-loop effect sizes; and #forwards."""
    cache = {}

    def embed(sentence):
        if sentence not in cache:
            cache[sentence] = ref_embed(subject.model, subject.tokenizer, sentence)
        return cache[sentence]

    out, per_test_forwards = {}, 0
    for name in GENDER_TESTS:
        obj = json.loads((data_dir / "seat" / f"{name}.jsonl").read_text())
        X, Y, A, B = ([embed(s) for s in obj[k]["examples"]] for k in SETS)
        per_test_forwards += sum(len(obj[k]["examples"]) for k in SETS)
        out[name] = ref_effect_size(X, Y, A, B)
    return out, len(cache), per_test_forwards


def test_seat_bert_base_matches_reference_and_is_faster(benchmark, bert_base, data_dir, tmp_path, single_thread):
    ctx = Context(data_dir=data_dir, cache_dir=tmp_path, seed=0, progress=False)

    t0 = time.perf_counter()
    scores = benchmark.pedantic(SEAT().score, args=(bert_base, ctx), rounds=1, iterations=1)
    ours = time.perf_counter() - t0

    t0 = time.perf_counter()
    ref, distinct, per_test = reference_seat(bert_base, data_dir)
    reference = time.perf_counter() - t0

    for name in GENDER_TESTS:
        assert scores.estimates[f"d:{name}"].point() == pytest.approx(ref[name], abs=1e-6)
    expected = statistics.mean(abs(d) for d in ref.values())
    assert scores.estimates["seat"].point() == pytest.approx(expected, abs=1e-6)

    print(
        f"\nSEAT, random:bert-base-uncased, 6 gender tests, {distinct} distinct sentences: SEAT={expected:.6f}, "
        f"max |d - d_ref| = {max(abs(scores.estimates[f'd:{n}'].point() - ref[n]) for n in GENDER_TESTS):.2e}\n"
        f"  ours (batched embeddings + statistics + 6 x 100k permutations): {ours:.1f}s\n"
        f"  reference (one sentence per forward, {distinct} forwards, python effect sizes): {reference:.1f}s"
        f" -> speed-up {reference / ours:.1f}x\n"
        f"  (bias-bench encodes per test: {per_test} forwards, ~{reference * per_test / distinct / ours:.1f}x)"
    )
    assert ours < reference
