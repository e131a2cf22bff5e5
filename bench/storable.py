"""The closed tables of what stored data may name: statistic functions and dataclasses.

A cached score holds its statistic as a name plus data arguments ({"$partial": {"func": {"$function": NAME}, ...}});
an artifact may hold dataclasses by name. A name is looked up here and nowhere else: nothing is imported for it,
and only what the code declared with `@statistic` or `@storable` can be named (bench.serialize). A name that is
not in the table is a damaged entry, never a reason to import or call anything.

    @statistic                      # a module-level function: (per-stratum (R, n_s) index arrays, **data) -> (R,)
    def crows_statistic(indices, *, biased, subset=None): ...

    @statistic(check=crows_shapes)  # check(strata, *args, **keywords) raises ValueError when the data and the
                                    # strata disagree (an array of another length): run on every load
"""
from __future__ import annotations

import dataclasses
import types
from typing import Any, Callable

# name ("module:qualname") -> the object; checks of statistics by name
_STATISTICS: dict[str, Callable] = {}
_CHECKS: dict[str, Callable] = {}
_DATACLASSES: dict[str, type] = {}


def name_of(obj: Any) -> str:
    return f"{obj.__module__}:{obj.__qualname__}"


def statistic(func: Callable | None = None, *, check: Callable | None = None):
    """Declare a module-level function as a statistic that stored scores may name (decorator)."""

    def register(f: Callable) -> Callable:
        if not isinstance(f, types.FunctionType) or "<" in f.__qualname__ or "." in f.__qualname__:
            raise TypeError(f"@statistic takes a module-level function, not {f!r}")
        _STATISTICS[name_of(f)] = f
        if check is not None:
            _CHECKS[name_of(f)] = check
        return f

    return register(func) if func is not None else register


def storable(cls: type) -> type:
    """Declare a dataclass that stored artifacts and scores may hold by name (decorator)."""
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)) or "." in cls.__qualname__ or "<" in cls.__qualname__:
        raise TypeError(f"@storable takes a module-level dataclass, not {cls!r}")
    _DATACLASSES[name_of(cls)] = cls
    return cls


def statistic_named(name: Any) -> Callable | None:
    return _STATISTICS.get(name) if isinstance(name, str) else None


def dataclass_named(name: Any) -> type | None:
    return _DATACLASSES.get(name) if isinstance(name, str) else None


def is_statistic(obj: Any) -> bool:
    return isinstance(obj, types.FunctionType) and _STATISTICS.get(name_of(obj)) is obj


def is_storable(cls: Any) -> bool:
    return isinstance(cls, type) and _DATACLASSES.get(name_of(cls)) is cls


def check_of(func: Callable) -> Callable | None:
    return _CHECKS.get(name_of(func))
