"""Helpers shared by the executor and seed-grid tests: `bench run --suite ci` runs into fresh caches that share
the session cache's synthetic world (generated once), one local reference run per session, and the identity
check of two results files.

Identity: rows are compared field by field except `runtime_s` (wall-clock seconds of the unit, different on
every run by nature); everything else (order, values, CIs, deltas, notes, versions, config hashes) must be equal.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def fresh_cache(path: Path) -> Path:
    """An empty cache whose synthetic world is the session cache's (so no test regenerates or retrains it)."""
    path.mkdir(parents=True, exist_ok=True)
    shared = Path(os.environ["BENCH_CACHE_DIR"]) / "synthetic"
    shared.mkdir(parents=True, exist_ok=True)
    link = path / "synthetic"
    if not link.exists():
        link.symlink_to(shared, target_is_directory=True)
    return path


def bench_cli(args: list, env: dict | None = None, timeout: float = 1200) -> subprocess.CompletedProcess:
    """`bench ...` in a subprocess with one thread per process (same total threads for every executor)."""
    full = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "RAY_USAGE_STATS_ENABLED": "0",
            **(env or {})}  # fmt: skip
    return subprocess.run([sys.executable, "-m", "bench.cli", *map(str, args)], capture_output=True, text=True,
                          env=full, timeout=timeout, cwd=REPO)  # fmt: skip


def ci_args(out: Path, cache: Path, *extra) -> list:
    return ["run", "--suite", "ci", "--out", out, "--cache-dir", cache, "--no-progress", *extra]


def rows(path: Path) -> list[dict]:
    path = Path(path)
    path = path / "results.jsonl" if path.is_dir() else path
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def comparable(rs: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "runtime_s"} for r in rs]


def assert_same_results(a: Path, b: Path) -> None:
    ra, rb = comparable(rows(a)), comparable(rows(b))
    assert len(ra) == len(rb), (len(ra), len(rb))
    for i, (x, y) in enumerate(zip(ra, rb)):
        assert x == y, f"row {i} differs:\n{x}\n{y}"


def units(out: Path) -> list[dict]:
    return [json.loads(line) for line in (Path(out) / "units.jsonl").read_text().splitlines() if line.strip()]


@pytest.fixture(scope="session")
def ci_reference(tmp_path_factory):
    """`bench run --suite ci` with the local executor (today's behaviour), from an empty cache: the reference
    every other executor's results.jsonl must equal. Returns (run dir, its cache)."""
    root = tmp_path_factory.mktemp("ci-reference")
    out, cache = root / "run", fresh_cache(root / "cache")
    done = bench_cli(ci_args(out, cache))
    assert done.returncode == 0, done.stderr[-3000:]
    return out, cache
