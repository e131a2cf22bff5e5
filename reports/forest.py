"""Forest plots of the HTML report: per leaderboard column (a metric's sub-metric), every method's change vs. its
base model with the paired 95 % CI the rows store (`delta`, `delta_low`, `delta_high`, `significant`: the
paired bootstrap of bench.stats.compare), one panel per (model, bias type), methods sorted by their change,
significant changes filled and marked †.

Drawn with matplotlib (no display, no pyplot state) and returned as inline SVG: text stays text
(svg.fonttype none), ids come from a fixed salt and no date is written, so the same rows give the same bytes.
"""
from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass

from reports.cells import cell_rows, layout
from reports.escape import plain

SIG = "†"
_METADATA = re.compile(r"\s*<metadata>.*?</metadata>", re.DOTALL)  # RDF naming matplotlib: nothing to show
GOALS = {"50": "toward 50 is better", "0": "toward 0 is better", "max": "higher is better"}


@dataclass(frozen=True)
class Change:
    label: str
    delta: float
    low: float
    high: float
    significant: bool


def mpl_text(text) -> str:
    """Data-supplied text as matplotlib draws it literally: `$` would start mathtext (and malformed math raises)."""
    return plain(text).replace("$", r"\$")


def _finite(*xs) -> bool:
    return all(isinstance(x, (int, float)) and math.isfinite(x) for x in xs)


def panels(rows: list[dict]) -> list[tuple[str, list[tuple[str, list[Change]]]]]:
    """[(column title, [(panel title, [Change sorted by delta])])] for every leaderboard column that has a
    change vs. base in the rows; columns in the leaderboard's order, panels in the rows' order."""
    shown = [r for r in cell_rows(rows) if r.get("status") == "ok" and _finite(r.get("delta"), r.get("delta_low"),
                                                                                   r.get("delta_high"))]  # fmt: skip
    classes, columns, groups, show_type = layout(shown)
    figures = []
    for metric, col in columns:
        found = []
        for (model, bias_type), grows in groups.items():
            sub = next((c.submetric for c in classes[metric].columns_for(bias_type) if c.label == col.label),
                       col.submetric)  # fmt: skip
            changes = [Change(r.get("label") or r["method"], r["delta"], r["delta_low"], r["delta_high"],
                              bool(r.get("significant")))
                       for r in grows if r["metric"] == metric and r.get("submetric") == sub]  # fmt: skip
            if changes:
                title = f"{model} ({bias_type})" if show_type else model
                found.append((title, sorted(changes, key=lambda c: (c.delta, c.label))))
        if found:
            figures.append((f"{col.label}: change vs. base ({GOALS.get(col.goal, '')})", found))
    return figures


def _draw(ax, title: str, changes: list[Change]) -> None:
    ys = list(range(len(changes)))[::-1]
    for y, c in zip(ys, changes):
        color = "#b2182b" if c.significant else "#4d4d4d"
        ax.plot([c.low, c.high], [y, y], color=color, linewidth=1.6, solid_capstyle="butt")
        ax.plot([c.delta], [y], marker="o", markersize=6, color=color,
                markerfacecolor=color if c.significant else "white", linestyle="none")  # fmt: skip
    ax.axvline(0.0, color="#999999", linewidth=0.8, linestyle="--")
    ax.set_yticks(ys, [mpl_text(c.label) + (f" {SIG}" if c.significant else "") for c in changes])
    ax.set_ylim(-0.7, len(changes) - 0.3)
    ax.set_title(mpl_text(title), fontsize=10, loc="left")
    ax.grid(axis="x", color="#e5e5e5", linewidth=0.6)
    ax.set_axisbelow(True)


def svg(found: list[tuple[str, list[Change]]], salt: str = "bench-report") -> str:
    """One column's forest plot, a panel per model and bias type, as an <svg> element (its title is the page's)."""
    import matplotlib
    from matplotlib.figure import Figure

    heights = [max(len(changes), 1) + 1.2 for _, changes in found]
    with matplotlib.rc_context({"svg.hashsalt": salt, "svg.fonttype": "none", "font.size": 9}):
        fig = Figure(figsize=(7.0, 0.9 + 0.32 * sum(heights)), layout="constrained")
        axes = fig.subplots(len(found), 1, squeeze=False, gridspec_kw={"height_ratios": heights})[:, 0]
        for ax, (panel, changes) in zip(axes, found):
            _draw(ax, panel, changes)
        axes[-1].set_xlabel(f"change vs. base, paired 95 % CI; {SIG} filled: significant")
        buf = io.StringIO()
        fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    return _METADATA.sub("", text[text.index("<svg"):]).strip()
