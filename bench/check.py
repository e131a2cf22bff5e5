"""Regression check of a run against a baseline: what a user's CI calls (`bench check`)."""
from __future__ import annotations

import math


def _key(row: dict) -> tuple:
    return (row["model"], row["method"], row["metric"], row.get("submetric"), row.get("seed", 0))


def compare_runs(rows: list[dict], baseline: list[dict], tolerance: float) -> tuple[list[str], int]:
    """Every baseline value must be present in `rows` and within its tolerance (row 'tolerance' or default)."""
    current = {_key(r): r for r in rows}
    failures, checked = [], 0
    for b in baseline:
        if b.get("status", "ok") != "ok" or b.get("value") is None:
            continue
        checked += 1
        key = _key(b)
        name = "/".join(str(k) for k in key[:4])
        r = current.get(key)
        if r is None or r.get("value") is None:
            failures.append(f"{name}: missing from the run (baseline {b['value']:.6g})")
            continue
        tol = float(b.get("tolerance", tolerance))
        diff = abs(float(r["value"]) - float(b["value"]))
        if math.isnan(diff) or diff > tol:
            failures.append(f"{name}: {r['value']:.6g} vs baseline {b['value']:.6g} (|diff| {diff:.3g} > {tol:.3g})")
    return failures, checked
