"""What the remote engines (Ray, SLURM) share: the scheduling loop over a plan's dependencies, warm-ups, the
heartbeat line, and how a worker's failure is shown."""
from __future__ import annotations

import time
from typing import Any, Callable

from bench.engines.base import HEARTBEAT_S
from bench.errors import BenchError


def warm_unit(model: str) -> dict:
    return {"id": f"warm-up: {model}", "model": model, "warm": True}


def schedule(plan, collector, submit_many: Callable, wait_any: Callable, echo: Callable,
              warm: Callable | None = None, slots: int = 0, heartbeat_s: float = HEARTBEAT_S) -> None:
    """Submit every unit whose dependencies are finished (the engine queues them by their resources), hand
    each result to the collector as it arrives, submit what became ready. Dependencies only avoid duplicate
    fits: a unit whose dependency failed still runs.

    `warm(model)` (engines whose workers run several units: Ray on CPUs) submits a warm-up, and `slots` is how
    many units run at once: while a model's first units run and others wait for them, each idle slot loads
    that model (imports, Runner, weights), so the waiting units start at once when they become ready. A
    warm-up's outcome is ignored (a unit that fails reports its own error).

    `wait_any(handles, timeout)` returns None when nothing finished within `timeout` seconds; then a line says
    what is still running (a unit may take hours on a cluster, and a silent driver looks hung)."""
    collector.log_units = True
    collector.check_data()
    todo = collector.todo()
    pending = {u.id: u for u in todo}
    finished = {u.id for u in plan.units if u.id not in pending}
    running: dict[Any, Any] = {}
    warming: dict[Any, str] = {}
    warmed: set[str] = set()
    since: dict[str, float] = {}  # unit id -> when it was submitted
    while pending or running:
        ready = [u for u in pending.values() if all(w in finished for w in u.waits_for)]
        for unit in ready:
            del pending[unit.id]
        if ready:
            running.update(zip(submit_many(ready), ready))
            since.update((u.id, time.monotonic()) for u in ready)
        if not running:
            raise BenchError(f"the plan cannot proceed: {sorted(pending)} wait for units that never finish")
        if warm is not None:
            for model in plan.models:
                idle = slots - len(running) - len(warming)
                waiting = sum(u.model == model for u in pending.values())
                if idle <= 0 or model in warmed or not waiting or all(u.model != model for u in running.values()):
                    continue
                warmed.add(model)
                warming.update((warm(model), model) for _ in range(min(idle, waiting)))
        got = wait_any(list(running) + list(warming), heartbeat_s)
        if got is None:
            echo(_still_running(running, pending, since, collector.finished, len(todo)))
            continue
        handle, result, worker = got
        if warming.pop(handle, None) is not None:
            continue
        unit = running.pop(handle)
        finished.add(unit.id)
        collector.add(result, worker)
        echo(f"  finished: {unit.id} [{collector.finished}/{len(todo)} units]")


def _still_running(running: dict, pending: dict, since: dict, finished: int, total: int) -> str:
    now = time.monotonic()
    oldest = min(running.values(), key=lambda u: since.get(u.id, now))
    return (f"  still running: {len(running)} unit(s), {len(pending)} waiting, {finished}/{total} finished; "
            f"longest: {oldest.id} ({_duration(now - since.get(oldest.id, now))})")


def _duration(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def show_worker_error(echo: Callable, unit_id: str, e: BaseException, lines: int = 60) -> None:
    """The worker's own traceback (the engine's exception carries it as text), as a local run would show it; the
    table and the exit status get its last line."""
    text = str(e).strip().splitlines()
    shown = text[-lines:]
    echo(f"  {unit_id}: the worker raised {type(e).__name__}"
         + (f" (last {lines} of {len(text)} lines)" if len(text) > lines else "") + ":")  # fmt: skip
    for line in shown:
        echo(f"    {line}")


def crash_error(unit, message: str) -> dict:
    return {"unit": unit.id, "metrics": {}, "errors": [f"{unit.id}: {message}"], "fingerprints": {}}

