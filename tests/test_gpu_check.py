"""The prepared GPU check (tests/benchmarks/gpu_check.sh) in its tiny mode, so that it never rots: every step
runs (on CUDA when there is one, else the CPU) and writes its figures."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # ~80 s on 2 shared cores: three Python processes start (transformers' imports dominate)
def test_tiny_gpu_check_runs_every_step_and_writes_its_figures(tmp_path, data_dir):
    out = tmp_path / "gpu_check"
    env = dict(os.environ, BENCH_DATA_DIR=str(data_dir), VIRTUAL_ENV=str(Path(sys.executable).parents[1]),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")  # fmt: skip
    proc = subprocess.run(["bash", str(REPO / "tests/benchmarks/gpu_check.sh"), str(out), "--tiny"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((out / "gpu_check.json").read_text())
    summary = (out / "gpu_check.md").read_text()
    steps = results["steps"]
    assert list(steps) == ["equality", "throughput", "causal", "gradiend", "executor"]
    assert results["meta"]["mode"] == "tiny"

    eq = steps["equality"]
    assert eq["status"] == "ok" and eq["figures"]["equal"]
    expected = ["cpu", "cuda"] if results["meta"]["device"] == "cuda" else ["cpu", "cpu"]
    assert eq["figures"]["devices"] == expected
    assert eq["figures"]["n"]["stereoset"] > 0 and eq["figures"]["n"]["crows"] > 0
    assert set(eq["figures"]["seat_d_bounds"]) == {"sent-weat6", "sent-weat6b", "sent-weat7", "sent-weat7b",
                                                   "sent-weat8", "sent-weat8b"}  # fmt: skip

    tp = steps["throughput"]
    assert tp["status"] == "ok" and set(tp["figures"]["speedup"]) == {"stereoset", "crows", "seat", "all"}
    causal = steps["causal"]
    assert causal["status"] == "ok", causal.get("error")
    for label in ("tiny-gpt2", "llama-small"):
        fig = causal["figures"][label]
        assert fig["speedup"] > 0 and fig["compared_examples"] > 0 and fig["max_rel_diff"] < 1e-3
    gr = steps["gradiend"]
    assert gr["status"] == "ok" and gr["figures"]["tiny"]["speedup"] > 0
    gpt2 = gr["figures"]["tiny-gpt2"]
    assert gpt2["ours"]["n"] == gpt2["ours-bf16"]["n"] == gpt2["naive"]["n"] and gpt2["speedup"] > 0
    llama = gr["figures"]["llama-small last block"]
    assert llama["layers"] == [-1] and 0 < llama["ours-bf16"]["n"] < gpt2["ours"]["n"] * 100
    assert steps["executor"]["status"] in ("ok", "skipped")
    for name in steps:
        assert f"| {name} |" in summary
    assert not (out / "work").exists()  # scratch space removed
