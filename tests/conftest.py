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
    from bench.models import load_subject

    return load_subject("synthetic", device="cpu")


@pytest.fixture(scope="session")
def synthetic_random():
    """Same architecture and tokenizer as `synthetic`, random weights."""
    from bench.models import load_subject

    return load_subject("synthetic:init=random", device="cpu")


def pytest_ignore_collect(collection_path, config):
    """Benchmarks (tests/benchmarks) measure speed and memory on bert-base-sized models; they run only when asked
    for with `--benchmark-enable`, never as part of the plain test command."""
    if "benchmarks" in Path(collection_path).parts and not config.getoption("benchmark_enable", False):
        return True
    return None
