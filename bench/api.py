"""The two plugin interfaces, `Debiaser` and `Metric`, and what passes between them and the runner.

A method plugin subclasses `Debiaser`, a metric plugin subclasses `Metric`; both are registered under a
name (decorators in `bench.registry` or the entry-point groups `bench.methods` / `bench.metrics`).
Hyperparameters are constructor keyword arguments (as in scikit-learn); `config()` returns them and is
part of every cache key.
"""
from __future__ import annotations

import abc
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Sequence

import numpy as np

from bench.errors import BenchError

# Capabilities a subject can offer and a metric can require.
MLM = "mlm"  # masked-token probabilities
EMBED = "embed"  # last hidden states (sentence embeddings)
FINETUNE = "finetune"  # can be fine-tuned with a task head (GLUE)
ALL_CAPABILITIES = frozenset({MLM, EMBED, FINETUNE})


class _Configurable:
    """Hyperparameters are the constructor's keyword arguments, stored as attributes of the same name."""

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
      serves   capabilities the debiased subject still offers honestly (SelfDebias: MLM only).
    """

    name: ClassVar[str] = ""
    label: ClassVar[str] = ""
    quick: ClassVar[dict] = {}  # options that make a fit fast enough for the conformance suite (tests only)
    group: ClassVar[int] = 2
    changes: ClassVar[str] = "weights"
    serves: ClassVar[frozenset[str]] = ALL_CAPABILITIES

    @abc.abstractmethod
    def fit(self, subject, ctx: "Context") -> Any:
        """Learn what the method needs from `subject`; returns a picklable artifact (cached by the runner)."""

    @abc.abstractmethod
    def apply(self, subject, artifact: Any):
        """Return the debiased subject. Must not modify `subject` itself."""

    def data_files(self, ctx: "Context") -> list:
        """Files `fit` depends on (their content is part of the artifact's cache key)."""
        return []

    # Artifacts are stored with torch.save by default; override for large or special artifacts.
    def save_artifact(self, artifact: Any, path) -> None:
        import torch

        torch.save(artifact, path)

    def load_artifact(self, path) -> Any:
        import torch

        return torch.load(path, weights_only=False)


@dataclass(frozen=True)
class Column:
    """One leaderboard column contributed by a metric.

    goal: "50" (closer to 50 is better), "0" (smaller |x| is better), "max" (larger is better).
    """

    label: str
    submetric: str
    goal: str
    order: int


class Metric(_Configurable, abc.ABC):
    """A benchmark. `score` returns per-item outcomes plus the aggregation, never only a number."""

    name: ClassVar[str] = ""
    quick: ClassVar[dict] = {}  # options that make scoring fast enough for the conformance suite (tests only)
    requires: ClassVar[str] = MLM
    columns: ClassVar[tuple[Column, ...]] = ()

    @abc.abstractmethod
    def score(self, subject, ctx: "Context") -> "Scores":
        ...

    def data_files(self, ctx: "Context") -> list:
        """Files the score depends on (their content is part of the cache key)."""
        return []


@dataclass
class Estimate:
    """A statistic over resamplable items.

    strata:    sizes of independently resampled groups of items (StereoSet: one stratum of examples;
               SEAT: every X/Y/A/B set of every test is its own stratum).
    statistic: maps one (R, n_s) index array per stratum to R values. Must be picklable
               (a module-level function or a functools.partial of one).
    """

    strata: tuple[int, ...]
    statistic: Callable[[Sequence[np.ndarray]], np.ndarray]

    def identity_indices(self) -> list[np.ndarray]:
        return [np.arange(n)[None, :] for n in self.strata]

    def point(self) -> float:
        return float(np.asarray(self.statistic(self.identity_indices()))[0])


@dataclass
class Scores:
    """What a metric returns for one subject."""

    metric: str
    estimates: dict[str, Estimate]
    items: Any = None  # per-item outcomes (pandas DataFrame) for inspection and export
    extras: dict[str, float] = field(default_factory=dict)  # values without a CI (e.g. SEAT p-values)
    notes: dict[str, str] = field(default_factory=dict)  # per-submetric remarks, copied to the rows' note


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

    def data_path(self, relative: str, what: str = "data file"):
        from bench.data import require_file

        return require_file(self.data_dir, relative, what)

    def bar(self, iterable=None, **kwargs):
        from tqdm.auto import tqdm

        kwargs.setdefault("leave", False)
        kwargs.setdefault("dynamic_ncols", True)
        return tqdm(iterable, disable=not self.progress, **kwargs)


class NotApplicable(BenchError):
    """Raised by a metric that cannot honestly score a subject; becomes an n/a cell."""
