"""The mean-rank table of the ICLR version of the paper (its fork's `export/rank.py`, SPEC §3.5), with CIs.

Ranks. For each bias metric (default SS and SEAT) and each base model, the methods with a value are ranked by
the metric's goal (SS closest to 50, |SEAT| smallest; any metric's goal comes from its column declaration in
the registry) and given proportional ranks i/(n−1): 0 = worst, 1 = best (one method alone: 0.5). A method's
rank for a metric is the mean over the base models where it has a value; its mean rank is the mean over the
metrics. Beside it: the mean LMS / GLUE / SuperGLUE over base models and the change vs. the base model's mean
(over the models where both exist), as in the fork. Rows are sorted by mean rank, best first.
Difference from the fork: tied values share the mean of their positions (the fork's stable sort gives tied
methods different ranks in the order the methods are listed).

Confidence intervals (beyond the fork). From the items, where the run's per-item scores are in the cache (a run
directory of one seed; `bench.run.replicates`): every replicate draws the items once (the indices the rows' own
CIs were read from), every method on every base model is evaluated on that draw and re-ranked, and the table
shows the 2.5 / 97.5 percentiles of the mean ranks. Otherwise (rows alone, a missing cache entry, several seeds)
each resample is drawn from a normal approximation of what the rows hold: per (base model, metric) the base
model's value is drawn as value + σ_b·z (σ = CI width / (2·1.96)); each other method's value as its value
+ (the base draw − the base value) + σ_Δ·z', with σ_Δ from the CI of its paired difference to the base
(`delta_low`/`delta_high`; the method's own CI where there is none). Methods thus share the base model's
fluctuation (they are scored on the same items) and differ by their paired differences' uncertainty, which
is what the stored paired bootstrap measured. On each of the (default 1,000, seeded) resamples every method
is re-ranked and the mean ranks recomputed; the table shows the 2.5 / 97.5 percentiles. Independence between
different methods' paired differences is an assumption (their shared items make them positively correlated,
so the intervals err on the wide side).

    bench rank-table RUN_DIR [--format md|tex] [--write] [--resamples 1000] [--seed 0]
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import click
import numpy as np
from tabulate import tabulate

from bench.api import Column
from reports.cells import metric_classes, read_cells
from reports.escape import latex, markdown

Z95 = 1.959963984540054
DEFAULT_RANK = ("ss", "seat")
DEFAULT_PERFORMANCE = ("lms", "glue", "superglue")


def _declared(submetric: str, rows: list[dict]) -> Column:
    """The column declaration of a sub-metric (its label and goal), from the metrics in the rows as installed
    (the registry): their columns, else their columns for each bias type they measure (StereoSet's ss_race).
    A metric that is not installed declares nothing: its sub-metrics cannot be ranked (the error says so)."""
    for cls in metric_classes(rows).values():
        found = cls.declares(submetric)
        if found is not None:
            return found
    raise click.UsageError(f"no column declares the sub-metric {submetric!r}; cannot tell which direction is better")


def proportional_ranks(values: np.ndarray, goal: Column | str) -> np.ndarray:
    """Ranks i/(n−1), 1 = best, along the last axis (NaN: no value, not ranked); ties share their mean rank;
    a single ranked value gets 0.5. `goal`: the column (or its goal, "50", "0" or "max") saying which is better."""
    column = goal if isinstance(goal, Column) else Column("", "", goal, 0)
    values = np.asarray(values, dtype=float)
    bad = column.badness(values)
    out = np.full(values.shape, np.nan)
    flat_bad, flat_out = bad.reshape(-1, bad.shape[-1]), out.reshape(-1, bad.shape[-1])
    for row, res in zip(flat_bad, flat_out):
        ok = np.flatnonzero(np.isfinite(row))
        n = len(ok)
        if n == 0:
            continue
        if n == 1:
            res[ok] = 0.5
            continue
        b = row[ok]
        # position from the worst (0) to the best (n-1); ties: mean of the positions they span
        worse = (b[None, :] > b[:, None]).sum(1)  # methods with a larger badness
        equal = (b[None, :] == b[:, None]).sum(1)
        res[ok] = (worse + (equal - 1) / 2.0) / (n - 1)
    return out


@dataclass
class RankTable:
    models: list[str]
    methods: list[str]  # method keys, sorted by mean rank (best first)
    labels: dict[str, str]
    rank_metrics: list[tuple[str, str, str]]  # (submetric, label, goal)
    perf_metrics: list[tuple[str, str]]  # (submetric, label)
    ranks: dict[str, dict[str, float]] = field(default_factory=dict)  # method -> submetric|"mean" -> mean rank
    ci: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)
    perf: dict[str, dict[str, tuple[float, float | None]]] = field(default_factory=dict)  # method -> sub -> (mean, delta)
    resamples: int = 0
    ci_source: str = "normal"  # "items": re-ranked bootstrap replicates of the cached scores; "normal": from the rows


def _index(rows: list[dict]) -> dict:
    """(model, method, submetric) -> the ok row."""
    out = {}
    for r in rows:
        if r.get("status") == "ok" and r.get("value") is not None and isinstance(r.get("submetric"), str):
            out.setdefault((r["model"], r["method"], r["submetric"]), r)
    return out


def _sigma(low, high) -> float:
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return 0.0
    return max(0.0, (high - low) / (2.0 * Z95))


def bias_types(rows: list[dict]) -> list[str]:
    return list(dict.fromkeys(r.get("bias_type") or "gender" for r in rows))


def _resolve(name: str, present: set[str], bias_type: str) -> str:
    """`ss` means StereoSet's SS of the run's bias type (ss_gender, ss_race, ...)."""
    if name == "ss" and name not in present:
        return f"ss_{bias_type}"
    return name


@dataclass
class _Draws:
    """What the resamples are drawn from, per (rank metric s, base model k, method m): the values, the σ of the
    base model's value, the σ of each method's paired difference (or own value), and whether a method's draw
    shares the base model's (base draw + paired difference) or is independent."""

    values: np.ndarray  # (S, K, M), NaN: no value
    base_sigma: np.ndarray  # (S, K)
    delta_sigma: np.ndarray  # (S, K, M)
    shared: np.ndarray  # (S, K, M) bool
    base_at: int | None  # the position of the base model among the methods


def _draws(by_key: dict, subs: list[str], models: list[str], methods: list[str]) -> _Draws:
    S, K, M = len(subs), len(models), len(methods)
    d = _Draws(np.full((S, K, M), np.nan), np.zeros((S, K)), np.zeros((S, K, M)), np.zeros((S, K, M), dtype=bool),
               methods.index("base") if "base" in methods else None)  # fmt: skip
    for s, sub in enumerate(subs):
        for k, model in enumerate(models):
            base = by_key.get((model, "base", sub))
            if base is not None:
                d.base_sigma[s, k] = _sigma(base.get("ci_low"), base.get("ci_high"))
            for m, method in enumerate(methods):
                r = by_key.get((model, method, sub))
                if r is None or not math.isfinite(r["value"]):
                    continue
                d.values[s, k, m] = r["value"]
                if method == "base":
                    continue
                low, high = r.get("delta_low"), r.get("delta_high")
                if base is not None and low is not None and high is not None and math.isfinite(low) and math.isfinite(high):
                    d.delta_sigma[s, k, m], d.shared[s, k, m] = _sigma(low, high), True
                else:  # no paired difference stored (e.g. significance=overlap): the method's own CI
                    d.delta_sigma[s, k, m] = _sigma(r.get("ci_low"), r.get("ci_high"))
    return d


def _resample(d: _Draws, resamples: int, seed: int) -> np.ndarray:
    """(R, S, K, M) draws: the base model's value + σ_b·z; every other method's value + the base draw's shift
    + σ_Δ·z' (shared), or its value + σ·z' (independent)."""
    S, K, M = d.values.shape
    rng = np.random.default_rng(seed)
    base_values = d.values[:, :, d.base_at] if d.base_at is not None else np.zeros((S, K))
    z_base = rng.standard_normal((resamples, S, K))
    z_own = rng.standard_normal((resamples, S, K, M))
    shift = np.where(np.isfinite(base_values), d.base_sigma, 0.0)[None] * z_base  # (R, S, K)
    draws = d.values[None] + d.delta_sigma[None] * z_own + np.where(d.shared, shift[..., None], 0.0)
    if d.base_at is not None:
        draws[..., d.base_at] = d.values[None, :, :, d.base_at] + shift
    return draws


def _mean_ranks(vals: np.ndarray, columns: list[Column]) -> tuple[np.ndarray, np.ndarray]:
    """vals (..., S, K, M) -> per-metric mean ranks (..., S, M) and the mean over metrics (..., M)."""
    r = np.stack([proportional_ranks(vals[..., s, :, :], col) for s, col in enumerate(columns)], axis=-3)
    with np.errstate(invalid="ignore"), _quiet():
        per_metric = np.nanmean(r, axis=-2)
        overall = np.nanmean(per_metric, axis=-2)
    return per_metric, overall


def _item_draws(d: _Draws, items: dict | None, subs, models, methods) -> np.ndarray | None:
    """(R, S, K, M) replicates from the cached items when they cover every value of the table, else None."""
    if not items:
        return None
    found = [items.get((model, method, sub)) for sub in subs for model in models for method in methods]
    sizes = {len(v) for v in found if v is not None}
    if len(sizes) != 1:
        return None
    draws = np.full((sizes.pop(), *d.values.shape), np.nan)
    for i, v in enumerate(found):
        s, rest = divmod(i, len(models) * len(methods))
        k, m = divmod(rest, len(methods))
        if v is None:
            if np.isfinite(d.values[s, k, m]):
                return None
            continue
        draws[:, s, k, m] = v
    return draws


def _rank(table: "RankTable", d: _Draws, columns: list[Column], resamples: int, seed: int, items=None) -> None:
    """Fill table.ranks (the point mean ranks) and, with resamples, table.ci (their percentile intervals)."""
    subs = [sub for sub, _, _ in table.rank_metrics]
    point_metric, point_overall = _mean_ranks(d.values, columns)
    dist_metric = dist_overall = None
    if resamples > 0:
        draws = _item_draws(d, items, subs, table.models, table.methods)
        table.ci_source = "normal" if draws is None else "items"
        dist_metric, dist_overall = _mean_ranks(_resample(d, resamples, seed) if draws is None else draws, columns)
    for m, method in enumerate(table.methods):
        table.ranks[method] = {sub: float(point_metric[s, m]) for s, sub in enumerate(subs)}
        table.ranks[method]["mean"] = float(point_overall[m])
        if dist_metric is not None:
            table.ci[method] = {sub: _percentiles(dist_metric[:, s, m]) for s, sub in enumerate(subs)}
            table.ci[method]["mean"] = _percentiles(dist_overall[:, m])


def _performance(table: "RankTable", by_key: dict) -> None:
    """Fill table.perf: per method and performance metric the mean over base models and the change vs. the base
    model's mean over the models where both exist."""
    models = table.models
    for method in table.methods:
        table.perf[method] = {}
        for sub, _ in table.perf_metrics:
            own = [by_key[(mo, method, sub)]["value"] for mo in models if (mo, method, sub) in by_key]
            pairs = [(by_key[(mo, method, sub)]["value"], by_key[(mo, "base", sub)]["value"]) for mo in models
                     if (mo, method, sub) in by_key and (mo, "base", sub) in by_key]  # fmt: skip
            if own:
                delta = float(np.mean([a for a, _ in pairs]) - np.mean([b for _, b in pairs])) if pairs and method != "base" else None
                table.perf[method][sub] = (float(np.mean(own)), delta)


def _methods(rows: list[dict]) -> tuple[list[str], dict[str, str]]:
    """The methods in the rows (base first, then by method group and appearance) and their labels."""
    order, labels = {}, {}
    for r in rows:
        order.setdefault(r["method"], (0 if r["method"] == "base" else r.get("group", 2), len(order)))
        labels.setdefault(r["method"], r.get("label") or r["method"])
    return sorted(order, key=lambda m: order[m]), labels


def build(rows: list[dict], rank=DEFAULT_RANK, performance=DEFAULT_PERFORMANCE, resamples: int = 1000, seed: int = 0,
          bias_type: str | None = None, items: dict | None = None) -> RankTable:  # fmt: skip
    """The rank table of the rows of one bias type (default: gender if present, else the first in the rows).
    `items`: (model, method, sub-metric) -> bootstrap replicates from the cached scores (bench.run.replicates)."""
    rows = [r for r in rows if r.get("model") and r.get("method")]
    types = bias_types(rows)
    bias_type = bias_type or ("gender" if "gender" in types or not types else types[0])
    rows = [r for r in rows if (r.get("bias_type") or "gender") == bias_type]
    by_key = _index(rows)
    present = {k[2] for k in by_key}
    rank = [_resolve(x, present, bias_type) for x in rank]
    performance = [_resolve(x, present, bias_type) for x in performance]
    models = list(dict.fromkeys(r["model"] for r in rows))
    methods, labels = _methods(rows)
    columns = [_declared(s, rows) for s in rank if s in present]
    rank_metrics = [(s, c.label, c.goal) for s, c in zip([s for s in rank if s in present], columns)]
    perf_metrics = [(s, _declared(s, rows).label) for s in performance if s in present]
    table = RankTable(models, methods, labels, rank_metrics, perf_metrics, resamples=resamples)
    if columns:
        _rank(table, _draws(by_key, [s for s, _, _ in rank_metrics], models, methods), columns, resamples, seed,
              items if bias_type == _run_bias_type(rows) else None)
    _performance(table, by_key)
    key = lambda m: -table.ranks.get(m, {}).get("mean", -math.inf) if math.isfinite(table.ranks.get(m, {}).get("mean", math.nan)) else math.inf  # noqa: E731
    table.methods = sorted(methods, key=key)
    return table


def _run_bias_type(rows: list[dict]) -> str | None:
    types = bias_types(rows)
    return types[0] if len(types) == 1 else None


class _quiet:
    def __enter__(self):
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        return self._w.__exit__(*exc)


def _percentiles(x: np.ndarray) -> tuple[float, float]:
    x = x[np.isfinite(x)]
    if x.size == 0:
        return (math.nan, math.nan)
    low, high = np.percentile(x, [2.5, 97.5])
    return float(low), float(high)


def _f(x, d=2) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{x:.{d}f}"


def render(rows: list[dict], fmt: str = "md", **kwargs) -> str:
    if fmt not in ("md", "tex"):
        raise ValueError(f"format must be md or tex, got {fmt!r}")
    t = build(rows, **kwargs)
    if not t.rank_metrics:
        return ""
    cols = [("mean", "Mean rank")] + [(sub, label) for sub, label, _ in t.rank_metrics]
    best = {}
    for sub, _ in cols:
        vals = [t.ranks[m][sub] for m in t.methods if math.isfinite(t.ranks[m].get(sub, math.nan))]
        best[sub] = max(vals) if vals else None
    esc = markdown if fmt == "md" else latex
    body = []
    for m in t.methods:
        line = [esc(t.labels[m])]
        for sub, _ in cols:
            v = t.ranks[m].get(sub)
            text = _f(v)
            if v is not None and best[sub] is not None and v == best[sub] and text != "–":
                text = f"**{text}**" if fmt == "md" else rf"\textbf{{{text}}}"
            if m in t.ci and text != "–":
                lo, hi = t.ci[m][sub]
                text += f" [{_f(lo)}, {_f(hi)}]" if fmt == "md" else rf"\,{{\scriptsize[{_f(lo)}, {_f(hi)}]}}"
            line.append(text)
        for sub, _ in t.perf_metrics:
            value = t.perf[m].get(sub)
            if value is None:
                line.append("–")
                continue
            mean, delta = value
            d = "" if delta is None else f" ({delta:+.2f})"
            line.append(_f(mean) + d)
        body.append(line)
    headers = ["Method"] + [esc(label) for _, label in cols] + [f"{esc(label)} (mean)" for _, label in t.perf_metrics]
    models = ", ".join(markdown(m) for m in t.models) if fmt == "md" else ", ".join(t.models)  # tex: below
    legend = (f"Mean proportional rank over {len(t.models)} base model(s) ({models}): per metric and base "
              "model the methods are ranked i/(n−1), 1 = best; mean over base models, then over metrics. "
              + (f"95 % CI in brackets from {t.resamples} bootstrap replicates of the items, every method re-ranked "
                 "on each draw (reports/rank_table.py). " if t.resamples and t.ci_source == "items" else "")
              + (f"95 % CI in brackets from {t.resamples} resamples drawn from the rows' bootstrap CIs (normal "
                 "approximation, re-ranked per resample; reports/rank_table.py). "
                 if t.resamples and t.ci_source == "normal" else "")
              + "Right: mean over base models (change vs. base).")  # fmt: skip
    if fmt == "md":
        return tabulate(body, headers=headers, tablefmt="github", disable_numparse=True) + "\n\n" + legend + "\n"
    lines = [r"% requires \usepackage{booktabs}", r"\begin{tabular}{l" + "r" * (len(headers) - 1) + "}", r"\toprule",
             " & ".join(headers) + r" \\", r"\midrule"]  # fmt: skip
    lines += [" & ".join(line) + r" \\" for line in body]
    lines += [r"\bottomrule", r"\end{tabular}", f"% {latex(legend)}"]
    return "\n".join(lines) + "\n"


def run_items(run_dir: Path, resamples: int = 1000) -> dict:
    """The run's bootstrap replicates from its cached scores ({} where there are none). A run writes rank.md and
    report.html one after the other from the same results: the last answer is kept while the run directory's
    results.jsonl and manifest are unchanged (recomputing takes seconds on the ICLR suite)."""
    from bench.run.replicates import item_replicates

    if resamples <= 0:
        return {}
    run_dir = Path(run_dir).resolve()
    key = (str(run_dir), resamples, *(_stamp(run_dir / name) for name in ("results.jsonl", "manifest.json")))
    if _LAST_ITEMS.get("key") != key:
        _LAST_ITEMS.update(key=key, items=item_replicates(run_dir, resamples))
    return _LAST_ITEMS["items"]


_LAST_ITEMS: dict = {}


def _stamp(path: Path) -> tuple:
    try:
        st = path.stat()
    except OSError:
        return ()
    return (st.st_mtime_ns, st.st_size)


def write_tables(rows: list[dict], out: Path, **kwargs) -> list[Path]:
    """Write OUT/rank.md and OUT/rank.tex when the rows hold a rank metric; returns the paths written. The CIs
    come from the cached items of the run in OUT when they are there (see the module docstring)."""
    from bench.files import write_text

    if not render(rows, "md", **{**kwargs, "resamples": 0}):
        return []
    kwargs.setdefault("items", run_items(out, kwargs.get("resamples", 1000)))
    md = render(rows, "md", **kwargs)
    if not md:
        return []
    paths = [Path(out) / "rank.md", Path(out) / "rank.tex"]
    write_text(paths[0], md)
    write_text(paths[1], render(rows, "tex", **kwargs))
    return paths


def _names(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


@click.command(name="rank-table")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["md", "tex"]), default="md", show_default=True)
@click.option("--write", is_flag=True, help="Also write RUN_DIR/rank.md and RUN_DIR/rank.tex.")
@click.option("--rank", "rank", default=",".join(DEFAULT_RANK), show_default=True, help="Sub-metrics to rank by.")
@click.option("--performance", default=",".join(DEFAULT_PERFORMANCE), show_default=True,
              help="Sub-metrics shown as means beside the ranks.")
@click.option("--resamples", type=click.IntRange(min=0), default=1000, show_default=True, help="Resamples for the CIs (0: none).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--bias-type", "bias_type", help="Bias type of the rows to rank (default: gender, else the run's).")
def rank_table(run_dir, fmt, write, rank, performance, resamples, seed, bias_type):
    """Render the mean-rank table (the ICLR paper's rank table, with bootstrap CIs) of a run."""
    from bench.errors import BenchError

    rows = read_cells(run_dir)  # one row per cell: the aggregate over seeds when present
    items = run_items(run_dir, resamples) if Path(run_dir).is_dir() else {}
    kwargs = dict(rank=_names(rank), performance=_names(performance), resamples=resamples, seed=seed, bias_type=bias_type,
                  items=items)  # fmt: skip
    text = render(rows, fmt, **kwargs)
    if not text:
        raise BenchError(f"no {', '.join(_names(rank))} results in {run_dir} (run with --metrics stereoset,seat)")
    click.echo(text, nl=False)
    if write:
        folder = run_dir if Path(run_dir).is_dir() else Path(run_dir).parent
        for p in write_tables(rows, folder, **kwargs):
            click.echo(f"wrote {p}", err=True)
