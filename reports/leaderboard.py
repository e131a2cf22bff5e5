"""Leaderboards in Markdown and LaTeX (booktabs), laid out like the paper's main table.

Rows are grouped by base model (and bias type, when a run or a set of runs measured race or religion), then by
method group (base / GRADIEND / baselines / combinations). Columns
come from the metrics' `Column` declarations (SS, SEAT, CrowS, LMS, GLUE). A cell shows the value with its
95 % CI; the best variant per model and column is bold (closest to 50 for SS/CrowS, smallest |x| for SEAT,
largest for LMS/GLUE); a dagger marks a significant change vs. the base model (paired bootstrap, CI of the
difference excludes 0); "!" after the CI where the value lies outside it (SPEC §3.5: the reference's tables flag
such cells as well); n/a where a method does not apply; an empty cell where nothing was run.

Seeds: a run over several seeds stores per-seed rows (`seed`: the seed) and aggregate rows (`seed`: null,
`seeds`: the list, `aggregate`: true; mean over the seeds with a two-stage bootstrap CI, bench.stats). A cell
shows the aggregate row when there is one, else the row of the (lowest) seed it has; the note under the
Markdown table then says "mean over N seeds". `render_full` lists per-seed and aggregate rows, with a Seed
column whenever the rows hold more than one seed or an aggregate. A one-seed run renders as before.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from tabulate import LATEX_ESCAPE_RULES, Line, TableFormat, tabulate

from bench.api import Column
from bench.files import write_text
from reports.cells import cell_rows, layout
from reports.escape import latex, markdown, plain

SIG_MD, SIG_TEX = "†", r"$^\dagger$"
OUTSIDE_MD, OUTSIDE_TEX = "!", r"$^{!}$"
OUTSIDE_NOTE = ("the value lies outside its CI (the bootstrap distribution of this statistic is shifted away from the "
                "estimate; the reference's tables flag such cells too)")


@dataclass
class Cell:
    value: float | None = None
    low: float | None = None
    high: float | None = None
    significant: bool = False
    na: bool = False
    error: bool = False
    best: bool = False

    @property
    def outside(self) -> bool:
        """The point estimate lies outside its own CI (beyond rounding of the last bits)."""
        if self.value is None or self.low is None or self.high is None or math.isnan(self.value):
            return False
        slack = 1e-9 * max(1.0, abs(self.value))
        return self.value < self.low - slack or self.value > self.high + slack


def _submetrics(classes: dict, bias_type: str) -> dict[tuple[str, str], str]:
    """(metric, column label) -> the sub-metric holding that column in a run of `bias_type` (SS: ss_race, ...);
    `classes`: metric name -> registered class."""
    return {(metric, c.label): c.submetric for metric, cls in classes.items() for c in cls.columns_for(bias_type)}


def _decimals(col: Column) -> int:
    return 3 if col.goal == "0" else 2


def seeds_note(rows: list[dict]) -> str:
    """'mean over N seeds' when `rows` (as shown: cell_rows) hold aggregates over several seeds, else ''."""
    counts = sorted({len(r.get("seeds") or ()) for r in rows if r.get("aggregate") and len(r.get("seeds") or ()) > 1})
    if not counts:
        return ""
    n = str(counts[0]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"
    return f"mean over {n} seeds (bootstrap over seeds, then items)"


def build(rows: list[dict]):
    """-> (columns, [(model, [(label, group, [Cell per column])])]). Linear in the rows: they are grouped once by
    (model, bias type) and, within a group, by (method, metric)."""
    return _build(cell_rows(rows))


def _build(rows: list[dict]):
    """build() of rows already reduced to one per cell (cell_rows)."""
    classes, columns, groups, show_type = layout(rows)
    wanted = {}  # bias type -> the (metric, sub-metric) of each column
    for bias_type in {b for _, b in groups}:
        subs = _submetrics(classes, bias_type)
        wanted[bias_type] = [(metric, subs.get((metric, col.label), col.submetric)) for metric, col in columns]
    table = []
    for (model_name, bias_type), mrows in groups.items():
        model = f"{model_name} ({bias_type})" if show_type else model_name
        body = _group_body(mrows, wanted[bias_type])
        _mark_best(body, columns)
        table.append((model, body))
    return columns, table


def _group_body(mrows: list[dict], wanted: list[tuple[str, str]]) -> list[tuple[str, int, list[Cell]]]:
    """The (label, group, cells) of each method of one (model, bias type), base first, then by method group;
    `wanted`: the (metric, sub-metric) of each column."""
    methods: dict[str, tuple] = {}
    first_ok: dict[tuple, dict] = {}  # (method, metric, sub-metric) -> its first row with status ok
    statuses: dict[tuple, set] = {}  # (method, metric) -> the statuses of its rows
    for r in mrows:
        method, metric, status = r["method"], r["metric"], r.get("status")
        methods.setdefault(method, (r.get("label") or method, r.get("group", 2), len(methods)))
        statuses.setdefault((method, metric), set()).add(status)
        if status == "ok":
            first_ok.setdefault((method, metric, r.get("submetric")), r)
    body = []
    for method in sorted(methods, key=lambda m: methods[m][1:]):
        cells = [_cell(first_ok.get((method, metric, sub)), statuses.get((method, metric), ())) for metric, sub in wanted]
        body.append((methods[method][0], methods[method][1], cells))
    return body


def _cell(ok: dict | None, statuses) -> Cell:
    if ok is not None and ok.get("value") is not None:
        return Cell(ok["value"], ok.get("ci_low"), ok.get("ci_high"), bool(ok.get("significant")))
    return Cell(na="n/a" in statuses, error="error" in statuses)


def _mark_best(body, columns) -> None:
    for j, (_, col) in enumerate(columns):
        candidates = [cells[j] for label, group, cells in body if cells[j].value is not None and not math.isnan(cells[j].value)]
        if len(candidates) > 1:
            best = min(col.badness(c.value) for c in candidates)
            for c in candidates:
                c.best = col.badness(c.value) == best


def _any_outside(table) -> bool:
    return any(c.outside for _, methods in table for _, _, cells in methods for c in cells)


def _fmt(x: float | None, d: int) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{d}f}"


@dataclass(frozen=True)
class _Markup:
    """How one output format writes a cell's marks (str.format patterns for the value and the interval)."""

    best: str  # the best value of a column, e.g. bold
    ci: str  # the interval after the value: low, high
    outside: str  # the value lies outside its CI
    significant: str  # significant change vs. Base


_MD = _Markup("**{}**", " [{}, {}]", OUTSIDE_MD, f" {SIG_MD}")
_TEX = _Markup(r"\textbf{{{}}}", r" {{\scriptsize[{}, {}]}}", OUTSIDE_TEX, SIG_TEX)


def _cell_text(c: Cell, d: int, markup: _Markup) -> str:
    if c.value is None:
        return "error" if c.error else "n/a" if c.na else ""
    text = _fmt(c.value, d)
    text = markup.best.format(text) if c.best else text
    ci = markup.ci.format(_fmt(c.low, d), _fmt(c.high, d)) if c.low is not None else ""
    return text + ci + (markup.outside if c.outside else "") + (markup.significant if c.significant else "")


def _header(col: Column) -> str:
    arrow = {"50": "(→50)", "0": "(→0)", "max": "(↑)"}[col.goal]
    return f"{col.label} {arrow}"


def render_markdown(rows: list[dict]) -> str:
    shown = cell_rows(rows)
    columns, table = _build(shown)
    if not table:
        return "(no results)"
    headers = ["Model", "Method"] + [markdown(_header(c)) for _, c in columns]
    body = []
    for model, methods in table:
        for i, (label, _group, cells) in enumerate(methods):
            body.append([markdown(model) if i == 0 else "", markdown(label)]
                        + [_cell_text(c, _decimals(col), _MD) for c, (_, col) in zip(cells, columns)])  # fmt: skip
    seeds = seeds_note(shown)
    note = (
        "\n\nValue [95 % bootstrap CI]" + (f", {seeds}" if seeds else "") + ". **bold**: best per model and column; "
        f"{SIG_MD}: significant change vs. Base (paired bootstrap, CI of the difference excludes 0); n/a: does not apply."
    )
    if _any_outside(table):
        note += f" {OUTSIDE_MD}: {OUTSIDE_NOTE}."
    if any(r.get("status") == "error" for r in rows):
        note += " error: failed in this run (the message is in the run's output; the same command again retries it)."
    return tabulate(body, headers=headers, tablefmt="github", disable_numparse=True) + note


def render_latex(rows: list[dict]) -> str:
    shown = cell_rows(rows)
    columns, table = _build(shown)
    if not table:
        return "% no results"
    arrows = {"50": r"$\rightarrow$50", "0": r"$\rightarrow$0", "max": r"$\uparrow$"}
    lines = [
        r"% requires \usepackage{booktabs}",
        r"\begin{tabular}{l" + "c" * len(columns) + "}",
        r"\toprule",
        "Method & " + " & ".join(f"{latex(c.label)} ({arrows[c.goal]})" for _, c in columns) + r" \\",
    ]
    for model, methods in table:
        lines.append(r"\midrule")
        lines.append(rf"\multicolumn{{{len(columns) + 1}}}{{l}}{{\textit{{{latex(model)}}}}} \\")
        previous_group = None
        for label, group, cells in methods:
            if previous_group is not None and group != previous_group:
                lines.append(r"\cmidrule(lr){1-" + str(len(columns) + 1) + "}")
            previous_group = group
            values = " & ".join(_cell_text(c, _decimals(col), _TEX) for c, (_, col) in zip(cells, columns))
            lines.append(f"{latex(label)} & {values} " + r"\\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    seeds = seeds_note(shown)
    if seeds:
        lines.append(f"% values: {seeds}")
    if _any_outside(table):
        lines.append(f"% {OUTSIDE_TEX}: {OUTSIDE_NOTE}")
    return "\n".join(lines)


def render(rows: list[dict], fmt: str = "md") -> str:
    return render_latex(rows) if fmt == "tex" else render_markdown(rows)


def render_full(rows: list[dict], fmt: str = "md") -> str:
    """Every stored number: one line per (model, method, metric, sub-metric), and per seed when the rows hold
    several seeds or aggregates over seeds (then a Seed column: the seed, or "mean 0,1,2" for an aggregate)."""
    with_seeds = any(r.get("aggregate") for r in rows) or len({r.get("seed") for r in rows}) > 1
    headers = ["Model", "Method", "Metric", "Sub-metric", "Value", "95 % CI", "Δ vs base", "Δ 95 % CI", "sig."]
    if with_seeds:
        headers.insert(2, "Seed")
    names = 5 if with_seeds else 4  # the leading columns of data-supplied text (seed: numbers, escaped alike)
    esc = plain if fmt == "tex" else markdown  # LaTeX: escaped by the table format, which knows the columns
    body = []
    for r in rows:
        lead = [esc(r["model"]), esc(r.get("label") or r["method"])]
        if with_seeds:
            seeds = ",".join(str(x) for x in r.get("seeds") or ())
            lead.append(f"mean {seeds}" if r.get("aggregate") else str(r.get("seed", "")))
        lead += [esc(r["metric"]), esc(r.get("submetric") or "")]
        if r.get("status") != "ok":
            body.append(lead + ["n/a", "", "", "", ""])
            continue
        ci = f"[{_fmt(r.get('ci_low'), 3)}, {_fmt(r.get('ci_high'), 3)}]" if r.get("ci_low") is not None else ""
        delta = _fmt(r.get("delta"), 3) if r.get("delta") is not None else ""
        dci = f"[{_fmt(r.get('delta_low'), 3)}, {_fmt(r.get('delta_high'), 3)}]" if r.get("delta_low") is not None else ""
        body.append(lead + [_fmt(r.get("value"), 4), ci, delta, dci, "yes" if r.get("significant") else ""])
    tablefmt = _booktabs(names) if fmt == "tex" else "github"
    return tabulate(body, headers=headers, tablefmt=tablefmt, disable_numparse=True)


def _booktabs(names: int) -> TableFormat:
    """tabulate's latex_booktabs layout, whose first `names` columns are escaped by reports.escape.latex (the other
    cells and the headers, the renderer's own text, by tabulate's rules as before)."""
    def row(cells, widths, aligns, names=names):
        escaped = [latex(c) if i < names else "".join(LATEX_ESCAPE_RULES.get(ch, ch) for ch in c)
                   for i, c in enumerate(cells)]  # fmt: skip
        return ("&".join(escaped) + "\\\\").rstrip()

    def begin(widths, aligns):
        spec = "".join({"right": "r", "center": "c", "decimal": "r"}.get(a, "l") for a in aligns)
        return "\\begin{tabular}{" + spec + "}\n\\toprule"

    return TableFormat(lineabove=begin, linebelowheader=Line("\\midrule", "", "", ""), linebetweenrows=None,
                       linebelow=Line("\\bottomrule\n\\end{tabular}", "", "", ""), headerrow=partial(row, names=0),
                       datarow=row, padding=1, with_header_hide=None)  # fmt: skip


def write_tables(rows: list[dict], out: Path) -> list[Path]:
    """Write the tables of a run beside its results: the leaderboard (OUT/leaderboard.md, .tex), every stored
    number (results_full.md), the task-suite tables and the rank table; returns the leaderboard's two paths."""
    from reports import rank_table, task_table  # imported when written: `bench report` needs neither (nor numpy)

    out = Path(out)
    paths = [out / "leaderboard.md", out / "leaderboard.tex"]
    write_text(paths[0], render_markdown(rows) + "\n")
    write_text(paths[1], render_latex(rows) + "\n")
    write_text(out / "results_full.md", render_full(rows, "md") + "\n")
    cells = cell_rows(rows)  # one row per cell: the aggregate over seeds when present
    task_table.write_tables(cells, out)  # glue.md, superglue.md, ... for the task suites in the rows
    rank_table.write_tables(cells, out)  # rank.md: mean ranks across base models
    return paths


class RunTables:
    """The renderer `bench run` calls (entry point `leaderboard` of the group `bench.renderers`, bench/registry.py):
    `write(rows, out)` writes every table above beside the results and returns the paths `bench run` names;
    `show(rows, fmt)` is the leaderboard it prints at its end."""

    write = staticmethod(write_tables)
    show = staticmethod(render)
