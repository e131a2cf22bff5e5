"""The local engine: units run in this process, in plan order; each model is loaded once."""
from __future__ import annotations

import time

from bench.engines.base import Engine, ExecutorOptions, Job, worker_info


class LocalExecutor(Engine):
    """In this process, in plan order (today's behaviour): each model is loaded once and its data fingerprints
    are checked before its first unit, even when everything is done."""

    name = "local"

    def __init__(self, options: ExecutorOptions | None = None):
        self.options = options or ExecutorOptions()

    def execute(self, job: Job, plan, collector) -> None:
        todo = collector.todo()
        total = len(plan.units) * len(plan.metrics)
        done = 0
        for model in plan.models:
            job.prepare(model)
            for unit in plan.units:
                if unit.model != model:
                    continue
                if unit not in todo:
                    done += len(unit.metrics)
                    continue
                skip = collector.skip(unit)
                done += len(skip)
                start = time.time()
                result = job.run_unit(unit.to_dict(), skip, progress=(done, total))
                done += len(unit.metrics) - len(skip)
                collector.add(result, worker_info(start, "local"))

