"""The driver's side of a run: what units return arrives here, in any order and from any engine; the collector
keeps the rows in plan order, is the only writer of results.jsonl, and writes the rows aggregated over seeds once
every seed of a (model, chain, metric) is in."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable

from bench.errors import BenchError
from bench.files import write_text


@dataclass
class Outcome:
    """What a run produced besides the stored rows: the rows themselves when there is no run directory, the
    errors (and their cells, shown as "error" but never stored), where each unit ran, and whether units were
    left running (slurm --no-wait)."""

    rows: list[dict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    error_rows: list[dict] = field(default_factory=list)
    units: list[dict] = field(default_factory=list)
    incomplete: bool = False


class Collector:
    """`aggregate(model, chain, metric, per_seed)`: the rows over seeds (bench.run.rows); `light_fingerprints(model)`:
    the data fingerprints of a model known without loading it, or None (checked before remote units run)."""

    def __init__(self, store, plan, outcome: Outcome, aggregate: Callable, light_fingerprints: Callable,
                 echo: Callable[[str], None]):
        self.store, self.plan, self.outcome = store, plan, outcome
        self.aggregate, self.light_fingerprints, self.echo = aggregate, light_fingerprints, echo
        self.multi_seed = len(plan.seeds) > 1
        self.per_seed: dict[tuple, dict] = {}  # (model, chain, metric) -> {seed: what the unit reported}
        self.finished = 0
        self.log_units = False  # remote engines: OUT/units.jsonl records where each unit ran
        self._unlogged: list[dict] = []

    def _have(self, model, chain, metric, seed) -> bool:
        return self.store is not None and self.store.done(model, chain, metric, seed)

    def _aggregated(self, model, chain, metric) -> bool:
        if self.store is not None:
            return self.store.aggregated(model, chain, metric)
        return any(r.get("aggregate") and r["model"] == model and r["method"] == chain and r["metric"] == metric
                   for r in self.outcome.rows)  # fmt: skip

    def skip(self, unit) -> list[str]:
        """The unit's metrics whose rows the run directory already has."""
        return [m for m in unit.metrics if self._have(unit.model, unit.chain, m, unit.seed)]

    def needed(self, unit) -> bool:
        if len(self.skip(unit)) < len(unit.metrics):
            return True
        stored = lambda m: self.store is not None and self.store.aggregated(unit.model, unit.chain, m)  # noqa: E731
        return self.multi_seed and any(not stored(m) for m in unit.metrics)

    def todo(self) -> list:
        return [u for u in self.plan.units if self.needed(u)]

    def check_data(self) -> None:
        """Before anything runs remotely: refuse a resume over changed data files, for every model whose data
        directory is known without loading it; the others are checked when their first unit reports."""
        if self.store is None:
            return
        for model in self.plan.models:
            found = self.light_fingerprints(model)
            if found is not None:
                self.store.record_data(found)

    def add(self, result: dict, worker: dict | None = None) -> None:
        unit = self.plan.by_id[result["unit"]]
        if self.store is not None and result.get("fingerprints"):
            self.store.record_data(result["fingerprints"])  # a changed data file refuses the run (RunConflict)
        for message in result.get("log", ()):
            self.echo(message)
        self.outcome.errors.extend(result.get("errors", ()))
        self.outcome.error_rows.extend(result.get("error_rows", ()))
        if worker is not None:
            self.outcome.units.append({"unit": unit.id, **worker, "errors": len(result.get("errors", ()))})
            self._unlogged.append(self.outcome.units[-1])
        rows: list[dict] = []
        for metric, got in result.get("metrics", {}).items():
            if got.get("rows") and not self._have(unit.model, unit.chain, metric, unit.seed):
                rows += got["rows"]
            self.per_seed.setdefault((unit.model, unit.chain, metric), {})[unit.seed] = got
        if self.multi_seed:
            for metric in unit.metrics:
                rows += self._over_seeds(unit.model, unit.chain, metric)
        self.finished += 1
        self._write(rows)

    def _over_seeds(self, model, chain, metric) -> list[dict]:
        got = self.per_seed.get((model, chain, metric), {})
        if any(seed not in got for seed in self.plan.seeds) or self._aggregated(model, chain, metric):
            return []
        try:
            return self.aggregate(model, chain, metric, [got[s] for s in self.plan.seeds])
        except BenchError as e:
            self.outcome.errors.append(str(e))
            return []

    def _write(self, rows: list[dict]) -> None:
        if self.store is None:
            self.outcome.rows.extend(rows)
            self.outcome.rows.sort(key=self.plan.row_key)
            return
        if rows:  # (a run with nothing new leaves the file as it is, e.g. resumed with the names reordered)
            self.store.add(rows, order=self.plan.row_key)
        if self.log_units and self._unlogged and self.store.results_path.is_file():
            log = self.store.out / "units.jsonl"
            old = log.read_text(encoding="utf-8") if log.is_file() else ""
            write_text(log, old + "".join(json.dumps(u, sort_keys=True) + "\n" for u in self._unlogged))
            self._unlogged.clear()

    def finish(self) -> None:
        self._write([])
