"""Test-only fault injection into executor workers (tests/test_executors.py); bench itself has no such hook.

A test puts this folder on PYTHONPATH and sets BENCH_TEST_FAULT='{"unit": "<part of a unit id>", "action":
"kill"|"raise", "marker": PATH}'. Every Python process started with that environment (the driver, Ray's workers,
submitit's jobs) then runs bench.run.unit.work through `_inject_fault`, which kills the process (SIGKILL) the first
time it runs a matching unit (the marker file, created once, records the pid) or raises a BenchError in it.
"""
from __future__ import annotations

import functools
import json
import os
import signal


def wrap(work, fault: dict):
    @functools.wraps(work)  # same module and name: Ray and submitit ship it by reference, as they ship `work`
    def faulty_work(request, unit, *args, **kwargs):
        if not unit.get("warm") and fault["unit"] in unit["id"]:
            _inject_fault(unit, fault)
        return work(request, unit, *args, **kwargs)

    return faulty_work


def _inject_fault(unit: dict, fault: dict) -> None:
    if fault["action"] == "raise":
        from bench.errors import BenchError

        raise BenchError(f"injected failure in {unit['id']}")
    try:
        fd = os.open(fault["marker"], os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:  # killed once already: the retry runs
        return
    os.write(fd, f"{os.getpid()}\n".encode())
    os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)


if os.environ.get("BENCH_TEST_FAULT"):
    import bench.run.unit

    bench.run.unit.work = wrap(bench.run.unit.work, json.loads(os.environ["BENCH_TEST_FAULT"]))
