"""A run request, built and checked in one place: from the command line's flags and a suite file
(`RunRequest.from_flags`), or directly; `normalised()` canonicalises names and checks every option, seed and
[stats] value before any model is loaded; `manifest()` is what the run directory records."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from bench import __version__
from bench.api import BIAS_TYPES
from bench.errors import BenchError
from bench.registry import METHODS, METRICS, check_options, make_method, make_metric, method_chain
from bench.run.checks import check_stats, is_seed
from bench.run.store import request_hash


def expand_chain(chain: list[str], bias_type: str) -> list[list[str]]:
    """The chains a chain stands for in a run of `bias_type`: a method that does not serve the type but names
    methods that serve it under its name (`Debiaser.stands_for`) is replaced by each of them in turn (a product
    over the chain's positions); every other method stays as it is."""
    import itertools

    from bench.api import serves_bias_type

    options = []
    for name in chain:
        cls = METHODS.get(name)
        alternatives = () if serves_bias_type(cls, bias_type) else tuple(cls.stands_for(bias_type))
        options.append([METHODS.canonical(a) for a in alternatives] or [name])
    return [list(c) for c in itertools.product(*options)]


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
            for chain in expand_chain([m for m in method_chain(spec) if m != "base"], self.bias_type):
                chains.append("+".join(chain) or "base")
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
        out = {"request": request, "request_hash": request_hash(request), "bench": __version__}
        if self.cache_dir is not None:  # where this run's fits and scores are (not part of the request's identity)
            out["cache_dir"] = str(self.cache_dir)
        return out

    @classmethod
    def from_flags(cls, suite: str | None, models: list[str], methods: list[str], metrics: list[str],
                   seed: int | None, seeds: list[int] | None, options: dict, resamples: int | None, **rest) -> "RunRequest":
        """The request of `bench run`: the flags given win over the suite's settings (`rest`: bias_type, device,
        data_dir, cache_dir, progress, None where not given)."""
        from bench.run.suite import load_suite

        spec = load_suite(suite) if suite else {}
        opts = {k: dict(v) for k, v in spec.get("options", {}).items()}
        for plugin, values in options.items():
            opts.setdefault(plugin, {}).update(values)
        stats = dict(spec.get("stats", {}))
        if resamples is not None:
            stats["resamples"] = resamples
        if seeds is not None and seed is not None:
            raise BenchError("give --seed or --seeds, not both")
        if seeds is None and seed is None:
            seeds = spec.get("seeds")
        request = cls(
            models=models or spec.get("models") or [], methods=methods or spec.get("methods") or ["base"],
            metrics=metrics or spec.get("metrics") or ["stereoset", "seat", "crows"],
            seed=seed if seed is not None else (seeds[0] if seeds else spec.get("seed", 0)), seeds=list(seeds or []),
            bias_type=rest.pop("bias_type", None) or spec.get("bias_type", "gender"), options=opts, stats=stats, **rest,
        )  # fmt: skip
        if not request.models:
            raise BenchError("no models given: pass --models (e.g. --models synthetic) or --suite")
        return request
