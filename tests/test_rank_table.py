"""reports/rank_table.py: the fork's proportional mean ranks (export/rank.py), ties, means of the performance
metrics, and the resampled CIs of the mean ranks."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from reports.rank_table import build, proportional_ranks, render

SUBS = {"ss_gender": ("stereoset", 2.0), "ss_race": ("stereoset", 2.0), "seat": ("seat", 0.05), "lms": ("stereoset", 1.0), "glue": ("glue", 1.0)}


def make_rows(values: dict, widths=None, paired=True, bias_type=None):
    """values[model][method] = {submetric: value}; CI value ± width; paired delta CI ± width/2."""
    rows = []
    for model, methods in values.items():
        for method, subs in methods.items():
            for sub, v in subs.items():
                metric, w = SUBS[sub]
                w = (widths or {}).get(sub, w)
                r = dict(model=model, method=method, label=method.upper(), group=0 if method == "base" else 2,
                         metric=metric, submetric=sub, status="ok", value=v, ci_low=v - w, ci_high=v + w)  # fmt: skip
                if bias_type:
                    r["bias_type"] = bias_type
                if method != "base" and paired:
                    b = methods["base"][sub]
                    r.update(delta=v - b, delta_low=v - b - w / 2, delta_high=v - b + w / 2)
                rows.append(r)
    return rows


def fork_ranks(scores: dict, better) -> dict:
    """export/rank.py: sort ascending by 'worse < better', rank i/(n-1) (no ties here)."""
    import functools

    items = sorted(scores.items(), key=functools.cmp_to_key(lambda a, b: -1 if better(b[1], a[1]) else 1))
    n = len(items)
    return {m: (i / (n - 1) if n > 1 else 0.5) for i, (m, _) in enumerate(items)}


def test_proportional_ranks_follow_the_fork_and_share_ties():
    rng = np.random.default_rng(0)
    for _ in range(20):
        x = rng.uniform(30, 70, 6)
        got = proportional_ranks(x, "50")
        want = fork_ranks(dict(enumerate(x)), lambda a, b: abs(a - 50) < abs(b - 50))
        np.testing.assert_allclose(got, [want[i] for i in range(6)], atol=0)
    assert proportional_ranks(np.array([3.0, -1.0, 2.0]), "0").tolist() == [0.0, 1.0, 0.5]
    assert proportional_ranks(np.array([1.0, 5.0, 5.0, 9.0]), "max").tolist() == [0.0, 0.5, 0.5, 1.0]
    assert proportional_ranks(np.array([np.nan, 4.0]), "max")[1] == 0.5 and np.isnan(proportional_ranks(np.array([np.nan, 4.0]), "max")[0])


VALUES = {
    "m1": {"base": {"ss_gender": 70, "seat": 0.9, "lms": 85, "glue": 80}, "a": {"ss_gender": 55, "seat": 0.5, "lms": 84, "glue": 79},
           "b": {"ss_gender": 60, "seat": 0.2, "lms": 80, "glue": 81}},
    "m2": {"base": {"ss_gender": 65, "seat": 0.6, "lms": 90, "glue": 70}, "a": {"ss_gender": 52, "seat": 0.7, "lms": 88, "glue": 71},
           "b": {"ss_gender": 58, "seat": 0.1, "lms": 91}},
}  # fmt: skip


def test_mean_over_models_then_metrics_and_performance_means():
    t = build(make_rows(VALUES), resamples=0)
    # SS: m1 a 1, b .5, base 0; m2 a 1, b .5, base 0.  SEAT: m1 b 1, a .5, base 0; m2 b 1, base .5, a 0
    assert t.ranks["a"] == pytest.approx({"ss_gender": 1.0, "seat": 0.25, "mean": 0.625})
    assert t.ranks["b"] == pytest.approx({"ss_gender": 0.5, "seat": 1.0, "mean": 0.75})
    assert t.ranks["base"] == pytest.approx({"ss_gender": 0.0, "seat": 0.25, "mean": 0.125})
    assert t.methods == ["b", "a", "base"]
    assert t.perf["a"]["lms"] == pytest.approx((86.0, 86.0 - 87.5))
    assert t.perf["b"]["glue"] == pytest.approx((81.0, 1.0))  # only m1 has b's GLUE: delta over m1 alone
    assert t.perf["base"]["lms"] == (87.5, None)


def test_ci_reranks_each_resample():
    # tiny CIs: every resample gives the point ranks
    narrow = build(make_rows(VALUES, widths={"ss_gender": 1e-6, "seat": 1e-9}), resamples=300)
    for m in ("a", "b", "base"):
        lo, hi = narrow.ci[m]["mean"]
        assert lo == pytest.approx(narrow.ranks[m]["mean"]) and hi == pytest.approx(narrow.ranks[m]["mean"])
    # wide CIs on SS: a and b (55/60 and 52/58) swap on many resamples, base stays last
    wide = build(make_rows(VALUES, widths={"ss_gender": 8.0, "seat": 1e-9}), resamples=500, seed=1)
    assert wide.ci["a"]["ss_gender"][0] <= 0.5 < 1.0 <= wide.ci["a"]["ss_gender"][1] + 1e-12
    assert wide.ci["base"]["ss_gender"][1] <= 0.5
    # the same seed gives the same intervals
    assert build(make_rows(VALUES, widths={"ss_gender": 8.0, "seat": 1e-9}), resamples=500, seed=1).ci == wide.ci


def test_shared_base_fluctuation_keeps_paired_differences():
    """A huge base CI but tiny paired-difference CIs: methods move together with the base draw, so their order
    (and ranks) never changes; drawn independently from their own CIs they would."""
    vals = {"m": {"base": {"ss_gender": 70}, "a": {"ss_gender": 66}, "b": {"ss_gender": 64}}}
    rows = make_rows(vals, widths={"ss_gender": 0.01})
    for r in rows:  # own CIs wide (the items vary a lot), paired differences precise
        r["ci_low"], r["ci_high"] = r["value"] - 3.0, r["value"] + 3.0
    t = build(rows, rank=("ss",), resamples=400)
    assert t.ci["b"]["mean"] == pytest.approx((1.0, 1.0)) and t.ci["a"]["mean"] == pytest.approx((0.5, 0.5))
    for r in rows:
        r.pop("delta_low", None), r.pop("delta_high", None)
    t = build(rows, rank=("ss",), resamples=400)
    assert t.ci["b"]["mean"][0] < 1.0


def test_render_and_command(tmp_path):
    from bench.files import write_text
    from reports.rank_table import rank_table

    rows = make_rows(VALUES, bias_type="gender") + make_rows({"m1": {"base": {"ss_race": 50}}}, bias_type="race")
    md = render(rows, "md", resamples=100)
    lines = md.splitlines()
    assert lines[0].split("|")[1:6] == [" Method   ", " Mean rank             ", " SS                    ",
                                         " SEAT                  ", " LMS (mean)    "]  # fmt: skip
    assert lines[2].startswith("| B ") and "**0.75** [" in lines[2] and "85.50 (-2.00)" in lines[2]
    tex = render(rows, "tex", resamples=0)
    assert r"\textbf{0.75}" in tex and r"\toprule" in tex and "[" not in tex.split(r"\midrule")[1].split(r"\bottomrule")[0]
    write_text(tmp_path / "results.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    res = CliRunner().invoke(rank_table, [str(tmp_path), "--write", "--resamples", "50"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "rank.md").is_file() and (tmp_path / "rank.tex").is_file() and "Mean rank" in res.output
    res = CliRunner().invoke(rank_table, [str(tmp_path), "--bias-type", "race", "--resamples", "0"])
    assert res.exit_code == 0 and "BASE" in res.output and "0.50" in res.output
