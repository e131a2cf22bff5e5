"""The one schema of what a run directory holds, checked on every read: results rows (results.jsonl, a `bench check`
baseline) and manifest.json. A malformed row is a one-line error naming the file, the line and the field."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable

from bench.errors import BenchError, DataError

def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


_NAME = ("a non-empty string", lambda v: isinstance(v, str) and v != "")
_TEXT = ("a string", lambda v: isinstance(v, str))
_COUNT = ("an integer >= 0", lambda v: _is_int(v) and v >= 0)
# An estimate may be NaN or infinite: an undefined statistic (e.g. a CI with too few finite resamples) is stored so.
_ESTIMATE = ("a number", _is_number)
_FINITE = ("a finite number >= 0", lambda v: _is_number(v) and math.isfinite(v) and v >= 0)
_FLAG = ("true or false", lambda v: isinstance(v, bool))
STATUSES = ("ok", "n/a", "error")

# The one schema of a results row (results.jsonl, a baseline): field -> (what it must be, test, may be null).
# Fields not listed are kept unchecked (they reach no table); model, method and metric are required.
ROW_SCHEMA: dict[str, tuple[str, Callable[[Any], bool], bool]] = {
    "model": (*_NAME, False), "method": (*_NAME, False), "metric": (*_NAME, False), "bias_type": (*_NAME, False),
    "label": (*_TEXT, True), "submetric": (*_TEXT, True), "note": (*_TEXT, True), "config_hash": (*_TEXT, True),
    "group": ("an integer", _is_int, False),
    "status": (f"one of {', '.join(STATUSES)}", lambda v: v in STATUSES, False),
    "seed": (*_COUNT, True), "n": (*_COUNT, True), "resamples": (*_COUNT, True),
    "seeds": ("a list of integers >= 0", lambda v: isinstance(v, list) and all(_COUNT[1](x) for x in v), False),
    "aggregate": (*_FLAG, False), "significant": (*_FLAG, True),
    "value": (*_ESTIMATE, True), "ci_low": (*_ESTIMATE, True), "ci_high": (*_ESTIMATE, True),
    "delta": (*_ESTIMATE, True), "delta_low": (*_ESTIMATE, True), "delta_high": (*_ESTIMATE, True),
    "runtime_s": (*_FINITE, True), "tolerance": (*_FINITE, False),
    "versions": ("an object", lambda v: isinstance(v, dict), True),
}  # fmt: skip
REQUIRED_FIELDS = ("model", "method", "metric")


# The JSON types each field may have (a first, cheap look at every row: `bench report` reads 100,000 rows in ~1 s);
# fields whose rule says more than their type (a non-empty name, a count >= 0, ...) are then tested by ROW_SCHEMA.
_JSON_TYPES = {"string": (str,), "integer": (int,), "number": (int, float), "flag": (bool,), "list": (list,),
               "object": (dict,)}  # fmt: skip
_FIELD_TYPES = {
    **dict.fromkeys(("model", "method", "metric", "bias_type", "label", "submetric", "note", "config_hash", "status"),
                    "string"),
    **dict.fromkeys(("group", "seed", "n", "resamples"), "integer"),
    **dict.fromkeys(("value", "ci_low", "ci_high", "delta", "delta_low", "delta_high", "runtime_s", "tolerance"),
                    "number"),
    "aggregate": "flag", "significant": "flag", "seeds": "list", "versions": "object",
}  # fmt: skip
_TYPE_ONLY = {"label", "submetric", "note", "config_hash", "group", "aggregate", "significant", "value", "ci_low",
              "ci_high", "delta", "delta_low", "delta_high", "versions"}  # their ROW_SCHEMA test is their type alone
_ALLOWED = {f: frozenset(_JSON_TYPES[k] + ((type(None),) if ROW_SCHEMA[f][2] else ())) for f, k in _FIELD_TYPES.items()}
_TESTED = tuple(f for f in ROW_SCHEMA if f not in _TYPE_ONLY)
_SHAPES: dict[tuple, list[str]] = {}  # (fields, their types) of rows whose types are right -> the fields left to test


def row_problem(row: Any) -> str | None:
    """What is wrong with a results row by ROW_SCHEMA (None: nothing)."""
    if not isinstance(row, dict):
        return "not a JSON object"
    missing = [k for k in REQUIRED_FIELDS if k not in row]
    if missing:
        return f"lacks {', '.join(missing)}"
    shape = (tuple(row), tuple(map(type, row.values())))
    fields = _SHAPES.get(shape)
    if fields is None:
        fields = list(row)
        if all(t in _ALLOWED[f] for f, t in zip(*shape) if f in _ALLOWED):
            fields = _SHAPES[shape] = [f for f in _TESTED if f in row]
    for field in fields:
        rule, value = ROW_SCHEMA.get(field), row[field]
        if rule is None or (value is None and rule[2]):
            continue
        what, test, nullable = rule
        if not test(value):
            return f"{field} must be {what}{' or null' if nullable else ''}, got {_shown(value)}"
    return None


def _shown(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


class MalformedRow(DataError):
    """A results row that does not follow ROW_SCHEMA; `row` is its 1-based position among the rows."""

    def __init__(self, path: Path, line: int, row: int, problem: str):
        super().__init__(f"{path} line {line}: malformed row ({problem}); fix or remove the line, or rerun into "
                         "a new --out")
        self.path, self.line, self.row, self.problem = path, line, row, problem


def read_rows(path: Path) -> list[dict]:
    """The rows of a results.jsonl (or of RUN_DIR/results.jsonl), each checked against ROW_SCHEMA: a malformed
    row raises MalformedRow (a DataError) naming the file, the line and the field."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.jsonl"
    if not path.is_file():
        raise BenchError(f"no results at {path}")
    rows = []
    from bench.data.paths import open_text

    with open_text(path) as f:
        for i, line in enumerate(f, start=1):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise MalformedRow(path, i, len(rows) + 1, f"not JSON: {e.msg}") from None
                problem = row_problem(row)
                if problem:
                    raise MalformedRow(path, i, len(rows) + 1, problem)
                rows.append(row)
    return rows



def manifest_problem(manifest: Any) -> str | None:
    """What is wrong with a run directory's manifest.json (None: nothing)."""
    if not isinstance(manifest, dict):
        return "not a JSON object"
    if not isinstance(manifest.get("request_hash"), str):
        return "request_hash must be a string"
    if not isinstance(manifest.get("request", {}), dict):
        return "request must be an object"
    data = manifest.get("data", {})
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        return "data must be an object of file fingerprints (strings)"
    return None
