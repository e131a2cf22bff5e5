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
        jobs = _Jobs(ex, cluster, job, collector, opts, folder / "jobs.json", len(plan.units))
        if opts.no_wait:
            _no_wait(jobs, plan, collector, submitit, folder)
            return
        schedule(plan, collector, jobs.submit_many, jobs.wait_any, job.echo)
        if jobs.file.is_file():
            jobs.file.unlink()


class _Jobs:
    """The submitted jobs of a run (recorded in `jobs.json` for --no-wait) and how they are submitted, waited
    for and resubmitted. submitit's local cluster starts every job at once and gives each the same GPUs: the
    driver keeps at most --slurm-array-parallelism jobs running and pins each to its own (SLURM does both on a
    cluster)."""

    def __init__(self, ex, cluster: str, job: Job, collector, opts: ExecutorOptions, file: Path, n_units: int):
        self.ex, self.cluster, self.job, self.collector, self.opts, self.file = ex, cluster, job, collector, opts, file
        self.local = cluster == "local"
        self.submitted: dict = json.loads(file.read_text()) if file.is_file() else {}
        self.gpus = int(opts.gpus_per_job)
        self.free = list(range(max(1, opts.slurm_array_parallelism)))
        if opts.no_wait:  # nobody stays to start queued jobs: submit every ready unit at once
            self.free = list(range(max(len(self.free), n_units)))
        self.queue: list[_JobHandle] = []
        self.retries: dict[str, int] = {}

    def save(self) -> None:
        write_json(self.file, self.submitted)

    def _record(self, h) -> None:
        self.submitted[h.unit.id] = {"job_id": h.job.job_id, "cluster": self.cluster}
        self.job.echo(f"[{h.unit.model}] {h.unit.chain} (seed {h.unit.seed}): job {h.job.job_id}")

    def _args(self, unit) -> tuple:
        return (self.job.work, self.job.request, unit.to_dict(), self.collector.skip(unit), "slurm",
                self.opts.cpus_per_job)  # fmt: skip

    def fill(self) -> None:
        while self.queue and self.free:
            h = self.queue.pop(0)
            h.slot = self.free.pop(0)
            if self.gpus:
                gpus = tuple(range(h.slot * self.gpus, (h.slot + 1) * self.gpus))
                self.ex.update_parameters(visible_gpus=gpus, gpus_per_node=self.gpus)
            h.job = self.ex.submit(*self._args(h.unit))
            self._record(h)
        self.save()

    def submit_many(self, units) -> list:
        handles = [_JobHandle(None, u) for u in units]
        if self.local:
            self.queue.extend(handles)
            self.fill()
            return handles
        with self.ex.batch():  # one job array; --slurm-array-parallelism bounds how many run at once
            submitted = [self.ex.submit(*self._args(u)) for u in units]
        for h, sjob in zip(handles, submitted):
            h.job = sjob
            self._record(h)
        self.save()
        return handles

    def _resubmit(self, h) -> None:
        if self.local:
            h.job = None
            self.queue.insert(0, h)
            self.fill()
        else:
            h.job = self.ex.submit(*self._args(h.unit))
            self._record(h)
            self.save()

    def wait_any(self, handles, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for h in handles:
                if h.job is None or not h.job.done():
                    continue
                if h.slot is not None:
                    self.free.append(h.slot)
                    self.free.sort()
                    h.slot = None
                got = self._outcome(h)
                if got is not None:
                    return got
            self.fill()
            time.sleep(self.opts.poll_s)
        return None

    def _outcome(self, h):
        """(handle, result, worker) of a finished job, or None when it died and was resubmitted."""
        import submitit

        try:
            result = h.job.result()
        except submitit.core.utils.UncompletedJobError as e:  # the process died: resubmit (bounded)
            n = self.retries.get(h.unit.id, 0)
            first = str(e).strip().splitlines()[0][:200]
            if n < self.opts.max_retries:
                self.retries[h.unit.id] = n + 1
                self.job.echo(f"  {h.unit.id}: job {h.job.job_id} died ({first}); resubmitting "
                              f"({n + 1}/{self.opts.max_retries})")  # fmt: skip
                self._resubmit(h)
                return None
            return h, crash_error(h.unit, f"job died {n + 1} times ({first})"), None
        except Exception as e:  # noqa: BLE001 - an exception in the worker (a bug): the unit's error
            show_worker_error(self.job.echo, h.unit.id, e)
            last = str(e).strip().splitlines()[-1][:300]
            return h, crash_error(h.unit, f"job {h.job.job_id} failed: {last}"), None
        self.submitted.pop(h.unit.id, None)
        return h, result, result.pop("worker", None)


def _no_wait(jobs: _Jobs, plan, collector, submitit, folder: Path) -> None:
    """Collect the jobs of an earlier --no-wait call that finished, submit every unit that is ready and not
    running, and return. Run the same command again until it says that every unit is finished."""
    echo, submitted, running = jobs.job.echo, jobs.submitted, 0
    collector.log_units = True
    collector.check_data()
    finished = {u.id for u in plan.units if not collector.needed(u)}
    for uid, rec in list(submitted.items()):
        if uid not in plan.by_id or uid in finished:
            submitted.pop(uid)
            continue
        sjob = _job(submitit, folder, rec)
        state = _state(sjob)
        if state == "running":
            running += 1
            continue
        submitted.pop(uid)
        if state == "finished":
            try:
                result = sjob.result()
            except Exception as e:  # noqa: BLE001 - died or failed: submitted again below
                echo(f"  {uid}: job {rec['job_id']} did not finish ({type(e).__name__}); resubmitting")
                continue
            collector.add(result, result.pop("worker", None))
            finished.add(uid)
    jobs.save()
    ready = [u for u in plan.units if u.id not in finished and u.id not in submitted
             and all(w in finished for w in u.waits_for)]  # fmt: skip
    if ready:
        jobs.submit_many(ready)
    left = len([u for u in plan.units if u.id not in finished])
    if left:
        echo(f"slurm: {running} job(s) still running, {len(ready)} submitted, {left} unit(s) not finished; "
             "run the same command again to collect")  # fmt: skip
        collector.outcome.incomplete = True
    else:
        echo("slurm: every unit is finished")
        if jobs.file.is_file():
            jobs.file.unlink()


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
    except Exception:  # noqa: BLE001 - submitit asks the scheduler, which may fail in many ways: unknown
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
