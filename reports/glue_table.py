"""The full GLUE table (the paper's per-task GLUE table): one column per task plus the GLUE mean.

Rows are grouped by base model, one row per method, in the order the results list them. A cell shows the
value ×100 with its 95 % CI; `n/a` where a method cannot be fine-tuned honestly (SelfDebias), `missing` where a
task's data were not available (named in the notes under the table), `–` where the task was not run. The best
value of each column within a model group is bold; `†` marks a significant change vs. the base model
(bench.stats: paired bootstrap by default). Rows come from the `glue` metric and the per-task `glue:<task>`
metrics alike.

    bench glue-table RUN_DIR [--format md|tex] [--write]
"""
from __future__ import annotations

import math
from pathlib import Path

import click
from tabulate import tabulate

from metrics.glue import MISSING_DATA
from metrics.glue_tasks import TASKS

MEAN = "glue"
MISSING = "glue_missing"


def is_glue_row(row: dict) -> bool:
    metric = str(row.get("metric") or "")
    return metric == "glue" or metric.startswith("glue:")


def _missing_tasks(note: str | None) -> list[str]:
    """Task keys named in a glue_missing note ("qqp: reason; mnli: reason")."""
    keys = [part.split(":", 1)[0].strip() for part in (note or "").split("; ")]
    return [k for k in keys if k in TASKS]


def table(rows: list[dict]):
    """(columns, body, notes): columns are submetric keys; body rows are (model, label, {key: cell-dict})."""
    entries: dict[tuple[str, str], dict] = {}
    present, notes = set(), []
    for r in filter(is_glue_row, rows):
        key = (r["model"], r["method"])
        entry = entries.setdefault(key, {"label": r.get("label") or r["method"], "group": r.get("group", 9), "cells": {}})
        sub = r.get("submetric")
        if r.get("status") != "ok":
            metric, note = r["metric"], r.get("note") or ""
            if note.startswith(MISSING_DATA):  # no task of this metric had data
                for k in _missing_tasks(note[len(MISSING_DATA):]):
                    entry["cells"].setdefault(f"glue:{k}", {"status": "missing"})
                    present.add(f"glue:{k}")
                notes.append(f"{r['model']} / {entry['label']}: missing tasks — {note[len(MISSING_DATA):]}")
                continue
            targets = [metric] if metric.startswith("glue:") else [f"glue:{k}" for k in TASKS] + [MEAN]
            for t in targets:
                entry["cells"].setdefault(t, {"status": "n/a"})
            if note:
                notes.append(f"{r['model']} / {entry['label']}: n/a ({note})")
            continue
        if sub == MISSING:
            for k in _missing_tasks(r.get("note")):
                entry["cells"].setdefault(f"glue:{k}", {"status": "missing"})
                present.add(f"glue:{k}")
            if r.get("note"):
                notes.append(f"{r['model']} / {entry['label']}: missing tasks — {r['note']}")
            continue
        if sub == MEAN or (sub or "").startswith("glue:"):
            entry["cells"][sub] = {"status": "ok", **{k: r.get(k) for k in ("value", "ci_low", "ci_high", "significant", "note")}}
            present.add(sub)
    columns = [f"glue:{k}" for k in TASKS if f"glue:{k}" in present] + ([MEAN] if MEAN in present else [])
    body = []
    for model in dict.fromkeys(m for m, _ in entries):
        group = [(meth, e) for (m, meth), e in entries.items() if m == model]
        group.sort(key=lambda x: (0 if x[0] == "base" else 1, x[1]["group"]))
        body.extend((model, e["label"], e["cells"]) for _, e in group)
    return columns, body, list(dict.fromkeys(notes))


def _header(key: str) -> tuple[str, str]:
    if key == MEAN:
        return "GLUE", "mean"
    task = TASKS[key.split(":", 1)[1]]
    return task.label, ("m/mm Acc." if task.key == "mnli" else task.metric_label)


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


def render(rows: list[dict], fmt: str = "md") -> str:
    """The GLUE table as Markdown ("md") or LaTeX booktabs ("tex"); empty string when there are no GLUE rows."""
    if fmt not in ("md", "tex"):
        raise ValueError(f"format must be md or tex, got {fmt!r}")
    columns, body, notes = table(rows)
    if not body:
        return ""
    best = _best(body, columns)
    if fmt == "md":
        headers = ["model", "method"] + [" ".join(_header(c)) for c in columns]
        lines = [[model if i == 0 or body[i - 1][0] != model else "", label]
                 + [_cell(cells.get(c), fmt, (i, c) in best) for c in columns]
                 for i, (model, label, cells) in enumerate(body)]  # fmt: skip
        out = tabulate(lines, headers=headers, tablefmt="github", disable_numparse=True)
        legend = "Validation-set scores ×100, mean over fine-tuning seeds, 95 % bootstrap CI in brackets; bold: best per model; †: significant change vs. base."
        return out + "\n\n" + legend + "".join(f"\n- {n}" for n in notes) + "\n"
    return _latex(columns, body, notes, best)


def _tex(s: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("$", r"\$"), ("#", r"\#"), ("_", r"\_"),
                 ("{", r"\{"), ("}", r"\}"), ("~", r"\textasciitilde{}"), ("^", r"\textasciicircum{}")):  # fmt: skip
        s = s.replace(a, b)
    return s


def _latex(columns, body, notes, best) -> str:
    head1 = " & ".join(["Model", "Method"] + [_tex(_header(c)[0]) for c in columns])
    head2 = " & ".join(["", ""] + [_tex(_header(c)[1]) for c in columns])
    lines = [
        r"\begin{tabular}{ll" + "r" * len(columns) + "}", r"\toprule", head1 + r" \\", head2 + r" \\", r"\midrule",
    ]  # fmt: skip
    previous = None
    for i, (model, label, cells) in enumerate(body):
        if previous is not None and model != previous:
            lines.append(r"\midrule")
        name = _tex(model) if model != previous else ""
        previous = model
        lines.append(" & ".join([name, _tex(label)] + [_cell(cells.get(c), "tex", (i, c) in best) for c in columns]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    comments = [f"% {_tex(n)}" for n in notes]
    return "\n".join(lines + comments) + "\n"


def write_tables(rows: list[dict], out: Path) -> list[Path]:
    """Write OUT/glue.md and OUT/glue.tex when the rows hold GLUE results; returns the paths written."""
    from bench.store import write_text

    if not any(is_glue_row(r) for r in rows):
        return []
    out = Path(out)
    paths = [out / "glue.md", out / "glue.tex"]
    write_text(paths[0], render(rows, "md"))
    write_text(paths[1], render(rows, "tex"))
    return paths


@click.command(name="glue-table")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["md", "tex"]), default="md", show_default=True)
@click.option("--write", is_flag=True, help="Also write RUN_DIR/glue.md and RUN_DIR/glue.tex.")
def glue_table(run_dir, fmt, write):
    """Render the full GLUE table (one column per task plus the mean) of a run."""
    from bench.errors import BenchError
    from bench.store import read_rows

    rows = read_rows(run_dir)
    text = render(rows, fmt)
    if not text:
        raise BenchError(f"no GLUE results in {run_dir} (run with --metrics glue)")
    click.echo(text, nl=False)
    if write:
        folder = run_dir if Path(run_dir).is_dir() else Path(run_dir).parent
        for p in write_tables(rows, folder):
            click.echo(f"wrote {p}", err=True)
