"""The two plugin interfaces, `Debiaser` and `Metric`, and what passes between them and the runner.

A method plugin subclasses `Debiaser`, a metric plugin subclasses `Metric`; both are registered under a
name (decorators in `bench.registry` or the entry-point groups `bench.methods` / `bench.metrics`).
Hyperparameters are constructor keyword arguments (as in scikit-learn); `config()` returns them and is
part of every cache key.
"""
from __future__ import annotations

import abc
import inspect
import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Sequence

import numpy as np

from bench.errors import BenchError
from bench.storable import check_of, statistic, storable  # noqa: F401 - the decorators plugins use

# Capabilities a subject can offer and a metric can require.
MLM = "mlm"  # masked-token probabilities
CLM = "clm"  # next-token probabilities (a causal LM)
EMBED = "embed"  # last hidden states (sentence embeddings)
FINETUNE = "finetune"  # can be fine-tuned with a task head (GLUE)
ALL_CAPABILITIES = frozenset({MLM, EMBED, FINETUNE})  # a masked LM
CAUSAL_CAPABILITIES = frozenset({CLM, EMBED, FINETUNE})  # a causal LM
EVERY_CAPABILITY = ALL_CAPABILITIES | CAUSAL_CAPABILITIES

# Model kinds (Subject.kind): the language-model head a subject has. Methods declare the kinds they can debias.
MODEL_KINDS = {"mlm": "masked LM", "clm": "causal LM"}


def served(requires, capabilities) -> bool:
    """Whether a subject with `capabilities` serves a metric that `requires` one capability (a string) or any
    of several (a tuple: StereoSet and CrowS score masked and causal LMs alike)."""
    alternatives = (requires,) if isinstance(requires, str) else tuple(requires)
    return any(a in capabilities for a in alternatives)


def requirement_text(requires) -> str:
    return requires if isinstance(requires, str) else " or ".join(requires)

# Bias types a run can choose (`--bias-type`, a suite's `bias_type`); plugins read the choice from the context.
BIAS_TYPES = ("gender", "race", "religion")


class _Configurable:
    """Hyperparameters are the constructor's keyword arguments, stored as attributes of the same name.

    Given options are checked before construction against the constructor's type annotations (or, unannotated,
    the type of the default) and `bounds`: {"param": (low, high)} inclusive, None for open (bench.registry).
    """

    bounds: ClassVar[dict[str, tuple]] = {}

    def config(self) -> dict[str, Any]:
        params = inspect.signature(type(self).__init__).parameters
        return {k: getattr(self, k) for k in params if k != "self" and hasattr(self, k)}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


class Debiaser(_Configurable, abc.ABC):
    """A debiasing method.

    Class attributes:
      name     registry name (set by the registry).
      label    name shown in tables, e.g. "GRADIEND-BPI".
      group    row group of the leaderboard: 0 base, 1 GRADIEND variants, 2 baselines, 3 combinations.
      changes  what `apply` changes: "nothing" (base), "weights", "representation" or "output".
      serves   capabilities the debiased subject still offers honestly (SelfDebias: MLM or CLM scores only);
               the runner keeps those of the input subject's that are listed here.
    """

    name: ClassVar[str] = ""
    label: ClassVar[str] = ""
    quick: ClassVar[dict] = {}  # options that make a fit fast enough for the conformance suite (tests only)
    group: ClassVar[int] = 2
    changes: ClassVar[str] = "weights"
    serves: ClassVar[frozenset[str]] = EVERY_CAPABILITY
    # Bias types the method can debias (ctx.bias_type); None: it does not depend on the type (base).
    # A run for another type shows the method's cells as n/a.
    bias_types: ClassVar[frozenset[str] | None] = frozenset({"gender"})
    # Model kinds (Subject.kind) the method can debias; a model of another kind shows the method's cells as n/a.
    model_kinds: ClassVar[frozenset[str]] = frozenset({"mlm"})
    # Methods of one family share expensive work inside their fits (GRADIEND-BPI/-FPI/-MPI: one training, one
    # decoder grid, in the method's own cache); a distributed run fits the first of a family before the others.
    fit_family: ClassVar[str] = ""

    @classmethod
    def stands_for(cls, bias_type: str) -> tuple[str, ...]:
        """Registered names of the methods that serve `bias_type` under this method's name, for a type this method
        does not serve itself (GRADIEND: the three pair models of race or religion). A run request for that type
        replaces the name by these (bench.run.request); () = none (the method's cells stay n/a)."""
        return ()

    @abc.abstractmethod
    def fit(self, subject, ctx: "Context") -> Any:
        """Learn what the method needs from `subject`; returns an artifact that is data (cached by the runner):
        with the default `save_artifact`, None / JSON scalars / tensors / numpy arrays / DataFrames in (nested)
        dicts, lists, tuples or dataclasses of the plugin's own package. Anything else (a model, an object):
        override `save_artifact` / `load_artifact` (helpers in bench.serialize). Never pickle."""

    @abc.abstractmethod
    def apply(self, subject, artifact: Any):
        """Return the debiased subject. Must not modify `subject` itself."""

    def data_files(self, ctx: "Context") -> list:
        """Files `fit` depends on (their content is part of the artifact's cache key)."""
        return []

    # Artifacts are data, never pickles: by default a folder of JSON + safetensors + npz (bench.serialize.save_data);
    # override both for other artifacts (e.g. a model: save_pretrained / from_pretrained(use_safetensors=True)).
    def save_artifact(self, artifact: Any, path) -> None:
        from bench.serialize import plugin_packages, save_data

        try:
            save_data(artifact, path, allowed=plugin_packages(self))
        except BenchError as e:
            raise BenchError(
                f"{type(self).__name__}: the default save_artifact cannot store this artifact ({e}); override "
                "save_artifact/load_artifact (bench.serialize has save_tensors_and_json / load_tensors_and_json)"
            ) from None

    def load_artifact(self, path) -> Any:
        from bench.serialize import load_data, plugin_packages

        return load_data(path, allowed=plugin_packages(self))


@dataclass(frozen=True)
class Column:
    """One leaderboard column contributed by a metric.

    goal: "50" (closer to 50 is better), "0" (smaller |x| is better), "max" (larger is better).
    """

    label: str
    submetric: str
    goal: str
    order: int

    def badness(self, value):
        """How far `value` (a number or a numpy array) is from this column's goal: smaller is better; the one
        rule by which every table ranks and marks values (|value − 50|, |value|, or −value)."""
        if self.goal == "50":
            return abs(value - 50.0)
        if self.goal == "0":
            return abs(value)
        if self.goal == "max":
            return -value
        raise ValueError(f"column {self.label!r}: goal must be '50', '0' or 'max', got {self.goal!r}")


class Metric(_Configurable, abc.ABC):
    """A benchmark. `score` returns per-item outcomes plus the aggregation, never only a number."""

    name: ClassVar[str] = ""
    quick: ClassVar[dict] = {}  # options that make scoring fast enough for the conformance suite (tests only)
    requires: ClassVar[str | tuple[str, ...]] = MLM  # a capability, or a tuple of alternatives (see `served`)
    columns: ClassVar[tuple[Column, ...]] = ()
    # Bias types the metric measures (ctx.bias_type); None: it does not depend on the type (GLUE).
    bias_types: ClassVar[frozenset[str] | None] = frozenset({"gender"})

    @classmethod
    def columns_for(cls, bias_type: str) -> tuple[Column, ...]:
        """The leaderboard columns of a run of `bias_type` (same labels and order for every type; a metric whose
        sub-metric names depend on the type, like StereoSet's ss_<domain>, overrides this)."""
        return cls.columns

    @classmethod
    def declares(cls, submetric: str) -> Column | None:
        """The column declaration (label, goal) of any sub-metric this metric reports, for tables that rank or
        mark it (`bench rank-table --rank ss_profession`): by default those of its columns for any bias type."""
        for bias_type in sorted(cls.bias_types or ("gender",)):
            for column in cls.columns + tuple(cls.columns_for(bias_type)):
                if column.submetric == submetric:
                    return column
        return None

    @abc.abstractmethod
    def score(self, subject, ctx: "Context") -> "Scores":
        ...

    def data_files(self, ctx: "Context") -> list:
        """Files the score depends on (their content is part of the cache key)."""
        return []


@storable
@dataclass
class Estimate:
    """A statistic over resamplable items.

    strata:    sizes of independently resampled groups of items (StereoSet: one stratum of examples;
               SEAT: every X/Y/A/B set of every test is its own stratum).
    statistic: maps one (R, n_s) index array per stratum to R values. Must be storable as data
               (bench.serialize): a function of the metric's own package declared with `@statistic`, or a
               functools.partial of one whose arguments are arrays, JSON scalars, tuples/lists/dicts of them or
               such partials.
    """

    strata: tuple[int, ...]
    statistic: Callable[[Sequence[np.ndarray]], np.ndarray]

    def identity_indices(self) -> list[np.ndarray]:
        return [np.arange(n)[None, :] for n in self.strata]

    def point(self) -> float:
        return float(np.asarray(self.statistic(self.identity_indices()))[0])

    def validate(self) -> None:
        """Raise BenchError unless the strata are counts and the statistic gives one finite-or-nan value per
        resample on them (what a loaded entry must satisfy before a number is computed from it)."""
        strata = self.strata
        if not (isinstance(strata, (tuple, list)) and strata
                and all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in strata)):
            raise BenchError(f"strata must be positive item counts, got {strata!r}")
        func, args, keywords = _unwrap(self.statistic)
        check = check_of(func)
        try:
            if check is not None:
                check(tuple(strata), *args, **keywords)
            rng = np.random.default_rng(0)
            point = None
            for indices in (self.identity_indices(), [rng.integers(0, n, size=(2, n)) for n in strata]):
                values = np.asarray(self.statistic(indices))
                if values.shape != (len(indices[0]),) or values.dtype.kind not in "fiub":
                    raise ValueError(f"one value per resample expected, got an array of shape {values.shape}")
                point = values[0] if point is None else point  # the identity resample's value is the point
            if np.isinf(point):
                raise ValueError("an infinite point estimate")
        except (ValueError, TypeError, IndexError, KeyError) as e:
            raise BenchError(f"the statistic does not fit its data ({type(e).__name__}: {e})") from None


def _unwrap(stat) -> tuple[Callable, tuple, dict]:
    import functools

    args, keywords = (), {}
    while isinstance(stat, functools.partial):
        args, keywords = stat.args + args, {**stat.keywords, **keywords}
        stat = stat.func
    return stat, args, keywords


@storable
@dataclass
class Scores:
    """What a metric returns for one subject."""

    metric: str
    estimates: dict[str, Estimate]
    items: Any = None  # per-item outcomes (pandas DataFrame) for inspection and export
    extras: dict[str, float] = field(default_factory=dict)  # values without a CI (e.g. SEAT p-values)
    notes: dict[str, str] = field(default_factory=dict)  # per-submetric remarks, copied to the rows' note

    def validate(self) -> None:
        """Raise BenchError for scores that could not have come from a metric: wrong types, a statistic that
        does not fit its data, a non-finite extra."""
        if not isinstance(self.metric, str):
            raise BenchError(f"metric must be a name, got {self.metric!r}")
        for what, table in (("estimates", self.estimates), ("extras", self.extras), ("notes", self.notes)):
            if not (isinstance(table, dict) and all(isinstance(k, str) for k in table)):
                raise BenchError(f"{what} must be a mapping of sub-metric names")
        for name, est in self.estimates.items():
            if not isinstance(est, Estimate):
                raise BenchError(f"estimate {name!r} is not an Estimate")
            try:
                est.validate()
            except BenchError as e:
                raise BenchError(f"estimate {name!r}: {e}") from None
        for name, value in self.extras.items():
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise BenchError(f"extra {name!r} must be a finite number, got {value!r}")
        if not all(isinstance(v, str) for v in self.notes.values()):
            raise BenchError("notes must be text")


@dataclass
class Context:
    """Everything a plugin needs besides the subject."""

    data_dir: Any  # pathlib.Path
    cache_dir: Any  # pathlib.Path
    seed: int = 0
    device: str = "cpu"
    options: dict[str, Any] = field(default_factory=dict)
    resamples: int = 1000
    progress: bool = True
    # The run's data directory (--data-dir / BENCH_DATA_DIR). It differs from `data_dir` when the model brings
    # its own data (the synthetic world); metrics on real data the model lacks (GLUE) fall back to it.
    run_data_dir: Any = None
    bias_type: str = "gender"  # one of BIAS_TYPES: which items a metric scores, which words a method uses

    def data_path(self, relative: str, what: str = "data file"):
        from bench.data.paths import require_file

        return require_file(self.data_dir, relative, what)

    def bar(self, iterable=None, **kwargs):
        """A tqdm bar on a terminal; one line per finished stage in a log (bench.progress)."""
        from bench.progress import bar

        kwargs.setdefault("leave", False)
        return bar(iterable, enabled=self.progress, **kwargs)


def serves_bias_type(plugin_cls, bias_type: str) -> bool:
    types = getattr(plugin_cls, "bias_types", None)
    return types is None or bias_type in types


def bias_type_note(plugin_cls, bias_type: str) -> str:
    name = getattr(plugin_cls, "label", "") or plugin_cls.name or plugin_cls.__name__
    return f"{name} is defined for {', '.join(sorted(plugin_cls.bias_types))} bias, not {bias_type}"


def serves_model_kind(plugin_cls, kind: str) -> bool:
    return kind in getattr(plugin_cls, "model_kinds", frozenset({"mlm"}))


def model_kind_note(plugin_cls, kind: str) -> str:
    name = getattr(plugin_cls, "label", "") or plugin_cls.name or plugin_cls.__name__
    kinds = " and ".join(MODEL_KINDS.get(k, k) + "s" for k in sorted(plugin_cls.model_kinds))
    return f"{name} is defined for {kinds}, not for a {MODEL_KINDS.get(kind, kind)}"


class NotApplicable(BenchError):
    """Raised by a metric that cannot honestly score a subject; becomes an n/a cell."""


def save_scores(scores: Scores, folder, allowed=()) -> None:
    """Store Scores as data (bench.serialize): the statistics by their declared names."""
    from bench.serialize import save_data

    save_data(scores, folder, allowed)


def load_scores(folder, allowed=()) -> Scores:
    """Scores stored by `save_scores`, checked (`Scores.validate`) before anything is computed from them."""
    from bench.serialize import load_data

    value = load_data(folder, allowed)
    if not isinstance(value, Scores):
        raise BenchError(f"{folder} does not hold Scores")
    value.validate()
    return value
