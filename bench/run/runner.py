"""The driver of a run: plans the request (bench.run.plan), hands the units to an engine (bench.engines; in this
process by default) with a unit worker, and is the only writer of the run directory (through the collector).
Units whose rows are already in the run directory are skipped (resume); fitted artifacts and scores come from the
content-addressed cache when present."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from bench.api import Context
from bench.engines.base import Job
from bench.models.subject import Subject
from bench.run.collector import Collector, Outcome
from bench.models.loading import light_subject
from bench.run.plan import Plan, make_plan
from bench.run.request import RunRequest
from bench.run.store import RunStore
from bench.run.unit import UnitWorker, request_dict, work


class Runner(UnitWorker):
    """A unit worker of this process plus what only the driver has: the run directory (held locked from here to
    the end of `run()`: one writer per directory) and the run's outcome."""

    def __init__(self, request: RunRequest, out: Path | None = None, echo: Callable[[str], None] = print):
        super().__init__(request, echo)
        self.store = RunStore(out, self.request.manifest(), lock=True) if out is not None else None
        self.outcome = Outcome()

    # what the command line reads after a run
    @property
    def errors(self) -> list[str]:
        return self.outcome.errors

    @property
    def error_rows(self) -> list[dict]:
        """Cells of units or metrics that failed: shown as "error" in this run's tables, never stored in
        results.jsonl (so running the same command again retries them)."""
        return self.outcome.error_rows

    @property
    def incomplete(self) -> bool:
        return self.outcome.incomplete

    def record_data(self, subject: Subject, ctx: Context) -> None:
        if self.store is not None:
            self.store.record_data(self.data_fingerprints(subject, ctx))

    def prepare(self, model: str) -> None:
        """Load a model in this process and check its data files against the run directory's record."""
        base = self.base_subject(model)
        self.record_data(base, self.context(base))

    def light_fingerprints(self, model: str) -> dict | None:
        light = light_subject(model, self.data_dir, self.cache.root)
        return None if light is None else self.data_fingerprints(light, self.context(light))

    def plan(self) -> Plan:
        return make_plan(self.request)

    def collector(self, plan: Plan) -> Collector:
        return Collector(self.store, plan, self.outcome, self.row_builder.aggregate, self.light_fingerprints, self.echo)

    def job(self) -> Job:
        out = self.store.out if self.store is not None else None
        return Job(request=request_dict(self), run_unit=self.run_unit, prepare=self.prepare, work=work,
                   echo=self.echo, out=out)  # fmt: skip

    def run(self, executor=None) -> list[dict]:
        """Plan the request, run the units that are not done (on `executor`, default: in this process) and
        return the rows in plan order. The driver alone writes the run directory."""
        if self.store is None:
            return self._run(executor)
        self.store.acquire()  # again, when this runner ran before
        try:
            self._run(executor)
            return list(self.store.rows)
        finally:
            self.store.release()

    def _run(self, executor) -> list[dict]:
        from bench.engines.local import LocalExecutor

        plan = self.plan()
        collector = self.collector(plan)
        (executor or LocalExecutor()).execute(self.job(), plan, collector)
        collector.finish()
        return self.outcome.rows
