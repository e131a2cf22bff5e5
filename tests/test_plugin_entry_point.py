"""Adding a method without touching the core: a third-party package with a `bench.methods` entry point is
pip-installed into the current environment and run with `bench run`."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

DIST = "bench-example-plugin"

PYPROJECT = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "bench-example-plugin"
version = "0.0.1"

[project.entry-points."bench.methods"]
my-method = "my_plugin:MyMethod"

[tool.setuptools]
py-modules = ["my_plugin"]
"""

PLUGIN = '''\
"""An example debiaser: shrinks the input embeddings of a few gendered words."""
import copy

import torch

from bench.api import Debiaser


class MyMethod(Debiaser):
    label = "My method"
    changes = "weights"

    def __init__(self, words: str = "he she him her his", scale: float = 0.5):
        self.words = words
        self.scale = scale

    def fit(self, subject, ctx):
        ids = subject.tokenizer(self.words.split(), add_special_tokens=False, is_split_into_words=True)["input_ids"]
        return sorted(set(ids) - set(subject.tokenizer.all_special_ids))

    def apply(self, subject, artifact):
        model = copy.deepcopy(subject.model)
        with torch.no_grad():
            model.get_input_embeddings().weight[artifact] *= self.scale
        return subject.with_model(model)
'''


def _pip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture()
def installed_plugin(tmp_path):
    pkg = tmp_path / "example_plugin"
    pkg.mkdir()
    (pkg / "pyproject.toml").write_text(PYPROJECT, encoding="utf-8")
    (pkg / "my_plugin.py").write_text(PLUGIN, encoding="utf-8")
    done = _pip("install", "--no-deps", "--no-build-isolation", "-q", str(pkg))
    assert done.returncode == 0, done.stderr
    try:
        yield pkg
    finally:
        _pip("uninstall", "-y", "-q", DIST)


def _model_name(tmp_path: Path) -> str:
    """The synthetic world when it is available, else a tiny random BERT saved to a local directory."""
    import bench.synthetic

    if hasattr(bench.synthetic, "load"):
        return "synthetic"
    from tests.tokenizers_fixture import load_bert_tokenizer, tiny_bert

    tokenizer = load_bert_tokenizer(Path(os.environ["BENCH_DATA_DIR"]))
    folder = tmp_path / "tiny-bert"
    tiny_bert(tokenizer, hidden=32).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def _bench(*args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("bench")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=1200, env=dict(os.environ))


@pytest.mark.slow
def test_an_installed_plugin_runs_with_bench_run(installed_plugin, tmp_path, data_dir):
    listed = _bench("list", "methods")
    assert listed.returncode == 0, listed.stderr
    assert any(line.startswith("my-method") and "My method" in line for line in listed.stdout.splitlines())

    out = tmp_path / "run"
    model = _model_name(tmp_path)
    done = _bench("run", "--methods", "my-method", "--models", model, "--metrics", "stereoset", "--out", str(out),
                  "--resamples", "100", "--no-progress")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line.strip()]
    mine = [r for r in rows if r["method"] == "my-method"]
    assert mine and all(r["status"] == "ok" and r["label"] == "My method" for r in mine)
    ss = next(r for r in mine if r["submetric"] == "ss_gender")
    base = next(r for r in rows if r["method"] == "base" and r["submetric"] == "ss_gender")
    assert ss["delta"] == pytest.approx(ss["value"] - base["value"], abs=1e-9)
    for table in ("leaderboard.md", "leaderboard.tex"):
        assert "My method" in (out / table).read_text(encoding="utf-8")
    assert "My method" in done.stdout


def test_the_core_never_names_the_example_plugin():
    core = Path(__file__).resolve().parents[1] / "bench"
    assert not any("my_plugin" in p.read_text(encoding="utf-8") for p in core.rglob("*.py"))
    assert "my-method" not in (core.parent / "pyproject.toml").read_text(encoding="utf-8")
