"""The SLURM engine (submitit): one job per unit, job arrays of the units that are ready together."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from bench.engines.base import Engine, ExecutorOptions, Job, import_submitit
from bench.engines.schedule import crash_error, schedule, show_worker_error
from bench.errors import BenchError
from bench.files import write_json


class SlurmExecutor(Engine):
    name = "slurm"

    def __init__(self, options: ExecutorOptions):
        self.options = options

    def _executor(self, folder: Path):
        submitit = import_submitit()
        opts = self.options
        if opts.slurm_cluster == "local":
            ex = submitit.LocalExecutor(folder=str(folder))
            ex.update_parameters(timeout_min=int(opts.slurm_time))
            return ex, "local"
        ex = submitit.AutoExecutor(folder=str(folder), cluster=opts.slurm_cluster)
        params: dict = {"timeout_min": int(opts.slurm_time), "cpus_per_task": int(opts.cpus_per_job),
                        "slurm_array_parallelism": int(opts.slurm_array_parallelism), "name": "bench",
                        "gpus_per_node": int(opts.gpus_per_job)}  # fmt: skip
        if opts.slurm_partition:
            params["slurm_partition"] = opts.slurm_partition
        if opts.slurm_mem:
            params["slurm_mem"] = opts.slurm_mem
        ex.update_parameters(**params)
        return ex, ex.cluster

    def execute(self, job: Job, plan, collector) -> None:
        submitit = import_submitit()
        opts = self.options
        if opts.slurm_folder:
            folder = Path(opts.slurm_folder)
        elif job.out is not None:
            folder = job.out / ".bench-slurm"
        else:
            raise BenchError("--executor slurm needs --out (or --slurm-folder) for its job files")
        folder = folder.resolve()
        ex, cluster = self._executor(folder)
        local = cluster == "local"
        request = job.request
        jobs_file = folder / "jobs.json"
        submitted = json.loads(jobs_file.read_text()) if jobs_file.is_file() else {}
        gpus = int(opts.gpus_per_job)
        # submitit's local cluster starts every job at once and gives each the same GPUs: the driver keeps at
        # most --slurm-array-parallelism jobs running and pins each to its own (SLURM does both on a cluster)
        free = list(range(max(1, opts.slurm_array_parallelism)))
        if opts.no_wait:  # nobody stays to start queued jobs: submit every ready unit at once
            free = list(range(max(len(free), len(plan.units))))
        queue: list[_JobHandle] = []
        retries: dict[str, int] = {}

        def record(handle):
            submitted[handle.unit.id] = {"job_id": handle.job.job_id, "cluster": cluster}
            job.echo(f"[{handle.unit.model}] {handle.unit.chain} (seed {handle.unit.seed}): job {handle.job.job_id}")

        def args(unit):
            return (job.work, request, unit.to_dict(), collector.skip(unit), "slurm", opts.cpus_per_job)

        def fill():
            while queue and free:
                h = queue.pop(0)
                h.slot = free.pop(0)
                if gpus:
                    ex.update_parameters(visible_gpus=tuple(range(h.slot * gpus, (h.slot + 1) * gpus)), gpus_per_node=gpus)
                h.job = ex.submit(*args(h.unit))
                record(h)
            write_json(jobs_file, submitted)

        def submit_many(units):
            handles = [_JobHandle(None, u) for u in units]
            if local:
                queue.extend(handles)
                fill()
                return handles
            with ex.batch():  # one job array; --slurm-array-parallelism bounds how many run at once
                jobs = [ex.submit(*args(u)) for u in units]
            for h, job in zip(handles, jobs):
                h.job = job
                record(h)
            write_json(jobs_file, submitted)
            return handles

        def resubmit(h):
            if local:
                h.job = None
                queue.insert(0, h)
                fill()
            else:
                h.job = ex.submit(*args(h.unit))
                record(h)
                write_json(jobs_file, submitted)

        def wait_any(handles, timeout):
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                for h in handles:
                    if h.job is None or not h.job.done():
                        continue
                    if h.slot is not None:
                        free.append(h.slot)
                        free.sort()
                        h.slot = None
                    try:
                        result = h.job.result()
                    except submitit.core.utils.UncompletedJobError as e:  # the process died: resubmit (bounded)
                        n = retries.get(h.unit.id, 0)
                        first = str(e).strip().splitlines()[0][:200]
                        if n < opts.max_retries:
                            retries[h.unit.id] = n + 1
                            job.echo(f"  {h.unit.id}: job {h.job.job_id} died ({first}); resubmitting "
                                        f"({n + 1}/{opts.max_retries})")  # fmt: skip
                            resubmit(h)
                            continue
                        return h, crash_error(h.unit, f"job died {n + 1} times ({first})"), None
                    except Exception as e:  # noqa: BLE001 - an exception in the worker (a bug): the unit's error
                        show_worker_error(job.echo, h.unit.id, e)
                        last = str(e).strip().splitlines()[-1][:300]
                        return h, crash_error(h.unit, f"job {h.job.job_id} failed: {last}"), None
                    submitted.pop(h.unit.id, None)
                    return h, result, result.pop("worker", None)
                fill()
                time.sleep(opts.poll_s)
            return None

        if opts.no_wait:
            self._no_wait(job, plan, collector, submitit, folder, submitted, submit_many, jobs_file)
            return
        schedule(plan, collector, submit_many, wait_any, job.echo)
        if jobs_file.is_file():
            jobs_file.unlink()

    def _no_wait(self, job: Job, plan, collector, submitit, folder, submitted, submit_many, jobs_file) -> None:
        """Collect the jobs of an earlier --no-wait call that finished, submit every unit that is ready and not
        running, and return. Run the same command again until it says that every unit is finished."""
        running = 0
        collector.log_units = True
        collector.check_data()
        finished = {u.id for u in plan.units if not collector.needed(u)}
        for uid, rec in list(submitted.items()):
            if uid not in plan.by_id or uid in finished:
                submitted.pop(uid)
                continue
            job = _job(submitit, folder, rec)
            state = _state(job)
            if state == "running":
                running += 1
                continue
            submitted.pop(uid)
            if state == "finished":
                try:
                    result = job.result()
                except Exception as e:  # noqa: BLE001 - died or failed: submitted again below
                    job.echo(f"  {uid}: job {rec['job_id']} did not finish ({type(e).__name__}); resubmitting")
                    continue
                collector.add(result, result.pop("worker", None))
                finished.add(uid)
        write_json(jobs_file, submitted)
        ready = [u for u in plan.units if u.id not in finished and u.id not in submitted
                 and all(w in finished for w in u.waits_for)]  # fmt: skip
        if ready:
            submit_many(ready)
        left = len([u for u in plan.units if u.id not in finished])
        if left:
            job.echo(f"slurm: {running} job(s) still running, {len(ready)} submitted, {left} unit(s) not finished; "
                        "run the same command again to collect")  # fmt: skip
            collector.outcome.incomplete = True
        else:
            job.echo("slurm: every unit is finished")
            if jobs_file.is_file():
                jobs_file.unlink()



class _JobHandle:
    def __init__(self, job, unit):
        self.job, self.unit, self.slot = job, unit, None


def _job(submitit, folder: Path, rec: dict):
    if rec.get("cluster") == "local":
        from submitit.local.local import LocalJob

        return LocalJob(folder, rec["job_id"])
    return submitit.SlurmJob(folder, rec["job_id"])


def _state(job) -> str:
    """finished | running | lost (a job of an earlier driver whose outcome is unknown: resubmit)."""
    if job.paths.result_pickle.exists():
        return "finished"
    try:
        state = str(job.state).upper()
    except Exception:  # noqa: BLE001
        return "lost"
    if state in ("RUNNING", "PENDING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED"):
        return "running"
    if state.startswith("NO PROCESS") and _alive(job.job_id):
        return "running"
    return "lost"


def _alive(job_id: str) -> bool:
    try:
        os.kill(int(job_id), 0)
        return True
    except (ValueError, ProcessLookupError, PermissionError):
        return False
