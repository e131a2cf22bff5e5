"""`bench export` (issue 21, item 2): a debiased model of a run as a Hugging Face folder with a model card, loadable
without bench; `bench run --models OUT_DIR --methods base` reproduces the chain's rows."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cli_helpers import run_bench

# a quick GRADIEND fit (one seed, a few steps, a 2 x 2 grid): an edit of the weights, which is what is exported
QUICK = ["-o", "gradiend-bpi.seeds=[0]", "-o", "gradiend-bpi.max_steps=20", "-o", "gradiend-bpi.eval_every=10",
         "-o", "gradiend-bpi.lms_max_sentences=100", "-o", "gradiend-bpi.h_values=[-1.0,1.0]",
         "-o", "gradiend-bpi.alpha_values=[-0.05,0.05]"]  # fmt: skip
QUICK_INLP = ["-o", "inlp.n_iterations=4", "-o", "inlp.per_class=150"]
METRICS = ["--metrics", "stereoset,crows,seat", "--resamples", "50"]
CHAINS = ["gradiend-bpi", "inlp", "gradiend-bpi+inlp"]


def _rows(folder: Path, method: str) -> dict:
    rows = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
    return {(r["metric"], r["submetric"]): r["value"] for r in rows if r["method"] == method and r["status"] == "ok"}


@pytest.fixture(scope="module")
def gradiend_run(tmp_path_factory, synthetic):
    folder = tmp_path_factory.mktemp("export")
    proc = subprocess.run([sys.executable, "-m", "bench.cli", "run", "--models", "synthetic", "--methods",
                           ",".join(CHAINS), *METRICS, *QUICK, *QUICK_INLP, "--out", folder / "run", "--no-progress"],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("chain", CHAINS)
def test_exported_chain_loads_without_bench_and_reproduces_its_rows(gradiend_run, synthetic, chain, capsys):
    run, out = gradiend_run / "run", gradiend_run / chain
    code, stdout, err = run_bench(["export", run, out, "--model", "synthetic", "--method", chain], capsys)
    assert code == 0, err
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.bin")) and not list(out.glob("*.pkl"))
    projected = "inlp" in chain
    assert (out / "projection.safetensors").is_file() == projected
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: \"transformers\"\n") and f"`{chain}`" in card
    assert ("NOT projected" in card) == projected
    # loads with transformers alone: no bench module imported, no remote code
    probe = ("import sys; from transformers import AutoModelForMaskedLM, AutoTokenizer; "
             f"m = AutoModelForMaskedLM.from_pretrained({str(out)!r}, trust_remote_code=False); "
             f"AutoTokenizer.from_pretrained({str(out)!r}); "
             "assert not any(k == 'bench' or k.startswith(('bench.', 'methods', 'metrics')) for k in sys.modules); "
             "print(sum(p.numel() for p in m.parameters()))")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd="/")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert int(proc.stdout.split()[-1]) == sum(p.numel() for p in synthetic.model.parameters())
    # the export scored as a base model gives the chain's rows. Weight methods: the same float32 weights through the
    # same code, so equal values. A folded projection computes h (W A^T) where the chain computes (h A) W^T: logits
    # differ by float32 rounding (~1e-6 relative), so an SS/CrowS decision could flip only at a margin that small;
    # none does here, and the counts (SS, CrowS) are equal. SEAT reads the hidden states, which the folded model does
    # not project: it gives the model under the projection (the GRADIEND edit, or the base model for INLP alone).
    again = gradiend_run / f"again-{chain}"
    code, _, err = run_bench(["run", "--models", out, "--methods", "base", *METRICS, "--out", again,
                              "--data-dir", synthetic.data_dir, "--no-progress"], capsys)  # fmt: skip
    assert code == 0, err
    chain_rows, exported = _rows(run, chain), _rows(again, "base")
    unprojected = _rows(run, chain.removesuffix("inlp").rstrip("+") or "base")
    assert chain_rows and set(chain_rows) == set(exported)
    for key, value in chain_rows.items():
        expected = unprojected[key] if projected and key[0] == "seat" else value
        assert exported[key] == pytest.approx(expected, rel=1e-6, abs=1e-6), key
    for r in (json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()):
        if r["method"] == chain and r["status"] == "ok":
            assert f"{r['value']:.4g}" in card  # every measured row is in the card


def test_export_refuses_what_a_checkpoint_cannot_carry(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    manifest = {"bench": "0.1.0", "request_hash": "x", "data": {},
                "request": {"models": ["synthetic"], "methods": ["base", "inlp", "self-debias", "cda", "cda+self-debias"],
                            "metrics": ["crows"], "seed": 0, "options": {}, "stats": {}, "bias_type": "gender"}}  # fmt: skip
    (tmp_path / "run" / "manifest.json").write_text(json.dumps(manifest))
    for chain, words in (("self-debias", "output distribution"), ("cda+self-debias", "output distribution")):
        code, _, err = run_bench(["export", tmp_path / "run", tmp_path / "out", "--model", "synthetic", "--method",
                                  chain], capsys)  # fmt: skip
        assert code != 0 and words in err, (chain, err)
    code, _, err = run_bench(["export", tmp_path / "run", tmp_path / "out", "--model", "bert-base", "--method", "cda"], capsys)
    assert code != 0 and "not in this run" in err
    code, _, err = run_bench(["export", tmp_path / "nothing", tmp_path / "out", "--model", "synthetic", "--method",
                              "cda"], capsys)  # fmt: skip
    assert code != 0 and "not a run directory" in err
    assert not (tmp_path / "out").exists()
