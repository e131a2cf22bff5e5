"""Per-task tables of fine-tuned task suites (GLUE, SuperGLUE, any later suite), rendered from stored rows alone.

This module knows no metric: a task-suite metric describes its table in the rows it writes.
- Suite `S` owns the metrics `S` (all tasks and their mean, sub-metric `S`) and `S:<task>` (one task); a task's
  score is the sub-metric `S:<task>` (deeper keys such as `superglue:cb:f1` are parts, not columns).
- Every successful scoring writes a row with sub-metric `S_table` whose note is JSON:
  {"suite": "S", "label": "SuperGLUE", "mean": "S" or null,
   "tasks": [{"key": "S:<task>", "label": "CB", "metric": "Acc./F1", "order": 1}, ...],
   "missing": {"S:<task>": "why", ...}}
  giving the column headers, their order, and the tasks whose data were missing.
- A scoring in which no task had data is an n/a row whose note is "missing data: <task>: <why>; ...".
- Any other n/a row (e.g. SelfDebias, which cannot be fine-tuned honestly) gives n/a cells.
Rows of older runs without a description still render: labels then come from the registry's column
declarations (bench.registry), else from the task key.

Rows are grouped by base model, one row per method (base first, then by method group). A cell shows the
value ×100 with its 95 % CI; `n/a` where a method cannot be scored, `missing` where a task's data were not
available (named in the notes under the table), `–` where the task was not run. The best value of each column
within a model group is bold; `†` marks a significant change vs. the base model.

    bench task-table RUN_DIR [--suite glue|superglue|...] [--format md|tex] [--write]
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import click
from tabulate import tabulate

from reports.cells import metric_class, read_cells
from reports.escape import latex, markdown

MISSING_DATA = "missing data: "
DESCRIPTION = "_table"  # sub-metric suffix of the description row
MISSING = "_missing"  # sub-metric suffix of the missing-task count (its note: "<task>: <why>; ...")
_KEY = re.compile(r"^[A-Za-z0-9_.\-]+$")


def suite_of(row: dict) -> str:
    return str(row.get("metric") or "").split(":", 1)[0]


def _description(row: dict) -> dict | None:
    sub = str(row.get("submetric") or "")
    if row.get("status") != "ok" or not sub.endswith(DESCRIPTION) or sub[: -len(DESCRIPTION)] != suite_of(row):
        return None
    try:
        desc = json.loads(row.get("note") or "")
    except ValueError:
        return None
    return desc if _well_formed(desc) and desc["suite"] == suite_of(row) else None


def _well_formed(desc) -> bool:
    """Whether a description has the shape in the module docstring (a tampered one is ignored, not a traceback)."""
    text = lambda v: v is None or isinstance(v, str)  # noqa: E731
    if not (isinstance(desc, dict) and isinstance(desc.get("suite"), str) and text(desc.get("label"))
            and text(desc.get("mean")) and isinstance(desc.get("tasks", []), list)
            and isinstance(desc.get("missing", {}), dict)):  # fmt: skip
        return False
    tasks_ok = all(isinstance(t, dict) and isinstance(t.get("key"), str) and text(t.get("label"))
                   and text(t.get("metric")) and isinstance(t.get("order", 0), (int, float))
                   and not isinstance(t.get("order", 0), bool) for t in desc.get("tasks") or [])  # fmt: skip
    return tasks_ok and all(isinstance(v, str) for v in (desc.get("missing") or {}).values())


def _missing_note(row: dict) -> bool:
    return row.get("status") != "ok" and str(row.get("note") or "").startswith(MISSING_DATA)


def is_task_row(row: dict) -> bool:
    """Whether a row says that its metric is a task suite (a description row or a missing-data row)."""
    return _description(row) is not None or _missing_note(row)


def suites(rows: list[dict]) -> list[str]:
    """The task suites present in the rows, in order of first appearance."""
    return list(dict.fromkeys(suite_of(r) for r in rows if is_task_row(r)))


def _belongs(row: dict, suite: str) -> bool:
    metric = str(row.get("metric") or "")
    return metric == suite or metric.startswith(suite + ":")


def _parse_missing(text: str) -> list[tuple[str, str]]:
    """[(task, why)] from "task: why; task: why" (a why may itself contain "; ")."""
    out: list[list[str]] = []
    for part in (text or "").split("; "):
        head, sep, rest = part.partition(": ")
        if sep and _KEY.match(head.strip()):
            out.append([head.strip(), rest])
        elif out:
            out[-1][1] += "; " + part
    return [(k, why) for k, why in out]


def _registry_label(key: str) -> tuple[str, int] | None:
    """(label, order) from the registry's column declaration of the metric `key`, if it is installed."""
    cls = metric_class(key)
    cols = [c for c in cls.columns if c.submetric == key] if cls is not None else []
    return (cols[0].label, cols[0].order) if cols else None


def _described(rows: list[dict]) -> tuple[dict[str, tuple[str, str, float]], str | None, str | None]:
    """From the description rows: key -> (label, metric label, order) of each task, the suite's label, its mean."""
    described: dict[str, tuple[str, str, float]] = {}
    suite_label, mean = None, None
    for r in rows:
        desc = _description(r)
        if desc is None:
            continue
        suite_label = suite_label or desc.get("label")
        mean = mean or desc.get("mean")
        for t in desc.get("tasks") or []:
            described.setdefault(t["key"], (t.get("label") or t["key"], t.get("metric") or "", float(t.get("order", 0))))
    return described, suite_label, mean


class _Entries:
    """The cells of each (model, method) of one suite, the columns present, and the notes under the table."""

    def __init__(self, suite: str):
        self.suite, self.by_method, self.present, self.notes = suite, {}, set(), []

    def add(self, r: dict) -> None:
        entry = self.by_method.setdefault((r["model"], r["method"]), {
            "label": r.get("label") or r["method"], "group": r.get("group", 9), "cells": {}, "na": set()})  # fmt: skip
        who, suite, sub = f"{r['model']} / {entry['label']}", self.suite, r.get("submetric")
        if r.get("status") != "ok":
            self._not_ok(r, entry, who)
            return
        desc = _description(r)
        if desc is not None:
            missing = desc.get("missing") or {}
            self._missing(entry, list(missing))
            if missing:
                self.notes.append(f"{who}: missing tasks — " + "; ".join(f"{k.split(':', 1)[-1]}: {why}" for k, why in missing.items()))
        elif sub == f"{suite}{MISSING}":
            self._missing(entry, [f"{suite}:{k}" for k, _ in _parse_missing(r.get("note") or "")])
            if r.get("note"):
                self.notes.append(f"{who}: missing tasks — {r['note']}")
        elif sub == suite or (isinstance(sub, str) and sub.startswith(suite + ":") and sub.count(":") == 1):
            entry["cells"][sub] = {"status": "ok", **{k: r.get(k) for k in ("value", "ci_low", "ci_high", "significant", "note")}}
            self.present.add(sub)

    def _not_ok(self, r: dict, entry: dict, who: str) -> None:
        note = r.get("note") or ""
        if note.startswith(MISSING_DATA):  # no task of this metric had data
            self._missing(entry, [f"{self.suite}:{k}" for k, _ in _parse_missing(note[len(MISSING_DATA):])])
            self.notes.append(f"{who}: missing tasks — {note[len(MISSING_DATA):]}")
            return
        entry["na"].add(r["metric"])
        if note:
            self.notes.append(f"{who}: n/a ({note})")

    def _missing(self, entry: dict, keys: list[str]) -> None:
        for k in keys:
            entry["cells"].setdefault(k, {"status": "missing"})
            self.present.add(k)


def table(rows: list[dict], suite: str):
    """(header, columns, body, notes) of one suite: columns are sub-metric keys (tasks, then the mean);
    header maps a column to its two header lines; body rows are (model, label, {key: cell-dict})."""
    rows = [r for r in rows if _belongs(r, suite)]
    described, suite_label, mean = _described(rows)
    entries = _Entries(suite)
    for r in rows:
        entries.add(r)
    present = entries.present
    task_cols = [k for k in present if k != suite]
    header = {}
    for k in task_cols:
        if k in described:
            label, metric, order = described[k]
        else:
            label, order = _registry_label(k) or (k.split(":", 1)[1], math.inf)
            metric = ""
        header[k] = (label, metric, order)
    columns = sorted(task_cols, key=lambda k: (header[k][2], k))
    if suite in present:
        columns.append(suite)
        header[suite] = (suite_label or (_registry_label(suite) or (suite,))[0], "mean", math.inf)
    return {k: header[k][:2] for k in columns}, columns, _body(entries.by_method, columns, suite), list(dict.fromkeys(entries.notes))


def _body(by_method: dict, columns: list[str], suite: str) -> list[tuple[str, str, dict]]:
    """(model, label, cells) per (model, method): grouped by model, base first, then by method group; an n/a
    metric gives n/a in each of its columns not filled otherwise."""
    for e in by_method.values():
        for metric in e["na"]:
            for c in columns if metric == suite else [metric]:
                e["cells"].setdefault(c, {"status": "n/a"})
    by_model: dict[str, list] = {}
    for (model, method), e in by_method.items():
        by_model.setdefault(model, []).append((method, e))
    body = []
    for model, group in by_model.items():
        group.sort(key=lambda x: (0 if x[0] == "base" else 1, x[1]["group"]))
        body.extend((model, e["label"], e["cells"]) for _, e in group)
    return body


def _best(body, columns) -> set[tuple[int, str]]:
    best = set()
    for col in columns:
        by_model: dict[str, list[tuple[float, int]]] = {}
        for i, (model, _, cells) in enumerate(body):
            c = cells.get(col, {})
            if c.get("status") == "ok" and c.get("value") is not None and math.isfinite(c["value"]):
                by_model.setdefault(model, []).append((c["value"], i))
        for values in by_model.values():
            if len(values) > 1:
                top = max(v for v, _ in values)
                best.update((i, col) for v, i in values if v == top)
    return best


def _fmt(x) -> str:
    return "nan" if x is None or not math.isfinite(x) else f"{x:.1f}"


def _cell(c: dict | None, fmt: str, bold: bool) -> str:
    if not c:
        return "–" if fmt == "md" else "--"
    if c["status"] != "ok":
        return c["status"]
    value, mark = _fmt(c["value"]), ("†" if fmt == "md" else r"$^\dagger$") if c.get("significant") else ""
    if fmt == "md":
        value = f"**{value}**" if bold else value
        ci = f" [{_fmt(c['ci_low'])}, {_fmt(c['ci_high'])}]" if c.get("ci_low") is not None else ""
        return value + mark + ci
    value = rf"\textbf{{{value}}}" if bold else value
    ci = rf"\,{{\scriptsize[{_fmt(c['ci_low'])}, {_fmt(c['ci_high'])}]}}" if c.get("ci_low") is not None else ""
    return value + mark + ci


def render(rows: list[dict], fmt: str = "md", suite: str = "glue") -> str:
    """One suite's table as Markdown ("md") or LaTeX booktabs ("tex"); empty string when it has no rows."""
    if fmt not in ("md", "tex"):
        raise ValueError(f"format must be md or tex, got {fmt!r}")
    header, columns, body, notes = table(rows, suite)
    if not body or not columns:
        return ""
    best = _best(body, columns)
    if fmt == "md":
        headers = ["model", "method"] + [markdown(" ".join(x for x in header[c] if x)) for c in columns]
        lines = [[markdown(model) if i == 0 or body[i - 1][0] != model else "", markdown(label)]
                 + [_cell(cells.get(c), fmt, (i, c) in best) for c in columns]
                 for i, (model, label, cells) in enumerate(body)]  # fmt: skip
        out = tabulate(lines, headers=headers, tablefmt="github", disable_numparse=True)
        legend = "Validation-set scores ×100, mean over fine-tuning seeds, 95 % bootstrap CI in brackets; bold: best per model; †: significant change vs. base."
        return out + "\n\n" + legend + "".join(f"\n- {markdown(n)}" for n in notes) + "\n"
    return _latex(header, columns, body, notes, best)


def _latex(header, columns, body, notes, best) -> str:
    head1 = " & ".join(["Model", "Method"] + [latex(header[c][0]) for c in columns])
    head2 = " & ".join(["", ""] + [latex(header[c][1]) for c in columns])
    lines = [
        r"\begin{tabular}{ll" + "r" * len(columns) + "}", r"\toprule", head1 + r" \\", head2 + r" \\", r"\midrule",
    ]  # fmt: skip
    previous = None
    for i, (model, label, cells) in enumerate(body):
        if previous is not None and model != previous:
            lines.append(r"\midrule")
        name = latex(model) if model != previous else ""
        previous = model
        lines.append(" & ".join([name, latex(label)] + [_cell(cells.get(c), "tex", (i, c) in best) for c in columns]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    comments = [f"% {latex(n)}" for n in notes]
    return "\n".join(lines + comments) + "\n"


def write_tables(rows: list[dict], out: Path, only: list[str] | None = None) -> list[Path]:
    """Write OUT/<suite>.md and OUT/<suite>.tex for every task suite in the rows (or those in `only`)."""
    from bench.files import write_text

    paths = []
    for suite in suites(rows) if only is None else only:
        md, tex = render(rows, "md", suite), render(rows, "tex", suite)
        if not md:
            continue
        pair = [Path(out) / f"{suite}.md", Path(out) / f"{suite}.tex"]
        write_text(pair[0], md)
        write_text(pair[1], tex)
        paths += pair
    return paths


def run_command(run_dir: Path, fmt: str, write: bool, only: list[str] | None, hint: str) -> None:
    from bench.errors import BenchError

    rows = read_cells(run_dir)  # one row per cell: the aggregate over seeds when present
    chosen = suites(rows) if only is None else only
    texts = [(s, render(rows, fmt, s)) for s in chosen]
    texts = [(s, t) for s, t in texts if t]
    if not texts:
        raise BenchError(f"no {' or '.join(only) if only else 'task-suite'} results in {run_dir} ({hint})")
    for i, (suite, text) in enumerate(texts):
        if len(texts) > 1:
            click.echo(("" if i == 0 else "\n") + (f"## {suite}\n" if fmt == "md" else f"% {suite}"))
        click.echo(text, nl=False)
    if write:
        folder = run_dir if Path(run_dir).is_dir() else Path(run_dir).parent
        for p in write_tables(rows, folder, [s for s, _ in texts]):
            click.echo(f"wrote {p}", err=True)


@click.command(name="task-table")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--suite", "suite", help="Task suite (glue, superglue, ...); default: every suite in the run.")
@click.option("--format", "fmt", type=click.Choice(["md", "tex"]), default="md", show_default=True)
@click.option("--write", is_flag=True, help="Also write RUN_DIR/<suite>.md and RUN_DIR/<suite>.tex.")
def task_table(run_dir, suite, fmt, write):
    """Render the per-task table of a task suite (GLUE, SuperGLUE): one column per task plus the mean."""
    run_command(run_dir, fmt, write, None if suite is None else [suite], "run with --metrics glue or superglue")
