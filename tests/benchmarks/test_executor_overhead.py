"""The executor's overhead: `bench run --suite ci` with `--executor ray` against `--executor local` (one process,
2 threads), with the same total threads: Ray runs 2 workers of 1 thread each. Each run starts from an empty cache
(sharing only the generated synthetic world) and is timed as a whole command (driver start-up, worker start-up,
per-unit model loads, the table).

Two Ray figures, because Ray's own start and stop is a fixed cost that does not depend on bench:
- on an existing cluster (`ray start --head` beforehand, `--address`): the executor's overhead, target <= 1.15;
- with the in-process cluster (no `--address`): the same plus starting and stopping Ray's processes (~4 s here,
  printed on its own), which a 15-second suite feels and a study of hours does not.

Rounds alternate the three runs and the medians are compared, so that drift in the machine's load hits all
three alike; the load average is printed beside them (a 2-thread process loses more to other work than two
1-thread processes do).

Run with `pytest tests/benchmarks/test_executor_overhead.py --benchmark-enable -s`; without --benchmark-enable (its
tiny mode) one round of a small request (base CrowS on the synthetic world), the same row check.
"""
from __future__ import annotations

import os
import re
import statistics
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ci_runs import assert_same_results, bench_cli, ci_args, fresh_cache  # noqa: E402
from ray_head import ray_head  # noqa: E402

THREADS = 2
ROUNDS = 2


def tiny_args(out: Path, cache: Path, *extra) -> list:
    """The tiny mode's request: base CrowS on the synthetic world, 20 resamples."""
    return ["run", "--models", "synthetic", "--methods", "base", "--metrics", "crows", "--resamples", "20", "--out", out,
            "--cache-dir", cache, "--no-progress", *extra]  # fmt: skip


def _timed(out: Path, cache: Path, env: dict, *extra, full: bool = True) -> tuple[float, str]:
    t0 = time.perf_counter()
    done = bench_cli((ci_args if full else tiny_args)(out, cache, *extra), env=env)
    seconds = time.perf_counter() - t0
    assert done.returncode == 0, done.stderr[-3000:]
    return seconds, done.stderr


@pytest.mark.slow  # starts a Ray cluster and four bench processes, even in the tiny mode
def test_ray_vs_local_on_the_ci_suite(benchmark, tmp_path, full):
    pytest.importorskip("ray")
    rounds = ROUNDS if full else 1
    # warm-up (not timed): the synthetic world and the OS file cache, so that no run pays for them
    _timed(tmp_path / "warm", fresh_cache(tmp_path / "warm-cache"), {"OMP_NUM_THREADS": str(THREADS)}, full=full)
    load = os.getloadavg()[0]
    times: dict[str, list[float]] = {"local": [], "existing": [], "in-process": []}
    startup: list[float] = []
    t0 = time.perf_counter()
    with ray_head(tmp_path, cpus=THREADS) as (address, env):
        head_s = time.perf_counter() - t0

        def one_round(i: int) -> None:
            def run(name, threads, *extra, env_extra=None):
                out, cache = tmp_path / f"{name}-{i}", fresh_cache(tmp_path / f"{name}-{i}-cache")
                seconds, err = _timed(out, cache, {"OMP_NUM_THREADS": str(threads), **(env_extra or {})}, *extra,
                                      full=full)  # fmt: skip
                times[name].append(seconds)
                return out, err

            run("local", THREADS)
            run("existing", 1, "--executor", "ray", "--address", address, env_extra=env)
            out, err = run("in-process", 1, "--executor", "ray", "--ray-cpus", str(THREADS), "--cpus-per-job", "1")
            found = re.search(r"in-process cluster .* in ([0-9.]+)s", err)
            startup.append(float(found.group(1)) if found else float("nan"))
            assert_same_results(out, tmp_path / f"local-{i}")

        for i in range(rounds - 1):
            one_round(i)
        benchmark.pedantic(one_round, args=(rounds - 1,), rounds=1, iterations=1)
    med = {k: statistics.median(v) for k, v in times.items()}
    runs = "; ".join(f"{k} " + ", ".join(f"{s:.1f}" for s in v) + "s" for k, v in times.items())
    print(f"\n{'ci suite' if full else 'tiny request'}, {rounds} rounds (load average {load:.1f} -> {os.getloadavg()[0]:.1f}): {runs}\n"
          f"medians: local {THREADS} threads {med['local']:.1f}s; ray {THREADS} workers x 1 thread on an existing "
          f"cluster {med['existing']:.1f}s, with the in-process cluster {med['in-process']:.1f}s (its ray.init "
          f"{statistics.median(startup):.1f}s; `ray start --head` took {head_s:.1f}s)\n"
          f"-> executor overhead ray/local {med['existing'] / med['local']:.2f}x (target <= 1.15); with Ray's "
          f"in-process start and stop {med['in-process'] / med['local']:.2f}x")  # fmt: skip
