"""GRADIEND training steps/s and peak memory on a random-init bert-base architecture (the real
bert-base-uncased config from <data>/models) and on a random-init GPT-2 (the real gpt2 config, causal examples),
ours vs the straightforward implementation.

Straightforward (what the paper's code does, SPEC §1.3 G1): for each label set a full Hugging Face forward
pass (vocabulary logits at all positions) and backward pass, the gradient gathered with one copy per tensor
and concatenated, x = g+, t = g+ - g-; the GRADIEND as nn.Linear(n, 1) -> tanh -> nn.Linear(1, n) with
autograd MSE and torch.optim.AdamW.
Ours: `GradientPair` (one forward, logits only at the masks, two backward passes accumulating straight into
two preallocated flat buffers) + `Gradiend` (closed-form gradient, fused AdamW over one flat vector).

For GPT-2 the straightforward step reads the next-token logits at each text's last real token from the full
(batch, length, vocabulary) logits of a Hugging Face forward pass. "ours-bf16" is the memory option
`dtype="bfloat16"`: the GRADIEND, its AdamW moments and the gradient buffers in bfloat16, the model in float32.

Each variant runs in its own subprocess so that its peak resident memory (ru_maxrss, or
torch.cuda.max_memory_allocated on CUDA) is its own. One warm-up step, then STEPS timed steps on the same
32-sentence GENTER-style batches (templates built from the data directory's corpus, names of NAMExact train).
Run with `pytest tests/benchmarks/test_gradiend_training.py --benchmark-enable -s`. Tiny mode (the plain test
command): a 2-layer BERT and a 2-layer GPT-2 (64 wide), which checks that every variant runs and reports its figures.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.benchmarks.conftest import TINY_BERT, TINY_GPT2

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow  # subprocesses that import transformers, even in the tiny mode
STEPS = int(os.environ.get("GRADIEND_BENCH_STEPS", "2"))


BERT = "random:bert-base-uncased"
GPT2 = "random:gpt2"


def _measure(kind: str, steps: int, data_dir: str, device: str, model_name: str = BERT, budget: float | None = None,
             layers: tuple[int, ...] | None = None) -> dict:  # fmt: skip
    """Runs in a subprocess: builds the random model, runs 1 + `steps` GRADIEND steps (fewer where `budget` s of
    timed steps are spent first), reports figures. `layers`: the parameter set of `ParamSet.select(layers=...)`;
    the straightforward step then leaves the other parameters without gradients too. Also the GPU check's
    measurement (tests/benchmarks/gpu_check.py)."""
    import resource
    import time

    import torch
    from torch import nn

    from bench.models.loading import load_subject
    from methods.gradiend import example_sets
    from methods.gradiend.data import load
    from methods.gradiend.gradients import GradientPair
    from methods.gradiend.model import Gradiend, bytes_per_step
    from methods.gradiend.params import ParamSet

    subject = load_subject(model_name, data_dir=data_dir, device=device)
    data = load(data_dir)
    batches = example_sets.train_batches(subject, data.genter["train"], data.names["train"], batch_size=32, max_length=48)
    params = ParamSet.select(subject.model, layers=layers)
    n = params.n
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    if kind in ("ours", "ours-bf16"):
        dtype = torch.bfloat16 if kind == "ours-bf16" else params.dtype
        pair = GradientPair(subject, params, dtype)
        g = Gradiend.initialised(n, 0, device=device, dtype=dtype)
        opt = g.optimizer()

        def step(k):
            x, t = pair(batches.batch(k, device))
            t0 = time.perf_counter()
            loss = g.loss_and_grad(x, t, reuse_inputs=True)
            opt.step()
            float(loss)
            return time.perf_counter() - t0
    else:
        model = subject.model
        chosen = {id(p) for p in params.params}
        for p in model.parameters():
            p.requires_grad_(id(p) in chosen)
        enc, dec = nn.Linear(n, 1).to(device), nn.Linear(1, n).to(device)
        opt = torch.optim.AdamW(list(enc.parameters()) + list(dec.parameters()), lr=1e-5, weight_decay=1e-2)

        def grad(batch, labels):
            model.zero_grad()
            if subject.kind == "clm":  # the full logits, read at each text's last real token
                logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
                nn.functional.cross_entropy(logits[batch.rows, batch.cols], labels).backward()
            else:
                lab = torch.full_like(batch.input_ids, -100)
                lab[batch.rows, batch.cols] = labels
                model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=lab).loss.backward()
            return torch.cat([p.grad.detach().clone().reshape(-1) for p in params.params])

        def step(k):
            batch = batches.batch(k, device)
            g_pos = grad(batch, batch.labels)
            g_neg = grad(batch, batch.counter)
            x, t = g_pos, g_pos - g_neg
            del g_neg
            t0 = time.perf_counter()
            loss = nn.functional.mse_loss(dec(torch.tanh(enc(x))[None])[0], t)
            opt.zero_grad()
            loss.backward()
            opt.step()
            float(loss)
            return time.perf_counter() - t0

    step(0)  # warm-up (allocations, AdamW state)
    sync()
    t0, update, done = time.perf_counter(), 0.0, 0
    while done < steps and (budget is None or done == 0 or time.perf_counter() - t0 < budget):
        done += 1
        update += step(done)
    sync()
    elapsed = time.perf_counter() - t0
    out = {"kind": kind, "model": model_name, "n": n, "steps": done, "seconds": elapsed, "steps_per_s": done / elapsed,
           "update_seconds_per_step": update / done, "layers": None if layers is None else list(layers),
           "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
           "bytes_per_step_analytical": bytes_per_step(n), "device": device}  # fmt: skip
    if device == "cuda":
        out["cuda_peak_bytes"] = torch.cuda.max_memory_allocated()
    out["peak_bytes"] = out.get("cuda_peak_bytes", out["peak_rss_bytes"])
    return out


def _run_variant(kind: str, data_dir, device: str, model_name: str = BERT) -> dict:
    return _run_variants((kind,), data_dir, device, model_name)[kind]


def _run_variants(kinds: tuple[str, ...], data_dir, device: str, model_name: str = BERT) -> dict[str, dict]:
    """The variants in one subprocess (one each for peak memories of their own)."""
    code = (f"import json; from tests.benchmarks.test_gradiend_training import _measure\nfor k in {kinds!r}: "
            f"print('RESULT', json.dumps(_measure(k, {STEPS}, {str(data_dir)!r}, {device!r}, {model_name!r})))")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise AssertionError(f"{'/'.join(kinds)} variant failed:\n{proc.stderr[-3000:]}")
    found = [json.loads(l[len("RESULT ") :]) for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    return {r["kind"]: r for r in found}


def test_gradiend_training_step_speed_and_memory(benchmark, data_dir, full):
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if not full:  # tiny mode: both variants run on a 2-layer BERT in one process and report their figures
        found = benchmark.pedantic(_run_variants, args=(("ours", "naive"), data_dir, device, TINY_BERT), rounds=1,
                                   iterations=1)  # fmt: skip
        assert found["ours"]["n"] == found["naive"]["n"] > 0
        assert all(r["steps"] == STEPS and r["steps_per_s"] > 0 for r in found.values())
        return
    ours = benchmark.pedantic(_run_variant, args=("ours", data_dir, device), rounds=1, iterations=1)
    naive = _run_variant("naive", data_dir, device)
    speedup = ours["steps_per_s"] / naive["steps_per_s"]
    mem_key = "cuda_peak_bytes" if device == "cuda" else "peak_rss_bytes"
    gb = 1e9
    print(f"\nGRADIEND training on random bert-base ({device}, n = {ours['n']:,}, {STEPS} timed steps, batch 32):")
    print(f"  ours       {ours['steps_per_s']:.4f} steps/s  peak {ours[mem_key] / gb:.2f} GB  "
          f"update {ours['update_seconds_per_step']:.3f} s/step")
    print(f"  naive      {naive['steps_per_s']:.4f} steps/s  peak {naive[mem_key] / gb:.2f} GB  "
          f"update {naive['update_seconds_per_step']:.3f} s/step")
    print(f"  speed-up {speedup:.2f}x, peak memory ratio ours/naive {ours[mem_key] / naive[mem_key]:.2f}, "
          f"GRADIEND update speed-up {naive['update_seconds_per_step'] / ours['update_seconds_per_step']:.2f}x")
    print(f"  analytical GRADIEND traffic: {ours['bytes_per_step_analytical'] / gb:.2f} GB per step "
          f"(46 accesses x 4 bytes x n)")
    benchmark.extra_info.update({"speedup": speedup, "ours": ours, "naive": naive})
    assert speedup >= 1.3
    assert ours[mem_key] < naive[mem_key]


def test_gradiend_training_on_gpt2(benchmark, data_dir, full):
    """GPT-2 (causal examples): ours, ours with the bfloat16 GRADIEND, the straightforward step. The full gpt2 with
    --benchmark-enable (figures asserted as for bert-base), else a tiny GPT-2 that only has to run."""
    import torch

    if not (data_dir / "models" / "gpt2-tokenizer" / "config.json").is_file():
        pytest.skip("the gpt2 config is not in the data directory")
    model_name = GPT2 if full else TINY_GPT2
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if full:
        ours = benchmark.pedantic(_run_variant, args=("ours", data_dir, device, model_name), rounds=1, iterations=1)
        bf16 = _run_variant("ours-bf16", data_dir, device, model_name)
        naive = _run_variant("naive", data_dir, device, model_name)
    else:  # one process (saves two starts): the peak memories are not each variant's own
        found = benchmark.pedantic(_run_variants, args=(("ours", "ours-bf16", "naive"), data_dir, device, model_name),
                                   rounds=1, iterations=1)  # fmt: skip
        ours, bf16, naive = found["ours"], found["ours-bf16"], found["naive"]
    mem_key = "cuda_peak_bytes" if device == "cuda" else "peak_rss_bytes"
    gb = 1e9
    print(f"\nGRADIEND training on {model_name} ({device}, n = {ours['n']:,}, {STEPS} timed steps, batch 32):")
    for name, r in (("ours", ours), ("ours-bf16", bf16), ("naive", naive)):
        print(f"  {name:10} {r['steps_per_s']:.4f} steps/s  peak {r[mem_key] / gb:.2f} GB  "
              f"update {r['update_seconds_per_step']:.3f} s/step")
    speedup = ours["steps_per_s"] / naive["steps_per_s"]
    print(f"  speed-up {speedup:.2f}x, peak memory ratio ours/naive {ours[mem_key] / naive[mem_key]:.2f}, "
          f"ours-bf16/naive {bf16[mem_key] / naive[mem_key]:.2f}, ours-bf16/ours {bf16[mem_key] / ours[mem_key]:.2f}")
    benchmark.extra_info.update({"speedup": speedup, "ours": ours, "ours_bf16": bf16, "naive": naive})
    assert ours["n"] == bf16["n"] == naive["n"]
    if full:
        assert ours["n"] == 124_439_808
        assert speedup >= 1.3
        assert bf16[mem_key] < ours[mem_key] < naive[mem_key]
