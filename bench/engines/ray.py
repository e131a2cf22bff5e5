"""The Ray engine: one Ray task per unit, on an existing cluster or an in-process one on this machine."""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from bench.engines.base import RAY_HINT, Engine, ExecutorOptions, Job
from bench.engines.schedule import crash_error, schedule, show_worker_error, warm_unit
from bench.errors import BenchError


class RayExecutor(Engine):
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

    def execute(self, job: Job, plan, collector) -> None:
        started_here = self._ray is None
        self.start()
        import ray

        try:
            res = ray.cluster_resources()
            how = "started an in-process cluster" if self._owns_cluster else "connected to the cluster"
            job.echo(f"ray: {how} ({res.get('CPU', 0):g} CPUs, {res.get('GPU', 0):g} GPUs)"
                        + (f" in {self.startup_s:.1f}s" if self._ray is not None else ""))  # fmt: skip
            opts = self.options
            # a GPU unit gets a fresh worker process (max_calls=1): a reused process would keep the CUDA device and
            # memory of its previous unit (ray-project/ray#29624); CPU workers are reused and warmed up (_schedule)
            remote = ray.remote(num_cpus=opts.cpus_per_job, num_gpus=opts.gpus_per_job, max_retries=opts.max_retries,
                                retry_exceptions=False, **({"max_calls": 1} if opts.gpus_per_job else {}))(job.work)  # fmt: skip
            request = job.request
            unit_of: dict = {}

            def submit_many(units):
                refs = []
                for unit in units:
                    job.echo(f"[{unit.model}] {unit.chain} (seed {unit.seed}): submitted")
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
                    show_worker_error(job.echo, unit_of[ready].id, e)
                    why = (f"worker failed ({type(e).__name__}: {str(e).strip().splitlines()[-1][:300]}); "
                           f"a crashed worker is retried {opts.max_retries} times")  # fmt: skip
                    return ready, crash_error(unit_of[ready], why), None
                return ready, result, result.pop("worker", None)

            warm_up = warm if not opts.gpus_per_job else None
            schedule(plan, collector, submit_many, wait_any, job.echo, warm=warm_up, slots=self._slots(ray))
        finally:
            if started_here:
                self.close()



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

