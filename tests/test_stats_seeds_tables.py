"""Leaderboards of runs over several seeds: per-seed rows and aggregate rows (seed null, seeds [...],
aggregate true) as the runner writes them; a one-seed run renders as before."""
from reports.leaderboard import build, cell_rows, render_full, render_latex, render_markdown


def _row(method, metric, sub, value, seed=0, **extra):
    row = dict(model="m", method=method, label=method.capitalize(), group=0 if method == "base" else 2, metric=metric,
               submetric=sub, seed=seed, bias_type="gender", status="ok", value=value, ci_low=value - 1,
               ci_high=value + 1, n=10, resamples=100, delta=None, delta_low=None, delta_high=None, significant=None)  # fmt: skip
    if method != "base":
        row.update(delta=value - 60.0, delta_low=value - 61.0, delta_high=value - 59.0, significant=True)
    row.update(extra)
    return row


def _seed_rows(seed, ss_base, ss_inlp):
    return [_row("base", "crows", "crows", ss_base, seed), _row("inlp", "crows", "crows", ss_inlp, seed)]


def _aggregate(rows_by_seed):
    seeds = sorted(rows_by_seed)
    out = []
    for i, r in enumerate(rows_by_seed[seeds[0]]):
        mean = sum(rows_by_seed[s][i]["value"] for s in seeds) / len(seeds)
        out.append(dict(r, seed=None, seeds=seeds, aggregate=True, value=mean, ci_low=mean - 3, ci_high=mean + 3))
    return out


def test_one_seed_renders_as_before():
    rows = _seed_rows(0, 60.0, 55.0)
    assert cell_rows(rows) == rows
    md = render_markdown(rows)
    assert "seeds" not in md and "| 55.00 [54.00, 56.00] †" in md.replace("**", "")
    assert "Seed" not in render_full(rows).splitlines()[0]
    assert "seeds" not in render_latex(rows)


def test_cells_use_the_aggregate_and_the_note_says_so():
    per_seed = {0: _seed_rows(0, 60.0, 55.0), 1: _seed_rows(1, 60.0, 53.0), 2: _seed_rows(2, 60.0, 51.0)}
    rows = [r for s in per_seed for r in per_seed[s]] + _aggregate(per_seed)
    _, table = build(rows)
    (model, body), = table
    cells = {label: cells[0] for label, _, cells in body}
    assert cells["Inlp"].value == 53.0 and (cells["Inlp"].low, cells["Inlp"].high) == (50.0, 56.0)
    assert len(body) == 2  # one line per method, not per seed
    md = render_markdown(rows)
    assert "mean over 3 seeds" in md and "53.00 [50.00, 56.00]" in md.replace("**", "")
    assert "mean over 3 seeds" in render_latex(rows)
    full = render_full(rows)
    assert full.splitlines()[0].split("|")[3].strip() == "Seed"
    lines = [line for line in full.splitlines() if "Inlp" in line]
    assert len(lines) == 4 and sum("mean 0,1,2" in line for line in lines) == 1
    assert any("| 1 " in line and "53.0000" in line for line in lines)  # seed 1's own row, distinguishable


def test_without_an_aggregate_a_cell_shows_the_lowest_seed():
    rows = _seed_rows(2, 60.0, 51.0) + _seed_rows(1, 60.0, 53.0)
    md = render_markdown(rows)
    assert "53.00" in md and "51.00" not in md and "mean over" not in md


def test_bias_type_groups_survive_seeds():
    rows = [dict(r, bias_type="race", submetric="crows") for r in _seed_rows(0, 60.0, 55.0)] + _seed_rows(0, 62.0, 58.0)
    _, table = build(rows)
    assert [model for model, _ in table] == ["m (race)", "m (gender)"]
