"""What every table of reports/ shares, below them all: the rows a table shows (one per cell) and the metric
classes the rows name, looked up in the registry.

The tables (leaderboard, rank_table, task_table) import this module and never each other's internals, so the
arrows inside reports/ point one way: leaderboard → rank_table, task_table → cells → the core.
"""
from __future__ import annotations

from pathlib import Path

from bench.errors import UnknownName
from bench.registry import METRICS
from bench.run.schema import read_rows


def _key(r: dict) -> tuple:
    return (r["model"], r.get("bias_type", "gender"), r["method"], r["metric"], r.get("submetric"))


def cell_rows(rows: list[dict]) -> list[dict]:
    """The rows a table shows, in their order: per (model, bias type, method, metric, sub-metric) the aggregate
    row over seeds when there is one, else the rows of the lowest seed present. One seed: `rows` unchanged."""
    def rank(r: dict) -> tuple:
        return (0, 0) if r.get("aggregate") else (1, r.get("seed") or 0)

    keyed = [(_key(r), rank(r)) for r in rows]
    best: dict[tuple, tuple] = {}
    for key, rk in keyed:
        if rk < best.get(key, (2,)):
            best[key] = rk
    return [r for r, (key, rk) in zip(rows, keyed) if rk == best[key]]


def read_cells(run_dir: Path) -> list[dict]:
    """The stored rows of a run directory (or results.jsonl), one per cell: the aggregate over seeds when present."""
    return cell_rows(read_rows(run_dir))


def metric_class(name: str):
    """The registered class of the metric `name`, or None when no installed plugin provides it (rows read
    without their plugins)."""
    try:
        return METRICS.get(name)
    except UnknownName:
        return None


def metric_classes(rows: list[dict]) -> dict[str, type]:
    """Metric name -> registered class of each metric in the rows, in order of appearance (not installed: left out)."""
    found = {metric: metric_class(metric) for metric in dict.fromkeys(r["metric"] for r in rows)}
    return {metric: cls for metric, cls in found.items() if cls is not None}


def layout(rows: list[dict]) -> tuple[dict, list, dict, bool]:
    """What every leaderboard-shaped view of `rows` starts from: the metric classes, the columns (metric, Column)
    in their declared order, the rows grouped by (model, bias type) in the rows' order, and whether a bias type
    other than gender is present (then group titles name it)."""
    classes = metric_classes(rows)
    columns = sorted(((m, c) for m, cls in classes.items() for c in cls.columns), key=lambda mc: mc[1].order)
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["model"], r.get("bias_type", "gender")), []).append(r)
    return classes, columns, groups, any(b != "gender" for _, b in groups)
