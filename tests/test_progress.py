"""Progress in a log: one line per finished stage instead of redrawn bars (bench.progress)."""
from __future__ import annotations

import io

from bench import progress


def test_stage_line_prints_one_line_per_stage():
    stream = io.StringIO()
    with progress.StageLine(total=300, desc="training", stream=stream) as bar:
        for _ in range(300):
            bar.update(1)
        bar.set_postfix(loss="0.71")
    items = list(progress.StageLine(range(7), desc="scoring", stream=stream))
    assert items == list(range(7))
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("training: 300/300 in ") and lines[0].endswith("loss=0.71")
    assert lines[1].startswith("scoring: 7/7 in ")


def test_bar_is_a_stage_line_when_stderr_is_not_a_terminal(monkeypatch):
    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert isinstance(progress.bar(total=3, desc="x"), progress.StageLine)
    assert not isinstance(progress.bar(total=3, desc="x", enabled=False), progress.StageLine)
