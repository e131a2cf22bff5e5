"""Engines: where the units of a plan (bench.run.plan) run. One module each: local (this process), ray, slurm
(submitit); schedule holds what the remote ones share. An engine receives a `Job` (the request as plain data and
how to run a unit) and the driver's collector, never the driver itself.

- `local` (the default): in this process, in plan order; each model is loaded once.
- `ray`: one Ray task per unit (`num_gpus=--gpus-per-job`, `num_cpus=--cpus-per-job`) on an existing cluster
  (`--address auto|HOST`, or RAY_ADDRESS as set by `ray job submit`) or, without one, an in-process cluster on
  this machine (loopback only, no dashboard, usage statistics off).
- `slurm`: one submitit job per unit (job arrays of the units that are ready together), `--slurm-partition`,
  `--slurm-time`, `--slurm-mem`, `--slurm-array-parallelism`; `--no-wait` submits and returns, and running the
  same command again collects what finished (and submits what is ready). `--slurm-cluster local` runs the jobs
  as local processes through submitit's LocalExecutor (tests, a box without SLURM).

Only names and dicts travel to a worker: the request (RunRequest fields) and the unit. Fitted artifacts and
scores travel through the shared content-addressed cache (bench.cache.Cache; its first complete writer wins),
so a worker needs the same installation and the same paths (cache, data, local models) as the driver. A
worker returns plain data (rows, cache keys, data fingerprints, errors, what it ran on); the driver
(bench.run.runner with bench.run.collector) is the only writer of results.jsonl and writes it in plan order as
units finish: every executor gives the same file.

Failures: a worker that dies (killed, out of memory, node lost) is retried up to `--max-retries` times (Ray's
task retries; for SLURM the job is resubmitted); a unit that raises a BenchError reports it (the run ends with
status 2 listing it, its rows are absent so the next run retries it) and the other units finish; an
interrupted driver resumes from the run directory and the cache when the command is run again.
"""
from __future__ import annotations

import importlib
import importlib.util
import math
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from bench.errors import BenchError

EXECUTORS = ("local", "ray", "slurm")
HEARTBEAT_S = 300.0  # remote units: a line on what is still running when nothing finished for this long


@dataclass
class Job:
    """What an engine gets from the driver. `request`: the RunRequest's fields (what a remote worker needs, with
    paths resolved); `run_unit(unit, skip, progress)`: run a unit in this process; `prepare(model)`: load a model
    here and check its data files; `work(request, unit, skip, kind, cpus)`: the module-level function a remote
    worker process runs (bench.run.unit.work); `out`: the run directory, or None."""

    request: dict
    run_unit: Callable
    prepare: Callable[[str], None]
    work: Callable
    echo: Callable[[str], None]
    out: Path | None = None


@dataclass
class ExecutorOptions:
    kind: str = "local"
    gpus_per_job: float = 0.0
    cpus_per_job: int = 1
    max_retries: int = 2
    address: str | None = None  # ray: auto | HOST[:PORT]; None: RAY_ADDRESS or an in-process cluster
    ray_cpus: int | None = None  # the in-process cluster's resources (default: this machine's)
    ray_gpus: int | None = None
    slurm_partition: str | None = None
    slurm_time: int = 24 * 60  # minutes
    slurm_mem: str | None = None  # e.g. 32G
    slurm_array_parallelism: int = 16
    slurm_cluster: str | None = None  # None: SLURM when available; "local": submitit's LocalExecutor
    slurm_folder: str | None = None  # job files; default OUT/.bench-slurm
    no_wait: bool = False
    poll_s: float = 1.0


class Engine:
    """start() prepares where units run (Ray: its cluster), close() releases it; both are no-ops unless an
    executor needs them. execute() starts and closes on its own when the caller did not."""

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass


def make_executor(options: ExecutorOptions | None = None):
    options = options or ExecutorOptions()
    if options.kind not in EXECUTORS:
        raise BenchError(f"unknown executor {options.kind!r}; valid executors: {', '.join(EXECUTORS)}")
    _check_options(options)
    if options.kind == "slurm":
        import_submitit()
    elif options.kind == "ray" and importlib.util.find_spec("ray") is None:  # not imported yet: see RayExecutor.start
        raise BenchError(RAY_HINT)
    module = importlib.import_module(f"bench.engines.{options.kind}")
    return getattr(module, {"local": "LocalExecutor", "ray": "RayExecutor", "slurm": "SlurmExecutor"}[options.kind])(options)


def _check_options(o: ExecutorOptions) -> None:
    """Every numeric option in range, before anything is loaded (a NaN compares false with everything)."""
    if not (math.isfinite(o.gpus_per_job) and o.gpus_per_job >= 0):
        raise BenchError(f"--gpus-per-job must be a finite number >= 0, got {o.gpus_per_job}")
    if o.kind == "slurm" and o.gpus_per_job != int(o.gpus_per_job):
        raise BenchError(f"--gpus-per-job must be a whole number with --executor slurm (SLURM allots whole GPUs), "
                         f"got {o.gpus_per_job}")  # fmt: skip
    for flag, value, least in (("--cpus-per-job", o.cpus_per_job, 1), ("--max-retries", o.max_retries, 0),
                               ("--ray-cpus", o.ray_cpus, 1), ("--ray-gpus", o.ray_gpus, 0),
                               ("--slurm-time", o.slurm_time, 1),
                               ("--slurm-array-parallelism", o.slurm_array_parallelism, 1)):  # fmt: skip
        if value is not None and value < least:
            raise BenchError(f"{flag} must be >= {least}, got {value}")


RAY_HINT = "--executor ray needs Ray: pip install 'bench-debias[ray]'"


def import_submitit():
    try:
        import submitit
    except ImportError:
        raise BenchError("--executor slurm needs submitit: pip install 'bench-debias[slurm]'") from None
    return submitit



def worker_info(start: float, kind: str) -> dict:
    """Where and when a unit ran (OUT/units.jsonl)."""
    return {"executor": kind, "host": socket.gethostname(), "pid": os.getpid(),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "start": start, "end": time.time()}  # fmt: skip


def executor_names() -> tuple[str, ...]:
    return EXECUTORS
