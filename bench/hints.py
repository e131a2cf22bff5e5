"""Does a value conform to a type hint (int, float, str, bool, Literal, unions, lists of them ...), and how to name a
hint in a message: the checks of plugin options (bench.registry) and of a run's [stats] (bench.run.checks)."""
from __future__ import annotations

MISSING = object()  # a parameter without annotation or default: anything goes


def type_name(hint) -> str:
    import typing

    origin = typing.get_origin(hint)
    if hint is type(None):
        return "null"
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if is_union(hint):
        return " or ".join(type_name(a) for a in typing.get_args(hint))
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string", dict: "a table"}
    base = origin or hint
    if base in names:
        return names[base]
    if base in (list, tuple) or getattr(base, "__name__", "") in ("Sequence", "Iterable", "Collection"):
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        return f"a list of {type_name(args[0]).removeprefix('an ').removeprefix('a ')}s" if args else "a list"
    return getattr(hint, "__name__", str(hint))


def is_union(hint) -> bool:
    import types
    import typing

    return typing.get_origin(hint) is typing.Union or isinstance(hint, types.UnionType)


def conforms(value, hint) -> bool:
    import collections.abc as cabc
    import math
    import typing

    if hint is typing.Any or hint is MISSING:
        return True
    if hint is None or hint is type(None):
        return value is None
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return any(value == a and type(value) is type(a) for a in typing.get_args(hint))
    if is_union(hint):
        return any(conforms(value, a) for a in typing.get_args(hint))
    base = origin or hint
    if base is bool:
        return isinstance(value, bool)
    if base is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if base is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)
    if base is str:
        return isinstance(value, str)
    if base is dict or base is cabc.Mapping:
        return isinstance(value, dict)
    if base in (list, tuple, cabc.Sequence, cabc.Iterable, cabc.Collection):
        if isinstance(value, str):
            return base in (cabc.Sequence, cabc.Iterable, cabc.Collection) and all(
                conforms(value, a) for a in typing.get_args(hint)[:1])  # a lone string for Sequence[str]
        if not isinstance(value, (list, tuple)):
            return False
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        return not args or all(conforms(v, args[0]) for v in value)
    if isinstance(base, type):
        return isinstance(value, base) or base.__module__ not in ("builtins", "typing", "collections.abc")
    return True  # a type this checker does not know: left to the constructor
