"""`bench report`: the leaderboard (or every stored number) of one or more runs, a command of reports/ that the
core finds through the entry-point group `bench.commands` (pyproject.toml), like glue-table, task-table and
rank-table.

    bench report RUN_DIR... [--format md|tex] [--table main|full]
"""
from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["md", "tex"]), default="md", show_default=True)
@click.option("--table", type=click.Choice(["main", "full"]), default="main", show_default=True,
              help="main: the paper's leaderboard; full: every sub-metric of every metric.")
def report(run_dirs, fmt, table):
    """Render stored results (run directories or results.jsonl files) as Markdown or LaTeX.

    Several runs render as one table, e.g. a gender, a race and a religion run of the same models:
    each (model, bias type) is its own group of rows.
    """
    from bench.run.schema import read_rows
    from reports.leaderboard import render, render_full

    rows = [r for run_dir in run_dirs for r in read_rows(run_dir)]
    click.echo(render(rows, fmt) if table == "main" else render_full(rows, fmt))
