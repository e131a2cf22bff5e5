"""One unit of a run in this process: load the model, debias it (artifacts through the cache), score it (scores
through the cache) and return the rows as plain data. The driver (bench.run.runner) runs units through a worker of
its own; a remote engine's worker process runs `work()`, which builds one from the request's fields."""
from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Iterable

from bench import serialize
from bench.api import (Context, NotApplicable, Scores, bias_type_note, load_scores, model_kind_note, requirement_text,
                       save_scores, served, serves_bias_type, serves_model_kind)
from bench.engines.base import worker_info
from bench.data.paths import default_cache_dir, default_data_dir, file_fingerprints, fingerprint
from bench.errors import BenchError, IdenticalSubject
from bench.files import stable_hash
from bench.models.loading import load_subject, resolve_device
from bench.models.subject import Subject
from bench.registry import METRICS, make_method, make_metric
from bench.cache import Cache, code_hash
from bench.run.checks import check_cache_dir
from bench.run.request import RunRequest
from bench.run.rows import RowBuilder
from bench.stats import StatsConfig


class UnitWorker:
    """Runs units of one request in this process, keeping the base models it loaded (and their base scores)."""

    def __init__(self, request: RunRequest, echo: Callable[[str], None] = print):
        self.request = request.normalised()
        self.stats = StatsConfig(seed=self.request.seed, **self.request.stats)
        root = Path(self.request.cache_dir) if self.request.cache_dir else default_cache_dir()
        check_cache_dir(root, given=bool(self.request.cache_dir))
        self.cache = Cache(root, warn=self._cache_warning)
        self.data_dir = Path(self.request.data_dir) if self.request.data_dir else default_data_dir()
        self.device = resolve_device(self.request.device)
        self.echo = echo
        self.row_builder = RowBuilder(self.request, self.cached_scores, self.cache.root)
        self._subjects: dict[str, Subject] = {}  # base models loaded in this process
        self._fingerprints: dict[str, dict] = {}
        self._base_scores: dict[tuple, tuple] = {}  # (model, seed, metric) -> (Scores | None, cache key | None)

    def keep_only(self, model: str) -> None:
        """Forget the base models (and their scores) other than `model`: a worker holds one model at a time."""
        if model not in self._subjects:
            self._subjects.clear()
            self._base_scores.clear()

    def data_fingerprints(self, subject: Subject, ctx: Context) -> dict[str, str]:
        """Fingerprints of every data file the run's plugins read for this model (and the model's own data
        directory, e.g. the synthetic world's); the run directory records them and a changed file refuses the
        resume."""
        paths = [Path(subject.data_dir)] if subject.data_dir and Path(subject.data_dir).is_dir() else []
        names = [("method", n) for chain in self.request.methods for n in chain.split("+")]
        for kind, name in names + [("metric", n) for n in self.request.metrics]:
            try:
                make = make_method if kind == "method" else make_metric
                files = make(name, self.request.options.get(name)).data_files(ctx)
                paths += [p for p in files if Path(p).is_file() and Path(p).suffix != ".py"]  # code: see code_hash
            except BenchError:  # missing data: the job that needs it reports it
                continue
        return file_fingerprints(paths)

    # ---- contexts and subjects -----------------------------------------------------------------------
    def context(self, subject: Subject, seed: int | None = None) -> Context:
        return Context(
            data_dir=Path(subject.data_dir) if subject.data_dir else self.data_dir,
            cache_dir=self.cache.root, seed=self.request.seed if seed is None else seed, device=self.device,
            options=self.request.options, resamples=self.stats.resamples, progress=self.request.progress,
            run_data_dir=self.data_dir, bias_type=self.request.bias_type,
        )  # fmt: skip

    def load_model(self, name: str) -> Subject:
        return load_subject(name, device=self.device, data_dir=self.data_dir, cache_dir=self.cache.root)

    def base_subject(self, name: str) -> Subject:
        """The base model, loaded once per process."""
        if name not in self._subjects:
            self._subjects[name] = self.load_model(name)
        return self._subjects[name]

    # ---- cache keys (bench.run.plan computes them without loading a model where the subject's identity is known) --
    def method_key(self, name: str, method, subject: Subject, ctx: Context) -> tuple[str, dict]:
        """(artifact cache key, config) of fitting method `name` on `subject`; needs only subject.identity."""
        # a type-independent method (bias_types None, e.g. Dropout) fits the same thing in every run: one entry
        bias_type = ctx.bias_type if type(method).bias_types is not None else None
        cfg = {"method": name, "config": method.config(), "seed": ctx.seed, "bias_type": bias_type}
        files = method.data_files(ctx)
        data = fingerprint(files) if files else ""
        return stable_hash({**cfg, "subject": subject.identity, "data": data, "code": code_hash(method)}), cfg

    def score_key(self, metric_name: str, metric, subject: Subject, ctx: Context) -> str:
        """Score cache key of `metric` on `subject`; needs only subject.identity."""
        files = metric.data_files(ctx)
        return stable_hash({
            "metric": metric_name, "config": metric.config(), "subject": subject.identity, "bias_type": ctx.bias_type,
            "data": fingerprint(files) if files else "", "code": code_hash(metric), "seed": ctx.seed,
            "format": serialize.FORMAT,
        })  # fmt: skip

    def debias(self, base: Subject, chain: str, ctx: Context) -> Subject:
        """Apply each method of `a+b+...` in turn; each is fitted on the output of the previous one."""
        subject = base
        for name in chain.split("+"):
            method = make_method(name, self.request.options.get(name))
            if method.changes == "nothing":
                continue
            if not serves_bias_type(type(method), ctx.bias_type):
                raise NotApplicable(bias_type_note(type(method), ctx.bias_type))
            if not serves_model_kind(type(method), subject.kind):
                raise NotApplicable(model_kind_note(type(method), subject.kind))
            key, cfg = self.method_key(name, method, subject, ctx)
            t0 = time.perf_counter()
            artifact, cached = self.cache.get_or_create(
                "artifacts", name, key, lambda: method.fit(subject, ctx), method.save_artifact, method.load_artifact
            )
            self.echo(f"  {name}: {'cached artifact' if cached else f'fitted in {time.perf_counter() - t0:.1f}s'}")
            new = method.apply(subject, artifact)
            if new.same_as(subject):
                raise IdenticalSubject(
                    f"{name} returned a subject identical to its input on {base.name}; "
                    "refusing to report it as a debiased model (check the method's options)"
                )
            new = new.replace(capabilities=new.capabilities & method.serves)
            subject = new.stamped(name, stable_hash(cfg))
        return subject

    def scores(self, subject: Subject, metric_name: str, ctx: Context) -> Scores:
        return self.scores_and_key(subject, metric_name, ctx)[0]

    def scores_and_key(self, subject: Subject, metric_name: str, ctx: Context) -> tuple[Scores, str]:
        metric = make_metric(metric_name, self.request.options.get(metric_name))
        if not serves_bias_type(type(metric), ctx.bias_type):
            raise NotApplicable(bias_type_note(type(metric), ctx.bias_type))
        key = self.score_key(metric_name, metric, subject, ctx)
        allowed = serialize.plugin_packages(metric)  # the statistics resolve only to the metric's own code (or bench)
        scores, _ = self.cache.get_or_create(
            "scores", metric_name, key, lambda: metric.score(subject, ctx),
            lambda v, p: save_scores(v, p, allowed), lambda p: load_scores(p, allowed),
        )  # fmt: skip
        return scores, key

    def cached_scores(self, metric_name: str, key: str) -> Scores | None:
        """Scores stored under `key` (what a worker computed), or None when the entry is missing or damaged."""
        metric = make_metric(metric_name, self.request.options.get(metric_name))
        allowed = serialize.plugin_packages(metric)
        folder = self.cache.path("scores", metric_name, key)
        if not self.cache.complete(folder):
            return None
        try:
            return load_scores(folder / "artifact", allowed)
        except Exception as e:  # noqa: BLE001 - a damaged entry: the aggregate is left for the next run
            self._cache_warning(f"cannot read cache entry {folder} ({type(e).__name__}: {str(e)[:200]})")
            return None

    def _cache_warning(self, message: str) -> None:
        self.echo(f"  warning: {message}")

    # ---- one unit (what a worker does) ----------------------------------------------------------------
    def run_unit(self, unit: dict, skip: Iterable[str] = (), progress: tuple[int, int] | None = None) -> dict:
        """Run one unit of the plan in this process: {"model", "chain", "seed", "metrics"} (names only).
        Returns plain data: per metric its rows (except metrics in `skip`, whose rows the run already has), the
        score cache keys (of the subject and of the base model, for the aggregate over seeds), the data
        fingerprints, and errors. A BenchError ends the unit (or one metric of it) as an error, not the run."""
        model, chain, seed = unit["model"], unit["chain"], unit["seed"]
        skip = set(skip)
        result: dict = {"unit": unit["id"], "metrics": {}, "errors": [], "fingerprints": {}}
        header = f"[{model}] {chain}" + (f" (seed {seed})" if len(self.request.seeds) > 1 else "")
        self.echo(header)
        try:
            base = self.base_subject(model)
            ctx = self.context(base, seed)
            if model not in self._fingerprints:
                self._fingerprints[model] = self.data_fingerprints(base, ctx)
            result["fingerprints"] = self._fingerprints[model]
        except BenchError as e:
            return self._unit_error(result, model, chain, seed, e)
        try:
            subject = self.debias(base, chain, ctx) if chain != "base" else base
        except NotApplicable as e:  # e.g. a gender-only method in a race run: n/a cells, not an error
            return self._not_applicable(result, unit, base, skip, e)
        except BenchError as e:
            return self._unit_error(result, model, chain, seed, e)
        done, total = progress if progress else (None, None)
        for metric_name in unit["metrics"]:
            try:
                got = self._score_metric(unit, base, subject, metric_name, ctx, metric_name in skip)
            except BenchError as e:
                result["errors"].append(f"{model} / {chain}{self._seed_tag(seed)} / {metric_name}: {e}")
                result.setdefault("error_rows", []).append(self.row_builder.error(model, chain, metric_name, seed, e))
                self.echo(f"  error: {e}")
                continue
            result["metrics"][metric_name] = got
            if got["rows"] is not None:
                if done is not None:
                    done += 1
                count = f"  [{done}/{total}]" if done is not None else ""
                took = "n/a" if got["score_key"] is None else f"{got['runtime_s']:.1f}s"
                self.echo(f"  {metric_name}: {took}{count}")
        return result

    def _not_applicable(self, result: dict, unit: dict, base: Subject, skip: set, e: NotApplicable) -> dict:
        self.echo(f"  n/a: {e}")
        stamped = base.stamped(unit["chain"], "n/a")
        for metric_name in unit["metrics"]:
            rows = None if metric_name in skip else self.row_builder.for_scores(
                unit["model"], stamped, metric_name, None, None, 0.0, str(e), unit["seed"])
            result["metrics"][metric_name] = {"rows": rows, "score_key": None, "base_score_key": None,
                                              "note": str(e), "runtime_s": 0.0}  # fmt: skip
        return result

    def _score_metric(self, unit: dict, base: Subject, subject: Subject, metric_name: str, ctx: Context,
                      skipped: bool) -> dict:
        """What a unit reports for one metric: its rows (None when the run has them), the score cache keys of
        the subject and of the base model, the note and the runtime."""
        model, chain, seed = unit["model"], unit["chain"], unit["seed"]
        metric_cls = METRICS.get(metric_name)
        t0 = time.perf_counter()
        scores, key, note = None, None, ""
        if served(metric_cls.requires, subject.capabilities):
            try:
                scores, key = self.scores_and_key(subject, metric_name, ctx)
            except NotApplicable as e:
                note = str(e)
        else:
            note = f"{chain} does not serve {requirement_text(metric_cls.requires)}"
        base_scores, base_key = (scores, key) if chain == "base" else self._base(base, model, seed, metric_name, ctx)
        runtime = time.perf_counter() - t0
        if chain == "base":
            self._base_scores[(model, seed, metric_name)] = (scores, key)
        rows = None if skipped else self.row_builder.for_scores(model, subject, metric_name, scores, base_scores, runtime, note, seed)
        return {"rows": rows, "score_key": key, "base_score_key": base_key, "note": note, "runtime_s": round(runtime, 3)}

    def _base(self, base: Subject, model: str, seed: int, metric_name: str, ctx: Context) -> tuple:
        """The base model's scores (for the paired comparison): in memory when this process ran the base unit,
        else from the cache (the plan runs the base unit first)."""
        if (model, seed, metric_name) not in self._base_scores:
            value: tuple = (None, None)
            if served(METRICS.get(metric_name).requires, base.capabilities):
                try:
                    value = self.scores_and_key(base, metric_name, ctx)
                except NotApplicable:
                    pass
            self._base_scores[(model, seed, metric_name)] = value
        return self._base_scores[(model, seed, metric_name)]

    def _seed_tag(self, seed: int) -> str:
        return f" (seed {seed})" if len(self.request.seeds) > 1 else ""

    def _unit_error(self, result: dict, model: str, chain: str, seed: int, e: BaseException) -> dict:
        result["errors"].append(f"{model} / {chain}{self._seed_tag(seed)}: {e}")
        metrics = self.request.metrics
        result["error_rows"] = [self.row_builder.error(model, chain, m, seed, e) for m in metrics]
        self.echo(f"  error: {e}")
        return result


# ---- a worker process of a remote engine (Ray, SLURM) -----------------------------------------------------------
_WORKERS: dict = {}  # a worker process that runs several units of one run keeps its UnitWorker


def work(request: dict, unit: dict, skip: list[str], kind: str, cpus: int = 1) -> dict:
    """Run one unit in a worker process: names and dicts in, plain data out (see UnitWorker.run_unit). A worker
    that runs several units of a run (Ray reuses its workers) keeps the UnitWorker and the last base model it
    loaded; it holds one model at a time (GPU memory)."""
    start = time.time()
    import torch

    torch.set_num_threads(max(1, int(cpus)))
    log: list[str] = []
    key = json.dumps(request, sort_keys=True, default=str)
    worker = _WORKERS.get(key)
    if worker is None:
        _WORKERS.clear()
        worker = _WORKERS[key] = UnitWorker(RunRequest(**request), echo=log.append)
    worker.echo = log.append
    worker.keep_only(unit["model"])
    if unit.get("warm"):  # load the model the next units of this worker will need (see bench.engines.schedule)
        worker.base_subject(unit["model"])
        return {"unit": unit["id"], "warm": True, "worker": worker_info(start, kind)}
    result = worker.run_unit(unit, skip)
    result["log"] = log
    result["worker"] = worker_info(start, kind)
    return result


def request_dict(worker: UnitWorker) -> dict:
    """The request as a remote worker receives it: its own paths resolved, "auto" device left to each node."""
    req = asdict(worker.request)
    req["device"] = worker.request.device
    req["cache_dir"] = str(worker.cache.root)
    req["data_dir"] = str(worker.data_dir)
    req["progress"] = False
    return req
