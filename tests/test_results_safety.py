"""A run directory and a results file (issue 17, items 3, 5, 6): one writer per run directory (an advisory lock
naming its holder, taken over from a dead one); every consumer of a tampered results.jsonl or manifest.json ends
in one line naming the file, the line and the field (`check`: exit 4); every data-supplied name in a table is
escaped for its format (LaTeX compiled by a real TeX engine where one is installed; Markdown parsed)."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
import torch

from bench.api import EMBED, Column, Estimate, Metric, Scores, statistic
from bench.errors import RunLocked
from bench.registry import METRICS, register_metric
from bench.run.lock import LOCK_FILE
from bench.run.schema import read_rows
from bench.run.store import RunStore
from cli_helpers import run_bench
from result_rows import make_rows, seed_rows
from reports.escape import latex, markdown
from reports.leaderboard import render_full, render_latex, render_markdown
from reports.rank_table import render as rank_render
from reports.task_table import render as task_render

REPO = Path(__file__).resolve().parents[1]
NASTY = "m^^5cinput{x}}|<img src=x onerror=alert(1)>~&%#_"
EVERY = r"\ { } $ & # ^ _ ~ % | < > [x] a--b"  # every special character, brackets, a TeX ligature


@statistic
def _mean(values, idx):
    return values[idx[0]].mean(axis=1)


class SafetyNorm(Metric):
    """Mean norm of the [CLS] state of four fixed sentences (no data file)."""

    requires = EMBED
    columns = (Column("SN", "sn", "0", 95),)

    def score(self, subject, ctx):
        lines = [f"she went to the {w}." for w in ("store", "park", "office", "city")]
        enc = subject.tokenizer(lines, return_tensors="pt", padding=True)
        with torch.inference_mode():
            h = subject.hidden_states(enc.input_ids, enc.attention_mask)[:, 0].norm(dim=-1).numpy().astype(float)
        return Scores("sn", {"sn": Estimate((len(h),), partial(_mean, h))})


@pytest.fixture(scope="module", autouse=True)
def plugin():
    if "safety-norm" not in METRICS:
        register_metric("safety-norm")(SafetyNorm)
    yield
    METRICS.unregister("safety-norm")


def _args(model, out, cache, *extra):
    return ["run", "--models", model, "--metrics", "safety-norm", "--out", out, "--cache-dir", cache,
            "--resamples", "20", "--no-progress", *extra]  # fmt: skip


def _one_line_error(code, err, *names, exit_code=2):
    assert code == exit_code, err
    lines = err.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    assert "Traceback" not in err
    for name in names:
        assert name in errors[0], err
    return errors[0]


# ---- one writer per run directory ------------------------------------------------------------------------------------
HOLD = """
import sys, time
from bench.run.lock import RunLock
lock = RunLock(sys.argv[1])
lock.acquire()
print("held", flush=True)
time.sleep(600)
"""


def _holder(out: Path) -> subprocess.Popen:
    """Another process holding the run directory's lock (as a running `bench run` does)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def _stop(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait(timeout=30)


def test_second_run_into_a_directory_in_use_fails_at_once_naming_the_holder(tiny_model_dir, tmp_path, capsys,
                                                                             monkeypatch):  # fmt: skip
    out = tmp_path / "run"
    assert run_bench(_args(tiny_model_dir, out, tmp_path / "c"), capsys)[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    holder = _holder(out)
    try:
        monkeypatch.setattr("bench.run.unit.load_subject", lambda *a, **k: pytest.fail("a model loaded"))
        # the same run with other resamples: a second writer that would rewrite results.jsonl
        code, _, err = run_bench(_args(tiny_model_dir, out, tmp_path / "c", "--resamples", "30"), capsys)
        _one_line_error(code, err, f"--out {out}", "in use by another bench run",
                        f"pid {holder.pid} on {socket.gethostname()}, since ", "choose another --out")  # fmt: skip
        assert {p.name: p.read_bytes() for p in out.iterdir() if p.name != LOCK_FILE} == before
    finally:
        _stop(holder)


def test_a_new_directory_in_use_stays_as_the_holder_left_it(tmp_path, capsys):
    out = tmp_path / "new" / "run"
    holder = _holder(out)
    try:
        code, _, err = run_bench(["run", "--models", "synthetic", "--metrics", "crows", "--out", out], capsys)
        _one_line_error(code, err, "in use by another bench run", f"pid {holder.pid}")
        assert [p.name for p in out.iterdir()] == [LOCK_FILE]
    finally:
        _stop(holder)


def test_the_lock_of_a_dead_run_is_taken_over_and_names_the_new_holder(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    dead = _holder(out)
    dead.send_signal(signal.SIGKILL)  # killed: its lock file stays, naming it, but the kernel dropped its lock
    dead.wait(timeout=30)
    assert f'"pid": {dead.pid}' in (out / LOCK_FILE).read_text()

    store = RunStore(out, {"request_hash": "h"}, lock=True)
    assert json.loads((out / LOCK_FILE).read_text())["pid"] == os.getpid()
    try:
        probe = subprocess.run([sys.executable, "-c", HOLD, str(out)], cwd=REPO, capture_output=True, text=True,
                               timeout=120)  # fmt: skip
        assert probe.returncode != 0 and "RunLocked" in probe.stderr
        assert f"pid {os.getpid()} on " in probe.stderr and f"pid {dead.pid}" not in probe.stderr
    finally:
        store.release()
    assert not (out / LOCK_FILE).exists()

    code, _, err = run_bench(_args(tiny_model_dir, out, tmp_path / "c"), capsys)  # a real run over a stale lock
    assert code == 0, err
    assert read_rows(out) and not (out / LOCK_FILE).exists()


def test_the_lock_is_refused_through_a_symbolic_link(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    target = tmp_path / "elsewhere.txt"
    target.write_text("keep\n")
    (out / LOCK_FILE).symlink_to(target)
    with pytest.raises(Exception, match="symbolic link"):
        RunStore(out, {"request_hash": "h"}, lock=True)
    assert target.read_text() == "keep\n"


def test_in_process_second_store_is_refused(tmp_path):
    out = tmp_path / "run"
    first = RunStore(out, {"request_hash": "h"}, lock=True)
    try:
        with pytest.raises(RunLocked, match=f"pid {os.getpid()} on "):
            RunStore(out, {"request_hash": "h"}, lock=True)
    finally:
        first.release()
    RunStore(out, {"request_hash": "h"}, lock=True).release()


# ---- tampered results and manifests ----------------------------------------------------------------------------------
TAMPER = {
    "value-string": ({"value": "89.3"}, "value"),
    "value-list": ({"value": [1, 2]}, "value"),
    "no-model": ({"model": None}, "model"),
    "no-metric": ({"metric": None}, "metric"),
    "bias-type-list": ({"bias_type": ["gender"]}, "bias_type"),
    "group-string": ({"group": "0"}, "group"),
}
LINE = 4  # the tampered line


def _tampered(path: Path, change: dict) -> None:
    lines = path.read_text().splitlines()
    row = json.loads(lines[LINE - 1])
    for k, v in change.items():
        if v is None:
            del row[k]
        else:
            row[k] = v
    lines[LINE - 1] = json.dumps(row)
    path.write_text("\n".join(lines) + "\n")


def _stored(folder: Path, rows: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


@pytest.fixture()
def run_dir(tmp_path):
    return _stored(tmp_path / "run", make_rows(700))


CONSUMERS = {
    "report": lambda d: ["report", d],
    "report-tex": lambda d: ["report", d, "--format", "tex"],
    "report-full": lambda d: ["report", d, "--table", "full"],
    "rank-table": lambda d: ["rank-table", d, "--resamples", "20"],
    "task-table": lambda d: ["task-table", d],
}


@pytest.mark.parametrize("consumer", CONSUMERS)
@pytest.mark.parametrize("case", TAMPER)
def test_tampered_rows_are_one_line_errors_naming_file_line_and_field(consumer, case, run_dir, capsys):
    change, field = TAMPER[case]
    _tampered(run_dir / "results.jsonl", change)
    code, out, err = run_bench(CONSUMERS[consumer](run_dir), capsys)
    message = _one_line_error(code, err, str(run_dir / "results.jsonl"), f"line {LINE}", field)
    assert "fix or remove the line" in message and out == ""


@pytest.mark.parametrize("which", ["run", "baseline"])
@pytest.mark.parametrize("case", TAMPER)
def test_check_says_malformed_with_exit_4(which, case, tmp_path, capsys):
    rows = make_rows(100)
    good = _stored(tmp_path / "good", rows)
    bad = _stored(tmp_path / "bad", rows)
    _tampered(bad / "results.jsonl", TAMPER[case][0])
    run, baseline = (bad, good) if which == "run" else (good, bad)
    code, out, err = run_bench(["check", run, "--baseline", baseline], capsys)
    _one_line_error(code, err, "malformed", f"{which} row {LINE}", f"line {LINE}", TAMPER[case][1], exit_code=4)
    assert "within tolerance" not in out


def test_every_row_bench_writes_passes_the_schema(tmp_path):
    """Per-seed, aggregate, n/a, error and extra rows (no CI) all read back."""
    rows = make_rows(400) + seed_rows() + [dict(make_rows(1)[0], status="error", value=None, note="error: x")]
    assert read_rows(_stored(tmp_path / "r", rows)) == rows


def test_nan_and_infinite_estimates_still_read(tmp_path):
    """An undefined statistic is stored as NaN (JSON NaN) and renders as a dash; that is not tampering."""
    rows = make_rows(40)
    rows[0].update(ci_low=float("nan"), ci_high=float("nan"))
    rows[1].update(value=float("inf"))
    assert len(read_rows(_stored(tmp_path / "r", rows))) == len(rows)


@pytest.mark.parametrize("case", ["value-string", "bias-type-list", "group-string"])
def test_resume_over_tampered_results_is_refused_and_changes_nothing(case, tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    args = _args(tiny_model_dir, out, tmp_path / "c")
    assert run_bench(args, capsys)[0] == 0
    change, field = TAMPER[case]
    results = out / "results.jsonl"
    lines = results.read_text().splitlines()
    row = dict(json.loads(lines[0]), **change)
    results.write_text("\n".join([json.dumps(row)] + lines[1:]) + "\n")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    code, _, err = run_bench(args, capsys)
    _one_line_error(code, err, str(results), "line 1", field)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


@pytest.mark.parametrize("manifest, field", [
    ({"request_hash": "x", "data": ["a"]}, "data"),
    ({"request_hash": "x", "request": ["a"]}, "request"),
    ({"request_hash": 5}, "request_hash"),
    ({"request_hash": "x", "data": {"/f": 3}}, "data"),
])  # fmt: skip
def test_tampered_manifest_is_a_one_line_error(manifest, field, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps(manifest))
    code, _, err = run_bench(["run", "--models", "synthetic", "--metrics", "crows", "--out", out], capsys)
    _one_line_error(code, err, str(out / "manifest.json"), "corrupted", field)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json"]


# ---- names in tables: escaped for their format -----------------------------------------------------------------------
def _named(rows: list[dict], name: str) -> list[dict]:
    """`rows` of one model with the model and every method label renamed to `name` (+ a suffix per method)."""
    labels = {}
    for r in rows:
        labels.setdefault(r["method"], f"{name} {len(labels)}")
    return [dict(r, model=name, label=labels[r["method"]]) for r in rows]


def _md_cells(line: str) -> list[str]:
    """The cells of a GitHub-flavoured Markdown table row, split as cmark-gfm does (a backslash escapes the next
    character, so `\\|` is no separator)."""
    cells, cell, i = [], "", 0
    line = line.strip()
    assert line.startswith("|") and line.endswith("|") and not line.endswith("\\|"), line
    body = line[1:-1]
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body):
            cell += body[i : i + 2]
            i += 2
            continue
        if c == "|":
            cells.append(cell)
            cell = ""
        else:
            cell += c
        i += 1
    return [c.strip() for c in cells + [cell]]


def _md_text(cell: str) -> str:
    """What a Markdown cell renders as: backslash escapes and the three entities resolved."""
    text = re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", cell)
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


@pytest.mark.parametrize("name", [NASTY, EVERY, "a\nb | c"])
def test_markdown_rows_keep_their_cells_and_render_names_as_typed(name):
    rows = _named(make_rows(35), name)
    md = render_markdown(rows)
    lines = [l for l in md.splitlines() if l.startswith("|")]
    width = len(_md_cells(lines[0]))
    assert all(len(_md_cells(l)) == width for l in lines), md
    first = _md_cells(lines[2])
    shown = name.replace("\n", " ")
    assert _md_text(first[0]) == shown and _md_text(first[1]) == f"{shown} 0"
    assert "<img" not in md and "\n" not in first[0]
    for table in (render_full(rows), rank_render(rows, "md", resamples=0)):
        lines = [l for l in table.splitlines() if l.startswith("|")]
        assert len({len(_md_cells(l)) for l in lines}) == 1 and "<img" not in table


def test_markdown_renders_as_text_with_a_real_renderer():
    markdown_it = pytest.importorskip("markdown_it")
    html = markdown_it.MarkdownIt("commonmark").enable(["table", "strikethrough"]).render(
        render_markdown(_named(make_rows(35), NASTY)))
    assert "<img" not in html and "<del>" not in html and "<em>" not in html
    first = re.search(r"<tbody>\s*<tr>\s*<td>(.*?)</td>\s*<td>(.*?)</td>", html, re.S)
    import html as html_module

    assert html_module.unescape(first.group(1)) == NASTY and html_module.unescape(first.group(2)) == f"{NASTY} 0"
    assert all(row.count("<td") == 6 for row in re.findall(r"<tr>.*?</tr>", html.split("<tbody>")[1], re.S))


@pytest.mark.parametrize("name", [NASTY, EVERY, "<script>alert(1)</script>", "a\nb | c"])
def test_html_report_renders_names_as_text(name):
    from html.parser import HTMLParser

    from reports.html_report import render_html

    class Page(HTMLParser):
        """Every start tag with its attributes, and the text of every table cell."""

        def __init__(self):
            super().__init__(convert_charrefs=True)
            self.tags, self.cells, self.cell = [], [], []

        def handle_starttag(self, tag, attrs):
            self.tags.append((tag, attrs))
            if tag == "td":
                self.cell = []

        def handle_endtag(self, tag):
            if tag == "td":
                self.cells.append("".join(self.cell))

        def handle_data(self, data):
            self.cell.append(data)

    page = Page()
    page.feed(render_html(_named(make_rows(35), name)))
    assert not [t for t, attrs in page.tags if t in ("script", "img")] and not [a for _, attrs in page.tags for a in attrs
                                                                               if a[0].startswith("on")]  # fmt: skip
    shown = name.replace("\n", " ")
    assert page.cells[:2] == [shown, f"{shown} 0"]


# A tiny LaTeX tokenizer: what TeX's eyes would see in escaped text (with `^` at its usual catcode 7).
SAFE_COMMANDS = {r"\textbackslash", r"\textasciicircum", r"\textasciitilde", r"\textbar", r"\textless",
                 r"\textgreater", r"\{", r"\}", r"\$", r"\&", r"\#", r"\_", r"\%"}  # fmt: skip


def _tex_tokens(text: str) -> list[str]:
    tokens, i = [], 0
    while i < len(text):
        if text[i] == "\\":
            m = re.match(r"\\([A-Za-z]+|.)", text[i:], re.S)
            tokens.append(m.group(0))
            i += len(m.group(0))
        else:
            tokens.append(text[i])
            i += 1
    return tokens


def _typeset(text: str) -> str:
    """The characters escaped text typesets, refusing anything but characters, groups and SAFE_COMMANDS."""
    glyph = {r"\textbackslash": "\\", r"\textasciicircum": "^", r"\textasciitilde": "~", r"\textbar": "|",
             r"\textless": "<", r"\textgreater": ">"}  # fmt: skip
    out, depth = "", 0
    for tok in _tex_tokens(text):
        if tok.startswith("\\"):
            assert tok in SAFE_COMMANDS, f"unexpected control sequence {tok!r} in {text!r}"
            out += glyph.get(tok, tok[1:])
        elif tok in "{}":
            depth += 1 if tok == "{" else -1
            assert depth >= 0, f"unbalanced }} in {text!r}"
        else:
            assert tok not in "$&#^_~%|<>", f"special character {tok!r} in {text!r}"
            out += tok
    assert depth == 0, f"unbalanced {{ in {text!r}"
    return out


@pytest.mark.parametrize("name", [NASTY, EVERY, "a\nb"])
def test_latex_escape_typesets_every_character_as_itself(name):
    assert "^^" not in latex(name)
    assert _typeset(latex(name)) == name.replace("\n", " ")


def test_latex_tables_escape_every_name():
    rows = _named(make_rows(35), NASTY)
    for tex in (render_latex(rows), render_full(rows, "tex"), rank_render(rows, "tex", resamples=0)):
        assert "^^" not in tex and "<img" not in tex and latex(NASTY) in tex
        assert tex.count("{") - tex.count(r"\{") == tex.count("}") - tex.count(r"\}")


def test_task_table_escapes_names_headers_and_notes():
    task = {"key": "glue:rte", "label": NASTY, "metric": "Acc.", "order": 0}
    note = json.dumps({"suite": "glue", "label": NASTY, "mean": "glue", "tasks": [task], "missing": {}})
    rows = [dict(model=NASTY, method="base", label=NASTY, group=0, metric="glue", submetric=sub, status="ok",
                 value=60.0, ci_low=59.0, ci_high=61.0, note=n)
            for sub, n in (("glue:rte", ""), ("glue", ""), ("glue_table", note))]  # fmt: skip
    rows.append(dict(rows[0], method="x", status="n/a", value=None, note=f"n/a because {NASTY}"))
    md = task_render(rows, "md", "glue")
    table = [l for l in md.splitlines() if l.startswith("|")]
    assert len({len(_md_cells(l)) for l in table}) == 1 and "<img" not in md
    tex = task_render(rows, "tex", "glue")
    assert "^^" not in tex and latex(NASTY) in tex


def test_ordinary_names_are_unchanged():
    for name in ("GRADIEND-BPI + INLP", "synthetic", "bert-base-uncased", "ss_gender", "d:sent-weat6b", "CrowS (→50)"):
        assert markdown(name) == name
    assert latex("GRADIEND-BPI + INLP") == "GRADIEND-BPI + INLP" and latex("ss_gender") == r"ss\_gender"


def _compile(tex_body: str, folder: Path) -> str:
    """pdflatex a document holding `tex_body`; returns the text of the PDF."""
    folder.mkdir(parents=True, exist_ok=True)
    doc = "\n".join([r"\documentclass{article}", r"\usepackage[T1]{fontenc}", r"\usepackage{booktabs}",
                     r"\begin{document}", tex_body, r"\end{document}"])  # fmt: skip
    (folder / "t.tex").write_text(doc, encoding="utf-8")
    env = {**os.environ, "TEXMFVAR": str(folder / "texmf-var")} if not os.access(Path.home(), os.W_OK) else None
    proc = subprocess.run(["pdflatex", "-no-shell-escape", "-interaction=nonstopmode", "-halt-on-error", "t.tex"],
                          cwd=folder, capture_output=True, text=True, timeout=300, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:]
    return subprocess.run(["pdftotext", "t.pdf", "-"], cwd=folder, capture_output=True, text=True,
                          check=True).stdout  # fmt: skip


@pytest.mark.skipif(not (shutil.which("pdflatex") and shutil.which("pdftotext")),
                    reason="no TeX engine (Debian: texlive-latex-base texlive-latex-recommended poppler-utils)")
def test_latex_leaderboard_compiles_and_shows_the_name(tmp_path):
    # an \input{x} that ran would need x.tex: put one there that would print a marker
    (tmp_path / "tex").mkdir()
    (tmp_path / "tex" / "x.tex").write_text("INJECTED")
    text = _compile(render_latex(_named(make_rows(35), NASTY)) + "\n\n" + latex(EVERY), tmp_path / "tex")
    flat = " ".join(text.split())
    assert "INJECTED" not in flat
    assert NASTY in flat and f"{NASTY} 0" in flat
    assert EVERY in flat
