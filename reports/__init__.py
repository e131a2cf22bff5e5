"""Renderers of stored rows: Markdown and LaTeX tables, the HTML report (and the README's demo figure).

The core finds reports/ only through entry points (pyproject.toml), never by import: `bench report`,
`glue-table`, `task-table` and `rank-table` are `bench.commands`; the tables `bench run` writes and prints are
the renderers `leaderboard` and `html` (`bench.renderers`: reports.leaderboard.RunTables, writing the tables, and
reports.html_report.HtmlReport, writing report.html). reports/ imports the core and
no plugin (the metrics' columns come from the registry), and its modules import each other one way:

    cli, readme_demo → html_report → leaderboard → rank_table, task_table (glue_table → task_table) → cells, escape
    html_report → forest (→ cells, escape), html_md, run_files → the core

cells: the rows a table shows (one per cell) and the metric classes they name; escape: the one escaper per
output format. Which value of a column is better is asked of the column (`bench.api.Column.badness`).
"""
