"""Expands a request into jobs (model x method x metric), fits and applies methods with a cache, scores,
attaches CIs and paired comparisons with the base model, and stores one row per number.

Jobs whose rows are already in the run directory are skipped (resume); fitted artifacts and scores come
from the content-addressed cache when present.
"""
from __future__ import annotations

import logging
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from bench import __version__, serialize
from bench.api import BIAS_TYPES, Context, NotApplicable, Scores, bias_type_note, serves_bias_type
from bench.data.paths import default_cache_dir, default_data_dir, file_fingerprints, fingerprint
from bench.errors import BenchError, IdenticalSubject
from bench.models.loading import load_subject, resolve_device
from bench.registry import METHODS, METRICS, check_options, make_method, make_metric, method_chain
from bench.stats import StatsConfig, compare, interval
from bench.files import stable_hash
from bench.run.cache import Cache, code_hash
from bench.run.store import RunStore, request_hash
from bench.models.subject import Subject
from bench.run.suite import is_seed

log = logging.getLogger("bench")


@dataclass
class RunRequest:
    models: list[str]
    methods: list[str]
    metrics: list[str]
    seed: int = 0
    seeds: list[int] = field(default_factory=list)  # the seed axis (--seeds 0,1,2); empty: [seed]
    bias_type: str = "gender"
    device: str = "auto"
    data_dir: str | None = None
    cache_dir: str | None = None
    options: dict = field(default_factory=dict)  # {"inlp": {...}, "stereoset": {...}}
    stats: dict = field(default_factory=dict)  # StatsConfig fields
    progress: bool = True

    def normalised(self) -> "RunRequest":
        """Canonical names, `base` first, duplicates removed, `base` dropped inside a chain (base+inlp == inlp);
        options, seed and stats type- and range-checked. Every bad input raises BenchError here, before any
        model is loaded; unknown names raise listing the valid ones."""
        from bench.models.loading import parse_model_name

        chains = []
        for spec in self.methods:
            if not isinstance(spec, str):
                raise BenchError(f"methods must be names, got {spec!r}")
            chains.append("+".join([m for m in method_chain(spec) if m != "base"]) or "base")
        methods = ["base"] + [c for c in chains if c != "base"]
        metrics = [METRICS.canonical(m) for m in self.metrics]
        for m in self.models:
            parse_model_name(m)
        if not is_seed(self.seed):
            raise BenchError(f"seed must be a non-negative integer (--seed or a suite's `seed`), got {self.seed!r}")
        if not isinstance(self.seeds, (list, tuple)) or not all(is_seed(s) for s in self.seeds):
            raise BenchError(f"seeds must be a list of non-negative integers (--seeds 0,1,2 or a suite's `seeds`), "
                             f"got {self.seeds!r}")  # fmt: skip
        seeds = list(dict.fromkeys(self.seeds)) or [self.seed]
        seed = seeds[0]
        stats = check_stats(self.stats, seed)
        if self.bias_type not in BIAS_TYPES:
            raise BenchError(f"bias type must be one of {', '.join(BIAS_TYPES)} (--bias-type or a suite's `bias_type`), "
                             f"got {self.bias_type!r}")  # fmt: skip
        if not isinstance(self.options, dict):
            raise BenchError(f"options must be a table of PLUGIN -> {{PARAM: VALUE}}, got {self.options!r}")
        options: dict = {}
        for plugin, values in self.options.items():
            if plugin in METHODS:
                name = METHODS.canonical(plugin)
            elif plugin in METRICS:
                name = METRICS.canonical(plugin)
            else:
                raise BenchError(f"option for unknown plugin {plugin!r}; options are given as METHOD.PARAM or METRIC.PARAM")
            if not isinstance(values, dict):
                raise BenchError(f"options for {plugin!r} must be a table of PARAM = VALUE, got {values!r}")
            options.setdefault(name, {}).update(values)
        for name, values in options.items():  # bad options fail here, before any model is loaded
            registry, kind = (METHODS, "method") if name in METHODS else (METRICS, "metric")
            options[name] = check_options(registry.get(name), values, f"{kind} {name!r}", name)
        for chain in methods:
            for name in chain.split("+"):
                make_method(name, options.get(name))
        for name in metrics:
            make_metric(name, options.get(name))
        return RunRequest(
            models=list(dict.fromkeys(self.models)), methods=list(dict.fromkeys(methods)),
            metrics=list(dict.fromkeys(metrics)), seed=seed, seeds=seeds, bias_type=self.bias_type, device=self.device, data_dir=self.data_dir,
            cache_dir=self.cache_dir, options=options, stats=stats, progress=self.progress,
        )  # fmt: skip

    def manifest(self) -> dict:
        """What the run directory records. The hash ignores the order of models, methods and metrics (the
        order given only sets the order of the tables), so the same run asked for in another order resumes."""
        request = {k: v for k, v in asdict(self).items() if k not in ("cache_dir", "progress", "device")}
        if list(request.get("seeds") or [request["seed"]]) == [request["seed"]]:
            del request["seeds"]  # one seed: the manifest (and its hash) of a run before the seed axis existed
        return {"request": request, "request_hash": request_hash(request), "bench": __version__}


def check_stats(stats: dict, seed: int = 0) -> dict:
    """A suite's [stats] table or --resamples: only StatsConfig fields, typed and in range."""
    import dataclasses
    import math
    import typing

    from bench.registry import _conforms, _type_name

    if not isinstance(stats, dict):
        raise BenchError(f"[stats] must be a table of StatsConfig fields, got {stats!r}")
    hints = typing.get_type_hints(StatsConfig)
    fields = [f.name for f in dataclasses.fields(StatsConfig) if f.name != "seed"]
    for key, value in stats.items():
        if key == "seed":
            raise BenchError("[stats] seed: the bootstrap uses the run's seed; set it with `seed =` or --seed")
        if key not in fields:
            raise BenchError(f"[stats] unknown key {key!r}; allowed: {', '.join(fields)}")
        if not _conforms(value, hints[key]):
            name = "--resamples" if key == "resamples" else f"[stats] {key}"
            raise BenchError(f"{name} must be {_type_name(hints[key])}, got {value!r}")
    if "resamples" in stats and stats["resamples"] < 1:
        raise BenchError(f"--resamples (or [stats] resamples) must be >= 1, got {stats['resamples']!r}")
    if "resamples" in stats:  # items are unknown before scoring: at least one (Runner._rows checks the real count)
        check_bootstrap_memory(stats["resamples"], 1)
    if "level" in stats and not (0 < stats["level"] < 1 and math.isfinite(stats["level"])):
        raise BenchError(f"[stats] level must be between 0 and 1 (exclusive), got {stats['level']!r}")
    try:
        StatsConfig(seed=seed, **stats)
    except (TypeError, ValueError) as e:
        raise BenchError(f"[stats]: {e}") from None
    return dict(stats)


# Peak bytes per resample and item of a bootstrap: the int64 index arrays (bench.stats.bootstrap_indices) and up
# to three arrays of their shape that a metric's statistic builds from them at once (values[idx], offsets, ...).
BOOTSTRAP_BYTES = 32


def memory_available() -> int | None:
    """Bytes this process can still allocate (Linux: MemAvailable, within the container's cgroup limit), else the
    machine's physical memory; None when unknown."""
    avail = None
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            avail = next((int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:")), None)
    except (OSError, ValueError):
        pass
    if avail is None:
        try:
            import psutil

            avail = psutil.virtual_memory().available
        except ImportError:
            try:
                avail = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
            except (AttributeError, ValueError, OSError):
                return None
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            avail = min(avail, int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text()))
    except (OSError, ValueError):
        pass
    return avail


def _size(n: float) -> str:
    units = ["bytes", "KB", "MB", "GB", "TB", "PB"]
    i = 0
    while n >= 1000 and i < len(units) - 1:
        n, i = n / 1000, i + 1
    return f"{n:.0f} bytes" if i == 0 else f"{n:.1f} {units[i]}"


def check_bootstrap_memory(resamples: int, items: int, what: str = "") -> None:
    """Refuse a bootstrap of `resamples` x `items` that cannot fit in the memory available, saying which
    --resamples would."""
    need = BOOTSTRAP_BYTES * resamples * max(1, items)
    avail = memory_available()
    if avail is None or need <= avail:
        return
    fits = avail // (BOOTSTRAP_BYTES * max(1, items))
    over = f"{what} over {items:,} items" if what else ("even one item" if items <= 1 else f"{items:,} items")
    advice = f"use --resamples {fits:,} or fewer" if fits >= 1 else "free some memory"
    raise BenchError(f"--resamples {resamples} needs about {_size(need)} for the bootstrap of {over} "
                     f"({BOOTSTRAP_BYTES} bytes per resample and item), but {_size(avail)} of memory is available; "
                     f"{advice}")  # fmt: skip


def check_cache_dir(root: Path, given: bool) -> None:
    """The cache folder is a folder, or a folder that can be created (given: --cache-dir, else the default or
    BENCH_CACHE_DIR). An existing one may be read-only: a run that finds everything cached only reads it."""
    from bench.data.paths import ENV_CACHE_DIR

    name = f"--cache-dir {root}" if given else f"the cache folder {root}" + (
        f" (from {ENV_CACHE_DIR})" if os.environ.get(ENV_CACHE_DIR) else "")
    fix = "choose another --cache-dir" if given else f"pass --cache-dir or set {ENV_CACHE_DIR} to another folder"
    existing = root
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing == root and not root.is_dir():
        raise BenchError(f"{name} is not a directory; {fix}")
    if not existing.is_dir():
        raise BenchError(f"{name} cannot be created: {existing} is not a directory; {fix}")
    if existing != root and not os.access(existing, os.W_OK | os.X_OK):
        raise BenchError(f"{name} cannot be created: no write permission on {existing}; {fix}")


def versions() -> dict:
    import torch
    import transformers

    return {"bench": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version()}  # fmt: skip


class Runner:
    """Runs a request: `run()` plans it (bench.run.plan), hands the units to an executor (bench.engines.executors; in this
    process by default) and is the only writer of the run directory. `run_unit()` is what a worker does with
    one unit: load the model, debias (artifacts through the cache), score (scores through the cache) and return
    the rows as plain data."""

    def __init__(self, request: RunRequest, out: Path | None = None, echo: Callable[[str], None] = print):
        self.request = request.normalised()
        self.stats = StatsConfig(seed=self.request.seed, **self.request.stats)
        root = Path(self.request.cache_dir) if self.request.cache_dir else default_cache_dir()
        check_cache_dir(root, given=bool(self.request.cache_dir))
        self.cache = Cache(root, warn=self._cache_warning)
        self.data_dir = Path(self.request.data_dir) if self.request.data_dir else default_data_dir()
        self.device = resolve_device(self.request.device)
        # the driver holds the run directory's lock from here to the end of run(): one writer per directory
        self.store = RunStore(out, self.request.manifest(), lock=True) if out is not None else None
        self.echo = echo
        self.rows: list[dict] = []
        self.errors: list[str] = []
        # Cells of units or metrics that failed: shown as "error" in the tables of this run, never stored in
        # results.jsonl (so running the same command again retries them).
        self.error_rows: list[dict] = []
        self.incomplete = False  # set when units were left running (slurm --no-wait)
        self.units: list[dict] = []  # what each executed unit reported (host, pid, CUDA_VISIBLE_DEVICES, times)
        self._versions = versions()
        self._subjects: dict[str, Subject] = {}  # base models loaded in this process
        self._fingerprints: dict[str, dict] = {}
        self._base_scores: dict[tuple, tuple] = {}  # (model, seed, metric) -> (Scores | None, cache key | None)

    def stats_for(self, seed: int) -> StatsConfig:
        """The bootstrap of a seed's rows uses that seed (one seed: exactly the run's StatsConfig)."""
        return StatsConfig(seed=seed, **self.request.stats)

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

    def record_data(self, subject: Subject, ctx: Context) -> None:
        if self.store is not None:
            self.store.record_data(self.data_fingerprints(subject, ctx))

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
            lambda v, p: serialize.save_scores(v, p, allowed), lambda p: serialize.load_scores(p, allowed),
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
            return serialize.load_scores(folder / "artifact", allowed)
        except Exception as e:  # noqa: BLE001 - a damaged entry: the aggregate is left for the next run
            self._cache_warning(f"cannot read cache entry {folder} ({type(e).__name__}: {str(e)[:200]})")
            return None

    def _cache_warning(self, message: str) -> None:
        self.echo(f"  warning: {message}")

    # ---- rows --------------------------------------------------------------------------------------------
    def _common(self, model, method_spec, metric_name, seed, runtime, note) -> dict:
        parts = method_spec.split("+")
        classes = [METHODS.get(p) for p in parts]
        label = " + ".join(c.label or c.name for c in classes)
        group = 0 if method_spec == "base" else (3 if len(parts) > 1 else classes[0].group)
        return dict(
            model=model, method=method_spec, label=label, group=group, metric=metric_name, seed=seed,
            bias_type=self.request.bias_type,
            runtime_s=round(runtime, 3), config_hash=stable_hash(self.request.options.get(metric_name, {})),
            versions=self._versions, note=note,
        )  # fmt: skip

    @staticmethod
    def _ok_row(common: dict, sub: str, note: str, value: float | None = None, iv=None, cmp=None) -> dict:
        """One result row: with a bootstrap interval `iv` (and a comparison with base `cmp`), or a plain `value`
        without CI (a metric's extras)."""
        row = dict(common, submetric=sub, status="ok", value=value, ci_low=None, ci_high=None, n=None, resamples=None,
                   delta=None, delta_low=None, delta_high=None, significant=None, note=note)  # fmt: skip
        if iv is not None:
            row.update(value=iv.value, ci_low=iv.low, ci_high=iv.high, n=iv.n, resamples=iv.resamples)
        if cmp is not None:
            row.update(delta=cmp.delta, delta_low=cmp.low, delta_high=cmp.high, significant=cmp.significant)
        return row

    @staticmethod
    def _na(common: dict) -> list[dict]:
        return [dict(common, submetric=None, status="n/a", value=None, ci_low=None, ci_high=None, n=None,
                     resamples=None, delta=None, delta_low=None, delta_high=None, significant=None)]  # fmt: skip

    def _rows(self, model, subject, metric_name, scores, base_scores, runtime, note="", seed=None) -> list[dict]:
        seed = self.request.seed if seed is None else seed
        stats = self.stats_for(seed)
        method_spec = subject.method
        common = self._common(model, method_spec, metric_name, seed, runtime, note)
        if scores is None:
            return self._na(common)
        rows = []
        notes = scores.notes or {}
        items = max((sum(est.strata) for est in scores.estimates.values()), default=0)
        check_bootstrap_memory(stats.resamples, items, f"{model} / {method_spec} / {metric_name}")
        for sub, est in scores.estimates.items():
            iv = interval(est, stats)
            cmp = None
            if base_scores is not None and method_spec != "base" and sub in base_scores.estimates:
                cmp = compare(est, base_scores.estimates[sub], stats)
            rows.append(self._ok_row(common, sub, notes.get(sub, note), iv=iv, cmp=cmp))
        for sub, value in scores.extras.items():
            rows.append(self._ok_row(common, sub, notes.get(sub, note), float(value)))
        return rows

    def aggregate_rows(self, model: str, chain: str, metric_name: str, per_seed: list[dict]) -> list[dict]:
        """Rows of one (model, chain, metric) over the run's seeds: `per_seed` holds, per seed in run order, what
        the unit reported ({"score_key", "base_score_key", "note", "runtime_s"}). Values and CIs come from
        bench.stats.interval_over_seeds / compare_over_seeds on the Scores of each seed (reloaded from the score
        cache); the rows have the fields of a seed's rows with seed null, `seeds` and `aggregate: true`."""
        from bench import stats as stats_module

        seeds = list(self.request.seeds)
        cfg = self.stats_for(seeds[0])
        runtime = sum(p.get("runtime_s") or 0.0 for p in per_seed)
        note = next((p.get("note") for p in per_seed if p.get("note")), "")
        common = dict(self._common(model, chain, metric_name, None, runtime, note), seeds=seeds, aggregate=True)
        keys = [p.get("score_key") for p in per_seed]
        if any(k is None for k in keys):
            return self._na(common)
        scores = [self.cached_scores(metric_name, k) for k in keys]
        if any(s is None for s in scores):
            raise BenchError(f"{model} / {chain} / {metric_name}: a seed's scores are missing from the cache "
                             f"({self.cache.root}); rerun to recompute them")  # fmt: skip
        base = None
        base_keys = [p.get("base_score_key") for p in per_seed]
        if chain != "base" and all(k is not None for k in base_keys):
            base = [self.cached_scores(metric_name, k) for k in base_keys]
            base = None if any(b is None for b in base) else base
        notes = scores[0].notes or {}
        rows = []
        for sub in scores[0].estimates:
            if not all(sub in s.estimates for s in scores):
                continue
            ests = [s.estimates[sub] for s in scores]
            iv = stats_module.interval_over_seeds(ests, cfg)
            cmp = None
            if base is not None and all(sub in b.estimates for b in base):
                cmp = stats_module.compare_over_seeds(ests, [b.estimates[sub] for b in base], cfg)
            rows.append(self._ok_row(common, sub, notes.get(sub, note), iv=iv, cmp=cmp))
        for sub in scores[0].extras:
            values = [float(s.extras[sub]) for s in scores if sub in s.extras]
            if len(values) == len(scores):
                rows.append(self._ok_row(common, sub, notes.get(sub, note) or "mean over seeds",
                                         sum(values) / len(values)))  # fmt: skip
        return rows

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
            self.echo(f"  n/a: {e}")
            stamped = base.stamped(chain, "n/a")
            for metric_name in unit["metrics"]:
                rows = None if metric_name in skip else self._rows(model, stamped, metric_name, None, None, 0.0, str(e), seed)
                result["metrics"][metric_name] = {"rows": rows, "score_key": None, "base_score_key": None,
                                                  "note": str(e), "runtime_s": 0.0}  # fmt: skip
            return result
        except BenchError as e:
            return self._unit_error(result, model, chain, seed, e)
        done, total = progress if progress else (None, None)
        for metric_name in unit["metrics"]:
            metric_cls = METRICS.get(metric_name)
            t0 = time.perf_counter()
            scores, key, note = None, None, ""
            try:
                if metric_cls.requires in subject.capabilities:
                    try:
                        scores, key = self.scores_and_key(subject, metric_name, ctx)
                    except NotApplicable as e:
                        note = str(e)
                else:
                    note = f"{chain} does not serve {metric_cls.requires}"
                base_scores, base_key = (scores, key) if chain == "base" else self._base(base, model, seed, metric_name, ctx)
            except BenchError as e:
                result["errors"].append(f"{model} / {chain}{self._seed_tag(seed)} / {metric_name}: {e}")
                result.setdefault("error_rows", []).append(self._error_row(model, chain, metric_name, seed, e))
                self.echo(f"  error: {e}")
                continue
            runtime = time.perf_counter() - t0
            if chain == "base":
                self._base_scores[(model, seed, metric_name)] = (scores, key)
            rows = None if metric_name in skip else self._rows(model, subject, metric_name, scores, base_scores, runtime, note, seed)
            result["metrics"][metric_name] = {"rows": rows, "score_key": key, "base_score_key": base_key,
                                              "note": note, "runtime_s": round(runtime, 3)}  # fmt: skip
            if rows is not None:
                if done is not None:
                    done += 1
                count = f"  [{done}/{total}]" if done is not None else ""
                self.echo(f"  {metric_name}: {'n/a' if scores is None else f'{runtime:.1f}s'}{count}")
        return result

    def _base(self, base: Subject, model: str, seed: int, metric_name: str, ctx: Context) -> tuple:
        """The base model's scores (for the paired comparison): in memory when this process ran the base unit,
        else from the cache (the plan runs the base unit first)."""
        if (model, seed, metric_name) not in self._base_scores:
            value: tuple = (None, None)
            if METRICS.get(metric_name).requires in base.capabilities:
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
        result["error_rows"] = [self._error_row(model, chain, m, seed, e) for m in metrics]
        self.echo(f"  error: {e}")
        return result

    def _error_row(self, model: str, chain: str, metric: str, seed: int, e: BaseException) -> dict:
        common = self._common(model, chain, metric, seed, 0.0, f"error: {e}")
        return dict(self._na(common)[0], status="error")

    # ---- the run (the driver) -------------------------------------------------------------------------
    def plan(self):
        from bench.run.plan import make_plan

        return make_plan(self)

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
        from bench.engines.executors import LocalExecutor, Collector

        plan = self.plan()
        executor = executor or LocalExecutor()
        collector = Collector(self, plan)
        executor.execute(self, plan, collector)
        collector.finish()
        return self.rows
