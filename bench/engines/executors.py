"""Executors: where the units of a plan (bench.run.plan) run.

- `local` (the default): in this process, in plan order; each model is loaded once.
- `ray`: one Ray task per unit (`num_gpus=--gpus-per-job`, `num_cpus=--cpus-per-job`) on an existing cluster
  (`--address auto|HOST`, or RAY_ADDRESS as set by `ray job submit`) or, without one, an in-process cluster on
  this machine (loopback only, no dashboard, usage statistics off).
- `slurm`: one submitit job per unit (job arrays of the units that are ready together), `--slurm-partition`,
  `--slurm-time`, `--slurm-mem`, `--slurm-array-parallelism`; `--no-wait` submits and returns, and running the
  same command again collects what finished (and submits what is ready). `--slurm-cluster local` runs the jobs
  as local processes through submitit's LocalExecutor (tests, a box without SLURM).

Only names and dicts travel to a worker: the request (RunRequest fields) and the unit. Fitted artifacts and
scores travel through the shared content-addressed cache (bench.run.cache.Cache; its first complete writer wins),
so a worker needs the same installation and the same paths (cache, data, local models) as the driver. A
worker returns plain data (rows, cache keys, data fingerprints, errors, what it ran on); the driver
(bench.run.runner.Runner with Collector below) is the only writer of results.jsonl and writes it in plan order as
units finish: every executor gives the same file.

Failures: a worker that dies (killed, out of memory, node lost) is retried up to `--max-retries` times (Ray's
task retries; for SLURM the job is resubmitted); a unit that raises a BenchError reports it (the run ends with
status 2 listing it, its rows are absent so the next run retries it) and the other units finish; an
interrupted driver resumes from the run directory and the cache when the command is run again.
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from bench.errors import BenchError
from bench.files import write_json

EXECUTORS = ("local", "ray", "slurm")
HEARTBEAT_S = 300.0  # remote units: a line on what is still running when nothing finished for this long


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


class _Executor:
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
        _import_submitit()
    elif options.kind == "ray" and importlib.util.find_spec("ray") is None:  # not imported yet: see RayExecutor.start
        raise BenchError(RAY_HINT)
    return {"local": LocalExecutor, "ray": RayExecutor, "slurm": SlurmExecutor}[options.kind](options)


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


def _import_submitit():
    try:
        import submitit
    except ImportError:
        raise BenchError("--executor slurm needs submitit: pip install 'bench-debias[slurm]'") from None
    return submitit


# ---- the driver's side ---------------------------------------------------------------------------------------
class Collector:
    """Receives what units return; keeps the rows in plan order; writes results.jsonl (the only writer); writes
    the rows aggregated over seeds once every seed of a (model, chain) is in."""

    def __init__(self, runner, plan):
        self.runner, self.plan = runner, plan
        self.store = runner.store
        self.multi_seed = len(plan.seeds) > 1
        self.per_seed: dict[tuple, dict] = {}  # (model, chain, metric) -> {seed: what the unit reported}
        self.finished = 0
        self.log_units = False  # remote executors: OUT/units.jsonl records where each unit ran
        self._unlogged: list[dict] = []

    def _have(self, model, chain, metric, seed) -> bool:
        return self.store is not None and self.store.done(model, chain, metric, seed)

    def _aggregated(self, model, chain, metric) -> bool:
        return self.store is not None and self.store.aggregated(model, chain, metric)

    def skip(self, unit) -> list[str]:
        """The unit's metrics whose rows the run directory already has."""
        return [m for m in unit.metrics if self._have(unit.model, unit.chain, m, unit.seed)]

    def needed(self, unit) -> bool:
        if len(self.skip(unit)) < len(unit.metrics):
            return True
        return self.multi_seed and any(not self._aggregated(unit.model, unit.chain, m) for m in unit.metrics)

    def todo(self) -> list:
        return [u for u in self.plan.units if self.needed(u)]

    def check_data(self) -> None:
        """Before anything runs remotely: refuse a resume over changed data files, for every model whose data
        directory is known without loading it (bench.run.plan.light_subject); the others are checked when their
        first unit reports its fingerprints."""
        if self.store is None:
            return
        from bench.run.plan import light_subject

        for model in self.plan.models:
            light = light_subject(model, self.runner.data_dir, self.runner.cache.root)
            if light is not None:
                self.store.record_data(self.runner.data_fingerprints(light, self.runner.context(light)))

    def add(self, result: dict, worker: dict | None = None) -> None:
        runner, unit = self.runner, self.plan.by_id[result["unit"]]
        if self.store is not None and result.get("fingerprints"):
            self.store.record_data(result["fingerprints"])  # a changed data file refuses the run (RunConflict)
        for message in result.get("log", ()):
            runner.echo(message)
        runner.errors.extend(result.get("errors", ()))
        runner.error_rows.extend(result.get("error_rows", ()))
        if worker is not None:
            runner.units.append({"unit": unit.id, **worker, "errors": len(result.get("errors", ()))})
            self._unlogged.append(runner.units[-1])
        rows: list[dict] = []
        for metric, got in result.get("metrics", {}).items():
            if got.get("rows") and not self._have(unit.model, unit.chain, metric, unit.seed):
                rows += got["rows"]
            self.per_seed.setdefault((unit.model, unit.chain, metric), {})[unit.seed] = got
        if self.multi_seed:
            for metric in unit.metrics:
                rows += self._aggregate(unit.model, unit.chain, metric)
        self.finished += 1
        self._write(rows)

    def _aggregate(self, model, chain, metric) -> list[dict]:
        got = self.per_seed.get((model, chain, metric), {})
        if any(seed not in got for seed in self.plan.seeds) or self._aggregated(model, chain, metric):
            return []
        if self.store is None and any(r.get("aggregate") and r["model"] == model and r["method"] == chain
                                      and r["metric"] == metric for r in self.runner.rows):  # fmt: skip
            return []
        try:
            return self.runner.aggregate_rows(model, chain, metric, [got[s] for s in self.plan.seeds])
        except BenchError as e:
            self.runner.errors.append(str(e))
            return []

    def _write(self, rows: list[dict]) -> None:
        if self.store is not None:
            if rows:  # (a run with nothing new leaves the file as it is, e.g. resumed with the names reordered)
                self.store.add(rows, order=self.plan.row_key)
            if self.log_units and self._unlogged and self.store.results_path.is_file():
                from bench.files import write_text

                log = self.store.out / "units.jsonl"
                old = log.read_text(encoding="utf-8") if log.is_file() else ""
                write_text(log, old + "".join(json.dumps(u, sort_keys=True) + "\n" for u in self._unlogged))
                self._unlogged.clear()
        else:
            self.runner.rows.extend(rows)
            self.runner.rows.sort(key=self.plan.row_key)

    def finish(self) -> None:
        self._write([])


def _worker_info(start: float, kind: str) -> dict:
    return {"executor": kind, "host": socket.gethostname(), "pid": os.getpid(),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "start": start, "end": time.time()}  # fmt: skip


# ---- local -------------------------------------------------------------------------------------------------------
class LocalExecutor(_Executor):
    """In this process, in plan order (today's behaviour): each model is loaded once and its data fingerprints
    are checked before its first unit, even when everything is done."""

    name = "local"

    def __init__(self, options: ExecutorOptions | None = None):
        self.options = options or ExecutorOptions()

    def execute(self, runner, plan, collector: Collector) -> None:
        todo = collector.todo()
        total = len(plan.units) * len(plan.metrics)
        done = 0
        for model in plan.models:
            base = runner.base_subject(model)
            runner.record_data(base, runner.context(base))
            for unit in plan.units:
                if unit.model != model:
                    continue
                if unit not in todo:
                    done += len(unit.metrics)
                    continue
                skip = collector.skip(unit)
                done += len(skip)
                start = time.time()
                result = runner.run_unit(unit.to_dict(), skip, progress=(done, total))
                done += len(unit.metrics) - len(skip)
                collector.add(result, _worker_info(start, "local"))


# ---- the worker's side of the remote executors -------------------------------------------------------------------
_WORKER_RUNNERS: dict = {}  # a worker process that runs several units of one run keeps its Runner


def work(request: dict, unit: dict, skip: list[str], kind: str, cpus: int = 1) -> dict:
    """Run one unit in a worker process: names and dicts in, plain data out (see bench.run.runner.Runner.run_unit).
    A worker that runs several units of a run (Ray reuses its workers) keeps the Runner and the last base model
    it loaded; it holds one model at a time (GPU memory)."""
    start = time.time()
    import torch

    from bench.run.runner import Runner, RunRequest

    torch.set_num_threads(max(1, int(cpus)))
    log: list[str] = []
    key = json.dumps(request, sort_keys=True, default=str)
    runner = _WORKER_RUNNERS.get(key)
    if runner is None:
        _WORKER_RUNNERS.clear()
        runner = _WORKER_RUNNERS[key] = Runner(RunRequest(**request), out=None, echo=log.append)
    runner.echo = log.append
    if unit["model"] not in runner._subjects:
        runner._subjects.clear()
        runner._base_scores.clear()
    if unit.get("warm"):  # load the model the next units of this worker will need (see _schedule)
        runner.base_subject(unit["model"])
        return {"unit": unit["id"], "warm": True, "worker": _worker_info(start, kind)}
    result = runner.run_unit(unit, skip)
    result["log"] = log
    result["worker"] = _worker_info(start, kind)
    return result


def _request_dict(runner) -> dict:
    from dataclasses import asdict

    req = asdict(runner.request)
    req["device"] = runner.request.device  # each worker resolves "auto" on its own node
    req["cache_dir"] = str(runner.cache.root)
    req["data_dir"] = str(runner.data_dir)
    req["progress"] = False
    return req


def warm_unit(model: str) -> dict:
    return {"id": f"warm-up: {model}", "model": model, "warm": True}


def _schedule(plan, collector: Collector, submit_many: Callable, wait_any: Callable, echo: Callable,
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


def _show_worker_error(echo: Callable, unit_id: str, e: BaseException, lines: int = 60) -> None:
    """The worker's own traceback (the engine's exception carries it as text), as a local run would show it; the
    table and the exit status get its last line."""
    text = str(e).strip().splitlines()
    shown = text[-lines:]
    echo(f"  {unit_id}: the worker raised {type(e).__name__}"
         + (f" (last {lines} of {len(text)} lines)" if len(text) > lines else "") + ":")  # fmt: skip
    for line in shown:
        echo(f"    {line}")


def _crash_error(unit, message: str) -> dict:
    return {"unit": unit.id, "metrics": {}, "errors": [f"{unit.id}: {message}"], "fingerprints": {}}


# ---- Ray ---------------------------------------------------------------------------------------------------------
class RayExecutor(_Executor):
    name = "ray"

    def __init__(self, options: ExecutorOptions):
        self.options = options
        self.startup_s: float | None = None
        self._ray = None  # the module, once this process called ray.init
        self._owns_cluster = False  # an in-process cluster (stopped by close), not an existing one

    def start(self) -> None:
        if self._ray is not None:
            return
        address = self.options.address or os.environ.get("RAY_ADDRESS")
        if address:
            _check_reachable(address)
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        loopback = not address or address.rsplit(":", 1)[0] in ("127.0.0.1", "localhost", "[::1]")
        if loopback:  # this process talks to the cluster on loopback (read by Ray when imported, and by its processes)
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        if not address:  # token authentication, Ray's default for a new cluster, set so that Ray does not warn
            os.environ.setdefault("RAY_AUTH_MODE", "token")
        elif "RAY_AUTH_MODE" not in os.environ and _ray_token_available():
            # a cluster from `ray start` uses token authentication by default, but a driver that connects to it
            # sends its token only when told to (as Ray's own CLI does when a token is at hand)
            os.environ["RAY_AUTH_MODE"] = "token"
        try:
            import ray
        except ImportError:
            raise BenchError(RAY_HINT) from None
        if ray.is_initialized():  # a caller that connected on its own keeps its connection
            return
        if loopback:
            try:  # Ray imported before the variable was set: the same switch, set on the imported module
                from ray._private import ray_constants

                ray_constants.ENABLE_RAY_CLUSTER = os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] not in ("0", "false")
            except (ImportError, AttributeError):
                pass
        t0 = time.perf_counter()
        # no runtime_env: the in-process cluster's workers inherit this process's environment; on an existing
        # cluster (e.g. under `ray job submit`) the job's own runtime environment stays as it is
        common = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
        if address:
            try:
                ray.init(address=address, **common)
            except (ConnectionError, RuntimeError) as e:
                last = str(e).strip().splitlines()[-1][:300]
                raise BenchError(f"could not connect to the Ray cluster at {address} ({last}); start one with "
                                 "`ray start --head`, pass its address (--address HOST:PORT, or auto on one of its "
                                 "nodes), and if it uses token authentication give this process its token "
                                 "(RAY_AUTH_TOKEN, or ~/.ray/auth_token)") from None  # fmt: skip
        else:
            gpus = self.options.ray_gpus
            if gpus is None:
                import torch

                gpus = torch.cuda.device_count()
            # address="local": a new cluster even when `ray start` runs on this machine (ray.init would join it)
            ray.init(address="local", num_cpus=self.options.ray_cpus or os.cpu_count() or 1, num_gpus=gpus, **common)
        self.startup_s = time.perf_counter() - t0
        self._ray, self._owns_cluster = ray, not address

    def close(self) -> None:
        """Stop the in-process cluster, or disconnect from an existing one (which keeps running)."""
        if self._ray is not None:
            self._ray.shutdown()
        self._ray, self._owns_cluster = None, False

    def _slots(self, ray) -> int:
        """How many units the cluster runs at once (by CPUs and GPUs per unit)."""
        res, opts = ray.cluster_resources(), self.options
        slots = int(res.get("CPU", 0) // opts.cpus_per_job) if opts.cpus_per_job else 1 << 30
        if opts.gpus_per_job:
            slots = min(slots, int(res.get("GPU", 0) // opts.gpus_per_job))
        return max(1, slots)

    def execute(self, runner, plan, collector: Collector) -> None:
        started_here = self._ray is None
        self.start()
        import ray

        try:
            res = ray.cluster_resources()
            how = "started an in-process cluster" if self._owns_cluster else "connected to the cluster"
            runner.echo(f"ray: {how} ({res.get('CPU', 0):g} CPUs, {res.get('GPU', 0):g} GPUs)"
                        + (f" in {self.startup_s:.1f}s" if self._ray is not None else ""))  # fmt: skip
            opts = self.options
            # a GPU unit gets a fresh worker process (max_calls=1): a reused process would keep the CUDA device and
            # memory of its previous unit (ray-project/ray#29624); CPU workers are reused and warmed up (_schedule)
            remote = ray.remote(num_cpus=opts.cpus_per_job, num_gpus=opts.gpus_per_job, max_retries=opts.max_retries,
                                retry_exceptions=False, **({"max_calls": 1} if opts.gpus_per_job else {}))(work)  # fmt: skip
            request = _request_dict(runner)
            unit_of: dict = {}

            def submit_many(units):
                refs = []
                for unit in units:
                    runner.echo(f"[{unit.model}] {unit.chain} (seed {unit.seed}): submitted")
                    ref = remote.remote(request, unit.to_dict(), collector.skip(unit), "ray", opts.cpus_per_job)
                    unit_of[ref] = unit
                    refs.append(ref)
                return refs

            def warm(model):
                ref = remote.remote(request, warm_unit(model), [], "ray", opts.cpus_per_job)
                unit_of[ref] = None
                return ref

            def wait_any(refs, timeout):
                done, _ = ray.wait(refs, num_returns=1, timeout=timeout)
                if not done:
                    return None
                (ready,) = done
                try:
                    result = ray.get(ready)
                except Exception as e:  # noqa: BLE001 - a crash after all retries, or a bug in the worker
                    if unit_of[ready] is None:
                        return ready, None, None
                    _show_worker_error(runner.echo, unit_of[ready].id, e)
                    why = (f"worker failed ({type(e).__name__}: {str(e).strip().splitlines()[-1][:300]}); "
                           f"a crashed worker is retried {opts.max_retries} times")  # fmt: skip
                    return ready, _crash_error(unit_of[ready], why), None
                return ready, result, result.pop("worker", None)

            warm_up = warm if not opts.gpus_per_job else None
            _schedule(plan, collector, submit_many, wait_any, runner.echo, warm=warm_up, slots=self._slots(ray))
        finally:
            if started_here:
                self.close()


# ---- SLURM (submitit) --------------------------------------------------------------------------------------------
class SlurmExecutor(_Executor):
    name = "slurm"

    def __init__(self, options: ExecutorOptions):
        self.options = options

    def _executor(self, folder: Path):
        submitit = _import_submitit()
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

    def execute(self, runner, plan, collector: Collector) -> None:
        submitit = _import_submitit()
        opts = self.options
        if opts.slurm_folder:
            folder = Path(opts.slurm_folder)
        elif runner.store is not None:
            folder = runner.store.out / ".bench-slurm"
        else:
            raise BenchError("--executor slurm needs --out (or --slurm-folder) for its job files")
        folder = folder.resolve()
        ex, cluster = self._executor(folder)
        local = cluster == "local"
        request = _request_dict(runner)
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
            runner.echo(f"[{handle.unit.model}] {handle.unit.chain} (seed {handle.unit.seed}): job {handle.job.job_id}")

        def args(unit):
            return (work, request, unit.to_dict(), collector.skip(unit), "slurm", opts.cpus_per_job)

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
                            runner.echo(f"  {h.unit.id}: job {h.job.job_id} died ({first}); resubmitting "
                                        f"({n + 1}/{opts.max_retries})")  # fmt: skip
                            resubmit(h)
                            continue
                        return h, _crash_error(h.unit, f"job died {n + 1} times ({first})"), None
                    except Exception as e:  # noqa: BLE001 - an exception in the worker (a bug): the unit's error
                        _show_worker_error(runner.echo, h.unit.id, e)
                        last = str(e).strip().splitlines()[-1][:300]
                        return h, _crash_error(h.unit, f"job {h.job.job_id} failed: {last}"), None
                    submitted.pop(h.unit.id, None)
                    return h, result, result.pop("worker", None)
                fill()
                time.sleep(opts.poll_s)
            return None

        if opts.no_wait:
            self._no_wait(runner, plan, collector, submitit, folder, submitted, submit_many, jobs_file)
            return
        _schedule(plan, collector, submit_many, wait_any, runner.echo)
        if jobs_file.is_file():
            jobs_file.unlink()

    def _no_wait(self, runner, plan, collector, submitit, folder, submitted, submit_many, jobs_file) -> None:
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
                    runner.echo(f"  {uid}: job {rec['job_id']} did not finish ({type(e).__name__}); resubmitting")
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
            runner.echo(f"slurm: {running} job(s) still running, {len(ready)} submitted, {left} unit(s) not finished; "
                        "run the same command again to collect")  # fmt: skip
            runner.incomplete = True
        else:
            runner.echo("slurm: every unit is finished")
            if jobs_file.is_file():
                jobs_file.unlink()


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Ray retries an unreachable cluster for minutes without a word: one TCP connection attempt to its GCS port
    first (HOST:PORT addresses; `auto` and ray:// are left to Ray)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or "://" in address:
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise BenchError(f"no Ray cluster answers at {address} ({e.strerror or e}); start one with `ray start --head` "
                         "and pass the address it prints (--address HOST:PORT), or leave out --address (and "
                         "RAY_ADDRESS) for an in-process cluster on this machine") from None  # fmt: skip


def _ray_token_available() -> bool:
    return bool(os.environ.get("RAY_AUTH_TOKEN")) or Path(
        os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token").is_file()


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


def executor_names() -> tuple[str, ...]:
    return EXECUTORS


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use `bench run --executor ...`")
