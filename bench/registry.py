"""Registries of methods, metrics, models, commands, renderers and trackers.

Filled two ways: the decorators below (`@register_method("name")`), and the entry-point groups
`bench.methods`, `bench.metrics`, `bench.models`, `bench.commands`, `bench.renderers` and `bench.trackers` of any
installed distribution — this project's own plugins and reports are found the same way, so the core never imports a
particular method or report.
"""
from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any, Callable

from bench.errors import BenchError, UnknownName
from bench.hints import MISSING, conforms, is_union, type_name


class Registry:
    def __init__(self, kind: str, group: str):
        self.kind, self.group = kind, group
        self._items: dict[str, Any] = {}
        self._aliases: dict[str, str] = {}
        self._loaded = False

    def register(self, name: str, obj: Any = None, *, aliases: tuple[str, ...] = ()):
        def deco(o):
            if name in self._items and self._items[name] is not o:
                raise BenchError(f"{self.kind} {name!r} is registered twice ({self._items[name]!r} and {o!r})")
            self._items[name] = o
            if isinstance(o, type) and not o.__dict__.get("name"):
                o.name = name
            for a in aliases:
                self._aliases[a] = name
            return o

        return deco(obj) if obj is not None else deco

    def unregister(self, name: str) -> None:
        """Remove a name and its aliases (tests register throw-away plugins and must leave no trace)."""
        self._items.pop(name, None)
        for a in [a for a, n in self._aliases.items() if n == name]:
            del self._aliases[a]

    def _load_entry_points(self):
        if self._loaded:
            return
        self._loaded = True
        for ep in entry_points(group=self.group):
            self._load(ep)

    def _load(self, ep) -> None:
        if ep.name in self._items:
            return
        try:
            obj = ep.load()
        except Exception as e:  # a broken third-party plugin must not take the harness down
            import warnings

            warnings.warn(f"could not load {self.kind} plugin {ep.name!r} ({ep.value}): {e}")
            return
        self.register(ep.name, obj, aliases=tuple(getattr(obj, "aliases", ())))

    def find(self, name: str) -> Any:
        """The object registered under `name` (or an alias), else None. Loads the entry point of that name
        alone when it has one (running one plugin command imports no other plugin), else all of them."""
        if name not in self._items and name not in self._aliases and not self._loaded:
            for ep in entry_points(group=self.group, name=name):
                self._load(ep)
        if name not in self._items and name not in self._aliases:
            self._load_entry_points()
        return self._items.get(self._aliases.get(name, name))

    def canonical(self, name: str) -> str:
        self._load_entry_points()
        name = self._aliases.get(name, name)
        if name not in self._items:
            raise UnknownName(self.kind, name, self.names())
        return name

    def get(self, name: str) -> Any:
        return self._items[self.canonical(name)]

    def aliases_of(self, name: str) -> list[str]:
        """Other names that resolve to `name`."""
        self._load_entry_points()
        return sorted(a for a, n in self._aliases.items() if n == name)

    def names(self) -> list[str]:
        self._load_entry_points()
        return sorted(self._items)

    def items(self):
        self._load_entry_points()
        return sorted(self._items.items())

    def __contains__(self, name: str) -> bool:
        self._load_entry_points()
        return name in self._items or name in self._aliases


METHODS = Registry("method", "bench.methods")
METRICS = Registry("metric", "bench.metrics")
MODELS = Registry("model", "bench.models")
COMMANDS = Registry("command", "bench.commands")
# What `bench run` calls on the rows of a run (reports/ registers its tables here; the core names no report):
# objects with `write(rows, out) -> list[Path]` (tables written beside the results; returns the paths the run's
# last line names) and `show(rows, fmt) -> str` (the text printed at the end of the run, "" for none).
RENDERERS = Registry("renderer", "bench.renderers")
# Where `bench run --log-to NAME` sends the rows of a run (reports/trackers registers MLflow and W&B; the core
# imports neither library): classes, made with no arguments, with `check()` (raises BenchError when the tracker
# cannot log, e.g. its library is not installed; called before the run starts) and `log(rows, out, request) -> str`
# (sends the stored rows of the run directory `out` that its tracker run does not hold yet, with the request
# `{"request": ..., "request_hash": ...}` of the run's manifest; returns one line saying what it did).
TRACKERS = Registry("tracker", "bench.trackers")


def register_method(name: str, aliases: tuple[str, ...] = ()) -> Callable:
    return METHODS.register(name, aliases=aliases)


def register_metric(name: str, aliases: tuple[str, ...] = ()) -> Callable:
    return METRICS.register(name, aliases=aliases)


def register_model(name: str, aliases: tuple[str, ...] = ()) -> Callable:
    return MODELS.register(name, aliases=aliases)


COMBINATION_SEPARATOR = "+"


def method_chain(spec: str) -> list[str]:
    """`gradiend-bpi+inlp` -> ['gradiend-bpi', 'inlp'] (canonical names; unknown parts raise)."""
    parts = [p.strip() for p in spec.split(COMBINATION_SEPARATOR)]
    if any(not p for p in parts):
        raise BenchError(f"malformed method combination {spec!r}; write e.g. 'gradiend-bpi+inlp'")
    return [METHODS.canonical(p) for p in parts]


def make_method(name: str, options: dict | None = None):
    cls = METHODS.get(name)
    return _construct(cls, options or {}, f"method {name!r}", METHODS.canonical(name))


def make_metric(name: str, options: dict | None = None):
    cls = METRICS.get(name)
    return _construct(cls, options or {}, f"metric {name!r}", METRICS.canonical(name))


def _construct(cls, options: dict, what: str, prefix: str | None = None):
    options = check_options(cls, options, what, prefix or getattr(cls, "name", "") or cls.__name__)
    try:
        return cls(**options)
    except (TypeError, ValueError) as e:
        raise BenchError(f"bad options for {what}: {e}") from None


# ---- option checking -----------------------------------------------------------------------------------
# A plugin's options are its constructor's keyword arguments. Before the constructor runs, every given value is
# checked against the parameter's type annotation (int, float, bool, str, Optional[...], X | None, list[...],
# tuple[...], Sequence[...], Literal[...], dict); an unannotated parameter takes the type of its default when
# that is a bool, int, float or str. bools are never ints; ints are accepted for floats. For an optional
# integer (`int | None`) the string "auto" means None (the device or paper default).
# Ranges: a plugin declares `bounds = {"param": (low, high)}` as a class attribute (inclusive; None for
# unbounded, inherited by subclasses); a value outside is refused. Anything further is checked in
# `__init__` by raising BenchError. Every message names the option as the user writes it (PLUGIN.PARAM).

def _hints(cls) -> dict:
    import inspect
    import typing

    init = cls.__init__
    try:
        hints = typing.get_type_hints(init)
    except Exception:  # an annotation that does not resolve: check by defaults only
        hints = {}
    out = {}
    for name, p in inspect.signature(init).parameters.items():
        if name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        hint = hints.get(name, MISSING)
        if hint is MISSING and type(p.default) in (bool, int, float, str):
            hint = float if type(p.default) is float else type(p.default)
        out[name] = hint
    return out


def check_options(cls, options: dict, what: str, prefix: str) -> dict:
    """Type- and range-checks `options` for `cls`'s constructor; returns them with "auto" turned into None
    where that is what it means. Raises BenchError naming PLUGIN.PARAM."""
    import inspect
    import math
    import typing

    if not isinstance(options, dict):
        raise BenchError(f"options for {what} must be a table of PARAM = VALUE, got {options!r}")
    params = inspect.signature(cls.__init__).parameters
    open_ended = any(p.kind == p.VAR_KEYWORD for p in params.values())
    hints = _hints(cls)
    unknown = [k for k in options if k not in hints]
    if unknown and not open_ended:
        valid = ", ".join(sorted(hints)) or "none"
        raise BenchError(f"bad options for {what}: unknown option(s) {', '.join(f'{prefix}.{k}' for k in unknown)}; "
                         f"valid: {valid}")  # fmt: skip
    bounds = getattr(cls, "bounds", None) or {}
    out = {}
    for key, value in options.items():
        hint = hints.get(key, MISSING)
        if (value == "auto" and hint is not MISSING and is_union(hint) and type(None) in typing.get_args(hint)
                and not conforms(value, hint)):  # fmt: skip
            value = None
        if hint is not MISSING and not conforms(value, hint):
            raise BenchError(f"{prefix}.{key} must be {type_name(hint)}, got {value!r}")
        if key in bounds and isinstance(value, (int, float)) and not isinstance(value, bool):
            low, high = bounds[key]
            if math.isnan(value) or (low is not None and value < low) or (high is not None and value > high):
                rng = (f">= {low}" if high is None else f"<= {high}" if low is None else f"between {low} and {high}")
                raise BenchError(f"{prefix}.{key} must be {rng}, got {value!r}")
        out[key] = value
    return out
