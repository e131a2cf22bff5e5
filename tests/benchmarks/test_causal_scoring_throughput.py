"""Causal StereoSet scoring throughput on a full-size GPT-2 against one sentence per forward pass, with identical
scores. Target: >= 8x on CPU.

Model: random weights of the real gpt2 config and tokenizer (`random:gpt2`, float32). Workload: the StereoSet dev
intrasentence examples (all 2,106, i.e. 6,318 sentences; BENCH_THROUGHPUT_STRIDE=k takes every k-th example,
which shares fewer prefixes between examples, so the ratio comes out lower), scored with the default
causal_scoring="joint". Ours: `StereoSet.score` as `bench run` calls it (`bench.models.causal_scoring`: prefix
tree, batched passes, the LM head only where a log-probability is read). Reference: `stereoset_causal_reference`
of tests/test_causal_metrics.py: per sentence one forward pass of [start] + sentence through
`model(input_ids).logits`, `log_softmax` over the vocabulary at every position, a Python loop.

Both sides run in the same process with the same torch thread count (the default, all cores, unless
BENCH_THREADS says otherwise); the reference runs in BENCH_THROUGHPUT_PIECES parts (default 4) with our whole
scoring timed before, between and after them (ours: the median), so that changing load hits both sides alike.
pytest-benchmark records the whole comparison. Run with `pytest tests/benchmarks/test_causal_scoring_throughput.py
--benchmark-enable -s`. Its tiny mode (the plain test command: a 2-layer float64 model, a few examples, scores
equal to 1e-9) runs the same comparison.
"""
from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import reference_scorers as ref
from bench.api import Context
from bench.models.loading import load_subject
from metrics.stereoset import StereoSet
from tests.test_causal_metrics import stereoset_causal_reference
from tests.test_stereoset import write_stereoset

STRIDE = int(os.environ.get("BENCH_THROUGHPUT_STRIDE", "1"))
PIECES = int(os.environ.get("BENCH_THROUGHPUT_PIECES", "4"))
COLUMNS = ("stereo", "anti", "unrelated")
DECISIONS = (("stereo", "anti"), ("stereo", "unrelated"), ("anti", "unrelated"))


def flips(items: pd.DataFrame, expected: pd.DataFrame, rtol: float) -> tuple[int, int]:
    """(pairwise decisions that differ, of those the ones whose reference margin exceeds 10 x rtol)."""
    differ = clear = 0
    for a, b in DECISIONS:
        ours = items[a].to_numpy() > items[b].to_numpy()
        theirs = expected[a].to_numpy() > expected[b].to_numpy()
        margin = np.abs(expected[a] - expected[b]).to_numpy() / np.maximum(expected[a], expected[b]).to_numpy()
        differ += int((ours != theirs).sum())
        clear += int(((ours != theirs) & (margin > 10 * rtol)).sum())
    return differ, clear


def compare(subject, examples: list[dict], data_dir: Path, folder: Path, rtol: float = 1e-5, mode: str = "joint",
            pieces: int = PIECES) -> dict:  # fmt: skip
    """Score `examples` both ways, check the scores equal (relative `rtol`), return the sizes and times.

    Other load on a shared machine comes and goes within the reference's long run, so the reference runs in
    `pieces` parts with our whole scoring timed before, between and after them: ours = the median of those
    pieces + 1 timings, reference = the sum of its parts."""
    path = write_stereoset(Path(folder) / "stereoset.json", examples)
    ctx = Context(data_dir=Path(data_dir), cache_dir=Path(folder) / "cache", progress=False)
    ours_s, reference_s, expected = [], 0.0, []
    size = -(-len(examples) // pieces)
    for k in range(pieces + 1):
        t0 = time.perf_counter()
        scores = StereoSet(file=str(path), causal_scoring=mode).score(subject, ctx)
        t1 = time.perf_counter()
        part = examples[k * size : (k + 1) * size]
        expected += stereoset_causal_reference(subject.model, subject.tokenizer, part, mode)
        reference_s += time.perf_counter() - t1
        ours_s.append(t1 - t0)
    expected = pd.DataFrame(expected)
    assert list(scores.items["id"]) == list(expected["id"])
    for col in COLUMNS:
        np.testing.assert_allclose(scores.items[col], expected[col], rtol=rtol, atol=0)
    differ, clear = flips(scores.items, expected, rtol)
    assert clear == 0, "a pairwise decision differs by more than float noise"
    if not differ:
        for name, value in ref.stereoset_aggregate(expected.to_dict("records")).items():
            assert scores.estimates[name].point() == pytest.approx(value, abs=1e-9), name
    ours = statistics.median(ours_s)
    return {"sentences": 3 * len(examples), "ours_s": ours, "ours_range": (min(ours_s), max(ours_s)),
            "reference_s": reference_s, "ratio": reference_s / ours, "near_tie_flips": differ}  # fmt: skip


@pytest.fixture
def threads():
    before = torch.get_num_threads()
    wanted = int(os.environ.get("BENCH_THREADS", before))
    torch.set_num_threads(wanted)
    yield wanted
    torch.set_num_threads(before)


def _tiny_case(data_dir) -> tuple:
    """The tiny float64 GPT-2-style model of tests/test_causal_metrics.py, every 150th example and 3 gender ones."""
    from tests.test_causal_metrics import MODELS, RTOL

    subject = load_subject(MODELS["gpt2"], data_dir=data_dir)
    subject.model.double()
    examples = ref.read_stereoset(data_dir / "stereoset" / "dev.json")
    examples = examples[::150] + [ex for ex in examples if ex["bias_type"] == "gender"][:3]
    return subject, examples, RTOL, 1


def test_causal_stereoset_throughput(benchmark, data_dir, tmp_path, threads, full):
    if full:
        subject = load_subject("random:gpt2", data_dir=data_dir, device="cpu")
        examples, rtol, pieces = ref.read_stereoset(data_dir / "stereoset" / "dev.json")[::STRIDE], 1e-5, PIECES
    else:
        subject, examples, rtol, pieces = _tiny_case(data_dir)
    result = benchmark.pedantic(lambda: compare(subject, examples, data_dir, tmp_path, rtol=rtol, pieces=pieces),
                                rounds=1, iterations=1)  # fmt: skip
    assert result["sentences"] == 3 * len(examples) and result["ours_s"] > 0 and result["reference_s"] > 0
    if not full:
        return
    low, high = result["ours_range"]
    print(
        f"\nrandom:gpt2 (float32), {threads} torch thread(s), StereoSet dev 1/{STRIDE}: {len(examples)} examples, "
        f"{result['sentences']} sentences, joint scoring\n"
        f"  ours {result['ours_s']:.1f}s (median of {PIECES + 1}: {low:.1f}-{high:.1f}s)  one sentence per forward "
        f"pass {result['reference_s']:.1f}s  -> {result['ratio']:.1f}x  (decisions flipped within float noise: "
        f"{result['near_tie_flips']})"
    )
    assert result["ratio"] > 3  # a loose guard for a shared machine; the target (>= 8x) is read from the printout
