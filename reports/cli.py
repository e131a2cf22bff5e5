"""`bench report`: the leaderboard (or every stored number) of one or more runs, a command of reports/ that the
core finds through the entry-point group `bench.commands` (pyproject.toml), like glue-table, task-table and
rank-table.

    bench report RUN_DIR... [--format md|tex|html] [--table main|full] [--out FILE]
"""
from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["md", "tex", "html"]), default="md", show_default=True,
              help="html: the whole report as one self-contained page (leaderboard, forest plots of the changes "
                   "vs. base, task and rank tables, the runs' figures, request, versions and data fingerprints).")
@click.option("--table", type=click.Choice(["main", "full"]), default="main", show_default=True,
              help="main: the paper's leaderboard; full: every sub-metric of every metric (md and tex).")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False),
              help="Write the output to this file (atomically) instead of printing it, e.g. --out report.html.")
def report(run_dirs, fmt, table, out):
    """Render stored results (run directories or results.jsonl files) as Markdown, LaTeX or HTML.

    Several runs render as one table, e.g. a gender, a race and a religion run of the same models:
    each (model, bias type) is its own group of rows.

    \b
    Every `bench run --out RUN` writes RUN/report.html too; to make one of several runs:
      bench report runs/gender runs/race --format html --out report.html
    """
    from bench.run.schema import read_rows

    rows = [r for run_dir in run_dirs for r in read_rows(run_dir)]
    if fmt == "html":
        from reports.html_report import render_html

        text = render_html(rows, run_dirs)
    else:
        from reports.leaderboard import render, render_full

        text = render(rows, fmt) if table == "main" else render_full(rows, fmt)
    if out is None:
        click.echo(text, nl=not text.endswith("\n"))
        return
    from bench.files import write_text

    write_text(out, text if text.endswith("\n") else text + "\n")
    click.echo(f"wrote {out}", err=True)
