"""The GPU check's causal step (tests/benchmarks/gpu_check.py): StereoSet scoring of decoder-only LMs.

For each of the check's causal models (a random-init GPT-2 and a Llama-3.2-3B-sized Llama; tiny: a 2-layer GPT-2
and `random:llama-small`), on every `tp_stride`-th StereoSet dev example:
- ours: `StereoSet.score` as `bench run` calls it (causal_scoring="joint": prefix tree, batched passes, the LM head
  only where a log-probability is read), timed on its second call (the first one warms the device up);
- the reference: `stereoset_causal_reference` of tests/test_causal_metrics.py, one sentence per forward pass with
  the full vocabulary's log-softmax, for at most `ref_budget` s; its full time is extrapolated from the examples
  it finished (said in the figures);
- equality on the examples the reference finished: the largest relative difference of the per-sentence scores
  (geometric-mean probabilities) and the pairwise decisions that differ. Tolerance: relative 1e-3, the
  per-token log-probability bound of the masked scores (LOGPROB_ATOL in gpu_check.py; a batched pass sums in
  another order than a pass of one sentence); a differing decision is accepted at a near-tie only.
"""
from __future__ import annotations

import time
from pathlib import Path

SCORE_RTOL = 1e-3
DECISIONS = (("stereo", "anti"), ("stereo", "unrelated"), ("anti", "unrelated"))


def _compare(items, expected: list[dict]) -> dict:
    by_id = {row["id"]: row for row in items.to_dict("records")}
    worst, flips, clear = 0.0, 0, 0
    for ref_row in expected:
        ours = by_id[ref_row["id"]]
        for col in ("stereo", "anti", "unrelated"):
            worst = max(worst, abs(ours[col] - ref_row[col]) / max(abs(ref_row[col]), 1e-300))
        for a, b in DECISIONS:
            if (ours[a] > ours[b]) != (ref_row[a] > ref_row[b]):
                flips += 1
                clear += abs(ref_row[a] - ref_row[b]) > 2 * SCORE_RTOL * max(ref_row[a], ref_row[b])
    return {"compared_examples": len(expected), "max_rel_diff": worst, "flips": flips, "clear_flips": int(clear)}


def _one_model(cfg, work: Path, label: str, model_name: str, examples: list[dict], sync) -> dict:
    import torch

    from bench.api import Context
    from bench.models.loading import load_subject
    from metrics.stereoset import StereoSet
    from tests.test_causal_metrics import stereoset_causal_reference
    from tests.test_stereoset import write_stereoset

    folder = work / "causal" / label.replace(" ", "_")
    folder.mkdir(parents=True, exist_ok=True)
    path = write_stereoset(folder / "stereoset.json", examples)
    subject = load_subject(model_name, data_dir=cfg.data_dir, device=cfg.device)
    ctx = Context(data_dir=Path(cfg.data_dir), cache_dir=folder / "cache", device=cfg.device, progress=False)
    metric = StereoSet(file=str(path), causal_scoring="joint")
    metric.score(subject, ctx)  # warm-up: kernels, allocator
    sync(cfg.device)
    t0 = time.perf_counter()
    scores = metric.score(subject, ctx)
    sync(cfg.device)
    ours = time.perf_counter() - t0
    expected, t0, chunk = [], time.perf_counter(), 8
    while len(expected) < len(examples) and time.perf_counter() - t0 < cfg.ref_budget:
        expected += stereoset_causal_reference(subject.model, subject.tokenizer, examples[len(expected) : len(expected) + chunk], "joint")
        sync(cfg.device)
    ref_s = time.perf_counter() - t0
    full_ref = ref_s * len(examples) / max(len(expected), 1)
    out = {"model": model_name, "parameters": sum(p.numel() for p in subject.model.parameters()),
           "examples": len(examples), "sentences": 3 * len(examples), "ours_seconds": ours,
           "reference": {"done": len(expected), "seconds": ref_s, "full_seconds": full_ref,
                         "extrapolated": len(expected) < len(examples)},
           "speedup": full_ref / ours, **_compare(scores.items, expected)}  # fmt: skip
    del subject, metric
    if cfg.device == "cuda":
        torch.cuda.empty_cache()
    return out


def step_causal(cfg, work: Path, deadline: float, sync, failed) -> dict:
    """`failed(message, figures)` builds the exception that records the step as failed with its figures."""
    import reference_scorers as ref

    examples = ref.read_stereoset(Path(cfg.data_dir) / "stereoset" / "dev.json")[:: cfg.tp_stride]
    out = {}
    for label, model_name in cfg.causal_models:
        if deadline - time.monotonic() < 3 * cfg.ref_budget:
            out[label] = {"skipped": "time budget"}
            continue
        out[label] = _one_model(cfg, work, label, model_name, examples, sync)
    bad = [f"{m}: max relative difference {r['max_rel_diff']:.1e}, {r['clear_flips']} decisions flipped beyond a "
           f"near-tie" for m, r in out.items() if r.get("max_rel_diff", 0) > SCORE_RTOL or r.get("clear_flips")]  # fmt: skip
    if bad:
        raise failed("; ".join(bad), out)
    return out


def summary_cell(figures: dict) -> str:
    return "; ".join(
        f"{m}: {r['speedup']:.1f}x{' (reference extrapolated)' if r['reference']['extrapolated'] else ''}, max rel. "
        f"diff {r['max_rel_diff']:.1e}, flips {r['flips']}" if "speedup" in r else f"{m}: {r.get('skipped', '?')}"
        for m, r in figures.items())  # fmt: skip
