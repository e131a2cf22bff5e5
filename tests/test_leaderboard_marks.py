"""Leaderboard cell marks: a value outside its own percentile CI is flagged (as the reference's tables do), in
Markdown and LaTeX, with the legend only when a cell carries the mark."""
from reports.leaderboard import build, render_latex, render_markdown


def _row(method, value, low, high):
    return dict(model="m", method=method, label=method.upper(), group=0 if method == "base" else 2, metric="crows",
                submetric="crows", seed=0, bias_type="gender", status="ok", value=value, ci_low=low, ci_high=high,
                n=10, resamples=100, delta=None, delta_low=None, delta_high=None, significant=None)  # fmt: skip


def test_a_value_outside_its_ci_is_flagged():
    rows = [_row("base", 60.0, 58.0, 62.0), _row("cda", 55.0, 50.0, 54.5)]
    (_, body), = build(rows)[1]
    cells = {label: c[0] for label, _, c in body}
    assert not cells["BASE"].outside and cells["CDA"].outside
    md = render_markdown(rows)
    assert "55.00 [50.00, 54.50]! " in md.replace("**", "") + " " and "60.00 [58.00, 62.00]!" not in md
    assert "outside its CI" in md
    tex = render_latex(rows)
    assert r"[50.00, 54.50]}$^{!}$" in tex and "outside its CI" in tex


def test_no_mark_on_the_edge_or_in_rounding_and_no_legend_without_a_mark():
    rows = [_row("base", 100.0, 100.0, 100.0), _row("cda", 54.5 + 1e-13, 50.0, 54.5), _row("inlp", 52.0, 50.0, 54.0)]
    (_, body), = build(rows)[1]
    assert not any(c[0].outside for _, _, c in body)
    assert "!" not in render_markdown(rows) and "{!}" not in render_latex(rows)
