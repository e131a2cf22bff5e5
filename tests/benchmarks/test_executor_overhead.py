"""The executor's overhead: `bench run --suite ci` with `--executor ray` (an in-process cluster, 2 workers of
1 thread each) against `--executor local` (one process, 2 threads): the same total threads, each from an empty
cache (sharing only the generated synthetic world), wall-clock of the whole command (Ray's start-up, worker
start-up and per-unit model loads included). Target: ray / local <= 1.15. Also printed: local with 1 thread
(what each Ray worker has). On a machine shared with other work, a 2-thread process loses more to contention
than two 1-thread processes: read the ratios with the load average printed beside them.

Rows are checked for identity between the 1-thread runs only: CDA trains in float32, and 2 threads sum in
another order than 1 (CDA's rows differ from ~1e-7 relative on, and a count-based SS can move by one item).
The identity tests (tests/test_executors.py) run every executor with 1 thread per process.

Run with `pytest tests/benchmarks/test_executor_overhead.py --benchmark-enable -s`.
"""
from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ci_runs import bench_cli, ci_args, comparable, fresh_cache, rows  # noqa: E402

THREADS = 2


def _timed(out: Path, cache: Path, threads: int, *extra) -> tuple[float, str]:
    t0 = time.perf_counter()
    done = bench_cli(ci_args(out, cache, *extra), env={"OMP_NUM_THREADS": str(threads)})
    seconds = time.perf_counter() - t0
    assert done.returncode == 0, done.stderr[-3000:]
    return seconds, done.stderr


def test_ray_vs_local_on_the_ci_suite(benchmark, tmp_path):
    pytest.importorskip("ray")
    # warm-up (not timed): the synthetic world and the OS file cache, so neither side pays for them
    _timed(tmp_path / "warm", fresh_cache(tmp_path / "warm-cache"), THREADS)
    load = os.getloadavg()[0]
    t_local, _ = _timed(tmp_path / "local", fresh_cache(tmp_path / "local-cache"), THREADS)
    t_local1, _ = _timed(tmp_path / "local1", fresh_cache(tmp_path / "local1-cache"), 1)

    def ray_run():
        return _timed(tmp_path / "ray", fresh_cache(tmp_path / "ray-cache"), 1, "--executor", "ray", "--ray-cpus",
                      str(THREADS), "--cpus-per-job", "1")  # fmt: skip

    t_ray, err = benchmark.pedantic(ray_run, rounds=1, iterations=1)
    startup = re.search(r"in-process cluster .* in ([0-9.]+)s", err)
    print(f"\nci suite (load average {load:.1f} -> {os.getloadavg()[0]:.1f}): local {THREADS} threads {t_local:.1f}s, "
          f"local 1 thread {t_local1:.1f}s, ray {THREADS} workers x 1 thread {t_ray:.1f}s (Ray start-up "
          f"{startup.group(1) if startup else '?'}s) -> ray/local (same total threads) {t_ray / t_local:.2f}x "
          f"(target <= 1.15); ray/local-1-thread {t_ray / t_local1:.2f}x")  # fmt: skip
    assert comparable(rows(tmp_path / "local1")) == comparable(rows(tmp_path / "ray"))  # 1 thread per process: identical
    assert len(rows(tmp_path / "local")) == len(rows(tmp_path / "ray"))
