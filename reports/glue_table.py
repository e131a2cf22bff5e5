"""The full GLUE table: `bench glue-table RUN_DIR`, kept as an alias of `bench task-table RUN_DIR --suite glue`.

Everything is in reports/task_table.py, which renders any task suite (GLUE, SuperGLUE, ...) from the stored rows
and imports no metric module; `write_tables` (re-exported) writes every task suite's table of the rows.

    bench glue-table RUN_DIR [--format md|tex] [--write]
"""
from __future__ import annotations

from pathlib import Path

import click

from reports import task_table
from reports.task_table import MISSING_DATA, write_tables  # noqa: F401  (re-exported)

SUITE = "glue"


def table(rows: list[dict]):
    return task_table.table(rows, SUITE)


def render(rows: list[dict], fmt: str = "md") -> str:
    """The GLUE table as Markdown ("md") or LaTeX booktabs ("tex"); empty string when there are no GLUE rows."""
    return task_table.render(rows, fmt, SUITE)


@click.command(name="glue-table")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["md", "tex"]), default="md", show_default=True)
@click.option("--write", is_flag=True, help="Also write RUN_DIR/glue.md and RUN_DIR/glue.tex.")
def glue_table(run_dir, fmt, write):
    """Render the full GLUE table (one column per task plus the mean) of a run (= task-table --suite glue)."""
    task_table.run_command(run_dir, fmt, write, [SUITE], "run with --metrics glue")
