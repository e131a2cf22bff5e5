"""Expands a request into jobs (model x method x metric), fits and applies methods with a cache, scores,
attaches CIs and paired comparisons with the base model, and stores one row per number.

Jobs whose rows are already in the run directory are skipped (resume); fitted artifacts and scores come
from the content-addressed cache when present.
"""
from __future__ import annotations

import logging
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from bench import __version__, serialize
from bench.api import BIAS_TYPES, Context, NotApplicable, Scores, bias_type_note, serves_bias_type
from bench.data import default_cache_dir, default_data_dir, file_fingerprints, fingerprint
from bench.errors import BenchError, IdenticalSubject
from bench.models import load_subject, resolve_device
from bench.registry import METHODS, METRICS, check_options, make_method, make_metric, method_chain
from bench.stats import StatsConfig, compare, interval
from bench.store import Cache, RunStore, code_hash, request_hash, stable_hash
from bench.subject import Subject

log = logging.getLogger("bench")


@dataclass
class RunRequest:
    models: list[str]
    methods: list[str]
    metrics: list[str]
    seed: int = 0
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
        from bench.models import parse_model_name

        chains = []
        for spec in self.methods:
            if not isinstance(spec, str):
                raise BenchError(f"methods must be names, got {spec!r}")
            chains.append("+".join([m for m in method_chain(spec) if m != "base"]) or "base")
        methods = ["base"] + [c for c in chains if c != "base"]
        metrics = [METRICS.canonical(m) for m in self.metrics]
        for m in self.models:
            parse_model_name(m)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise BenchError(f"seed must be a non-negative integer (--seed or a suite's `seed`), got {self.seed!r}")
        stats = check_stats(self.stats, self.seed)
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
            metrics=list(dict.fromkeys(metrics)), seed=self.seed, bias_type=self.bias_type, device=self.device, data_dir=self.data_dir,
            cache_dir=self.cache_dir, options=options, stats=stats, progress=self.progress,
        )  # fmt: skip

    def manifest(self) -> dict:
        """What the run directory records. The hash ignores the order of models, methods and metrics (the
        order given only sets the order of the tables), so the same run asked for in another order resumes."""
        request = {k: v for k, v in asdict(self).items() if k not in ("cache_dir", "progress", "device")}
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
    if "level" in stats and not (0 < stats["level"] < 1 and math.isfinite(stats["level"])):
        raise BenchError(f"[stats] level must be between 0 and 1 (exclusive), got {stats['level']!r}")
    try:
        StatsConfig(seed=seed, **stats)
    except (TypeError, ValueError) as e:
        raise BenchError(f"[stats]: {e}") from None
    return dict(stats)


def versions() -> dict:
    import torch
    import transformers

    return {"bench": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version()}  # fmt: skip


class Runner:
    def __init__(self, request: RunRequest, out: Path | None = None, echo: Callable[[str], None] = print):
        self.request = request.normalised()
        self.stats = StatsConfig(seed=self.request.seed, **self.request.stats)
        self.cache = Cache(Path(self.request.cache_dir) if self.request.cache_dir else default_cache_dir(),
                           warn=self._cache_warning)
        self.data_dir = Path(self.request.data_dir) if self.request.data_dir else default_data_dir()
        self.device = resolve_device(self.request.device)
        self.store = RunStore(out, self.request.manifest()) if out is not None else None
        self.echo = echo
        self.rows: list[dict] = []
        self.errors: list[str] = []
        self._versions = versions()

    def record_data(self, subject: Subject, ctx: Context) -> None:
        """Fingerprints of every data file the run's plugins read for this model (and the model's own data
        directory, e.g. the synthetic world's) into the manifest; a changed file refuses the resume."""
        if self.store is None:
            return
        paths = [Path(subject.data_dir)] if subject.data_dir and Path(subject.data_dir).is_dir() else []
        names = [("method", n) for chain in self.request.methods for n in chain.split("+")]
        for kind, name in names + [("metric", n) for n in self.request.metrics]:
            try:
                make = make_method if kind == "method" else make_metric
                files = make(name, self.request.options.get(name)).data_files(ctx)
                paths += [p for p in files if Path(p).is_file() and Path(p).suffix != ".py"]  # code: see code_hash
            except BenchError:  # missing data: the job that needs it reports it
                continue
        self.store.record_data(file_fingerprints(paths))

    # ---- contexts and subjects -----------------------------------------------------------------------
    def context(self, subject: Subject) -> Context:
        return Context(
            data_dir=Path(subject.data_dir) if subject.data_dir else self.data_dir,
            cache_dir=self.cache.root, seed=self.request.seed, device=self.device,
            options=self.request.options, resamples=self.stats.resamples, progress=self.request.progress,
            run_data_dir=self.data_dir, bias_type=self.request.bias_type,
        )  # fmt: skip

    def load_model(self, name: str) -> Subject:
        return load_subject(name, device=self.device, data_dir=self.data_dir, cache_dir=self.cache.root)

    def debias(self, base: Subject, chain: str, ctx: Context) -> Subject:
        """Apply each method of `a+b+...` in turn; each is fitted on the output of the previous one."""
        subject = base
        for name in chain.split("+"):
            method = make_method(name, self.request.options.get(name))
            if method.changes == "nothing":
                continue
            if not serves_bias_type(type(method), ctx.bias_type):
                raise NotApplicable(bias_type_note(type(method), ctx.bias_type))
            cfg = {"method": name, "config": method.config(), "seed": ctx.seed, "bias_type": ctx.bias_type}
            files = method.data_files(ctx)
            data = fingerprint(files) if files else ""
            key = stable_hash({**cfg, "subject": subject.identity, "data": data, "code": code_hash(method)})
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
        metric = make_metric(metric_name, self.request.options.get(metric_name))
        if not serves_bias_type(type(metric), ctx.bias_type):
            raise NotApplicable(bias_type_note(type(metric), ctx.bias_type))
        files = metric.data_files(ctx)
        key = stable_hash({
            "metric": metric_name, "config": metric.config(), "subject": subject.identity, "bias_type": ctx.bias_type,
            "data": fingerprint(files) if files else "", "code": code_hash(metric), "seed": ctx.seed,
            "format": serialize.FORMAT,
        })  # fmt: skip
        allowed = serialize.plugin_packages(metric)  # the statistics resolve only to the metric's own code (or bench)
        scores, _ = self.cache.get_or_create(
            "scores", metric_name, key, lambda: metric.score(subject, ctx),
            lambda v, p: serialize.save_scores(v, p, allowed), lambda p: serialize.load_scores(p, allowed),
        )  # fmt: skip
        return scores

    def _cache_warning(self, message: str) -> None:
        self.echo(f"  warning: {message}")

    # ---- rows --------------------------------------------------------------------------------------------
    def _rows(self, model, subject, metric_name, scores, base_scores, runtime, note="") -> list[dict]:
        method_spec = subject.method
        parts = method_spec.split("+")
        classes = [METHODS.get(p) for p in parts]
        label = " + ".join(c.label or c.name for c in classes)
        group = 0 if method_spec == "base" else (3 if len(parts) > 1 else classes[0].group)
        common = dict(
            model=model, method=method_spec, label=label, group=group, metric=metric_name, seed=self.request.seed,
            bias_type=self.request.bias_type,
            runtime_s=round(runtime, 3), config_hash=stable_hash(self.request.options.get(metric_name, {})),
            versions=self._versions, note=note,
        )  # fmt: skip
        if scores is None:
            return [dict(common, submetric=None, status="n/a", value=None, ci_low=None, ci_high=None, n=None,
                         resamples=None, delta=None, delta_low=None, delta_high=None, significant=None)]  # fmt: skip
        rows = []
        notes = scores.notes or {}
        for sub, est in scores.estimates.items():
            iv = interval(est, self.stats)
            row = dict(common, submetric=sub, status="ok", value=iv.value, ci_low=iv.low, ci_high=iv.high, n=iv.n,
                       resamples=iv.resamples, delta=None, delta_low=None, delta_high=None, significant=None,
                       note=notes.get(sub, note))  # fmt: skip
            if base_scores is not None and method_spec != "base" and sub in base_scores.estimates:
                cmp = compare(est, base_scores.estimates[sub], self.stats)
                row.update(delta=cmp.delta, delta_low=cmp.low, delta_high=cmp.high, significant=cmp.significant)
            rows.append(row)
        for sub, value in scores.extras.items():
            rows.append(dict(common, submetric=sub, status="ok", value=float(value), ci_low=None, ci_high=None,
                             n=None, resamples=None, delta=None, delta_low=None, delta_high=None, significant=None,
                             note=notes.get(sub, note)))  # fmt: skip
        return rows

    def _emit(self, rows):
        self.rows.extend(rows)
        if self.store is not None:
            self.store.add(rows)

    # ---- the run -------------------------------------------------------------------------------------
    def run(self) -> list[dict]:
        req = self.request
        total = len(req.models) * len(req.methods) * len(req.metrics)
        done = 0
        for model in req.models:
            base = self.load_model(model)
            ctx = self.context(base)
            self.record_data(base, ctx)
            base_scores: dict[str, Scores | None] = {}
            for chain in req.methods:
                todo = [m for m in req.metrics if not (self.store and self.store.done(model, chain, m, req.seed))]
                if chain != "base" and not todo:
                    done += len(req.metrics)
                    continue
                self.echo(f"[{model}] {chain}")
                try:
                    subject = self.debias(base, chain, ctx) if chain != "base" else base
                except NotApplicable as e:  # e.g. a gender-only method in a race run: n/a cells, not an error
                    self.echo(f"  n/a: {e}")
                    for metric_name in req.metrics:
                        done += 1
                        if not (self.store and self.store.done(model, chain, metric_name, req.seed)):
                            stamped = base.stamped(chain, "n/a")
                            self._emit(self._rows(model, stamped, metric_name, None, None, 0.0, str(e)))
                    continue
                except BenchError as e:
                    self.errors.append(f"{model} / {chain}: {e}")
                    self.echo(f"  error: {e}")
                    done += len(req.metrics)
                    continue
                for metric_name in req.metrics:
                    done += 1
                    metric_cls = METRICS.get(metric_name)
                    applicable = metric_cls.requires in subject.capabilities
                    t0 = time.perf_counter()
                    scores, note = None, ""
                    if applicable:
                        try:
                            scores = self.scores(subject, metric_name, ctx)
                        except NotApplicable as e:
                            note = str(e)
                    else:
                        note = f"{chain} does not serve {metric_cls.requires}"
                    if chain == "base":
                        base_scores[metric_name] = scores
                    elif metric_name not in base_scores:
                        try:
                            base_scores[metric_name] = self.scores(base, metric_name, ctx) if metric_cls.requires in base.capabilities else None
                        except NotApplicable:
                            base_scores[metric_name] = None
                    runtime = time.perf_counter() - t0
                    if self.store and self.store.done(model, chain, metric_name, req.seed):
                        continue
                    self._emit(self._rows(model, subject, metric_name, scores, base_scores.get(metric_name), runtime, note))
                    self.echo(f"  {metric_name}: {'n/a' if scores is None else f'{runtime:.1f}s'}  [{done}/{total}]")
        if self.store is not None:
            return list(self.store.rows)
        return self.rows
