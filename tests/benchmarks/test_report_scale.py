"""`bench report` on 100,000 rows: linear in the rows (issue 17, item 7; before, reports/leaderboard.py filtered
every row once per model and took 219 s).

Rows are shaped like the ones `bench run` writes (tests/result_rows.py: every field, StereoSet's 17, SEAT's 13 and
CrowS's 5 sub-metrics, n/a rows): "realistic" is 286 models x 10 methods x 35 rows, "many models" 33,334 models
with 3 rows each (the worst case of the old per-model filter). The command runs in a subprocess, imports
included; the old way (a copy of the quadratic table builder, below) is timed on 10,000 rows of the many-models
shape for the ratio. Run with `pytest tests/benchmarks/test_report_scale.py --benchmark-enable -s`; without
--benchmark-enable (its tiny mode) on 2,000 rows.
"""
from __future__ import annotations

import json
import math
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reports.cells import metric_classes
from reports.leaderboard import Cell, build, cell_rows
from result_rows import make_rows, unit_rows

REPO = Path(__file__).resolve().parents[2]
ROWS = 100_000
TINY_ROWS = 2_000  # the plain test command: the same tables checked, nothing timed against a limit
LIMIT_S = 5.0


def many_models(n: int) -> list[dict]:
    rng, rows, i = random.Random(0), [], 0
    while len(rows) < n:
        unit = unit_rows(f"m{i:06d}", "base", "Base", 0, rng)
        rows += [r for r in unit if r["submetric"] in ("ss_gender", "seat", "crows")]
        i += 1
    return rows


SHAPES = {"realistic": make_rows, "many models": many_models}


def _report(folder: Path, fmt: str) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "bench.cli", "report", str(folder), "--format", fmt], cwd=REPO,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    return time.perf_counter() - t0, proc.stdout


@pytest.mark.parametrize("fmt", ["md", "tex"])
@pytest.mark.parametrize("shape", SHAPES)
def test_report_on_100k_rows(benchmark, shape, fmt, tmp_path, full):
    rows = SHAPES[shape](ROWS if full else TINY_ROWS)
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    seconds, text = benchmark.pedantic(_report, args=(tmp_path, fmt), rounds=1, iterations=1)
    models = len({r["model"] for r in rows})
    assert text.count("\n") >= models
    print(f"\nbench report --format {fmt}, {len(rows):,} rows ({shape}: {models:,} models): {seconds:.2f}s")
    if shape == "realistic" and full:
        assert seconds < LIMIT_S


def test_linear_vs_the_old_quadratic_build(benchmark, full):
    rows = many_models(10_000 if full else TINY_ROWS)
    t0 = time.perf_counter()
    old = _quadratic_build(rows)
    t_old = time.perf_counter() - t0
    t0 = time.perf_counter()
    new = benchmark.pedantic(build, args=(rows,), rounds=1, iterations=1)
    t_new = time.perf_counter() - t0
    assert [(m, [(l, g, c) for l, g, c in b]) for m, b in new[1]] == [(m, b) for m, b in old[1]]
    print(f"\ntable of {len(rows):,} rows ({len(new[1]):,} models): linear {t_new:.3f}s, old per-model filter "
          f"{t_old:.2f}s -> {t_old / t_new:.0f}x")  # fmt: skip
    if full:
        assert t_new < t_old


def _quadratic_build(rows: list[dict]):
    """reports.leaderboard.build as it was at 4d743cf (kept only as the reference of this benchmark)."""
    rows = cell_rows(rows)
    columns = sorted([(m, c) for m, cls in metric_classes(rows).items() for c in cls.columns], key=lambda mc: mc[1].order)
    groups = list(dict.fromkeys((r["model"], r.get("bias_type", "gender")) for r in rows))
    table = []
    for model_name, bias_type in groups:
        mrows = [r for r in rows if r["model"] == model_name and r.get("bias_type", "gender") == bias_type]
        submetrics = {(m, c.label): c.submetric for m, cls in metric_classes(mrows).items()
                      for c in cls.columns_for(bias_type)}  # fmt: skip
        methods = {}
        for r in mrows:
            methods.setdefault(r["method"], (r.get("label") or r["method"], r.get("group", 2)))
        order = sorted(methods, key=lambda m: (methods[m][1], list(methods).index(m)))
        body = []
        for method in order:
            cells = []
            for metric, col in columns:
                match = [r for r in mrows if r["method"] == method and r["metric"] == metric]
                sub = submetrics.get((metric, col.label), col.submetric)
                ok = [r for r in match if r.get("submetric") == sub and r.get("status") == "ok"]
                if ok and ok[0].get("value") is not None:
                    r = ok[0]
                    cells.append(Cell(r["value"], r.get("ci_low"), r.get("ci_high"), bool(r.get("significant"))))
                else:
                    cells.append(Cell(na=any(r.get("status") == "n/a" for r in match),
                                      error=any(r.get("status") == "error" for r in match)))  # fmt: skip
            body.append((methods[method][0], methods[method][1], cells))
        for j, (_, col) in enumerate(columns):
            found = [cells[j] for _, _, cells in body if cells[j].value is not None and not math.isnan(cells[j].value)]
            if len(found) > 1:
                best = min(col.badness(c.value) for c in found)
                for c in found:
                    c.best = col.badness(c.value) == best
        table.append((model_name, body))
    return columns, table
