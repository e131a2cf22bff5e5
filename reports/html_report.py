"""The HTML report: one self-contained file (`report.html`, written by every run; `bench report RUN... --format
html`) that opens offline. Its styles and figures are inline (no script at all; a Content-Security-Policy that
allows no request leaves nothing to fetch), and it holds, in order:

- the leaderboard, every cell exactly as in Markdown (the Markdown table converted, reports.html_md);
- per leaderboard column, a forest plot of every method's change vs. its base model with the paired CI
  (reports.forest: matplotlib, inline SVG);
- the task tables (GLUE, SuperGLUE) and the rank table, when the rows hold them;
- the figures the runs hold (RUN/figures/*.png: GRADIEND's encoder plot and (h, alpha) heatmap);
- the request, the package versions and the data fingerprints of each run (reports.run_files).

Every string from rows or run files is HTML-escaped (reports.escape.html); the same rows and run files give the
same bytes.
"""
from __future__ import annotations

import json
from pathlib import Path

from bench.files import write_text
from reports import forest, html_md
from reports.cells import cell_rows
from reports.escape import html
from reports.leaderboard import render_markdown
from reports.run_files import RunFiles, read_run, run_dir_of

FILENAME = "report.html"
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; margin: 2em auto;
       max-width: 1250px; padding: 0 1.5em; color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border: 1px solid #d0d7de; padding: 0.3em 0.7em; text-align: left; vertical-align: top; }
thead th { background: #f3f5f7; } tbody tr:nth-child(even) { background: #fafbfc; }
td { font-variant-numeric: tabular-nums; } table.results td:nth-child(n+3) { white-space: nowrap; } p.note, ul { color: #555; font-size: 0.9em; max-width: 110ch; }
figure { margin: 1.2em 0; } figure svg { max-width: 100%; height: auto; } figure img { max-width: 100%; }
figcaption { color: #555; font-size: 0.9em; } code { font-size: 0.9em; }
table.kv td:first-child { font-family: ui-monospace, monospace; white-space: nowrap; }
table.kv td { font-family: ui-monospace, monospace; word-break: break-all; }
"""


def _section(ident: str, title: str, body: str) -> str:
    return f'<section id="{ident}">\n<h2>{title}</h2>\n{body}\n</section>' if body else ""


def _forest(rows: list[dict]) -> str:
    figures = []
    for i, (title, found) in enumerate(forest.panels(rows)):
        svg = forest.svg(found, salt=f"bench-report-{i}")
        figures.append(f'<figure class="forest">\n<h3>{html(title)}</h3>\n{svg}\n</figure>')
    return "\n".join(figures)


def _tables(cells: list[dict], run_dirs=()) -> tuple[str, str]:
    """(the task tables, the rank table) as HTML, each empty when the rows hold none. The rank table of one run
    directory takes its CIs from the run's cached items, as the run's rank.md does."""
    from reports import rank_table, task_table

    tasks = []
    for suite in task_table.suites(cells):
        text = task_table.render(cells, "md", suite)
        if text:
            tasks.append(f"<h3>{html(suite)}</h3>\n" + html_md.to_html(text))
    rank = ""
    if rank_table.render(cells, "md", resamples=0):
        items = rank_table.run_items(run_dir_of(Path(run_dirs[0]))) if len(run_dirs) == 1 else {}
        rank = rank_table.render(cells, "md", items=items)
    return "\n".join(tasks), html_md.to_html(rank) if rank else ""


def _figures(runs: list[RunFiles]) -> str:
    items = []
    for run in runs:
        for fig in run.figures:
            caption = f"{html(fig.name)} <span class=\"run\">({html(run.run)})</span>"
            items.append(f'<figure class="run-figure">\n<img alt="{html(fig.name)}" src="{fig.data_uri}">\n'
                         f"<figcaption>{caption}</figcaption>\n</figure>")  # fmt: skip
    return "\n".join(items)


def _kv(pairs) -> str:
    """A two-column table of (key, value) strings, both escaped; a non-string value as JSON."""
    body = "\n".join(f"<tr><td>{html(k)}</td><td>{html(v if isinstance(v, str) else _json(v))}</td></tr>"
                     for k, v in pairs)  # fmt: skip
    return f'<table class="kv">\n<tbody>\n{body}\n</tbody>\n</table>' if body else ""


def _json(value) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def _provenance(rows: list[dict], runs: list[RunFiles]) -> str:
    parts = []
    versions = list(dict.fromkeys(_json(r["versions"]) for r in rows if isinstance(r.get("versions"), dict)))
    if versions:
        parts.append("<h3>Versions</h3>\n" + "\n".join(_kv(sorted(json.loads(v).items())) for v in versions))
    for run in runs:
        parts.append(f"<h3>Run <code>{html(run.run)}</code></h3>")
        if run.manifest is None:
            parts.append(f'<p class="note">{html(run.problem or "no manifest")}</p>')
            continue
        request = run.manifest.get("request") or {}
        extra = [(k, v) for k, v in sorted(run.manifest.items()) if k not in ("request", "data")]
        parts.append("<h4>Request</h4>\n" + _kv(sorted(request.items()) + extra))
        data = sorted((run.manifest.get("data") or {}).items())
        parts.append("<h4>Data fingerprints</h4>\n" + (_kv(data) or '<p class="note">none recorded</p>'))
    return "\n".join(parts)


def render_html(rows: list[dict], run_dirs=()) -> str:
    """The report of `rows` (and of the run directories they were read from: manifests, figures) as one page."""
    runs = [read_run(Path(d)) for d in run_dirs]
    cells = cell_rows(rows)
    tasks, rank = _tables(cells, tuple(run_dirs))
    models = ", ".join(dict.fromkeys(r["model"] for r in rows))
    body = [
        _section("leaderboard", "Leaderboard", html_md.to_html(render_markdown(rows))),
        _section("forest", "Changes vs. base", _forest(rows)),
        _section("tasks", "Task tables", tasks),
        _section("rank", "Rank table", rank),
        _section("figures", "Figures of the run", _figures(runs)),
        _section("provenance", "Request, versions and data", _provenance(rows, runs)),
    ]
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>bench report: {html(models)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        f"<h1>bench report</h1>\n<p class=\"note\">Models: {html(models) or 'none'}</p>\n"
        + "\n".join(b for b in body if b) + "\n</body>\n</html>\n"
    )


def write_report(rows: list[dict], out: Path) -> list[Path]:
    """Write OUT/report.html (atomically) from the rows and the run directory OUT; returns its path."""
    path = Path(out) / FILENAME
    write_text(path, render_html(rows, [out]))
    return [path]


def _show(rows: list[dict], fmt: str = "md") -> str:
    return ""  # the report is a file: `bench run` names it and prints nothing more


class HtmlReport:
    """The renderer `bench run` calls (entry point `html` of the group `bench.renderers`): `write(rows, out)`
    writes OUT/report.html and returns its path; `show(rows, fmt)` prints nothing (the HTML is a file)."""

    write = staticmethod(write_report)
    show = staticmethod(_show)
