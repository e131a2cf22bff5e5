"""reports/task_table.py: GLUE, SuperGLUE and any suite render from stored rows alone; reports import no plugin."""
from __future__ import annotations

import ast
import json
from pathlib import Path

from click.testing import CliRunner

from reports.task_table import render, suites, table, write_tables

REPO = Path(__file__).resolve().parents[1]


def _desc(suite, label, tasks, missing=None, mean=True):
    return json.dumps({"suite": suite, "label": label, "mean": suite if mean else None,
                       "tasks": [{"key": f"{suite}:{k}", "label": lab, "metric": m, "order": o} for k, lab, m, o in tasks],
                       "missing": missing or {}})  # fmt: skip


def _row(model, method, metric, sub, value=None, status="ok", note="", sig=None, group=2, label=None):
    ci = (value - 1.0, value + 1.0) if isinstance(value, float) else (None, None)
    return dict(model=model, method=method, label=label or method.upper(), group=0 if method == "base" else group,
                metric=metric, submetric=sub, status=status, value=value, ci_low=ci[0], ci_high=ci[1],
                significant=sig, note=note)  # fmt: skip


def rows():
    sg_tasks = [("cb", "CB", "Acc./F1", 1), ("copa", "COPA", "Acc.", 2), ("boolq", "BoolQ", "Acc.", 0)]
    boolq_why = "no train.jsonl in /d/superglue/BoolQ; add BoolQ/train.jsonl of the SuperGLUE v2 release"
    out = []
    for method, shift in (("base", 0.0), ("inlp", 5.0)):
        out += [
            _row("m", method, "superglue", "superglue:cb", 60.0 + shift, sig=bool(shift)),
            _row("m", method, "superglue", "superglue:cb:f1", 10.0),  # a part, not a column
            _row("m", method, "superglue", "superglue:copa", 70.0 - shift),
            _row("m", method, "superglue", "superglue", 65.0),
            _row("m", method, "superglue", "superglue_missing", 1.0, note=f"boolq: {boolq_why}"),
            _row("m", method, "superglue", "superglue_table", 3.0,
                 note=_desc("superglue", "SuperGLUE", sg_tasks, {"superglue:boolq": boolq_why})),
            _row("m", method, "glue", "glue:rte", 55.0),
            _row("m", method, "glue", "glue_table", 1.0, note=_desc("glue", "GLUE", [("rte", "RTE", "Acc.", 7)])),
            _row("m", method, "stereoset", "ss_gender", 60.0),
        ]
    out.append(_row("m", "self-debias", "superglue", None, status="n/a", note="self-debias does not serve finetune"))
    # a second model whose every SuperGLUE task lacked data, and a suite this module has never heard of
    out.append(_row("m2", "base", "superglue:wic", None, status="n/a", note="missing data: wic: no folder /x/superglue/WiC"))
    out.append(_row("m", "base", "newsuite:t1", "newsuite:t1", 42.0))
    out.append(_row("m", "base", "newsuite:t1", "newsuite_table", 1.0, note=_desc("newsuite", "New", [("t1", "T-1", "F1", 0)], mean=False)))
    return out


def test_columns_cells_and_notes_from_the_rows_alone():
    header, columns, body, notes = table(rows(), "superglue")
    assert columns == ["superglue:boolq", "superglue:cb", "superglue:copa", "superglue:wic", "superglue"]
    assert header["superglue:cb"] == ("CB", "Acc./F1") and header["superglue"] == ("SuperGLUE", "mean")
    assert header["superglue:wic"][0] == "WiC"  # not described by any row: the registry's column declaration
    cells = {(m, lab): c for m, lab, c in body}
    assert [lab for m, lab, _ in body] == ["BASE", "INLP", "SELF-DEBIAS", "BASE"]
    assert cells[("m", "BASE")]["superglue:boolq"] == {"status": "missing"}
    assert cells[("m", "INLP")]["superglue:cb"]["value"] == 65.0 and cells[("m", "INLP")]["superglue:cb"]["significant"]
    assert all(c == {"status": "n/a"} for c in cells[("m", "SELF-DEBIAS")].values()) and len(cells[("m", "SELF-DEBIAS")]) == 5
    assert cells[("m2", "BASE")] == {"superglue:wic": {"status": "missing"}}
    assert any("missing tasks — boolq: no train.jsonl" in n for n in notes) and any("n/a (self-debias" in n for n in notes)
    assert len([n for n in notes if n.startswith("m / BASE: missing")]) == 1  # the _missing and _table rows agree
    assert suites(rows()) == ["superglue", "glue", "newsuite"]


def test_markdown_and_latex():
    md = render(rows(), "md", "superglue")
    head = md.splitlines()[0]
    assert head.index("BoolQ") < head.index("CB Acc./F1") < head.index("COPA") < head.index("WiC") < head.index("SuperGLUE mean")
    inlp = next(line for line in md.splitlines() if "| INLP" in line)
    base = next(line for line in md.splitlines() if line.startswith("| m ") and "BASE" in line)
    assert "**65.0**† [64.0, 66.0]" in inlp and "**70.0** [69.0, 71.0]" in base and "missing" in base
    assert base.split("|")[-2].strip() == "**65.0** [64.0, 66.0]"  # tied best means: both bold
    tex = render(rows(), "tex", "superglue")
    assert tex.startswith(r"\begin{tabular}{ll" + "r" * 5 + "}") and r"\textbf{65.0}$^\dagger$" in tex and r"\bottomrule" in tex
    assert render(rows(), "md", "newsuite").splitlines()[0].count("T-1 F1") == 1
    assert render(rows(), "md", "nothing") == ""


def test_write_tables_and_commands(tmp_path):
    from bench.files import write_text
    from reports.glue_table import glue_table
    from reports.task_table import is_task_row, task_table

    paths = write_tables(rows(), tmp_path)
    assert sorted(p.name for p in paths) == sorted(f"{s}.{e}" for s in ("superglue", "glue", "newsuite") for e in ("md", "tex"))
    assert any(is_task_row(r) for r in rows() if r["metric"].startswith("superglue"))  # the leaderboard writes them all
    write_text(tmp_path / "run" / "results.jsonl", "".join(json.dumps(r) + "\n" for r in rows()))
    res = CliRunner().invoke(task_table, [str(tmp_path / "run"), "--suite", "superglue", "--write"])
    assert res.exit_code == 0, res.output
    assert "CB Acc./F1" in res.output and (tmp_path / "run" / "superglue.md").is_file()
    assert not (tmp_path / "run" / "glue.md").exists()
    res = CliRunner().invoke(glue_table, [str(tmp_path / "run"), "--format", "tex"])
    assert res.exit_code == 0 and "RTE" in res.output and "CB" not in res.output
    res = CliRunner().invoke(task_table, [str(tmp_path / "run")])
    assert "## superglue" in res.output and "## glue" in res.output and "## newsuite" in res.output
    res = CliRunner().invoke(task_table, [str(tmp_path / "run"), "--suite", "nothing"])
    assert res.exit_code != 0 and "no nothing results" in str(res.exception)


def test_commands_are_registered():
    from bench.registry import COMMANDS

    assert {"glue-table", "task-table", "rank-table"} <= set(COMMANDS.names())


def test_reports_import_no_plugin():
    """Reports render stored rows; they never import a metric or method module."""
    for path in sorted((REPO / "reports").glob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            for name in names:
                assert name.split(".")[0] not in ("metrics", "methods"), f"{path.name} imports {name}"
