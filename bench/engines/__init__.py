"""Engines: where the units of a plan run. An engine receives a `Job` (bench.engines.base: the request as plain
data, how to run a unit here, the worker entry point for remote processes, where to print) and the driver's
collector, never the driver's state.

  base       Job, ExecutorOptions and their checks, make_executor, worker_info
  schedule   what the remote engines share: the dependency-ordered submission loop, warm-ups, heartbeat lines
  local      in this process, in plan order (the default)
  ray        one Ray task per unit on an existing or an in-process cluster
  slurm      one submitit job per unit (job arrays), --no-wait collection

A new engine is one module here with a class that has `execute(job, plan, collector)` (and `start`/`close` if it
holds resources), named in base.EXECUTORS and the `--executor` choice. Engines import only bench.errors and
bench.files (and their engine's library): nothing of bench.run.
"""
