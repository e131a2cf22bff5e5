"""The prepared GPU check (issue 10, item 5): `tests/benchmarks/gpu_check.sh OUT_DIR [--tiny]`.

Five steps, each recorded in OUT_DIR/gpu_check.json and OUT_DIR/gpu_check.md as soon as it finishes (a step
that fails or runs out of time is recorded as such and the others still run; exit status 1 if any failed):

  equality    StereoSet, CrowS and SEAT scores on CUDA equal those on the CPU (random-init bert-base, every 4th
              item of each set). Without CUDA the second side is the CPU again, with CUDA's batch sizes.
  throughput  the harness's scoring against one sentence per forward pass (tests/reference_scorers.py; SEAT: each
              distinct sentence once) on the full sets. The reference runs at most `ref_budget` s per data set
              and its full time is extrapolated from the items it finished (said in the figures).
  causal      StereoSet scoring of decoder-only LMs (random-init gpt2 and Llama-3.2-3B) against one sentence per
              forward pass, with their scores compared (tests/benchmarks/gpu_check_causal.py).
  gradiend    GRADIEND steps/s and peak memory (CUDA: max_memory_allocated; CPU: ru_maxrss) on random-init
              bert-base and bert-large (24 layers, 1024 hidden, 16 heads, 4096 intermediate), ours against the
              straightforward implementation (as tests/benchmarks/test_gradiend_training.py), each in its own
              subprocess so that its peak memory is its own; gpt2 (causal examples) ours, ours with a bfloat16
              GRADIEND and the straightforward step; Llama-3.2-3B's last 7 blocks (n = 704,686,080) with a bfloat16
              GRADIEND, what an 80 GB card holds (methods/gradiend/README.md "Memory").
  executor    `bench run --suite ci --models synthetic --executor ray --gpus-per-job 1` (no --gpus-per-job
              without CUDA), then the same request with `--executor local` on the same cache: results.jsonl must
              hold the same rows in the same order (runtime_s aside). Skipped when `bench run` has no --executor.

Device: CUDA when available, else the CPU (`--device cpu` forces it). Nothing is downloaded (HF_HUB_OFFLINE=1):
the bert-base config and tokenizer come from <data>/models/bert-base-uncased-tokenizer. `--tiny` runs the same
steps on a tiny model (2 layers, 64 hidden; GRADIEND on it alone) and small subsets (on CUDA too when there is
one), and the executor step as one small `--executor local` run (an in-process Ray cluster costs ~5 s to start
and stop on 2 cores; the executor tests cover Ray): what CI runs (tests/test_gpu_check.py), in about a minute on
2 shared cores.
Time: every step has a cap and the whole check a deadline (`--budget`, 540 s; tiny 420 s), so that it stays under
10 minutes on one H100: a step that would start after the deadline is recorded as skipped. With less time per call,
run the steps in two calls (`--steps equality,throughput,executor`, then `--steps causal,gradiend`).

Tolerances of the equality step (float32 on both sides; TF32 matmuls are switched off and recorded):
- Hidden states / mean-pooled sentence embeddings agree to HIDDEN_RTOL = 1e-4 of each sentence's largest
  |value|. The two devices sum in other orders (and CUDA fuses kernels): a reordered length-K dot product differs
  by ~sqrt(K) u (u = 2^-24 = 6e-8; the random-walk estimate of the gamma_K bound), K <= 3072 in bert-base: 3.3e-6;
  four matmul stages per layer x 12 layers add in quadrature on the residual stream (LayerNorm keeps the scale):
  sqrt(48) x 3.3e-6 = 2.3e-5; 4x margin -> 1e-4.
- Per-token log-probabilities agree to LOGPROB_ATOL = 1e-3: a logit is a 768-long dot product of a hidden state
  (relative error 1e-4) with an embedding row, |logit| <= ~10 on these models -> 1e-3, and log-softmax adds at
  most the same again relative to the logits' scale. Hence StereoSet's per-sentence scores (means of
  probabilities) agree to relative 1e-3 and CrowS's per-sentence scores (means of log-probabilities) to 1e-3.
- Aggregates (SS, LMS, ICAT, CrowS %) count comparisons: equal (to 1e-9) unless an item's outcome flips, and a
  flip is accepted only at a near-tie (the two compared scores within twice the tolerance above; CrowS, which
  compares scores rounded to 3 decimals, within 2 x 1e-3 + 1e-3); the figures count the flips.
- SEAT effect sizes d: the first-order bound sum |dd/dE| x HIDDEN_RTOL max|E_i| over the embeddings E (autograd
  in float64 through normalisation, associations and the effect size), per test; the SEAT mean |d| gets the mean
  of the bounds. On random-init models the sentence embeddings are nearly parallel, so d is very sensitive and
  the bound is loose (~0.02-0.1 at stride 4, measured); the device-dependent part of SEAT is the embeddings,
  which the HIDDEN_RTOL check covers, and the figures give the measured |d| differences.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
for p in (str(REPO), str(REPO / "tests"), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)
for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ[key] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from gpu_check_causal import step_causal  # noqa: E402 - after the path set-up
from gpu_check_causal import summary_cell as causal_summary  # noqa: E402

HIDDEN_RTOL = 1e-4
LOGPROB_ATOL = 1e-3
CUDA_BATCHES = {"batch_size": 256, "batch_tokens": 16384}  # bench's CUDA defaults (README), forced on a CPU-only box
BERT_LARGE = "num_hidden_layers=24,hidden_size=1024,num_attention_heads=16,intermediate_size=4096"
TINY = "num_hidden_layers=2,hidden_size=64,num_attention_heads=2,intermediate_size=128"


@dataclass
class Config:
    out: str
    data_dir: str
    device: str
    tiny: bool
    budget: float  # s for the whole check
    model: str  # for equality and throughput
    eq_stride: int  # every k-th item in the equality step
    tp_stride: int  # every k-th item in the throughput step (1: full sets)
    ref_budget: float  # s of reference scoring per data set
    seat_permutations: int
    gradiend_models: tuple[tuple[str, str, tuple[str, ...], tuple[int, ...] | None], ...]  # (label, model, variants, layers)
    causal_models: tuple[tuple[str, str], ...]  # (label, model name) of the causal scoring step
    gradiend_steps: int
    gradiend_budget: float  # s of timed steps per variant
    gradiend_timeout: float  # s per variant subprocess
    executors: tuple[str, ...]  # run one after the other on one cache; rows compared
    executor_timeout: float


TINY_GPT2 = "random:gpt2,n_layer=2,n_embd=64,n_head=4"
LAST_7 = (-7, -6, -5, -4, -3, -2, -1)  # Llama-3.2-3B's last 7 blocks: n = 704,686,080 (methods/gradiend/README.md)


def make_config(out: str, data_dir: str, device: str, tiny: bool, budget: float | None = None) -> Config:
    base = "random:bert-base-uncased"
    if tiny:
        return Config(out, data_dir, device, True, budget=budget or 420, model=f"{base},{TINY}", eq_stride=40,
                      tp_stride=40, ref_budget=3, seat_permutations=1000,
                      gradiend_models=(("tiny", f"{base},{TINY}", ("ours", "naive"), None),
                                       ("tiny-gpt2", TINY_GPT2, ("ours", "ours-bf16", "naive"), None),
                                       ("llama-small last block", "random:llama-small", ("ours-bf16",), (-1,))),
                      causal_models=(("tiny-gpt2", TINY_GPT2), ("llama-small", "random:llama-small")),
                      gradiend_steps=2, gradiend_budget=2, gradiend_timeout=120, executors=("local",),
                      executor_timeout=180)  # fmt: skip
    return Config(out, data_dir, device, False, budget=budget or 540, model=base, eq_stride=4, tp_stride=1,
                  ref_budget=25, seat_permutations=100_000,
                  gradiend_models=(("bert-base", base, ("ours", "naive"), None),
                                   ("bert-large", f"{base},{BERT_LARGE}", ("ours", "naive"), None),
                                   ("gpt2", "random:gpt2", ("ours", "ours-bf16", "naive"), None),
                                   ("llama-3.2-3b last 7 blocks", "random:llama-3.2-3b", ("ours-bf16",), LAST_7)),
                  causal_models=(("gpt2", "random:gpt2"), ("llama-3.2-3b", "random:llama-3.2-3b")),
                  gradiend_steps=20, gradiend_budget=6, gradiend_timeout=150, executors=("ray", "local"),
                  executor_timeout=150)  # fmt: skip


# ---- data subsets in the real formats ---------------------------------------------------------------------------
def write_subsets(data_dir: Path, folder: Path, stride: int) -> dict:
    """Every `stride`-th item of StereoSet dev (intrasentence) and CrowS-Pairs gender, every min(stride, 8)-th
    sentence of each set of the six SEAT gender tests."""
    import reference_scorers as ref
    from metrics.seat import GENDER_TESTS, SETS
    from metrics.seat import test_file as seat_file

    folder.mkdir(parents=True, exist_ok=True)
    examples = ref.read_stereoset(data_dir / "stereoset" / "dev.json")[::stride]
    ss_file = folder / "stereoset.json"
    ss_file.write_text(json.dumps({"version": "bench", "data": {"intrasentence": examples}}))
    rows = ref.read_crows(data_dir / "crows_pairs" / "crows_pairs_anonymized.csv", "gender")[::stride]
    crows_file = folder / "crows.csv"
    with open(crows_file, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    seat = {}
    for name in GENDER_TESTS:
        obj = json.loads((data_dir / seat_file(name)).read_text())
        for key in SETS:
            obj[key]["examples"] = obj[key]["examples"][:: min(stride, 8)]  # >= 7 sentences per set
        path = folder / seat_file(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(obj))
        seat[name] = [obj[k]["examples"] for k in SETS]
    return {"examples": examples, "ss_file": ss_file, "rows": rows, "crows_file": crows_file, "seat": seat}


def _metrics(data: dict, batches: dict, permutations: int) -> dict:
    from metrics.crows import CrowS
    from metrics.seat import SEAT
    from metrics.stereoset import StereoSet

    return {"stereoset": StereoSet(file=str(data["ss_file"]), **batches), "crows": CrowS(file=str(data["crows_file"]), **batches),
            "seat": SEAT(n_permutations=permutations, **batches)}  # fmt: skip


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


# ---- (a) CUDA scores == CPU scores -----------------------------------------------------------------------------
def _flips(a, b, tol_fn) -> tuple[int, int]:
    """(outcome flips of a > b between the two sides, flips not at a near-tie)."""
    import numpy as np

    (a1, b1), (a2, b2) = a, b
    flip = (np.asarray(a1) > np.asarray(b1)) != (np.asarray(a2) > np.asarray(b2))
    near = np.abs(np.asarray(a1) - np.asarray(b1)) <= tol_fn(np.asarray(a1), np.asarray(b1))
    return int(flip.sum()), int((flip & ~near).sum())


def _seat_bound(emb: dict, sets: list, rtol: float) -> float:
    """First-order bound on |d(E') - d(E)| for |E'_i - E_i| <= rtol max|E_i| (see the module docstring)."""
    import numpy as np
    import torch

    tensors = [torch.tensor(np.stack([emb[s] for s in group]), dtype=torch.float64, requires_grad=True) for group in sets]
    X, Y, A, B = (t / t.norm(dim=1, keepdim=True) for t in tensors)

    def s(w):
        return (w @ A.T).mean(1) - (w @ B.T).mean(1)

    sx, sy = s(X), s(Y)
    d = (sx.mean() - sy.mean()) / torch.cat([sx, sy]).std()
    d.backward()
    return float(sum((t.grad.abs().sum(dim=1) * rtol * t.detach().abs().amax(dim=1)).sum() for t in tensors)) + 1e-12


def step_equality(cfg: Config, work: Path) -> dict:
    import numpy as np
    import torch

    from bench.api import Context
    from bench.models.embeddings import sentence_embeddings
    from bench.models.loading import load_subject

    other = "cuda" if cfg.device == "cuda" else "cpu"
    data = write_subsets(Path(cfg.data_dir), work / "eq_data", cfg.eq_stride)
    texts = list(dict.fromkeys(s for groups in data["seat"].values() for g in groups for s in g))
    subject = load_subject(cfg.model, data_dir=cfg.data_dir, device="cpu")

    def score(device: str, batches: dict):
        subject.model.to(device)
        ctx = Context(data_dir=work / "eq_data", cache_dir=work / "cache", seed=0, device=device, progress=False)
        scores = {m: metric.score(subject, ctx) for m, metric in _metrics(data, batches, 1000).items()}
        emb = sentence_embeddings(subject, texts, ctx=ctx, **batches).double().numpy()
        return scores, dict(zip(texts, emb))

    cpu, cpu_emb = score("cpu", {})
    dev, dev_emb = score(other, {} if other == "cuda" else CUDA_BATCHES)
    subject.model.to("cpu")
    if other == "cuda":
        torch.cuda.empty_cache()  # the GRADIEND subprocesses get the memory
    out = {"devices": ["cpu", other], "second_side_batches": "cuda defaults" if other == "cuda" else CUDA_BATCHES,
           "n": {"stereoset": len(cpu["stereoset"].items), "crows": len(cpu["crows"].items), "seat_sentences": len(texts)},
           "tolerances": {"hidden_rtol": HIDDEN_RTOL, "logprob_atol": LOGPROB_ATOL}}  # fmt: skip
    problems = []

    # embeddings
    E1, E2 = np.stack([cpu_emb[t] for t in texts]), np.stack([dev_emb[t] for t in texts])
    rel = np.abs(E1 - E2).max(axis=1) / np.abs(E1).max(axis=1)
    out["embedding_max_rel_diff"] = float(rel.max())
    if rel.max() > HIDDEN_RTOL:
        problems.append(f"sentence embeddings differ by {rel.max():.2e} > {HIDDEN_RTOL:g} (relative)")

    # StereoSet: per-sentence scores (mean probabilities), relative tolerance LOGPROB_ATOL
    a, b = cpu["stereoset"].items, dev["stereoset"].items
    cols = ("stereo", "anti", "unrelated")
    ss_rel = max(float((np.abs(a[c] - b[c]) / np.abs(a[c]).clip(1e-30)).max()) for c in cols)
    out["stereoset_max_rel_diff"] = ss_rel
    if ss_rel > LOGPROB_ATOL:
        problems.append(f"StereoSet sentence scores differ by {ss_rel:.2e} > {LOGPROB_ATOL:g} (relative)")
    flips = bad = 0
    for c1, c2 in (("stereo", "anti"), ("stereo", "unrelated"), ("anti", "unrelated")):
        f, x = _flips((a[c1], a[c2]), (b[c1], b[c2]), lambda u, v: LOGPROB_ATOL * (np.abs(u) + np.abs(v)))
        flips, bad = flips + f, bad + x
    out["stereoset_flips"] = flips

    # CrowS: per-sentence mean log-probabilities, absolute tolerance LOGPROB_ATOL
    a, b = cpu["crows"].items, dev["crows"].items
    if len(a) != len(b):
        problems.append(f"CrowS scored {len(a)} pairs on the CPU, {len(b)} on {other}")
    else:
        cr = max(float(np.abs(a[c] - b[c]).max()) for c in ("raw_more", "raw_less"))
        out["crows_max_abs_diff"] = cr
        if cr > LOGPROB_ATOL:
            problems.append(f"CrowS sentence scores differ by {cr:.2e} > {LOGPROB_ATOL:g}")

        # near-tie: the two raw scores within both sides' tolerance plus the 3-decimal rounding CrowS compares
        f = a["biased"].to_numpy() != b["biased"].to_numpy()
        x = f & (np.abs(a["raw_more"].to_numpy() - a["raw_less"].to_numpy()) > 2 * LOGPROB_ATOL + 1e-3)
        out["crows_flips"] = int(f.sum())
        flips, bad = flips + int(f.sum()), bad + int(x.sum())
    if bad:
        problems.append(f"{bad} outcome flips away from a near-tie")

    # aggregates: equal unless something flipped
    agg = {}
    for m in ("stereoset", "crows"):
        for name, est in cpu[m].estimates.items():
            p1, p2 = est.point(), dev[m].estimates[name].point()
            agg[f"{m}:{name}"] = [p1, p2]
            if not flips and not (p1 == p2 or abs(p1 - p2) <= 1e-9 or (math.isnan(p1) and math.isnan(p2))):
                problems.append(f"{m} {name}: {p1} vs {p2} with no outcome flip")
    # SEAT: d per test within the propagated bound
    bounds = {}
    for name, groups in data["seat"].items():
        bound = _seat_bound(cpu_emb, groups, HIDDEN_RTOL)
        p1, p2 = cpu["seat"].estimates[f"d:{name}"].point(), dev["seat"].estimates[f"d:{name}"].point()
        agg[f"seat:d:{name}"] = [p1, p2]
        bounds[name] = bound
        if abs(p1 - p2) > bound:
            problems.append(f"SEAT d:{name}: {p1} vs {p2}, |diff| {abs(p1 - p2):.2e} > bound {bound:.2e}")
    p1, p2 = cpu["seat"].estimates["seat"].point(), dev["seat"].estimates["seat"].point()
    agg["seat:seat"] = [p1, p2]
    if abs(p1 - p2) > sum(bounds.values()) / len(bounds):
        problems.append(f"SEAT mean |d|: {p1} vs {p2}")
    out["aggregates_cpu_vs_other"] = agg
    out["seat_d_bounds"] = bounds
    out["seat_max_abs_d_diff"] = max(abs(agg[f"seat:d:{n}"][0] - agg[f"seat:d:{n}"][1]) for n in bounds)
    out["problems"] = problems
    out["equal"] = not problems
    if problems:
        raise CheckFailed("; ".join(problems), out)
    return out


# ---- (b) throughput against one sentence per forward pass --------------------------------------------------------
def _ref_seat_embed(model, tokenizer, sentence: str, device: str):
    import torch

    with torch.no_grad():
        ids = tokenizer(sentence, return_tensors="pt")["input_ids"].to(device)
        return model.base_model(ids).last_hidden_state[0].mean(0).double().cpu().numpy()


def _budgeted(items: list, chunk: int, fn, budget: float, device: str) -> dict:
    """Run fn over chunks of items until done or past `budget` s; the full time is extrapolated linearly."""
    done, t0 = 0, time.perf_counter()
    while done < len(items):
        fn(items[done : done + chunk])
        _sync(device)
        done = min(len(items), done + chunk)
        if time.perf_counter() - t0 > budget:
            break
    elapsed = time.perf_counter() - t0
    return {"items": len(items), "done": done, "seconds": elapsed, "full_seconds": elapsed * len(items) / max(done, 1),
            "extrapolated": done < len(items)}  # fmt: skip


def step_throughput(cfg: Config, work: Path) -> dict:
    import torch

    import reference_scorers as ref
    from bench.api import Context
    from bench.models.embeddings import sentence_embeddings
    from bench.models.loading import load_subject

    device = cfg.device
    data = write_subsets(Path(cfg.data_dir), work / "tp_data", cfg.tp_stride)
    subject = load_subject(cfg.model, data_dir=cfg.data_dir, device=device)
    ctx = Context(data_dir=work / "tp_data", cache_dir=work / "cache", seed=0, device=device, progress=False)
    sentence_embeddings(subject, ["warm up the device ."], ctx=ctx)  # CUDA context, kernels, allocator
    ours = {}
    for m, metric in _metrics(data, {}, cfg.seat_permutations).items():
        t0 = time.perf_counter()
        metric.score(subject, ctx)
        _sync(device)
        ours[m] = time.perf_counter() - t0
    model, tok = subject.model, subject.tokenizer
    texts = list(dict.fromkeys(s for groups in data["seat"].values() for g in groups for s in g))
    reference = {
        "stereoset": _budgeted(data["examples"], 16, lambda c: ref.stereoset_reference(model, tok, c, False), cfg.ref_budget, device),
        "crows": _budgeted(data["rows"], 8, lambda c: ref.crows_reference(model, tok, c, False), cfg.ref_budget, device),
        "seat": _budgeted(texts, 16, lambda c: [_ref_seat_embed(model, tok, s, device) for s in c], cfg.ref_budget, device),
    }  # fmt: skip
    del subject, model
    if device == "cuda":
        torch.cuda.empty_cache()
    ratios = {m: reference[m]["full_seconds"] / ours[m] for m in ours}
    ratios["all"] = sum(r["full_seconds"] for r in reference.values()) / sum(ours.values())
    return {"device": device, "threads": torch.get_num_threads(), "stride": cfg.tp_stride,
            "sizes": {"stereoset_examples": len(data["examples"]), "crows_pairs": len(data["rows"]), "seat_sentences": len(texts)},
            "ours_seconds": ours, "reference": reference, "speedup": ratios,
            "note": "ours: Metric.score as bench run calls it (SEAT with its permutation tests); reference: batch size 1,"
                    " full vocabulary head, one masked position per forward (SEAT: embeddings only)"}  # fmt: skip


# ---- (c) GRADIEND training steps/s and memory ---------------------------------------------------------------------
def measure_gradiend(kind: str, model_name: str, steps: int, budget: float, data_dir: str, device: str,
                     layers: tuple[int, ...] | None = None) -> dict:  # fmt: skip
    """In a subprocess: 1 warm-up + up to `steps` timed steps (stopping after `budget` s) of one variant: "ours",
    "ours-bf16" (a bfloat16 GRADIEND) or "naive" (tests/benchmarks/test_gradiend_training.py measures them)."""
    from tests.benchmarks.test_gradiend_training import _measure

    return _measure(kind, steps, data_dir, device, model_name, budget=budget, layers=layers)


def _measure_variants(cfg: Config, model_name: str, kinds: tuple[str, ...], layers, timeout: float) -> dict:
    args = [sys.executable, str(Path(__file__)), "--measure", ",".join(kinds), model_name, str(cfg.gradiend_steps),
            str(cfg.gradiend_budget), cfg.data_dir, cfg.device, ",".join(str(i) for i in layers or ())]  # fmt: skip
    try:
        proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {k: {"error": f"timed out after {timeout:.0f} s"} for k in kinds}
    found = [json.loads(l[7:]) for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    return {k: next((r for r in found if r["kind"] == k), {"error": proc.stderr[-2000:] or "no result"}) for k in kinds}


def step_gradiend(cfg: Config, work: Path, deadline: float) -> dict:
    out = {}
    for label, model_name, variants, layers in cfg.gradiend_models:
        # one subprocess per variant, so that its peak memory is its own; tiny: all in one (saves process starts)
        groups = (variants,) if cfg.tiny else tuple((k,) for k in variants)
        res = {"model": model_name, "layers": None if layers is None else list(layers)}
        for kinds in groups:
            timeout = min(cfg.gradiend_timeout, deadline - time.monotonic())
            if timeout < 5:
                res.update({k: {"skipped": "time budget"} for k in kinds})
                continue
            res.update(_measure_variants(cfg, model_name, kinds, layers, timeout))
        if len(groups) == 1 and len(variants) > 1:
            res["note"] = "variants measured in one process: peak memory is not per variant"
        if "steps_per_s" in res.get("ours", {}) and "steps_per_s" in res.get("naive", {}):
            res["speedup"] = res["ours"]["steps_per_s"] / res["naive"]["steps_per_s"]
            res["peak_memory_ratio_ours_over_naive"] = res["ours"]["peak_bytes"] / res["naive"]["peak_bytes"]
        if "peak_bytes" in res.get("ours-bf16", {}) and "peak_bytes" in res.get("naive", {}):
            res["peak_memory_ratio_bf16_over_naive"] = res["ours-bf16"]["peak_bytes"] / res["naive"]["peak_bytes"]
        out[label] = res
    errors = [f"{m}/{k}: {r[k]['error'][-300:]}" for m, r in out.items() for k in ("ours", "ours-bf16", "naive")
              if "error" in r.get(k, {})]  # fmt: skip
    if errors:
        raise CheckFailed("; ".join(errors), out)
    return out


# ---- (d) the executor with one GPU ------------------------------------------------------------------------------------
def _has_executor() -> bool:
    from bench.cli import run

    return any(p.name == "executor" for p in run.params)


def step_executor(cfg: Config, work: Path, deadline: float) -> dict:
    if not _has_executor():
        return {"skipped": "executor not available: `bench run --help` lists no --executor"}
    bench = shutil.which("bench", path=str(Path(sys.executable).parent)) or "bench"
    if cfg.tiny:
        request = ["--models", "synthetic", "--methods", "base,inlp", "--metrics", "crows", "--resamples", "20",
                   "-o", "inlp.n_iterations=2", "-o", "inlp.per_class=100"]  # fmt: skip
    else:
        request = ["--suite", "ci", "--models", "synthetic"]
    # a fresh cache (honest timings), except in tiny mode where the caller's cache (the test suite's, holding the
    # synthetic world already) saves the world's generation
    cache = os.environ.get("BENCH_CACHE_DIR") if cfg.tiny and os.environ.get("BENCH_CACHE_DIR") else work / "exec_cache"
    env = dict(os.environ, BENCH_CACHE_DIR=str(cache), BENCH_DATA_DIR=cfg.data_dir, RAY_USAGE_STATS_ENABLED="0")
    out, runs = {}, {}
    gpus = ["--gpus-per-job", "1"] if cfg.device == "cuda" else []
    for name in cfg.executors:
        extra = ["--executor", name, *(gpus if name == "ray" else [])]
        timeout = min(cfg.executor_timeout, deadline - time.monotonic())
        if timeout < 10:
            out[name] = {"skipped": "time budget"}
            continue
        run_dir = work / f"exec_{name}"
        cmd = [bench, "run", *request, *extra, "--out", str(run_dir), "--no-progress", "--device", cfg.device]
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            out[name] = {"command": " ".join(cmd), "error": f"timed out after {timeout:.0f} s"}
            continue
        rows = [json.loads(l) for l in (run_dir / "results.jsonl").read_text().splitlines() if l.strip()] \
            if (run_dir / "results.jsonl").is_file() else []  # fmt: skip
        runs[name] = rows
        out[name] = {"command": " ".join(cmd), "returncode": proc.returncode, "seconds": time.perf_counter() - t0,
                     "rows": len(rows), "output_tail": (proc.stdout + proc.stderr)[-1500:],
                     "mentions_CUDA_VISIBLE_DEVICES": "CUDA_VISIBLE_DEVICES" in proc.stdout + proc.stderr}  # fmt: skip
    if "ray" in runs and "local" in runs:
        strip = lambda rows: [{k: v for k, v in r.items() if k != "runtime_s"} for r in rows]  # noqa: E731
        out["identical_rows_ray_vs_local"] = strip(runs["ray"]) == strip(runs["local"])
        out["note"] = "local ran after ray on the same cache: it checks that both drivers write the same file"
    bad = [n for n in cfg.executors if "error" in out.get(n, {}) or out.get(n, {}).get("returncode", 0) != 0
           or (n in runs and not runs[n])]  # fmt: skip
    if bad or out.get("identical_rows_ray_vs_local") is False:
        raise CheckFailed(f"executor runs failed or differ: {bad or 'rows differ'}", out)
    return out


# ---- driver ------------------------------------------------------------------------------------------------------------
class CheckFailed(Exception):
    def __init__(self, message: str, figures: dict):
        super().__init__(message)
        self.figures = figures


def _meta(cfg: Config) -> dict:
    import torch

    meta = {"mode": "tiny" if cfg.tiny else "full", "device": cfg.device, "torch": torch.__version__,
            "python": platform.python_version(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "data_dir": cfg.data_dir, "config": asdict(cfg)}  # fmt: skip
    if cfg.device == "cuda":
        meta.update(gpu=torch.cuda.get_device_name(0), cuda=torch.version.cuda,
                    tf32_matmul=torch.backends.cuda.matmul.allow_tf32, float32_matmul_precision=torch.get_float32_matmul_precision())  # fmt: skip
    return meta


def _gb(x) -> str:
    return f"{x / 1e9:.2f} GB" if isinstance(x, (int, float)) else "?"


def summary(results: dict) -> str:
    meta = results["meta"]
    lines = [f"# GPU check ({meta['mode']})", "",
             f"Device: {meta.get('gpu', 'CPU')} ({meta['device']}), torch {meta['torch']}, {meta['cpu_count']} CPUs, "
             f"total {results.get('seconds', 0):.0f} s.", "", "| Step | Status | Seconds | Figures |", "|---|---|---|---|"]  # fmt: skip
    for name, st in results["steps"].items():
        f, fig = st.get("figures") or {}, ""
        if name == "equality" and f:
            fig = (f"{f.get('devices')}: embeddings rel. diff {f.get('embedding_max_rel_diff', float('nan')):.1e}, "
                   f"StereoSet {f.get('stereoset_max_rel_diff', float('nan')):.1e}, CrowS {f.get('crows_max_abs_diff', float('nan')):.1e}, "
                   f"flips {f.get('stereoset_flips', 0)}+{f.get('crows_flips', 0)}")  # fmt: skip
        elif name == "throughput" and f:
            fig = ", ".join(f"{m} {v:.1f}x" for m, v in f["speedup"].items()) + (
                " (reference extrapolated)" if any(r["extrapolated"] for r in f["reference"].values()) else "")
        elif name == "causal" and f:
            fig = causal_summary(f)
        elif name == "gradiend" and f:
            fig = "; ".join(
                f"{m}: " + ", ".join(f"{k} {r[k].get('steps_per_s', float('nan')):.3g} steps/s {_gb(r[k].get('peak_bytes'))}"
                                     for k in ("ours", "ours-bf16", "naive") if k in r)
                + (f" -> {r['speedup']:.2f}x" if "speedup" in r else "")
                for m, r in f.items() if isinstance(r, dict))  # fmt: skip
        elif name == "executor" and f:
            fig = f.get("skipped") or ", ".join(
                f"{k}: {v.get('seconds', 0):.0f} s, {v.get('rows', 0)} rows" for k, v in f.items() if isinstance(v, dict)
            ) + (f", identical rows: {f['identical_rows_ray_vs_local']}" if "identical_rows_ray_vs_local" in f else "")
        status = st["status"] + (f": {st['error'][:200]}" if st.get("error") else "")
        lines.append(f"| {name} | {status} | {st.get('seconds', 0):.1f} | {fig} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--tiny", action="store_true", help="tiny models and subsets on the CPU (CI)")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--steps", default="equality,throughput,causal,gradiend,executor")
    ap.add_argument("--budget", type=float, default=None, help="seconds for the whole check (default 540; tiny 420)")
    args = ap.parse_args(argv)

    import torch

    data_dir = args.data_dir or os.environ.get("BENCH_DATA_DIR") or next(
        (str(p) for p in (REPO.parent / "shared" / "data", REPO / "shared" / "data") if p.is_dir()), "")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # full float32 (the default; a site config may differ)
        torch.set_float32_matmul_precision("highest")
    cfg = make_config(args.out, data_dir, device, args.tiny, args.budget)
    out = Path(args.out)
    work = out / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    start = time.monotonic()
    deadline = start + cfg.budget
    results = {"meta": _meta(cfg), "steps": {}}
    steps = {"equality": lambda: step_equality(cfg, work), "throughput": lambda: step_throughput(cfg, work),
             "causal": lambda: step_causal(cfg, work, deadline, _sync, CheckFailed),
             "gradiend": lambda: step_gradiend(cfg, work, deadline), "executor": lambda: step_executor(cfg, work, deadline)}  # fmt: skip
    failed = False
    for name in args.steps.split(","):
        t0 = time.monotonic()
        if t0 > deadline - 10:
            results["steps"][name] = {"status": "skipped", "error": "time budget of the check spent"}
        else:
            try:
                figures = steps[name]()
                status = "skipped" if isinstance(figures, dict) and "skipped" in figures else "ok"
                results["steps"][name] = {"status": status, "figures": figures}
            except CheckFailed as e:
                failed = True
                results["steps"][name] = {"status": "failed", "error": str(e), "figures": e.figures}
            except Exception as e:  # noqa: BLE001 - a broken step is recorded, the others still run
                failed = True
                results["steps"][name] = {"status": "failed", "error": f"{type(e).__name__}: {e}",
                                          "traceback": traceback.format_exc()[-4000:]}  # fmt: skip
        results["steps"][name]["seconds"] = time.monotonic() - t0
        results["seconds"] = time.monotonic() - start
        (out / "gpu_check.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
        (out / "gpu_check.md").write_text(summary(results))
        print(f"[gpu_check] {name}: {results['steps'][name]['status']} ({results['steps'][name]['seconds']:.1f} s)", flush=True)
    shutil.rmtree(work, ignore_errors=True)
    print(summary(results))
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--measure":
        kinds, model, steps, budget, data_dir, device, layers = sys.argv[2:9]
        chosen = tuple(int(i) for i in layers.split(",")) if layers else None
        for kind in kinds.split(","):
            figures = measure_gradiend(kind, model, int(steps), float(budget), data_dir, device, chosen)
            print("RESULT", json.dumps(figures), flush=True)
        sys.exit(0)
    sys.exit(main())
