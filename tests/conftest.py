"""Shared fixtures. The pinned synthetic world is generated once per cache directory (seconds; its weights ship
with the package, so it is the same model on every machine) and reused by every test."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# Tests use a cache inside the repo (ignored by git) unless the caller chose one.
os.environ.setdefault("BENCH_CACHE_DIR", str(REPO / ".cache" / "bench"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if "BENCH_DATA_DIR" not in os.environ and SHARED_DATA.is_dir():
    os.environ["BENCH_DATA_DIR"] = str(SHARED_DATA)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = Path(os.environ.get("BENCH_DATA_DIR", SHARED_DATA))
    if not (path / "stereoset").is_dir():
        pytest.skip(f"real data directory not found at {path} (set BENCH_DATA_DIR)")
    return path


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    return Path(os.environ["BENCH_CACHE_DIR"])


@pytest.fixture(scope="session")
def synthetic():
    """The pinned default synthetic planted-bias subject (bias 0.8, seed 0): identical weights on every machine."""
    from bench.models.loading import load_subject

    return load_subject("synthetic", device="cpu")


@pytest.fixture(scope="session")
def synthetic_random():
    """Same architecture and tokenizer as `synthetic`, random weights."""
    from bench.models.loading import load_subject

    return load_subject("synthetic:init=random", device="cpu")


@pytest.fixture()
def one_thread():
    """One intra-op thread while a test runs (restored after): tiny models gain nothing from intra-op threads, and
    on a shared 2-core machine they lose a lot. Modules use it with `pytestmark = pytest.mark.usefixtures(...)`."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """A tiny random BERT (2 layers, hidden 32, seed 0) with bert-base-uncased's tokenizer, saved as a local model
    directory: the same weights in every module that uses it."""
    from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

    tokenizer_dir = SHARED_DATA / "models" / "bert-base-uncased-tokenizer"
    if not tokenizer_dir.is_dir():
        pytest.skip(f"tokenizer not found at {tokenizer_dir}")
    import torch

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64)  # fmt: skip
    path = tmp_path_factory.mktemp("tiny-bert")
    BertForMaskedLM(cfg).save_pretrained(path)
    BertTokenizerFast.from_pretrained(tokenizer_dir).save_pretrained(path)
    return path




@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """`bench run --suite demo` once per test session (minutes on 2 cores): (run directory, what it printed).
    The README's demo table and the HTML report's browser test read the same run."""
    import contextlib
    import io

    from bench.cli import main

    out = tmp_path_factory.mktemp("demo-run") / "demo"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        main(["run", "--suite", "demo", "--out", str(out), "--no-progress"])
    return out, printed.getvalue()
