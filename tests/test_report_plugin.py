"""reports/ as a plugin of the core (issue 18): `bench report` is a command of reports/ found through the
`bench.commands` entry points, `bench run` writes and prints its tables through the renderers registered under
`bench.renderers`, the core imports no report, the tables import each other one way only, and the direction
of a column (which value is better) is asked of `Column`."""
from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import numpy as np
import pytest

from bench.api import Column
from cli_helpers import run_bench
from result_rows import make_rows, seed_rows

REPO = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in a file, at any depth (lazy imports inside functions included)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            out.append((node.lineno, node.module or ""))
            out += [(node.lineno, f"{node.module}.{a.name}") for a in node.names if node.module == "reports"]
    return out


def test_the_core_imports_no_report():
    upward = [f"{p.relative_to(REPO)}:{line} imports {name}" for p in sorted((REPO / "bench").rglob("*.py"))
              for line, name in _imports(p) if name.split(".")[0] == "reports"]  # fmt: skip
    assert not upward, "the core reaches up into reports/: " + "; ".join(upward)


def test_reports_import_each_other_one_way():
    """The import graph of reports/ (lazy imports included) has no cycle; cells is below every table."""
    modules = {p.stem: p for p in (REPO / "reports").glob("*.py") if p.stem != "__init__"}
    edges = {m: {n.split(".")[1] for _, n in _imports(p) if n.startswith("reports.") and n.split(".")[1] in modules}
             for m, p in modules.items()}  # fmt: skip
    assert not {m for m in edges["cells"] if m != "escape"}, f"reports/cells.py imports {edges['cells']}"

    def visit(m, path):
        assert m not in path, "import cycle in reports/: " + " -> ".join(path[path.index(m):] + [m])
        for n in sorted(edges[m]):
            visit(n, path + [m])

    for m in sorted(modules):
        visit(m, [])


def test_report_is_a_plugin_command(tmp_path, capsys):
    from bench.cli import cli
    from bench.registry import COMMANDS
    from reports.cli import report
    from reports.leaderboard import render, render_full

    assert "report" not in cli.commands and COMMANDS.find("report") is report
    rows = make_rows(200) + seed_rows("n")
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, out, err = run_bench(["report", tmp_path], capsys)
    assert (code, err) == (0, "") and out == render(rows, "md") + "\n"
    code, out, _ = run_bench(["report", tmp_path, tmp_path / "results.jsonl", "--format", "tex", "--table", "full"], capsys)
    assert code == 0 and out == render_full(rows + rows, "tex") + "\n"
    code, out, _ = run_bench(["--help"], capsys)
    assert code == 0 and "  report " in out and "Render stored results" in out
    code, out, _ = run_bench(["report", "--help"], capsys)
    assert code == 0 and out.startswith("Usage: bench report [OPTIONS] RUN_DIRS...") and "--table [main|full]" in out


def test_bench_run_writes_and_prints_through_the_renderers(tmp_path):
    from bench.registry import RENDERERS
    from reports.leaderboard import RunTables, render

    assert RENDERERS.find("leaderboard") is RunTables
    rows = make_rows(100)
    paths = RunTables.write(rows, tmp_path)
    assert [p.name for p in paths] == ["leaderboard.md", "leaderboard.tex"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["leaderboard.md", "leaderboard.tex", "rank.md", "rank.tex",
                                                          "results_full.md"]  # fmt: skip
    assert RunTables.show(rows, "tex") == render(rows, "tex")


class _Probe:
    """A second renderer: `bench run` must call it as it calls the leaderboard."""

    calls: list = []

    @staticmethod
    def write(rows, out):
        _Probe.calls.append((len(rows), out))
        (out / "probe.txt").write_text(f"{len(rows)} rows")
        return [out / "probe.txt"]

    @staticmethod
    def show(rows, fmt):
        return f"probe saw {len(rows)} rows as {fmt}"


def test_bench_run_calls_every_registered_renderer(tmp_path, capsys):
    from bench.registry import RENDERERS
    from reports.leaderboard import render

    out = tmp_path / "run"
    RENDERERS.names()  # the entry points first, then the probe after them
    RENDERERS.register("zz-probe", _Probe)
    try:
        code, stdout, err = run_bench(["run", "--models", "synthetic", "--metrics", "crows", "--resamples", "20", "--out",
                                  out, "--cache-dir", tmp_path / "cache", "--no-progress"], capsys)  # fmt: skip
    finally:
        RENDERERS.unregister("zz-probe")
    assert code == 0, err
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert _Probe.calls == [(len(rows), out)] and (out / "probe.txt").read_text() == f"{len(rows)} rows"
    assert stdout == render(rows, "md") + f"\n\nprobe saw {len(rows)} rows as md\n"
    assert err.rstrip().endswith(f"tables: {out / 'report.html'}, {out / 'leaderboard.md'}, {out / 'leaderboard.tex'}, "
                                 f"{out / 'probe.txt'}")  # the entry points html, leaderboard, then the probe
    assert (out / "report.html").read_text().startswith("<!DOCTYPE html>")
    assert (out / "leaderboard.md").read_text() == render(rows, "md") + "\n" and (out / "results_full.md").is_file()


@pytest.mark.parametrize("goal, values, want", [("50", [40.0, 50.0, 65.0], [10.0, 0.0, 15.0]),
                                                ("0", [-0.5, 0.0, 0.25], [0.5, 0.0, 0.25]),
                                                ("max", [1.0, -2.0], [-1.0, 2.0])])  # fmt: skip
def test_column_says_which_direction_is_better(goal, values, want):
    col = Column("X", "x", goal, 1)
    assert [col.badness(v) for v in values] == want
    assert col.badness(np.array(values)).tolist() == want
    with pytest.raises(ValueError, match="goal"):
        Column("X", "x", "min", 1).badness(1.0)


def test_rank_and_leaderboard_ask_the_column():
    from reports import leaderboard, rank_table

    for module in (leaderboard, rank_table):
        source = Path(module.__file__).read_text()
        assert "_badness" not in source and "_KNOWN" not in source and ".badness(" in source
    x = np.array([[55.0, 48.0, math.nan, 70.0]])
    assert rank_table.proportional_ranks(x, Column("SS", "ss_gender", "50", 10)).tolist()[0][:2] == [0.5, 1.0]
    np.testing.assert_array_equal(rank_table.proportional_ranks(x, "50"),
                                  rank_table.proportional_ranks(x, Column("SS", "ss_gender", "50", 10)))


def test_rank_goals_come_from_the_installed_metrics():
    """SS of a race run is declared by StereoSet's columns for that bias type, SS of any other domain by StereoSet
    itself; a sub-metric no installed metric declares cannot be ranked."""
    import click

    from reports.rank_table import _declared

    rows = [{"metric": "stereoset"}, {"metric": "seat"}, {"metric": "not-installed"}]
    assert (_declared("ss_race", rows).label, _declared("ss_race", rows).goal) == ("SS", "50")
    assert _declared("seat", rows).goal == "0"
    assert _declared("ss_profession", rows).goal == "50"  # StereoSet declares SS of every domain (Metric.declares)
    with pytest.raises(click.UsageError, match="no column declares the sub-metric 'ss_nowhere'"):
        _declared("ss_nowhere", [{"metric": "seat"}])
    with pytest.raises(click.UsageError):
        _declared("crows", rows)  # CrowS is installed, but no row of these names it


def test_reports_stay_small_and_swallow_no_error():
    """No function over 60 lines, no module over 450, and no `except Exception` (or bare except) in reports/."""
    for path in sorted((REPO / "reports").glob("*.py")):
        source = path.read_text()
        assert len(source.splitlines()) <= 450, f"{path.name}: {len(source.splitlines())} lines"
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                assert node.end_lineno - node.lineno < 60, f"{path.name}: {node.name} is over 60 lines"
            if isinstance(node, ast.ExceptHandler):
                caught = ast.unparse(node.type) if node.type is not None else ""
                assert caught not in ("", "Exception", "BaseException"), f"{path.name}:{node.lineno} except {caught}"
