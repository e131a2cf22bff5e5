"""The README's demo table is what `bench run --suite demo` prints, on whatever machine runs the tests: the
default synthetic world is pinned, so the figures are the same everywhere (and a changed method shows up here)."""
from __future__ import annotations

import pytest

from bench.run.schema import read_rows
from reports import readme_demo
from reports.leaderboard import render_markdown


def test_block_round_trip(tmp_path):
    rows = [{"model": "synthetic", "method": "base", "label": "Base", "group": 0, "metric": "stereoset",
             "submetric": "ss_gender", "status": "ok", "value": 60.0, "ci_low": 55.0, "ci_high": 65.0}]
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{readme_demo.BEGIN}\nold\n{readme_demo.END}\noutro\n", encoding="utf-8")
    assert readme_demo.update(readme, rows)
    text = readme.read_text(encoding="utf-8")
    assert text.startswith("intro\n") and text.endswith("outro\n")
    assert readme_demo.current_block(text) == readme_demo.block(rows)
    assert render_markdown(rows) in text
    assert not readme_demo.update(readme, rows)


@pytest.mark.slow
def test_readme_shows_what_the_demo_prints(demo_run):
    out, printed = demo_run  # tests/conftest.py: the demo, run once per session
    rows = read_rows(out)
    assert {r["method"] for r in rows} == {"base", "gradiend-bpi", "inlp", "gradiend-bpi+inlp"}
    assert render_markdown(rows) in printed
    shown = readme_demo.current_block(readme_demo.README.read_text(encoding="utf-8"))
    assert shown == readme_demo.block(rows), (
        "README.md's demo table differs from this machine's demo run; if a method or metric changed on purpose, "
        "run `bench run --suite demo --out runs/demo && python -m reports.readme_demo runs/demo`"
    )
