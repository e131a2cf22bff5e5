"""Registries of methods, metrics and models.

Filled two ways: the decorators below (`@register_method("name")`), and the entry-point groups
`bench.methods`, `bench.metrics`, `bench.models` and `bench.commands` of any installed distribution —
this project's own plugins are found the same way, so the core never imports a particular method.
"""
from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any, Callable

from bench.errors import BenchError, UnknownName


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
            if ep.name in self._items:
                continue
            try:
                obj = ep.load()
            except Exception as e:  # a broken third-party plugin must not take the harness down
                import warnings

                warnings.warn(f"could not load {self.kind} plugin {ep.name!r} ({ep.value}): {e}")
                continue
            self.register(ep.name, obj, aliases=tuple(getattr(obj, "aliases", ())))

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
    return _construct(cls, options or {}, f"method {name!r}")


def make_metric(name: str, options: dict | None = None):
    cls = METRICS.get(name)
    return _construct(cls, options or {}, f"metric {name!r}")


def _construct(cls, options: dict, what: str):
    try:
        return cls(**options)
    except TypeError as e:
        raise BenchError(f"bad options for {what}: {e}") from None
