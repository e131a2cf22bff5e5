"""Regression check of a run against a baseline: what a user's CI calls (`bench check`)."""
from __future__ import annotations

import math

from bench.errors import BenchError

EXIT_REGRESSION, EXIT_NOTHING, EXIT_MALFORMED = 1, 3, 4
KEY_FIELDS = ("model", "method", "metric")


class Malformed(BenchError):
    """A baseline or run row that cannot be compared (missing key fields, a non-numeric value or tolerance)."""


def read_checked(path, which: str) -> list[dict]:
    """The rows of a run or baseline (`which`), each checked by bench.run.schema.ROW_SCHEMA; a bad row is Malformed."""
    from bench.run.schema import MalformedRow, read_rows

    try:
        return read_rows(path)
    except MalformedRow as e:
        raise Malformed(f"{which} row {e.row} ({e.path} line {e.line}: {e.problem}); fix or regenerate "
                        f"{e.path}") from None


def _key(row: dict) -> tuple:
    return (row["model"], row["method"], row["metric"], row.get("submetric"), row.get("seed", 0),
            row.get("bias_type", "gender"))


def _number(row: dict, field: str, where: str) -> float:
    value = row.get(field)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Malformed(f"{where}: {field} must be a number, got {value!r}")
    return float(value)


def compare_runs(rows: list[dict], baseline: list[dict], tolerance: float) -> tuple[list[str], int]:
    """Every baseline value must be present in `rows` and within its tolerance (row 'tolerance' or default).
    Returns (failures, number of values checked); raises Malformed for a row that cannot be compared."""
    for which, table in (("baseline", baseline), ("run", rows)):
        for i, r in enumerate(table, start=1):
            missing = [k for k in KEY_FIELDS if not isinstance(r.get(k), str)]
            if missing and (which == "baseline" or r.get("value") is not None):
                raise Malformed(f"{which} row {i} lacks {', '.join(missing)}")
    current = {_key(r): r for r in rows if all(isinstance(r.get(k), str) for k in KEY_FIELDS)}
    failures, checked = [], 0
    for i, b in enumerate(baseline, start=1):
        if b.get("status", "ok") != "ok" or b.get("value") is None:
            continue
        where = f"baseline row {i}"
        value = _number(b, "value", where)
        tol = _number(b, "tolerance", where) if "tolerance" in b else tolerance
        if not (math.isfinite(tol) and tol >= 0):
            raise Malformed(f"{where}: tolerance must be a finite number >= 0, got {b['tolerance']!r}")
        checked += 1
        key = _key(b)
        name = "/".join(str(k) for k in key[:4])
        r = current.get(key)
        if r is None or r.get("value") is None:
            failures.append(f"{name}: missing from the run (baseline {value:.6g})")
            continue
        got = _number(r, "value", f"run row {name}")
        diff = abs(got - value)
        if math.isnan(diff) or diff > tol:
            failures.append(f"{name}: {got:.6g} vs baseline {value:.6g} (|diff| {diff:.3g} > {tol:.3g})")
    return failures, checked
