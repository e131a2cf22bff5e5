"""The HTML report (issue 21, item 1): one self-contained page per run (`report.html`; `bench report RUN...
--format html`). Fast tests on synthetic rows: every leaderboard cell exactly as in Markdown, hostile names as
text, nothing fetched from outside, the same bytes for the same rows, the runs' figures and provenance. Browser
tests (Debian's chromium, skipped without it): the demo's report rendered headless, a screenshot that is not
blank and shows the forest plots, every leaderboard value in the rendered DOM, and no network request."""
from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest

from cli_helpers import run_bench
from result_rows import make_rows
from reports import forest, html_md
from reports.html_report import FILENAME, HtmlReport, render_html
from reports.leaderboard import render_markdown
from reports.run_files import PNG_SIGNATURE

REPO = Path(__file__).resolve().parents[1]
HOSTILE = "<script>alert(1)</script>"
LABEL = "GR$AD<img src=x onerror=alert(1)>&amp;**x**|\\"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--host-resolver-rules=MAP * ~NOTFOUND"]  # fmt: skip


class _Page(HTMLParser):
    """Tags, attributes and the text of every table cell of an HTML document (as a browser's parser sees it)."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tags, self.attrs, self.tables, self._cell = [], [], [], None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += [(tag, k, v or "") for k, v in attrs]
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append(re.sub(r"\s+", " ", "".join(self._cell)).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _md_cells(line: str) -> list[str]:
    return [html_md.inline(c) for c in html_md._cells(line)]


def leaderboard_cells(rows: list[dict]) -> list[list[str]]:
    """The Markdown leaderboard's cells as text (bold and escapes resolved): what the HTML must show."""
    lines = [line for line in render_markdown(rows).splitlines() if line.startswith("|")]
    table = [lines[0]] + lines[2:]
    return [[_Page(f"<table><tr><td>{c}</td></tr></table>").tables[0][0][0] for c in _md_cells(line)] for line in table]


def _hostile_rows() -> list[dict]:
    rows = make_rows(35)
    for r in rows:
        r["model"] = HOSTILE
        r["label"] = f"{r['label']} {LABEL}"
    return rows


def _external(attrs) -> list[str]:
    """Attributes that would make a browser fetch something that is not inside the file."""
    return [f"{tag} {k}={v}" for tag, k, v in attrs if k in ("src", "href", "xlink:href", "srcset", "action",
            "poster", "data") and not (v.startswith("data:") or v.startswith("#"))]  # fmt: skip


@pytest.fixture(scope="module")
def hostile():
    """(rows with hostile names, their report): rendered once for the tests that only read it."""
    rows = _hostile_rows()
    return rows, render_html(rows)


def test_leaderboard_cells_are_the_markdown_cells():
    rows = make_rows(35)
    page = _Page(render_html(rows))
    assert page.tables[0] == leaderboard_cells(rows)
    assert any("†" in c for line in page.tables[0] for c in line) and "strong" in page.tags


def test_hostile_names_render_as_text(hostile):
    rows, text = hostile
    page = _Page(text)
    assert "script" not in page.tags and page.tags.count("img") == 0
    assert not [a for a in page.attrs if a[1].startswith("on")]
    assert HOSTILE.replace("<", "&lt;").replace(">", "&gt;") in text and "<script" not in text.lower()
    assert page.tables[0] == leaderboard_cells(rows)
    assert page.tables[0][1][0] == HOSTILE and page.tables[0][1][1] == f"Base {LABEL}"
    assert text.count("<svg") == 4  # SS, SEAT, CrowS, LMS: `$` in a label drew as text, not mathtext


def test_nothing_is_fetched_from_outside(hostile):
    text = hostile[1]
    page = _Page(text)
    assert not _external(page.attrs)
    assert "<link" not in text and "@import" not in text
    assert all(ref.startswith("#") for ref in re.findall(r"url\(\s*([^)]*)\)", text))  # the SVGs' own clip paths
    csp = [v for tag, k, v in page.attrs if tag == "meta" and k == "content" and "default-src" in v]
    assert csp and "default-src 'none'" in csp[0]


def test_the_same_rows_give_the_same_bytes(tmp_path):
    rows = make_rows(35)
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    first = render_html(rows, [tmp_path])
    code = ("import sys; from bench.run.schema import read_rows; from reports.html_report import render_html; "
            "sys.stdout.write(render_html(read_rows(sys.argv[1]), [sys.argv[1]]))")  # fmt: skip
    env = dict(os.environ, PYTHONHASHSEED="12345")  # another process, another order of sets and dicts of str
    other = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, env=env,
                           check=True, cwd=REPO).stdout  # fmt: skip
    assert other == first


def test_forest_panels_sorted_with_significance():
    rows = make_rows(35)
    rows += [dict(r, model="other", bias_type="race") for r in rows]  # a second group: a panel of its own
    figures = forest.panels(rows)
    assert [title.split(":")[0] for title, _ in figures] == ["SS", "SEAT", "CrowS", "LMS"]
    for _, found in figures:
        assert [panel for panel, _ in found] == ["m0000 (gender)", "other (race)"]
        for _, changes in found:
            deltas = [c.delta for c in changes]
            assert deltas == sorted(deltas) and len(deltas) in (8, 9)  # every method but Base (SEAT: no SelfDebias)
    ss = {r["label"]: r for r in rows if r["submetric"] == "ss_gender" and r["method"] != "base"
          and r["model"] == "m0000"}
    for change in figures[0][1][0][1]:
        assert change.significant == ss[change.label]["significant"]
        assert (change.delta, change.low, change.high) == tuple(ss[change.label][k] for k in
                                                                ("delta", "delta_low", "delta_high"))  # fmt: skip
    race = {r["label"]: r["delta"] for r in rows if r["submetric"] == "ss_race" and r["model"] == "other"}
    assert {c.label: c.delta for c in figures[0][1][1][1]} == {k: v for k, v in race.items() if v is not None}
    assert forest.svg(figures[0][1]).startswith("<svg") and forest.SIG in forest.svg(figures[0][1])


def _png(path: Path, width=4, height=3) -> None:
    import numpy as np
    from matplotlib.image import imsave

    imsave(path, np.linspace(0, 1, width * height).reshape(height, width), cmap="viridis")


def test_run_files_figures_and_provenance(tmp_path):
    rows = make_rows(35)
    run = tmp_path / "run"
    (run / "figures" / "gradiend").mkdir(parents=True)
    _png(run / "figures" / "gradiend" / "encoder.png")
    _png(run / "figures" / "gradiend" / "heat<b onmouseover=alert(1)>map.png")
    (run / "figures" / "fake.png").write_text("<svg onload=alert(1)>", encoding="utf-8")
    (run / "figures" / "linked.png").symlink_to(run / "figures" / "gradiend" / "encoder.png")
    manifest = {"request": {"models": [HOSTILE], "seed": 0}, "request_hash": "abc", "bench": "0.1.0",
                "data": {f"data/{HOSTILE}.json": "0123456789abcdef"}}  # fmt: skip
    (run / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    paths = HtmlReport.write(rows, run)
    assert paths == [run / FILENAME] and HtmlReport.show(rows, "md") == ""
    text = paths[0].read_text(encoding="utf-8")
    page = _Page(text)
    images = [v for tag, k, v in page.attrs if tag == "img" and k == "src"]
    assert len(images) == 2 and all(v.startswith("data:image/png;base64,") for v in images)
    assert "gradiend/encoder.png" in text and "linked.png" not in text and "fake.png" not in text
    assert "heat&lt;b onmouseover=alert(1)&gt;map.png" in text and "b" not in page.tags
    assert "<script" not in text.lower() and "0123456789abcdef" in text and '"bench": "0.1.0"' not in text
    cells = [c for table in page.tables for row in table for c in row]
    assert f"data/{HOSTILE}.json" in cells and "2.13.0+cpu" in cells and json.dumps([HOSTILE]) in cells


def test_renderer_and_report_command(tmp_path, capsys):
    from bench.registry import RENDERERS

    assert RENDERERS.get("html") is HtmlReport
    rows = make_rows(35)
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    code, printed, _ = run_bench(["report", tmp_path, "--format", "html"], capsys)
    assert code == 0 and printed.startswith("<!DOCTYPE html>") and printed.count("<svg") == 4
    assert _Page(printed).tables[0] == leaderboard_cells(rows)
    code, out, err = run_bench(["report", tmp_path, "--format", "html", "--out", tmp_path / "r.html"], capsys)
    assert code == 0 and out == "" and (tmp_path / "r.html").read_text(encoding="utf-8") == printed


def test_task_tables_with_their_notes():
    task = {"key": "glue:rte", "label": LABEL, "metric": "Acc.", "order": 0}
    note = json.dumps({"suite": "glue", "label": LABEL, "mean": "glue", "tasks": [task], "missing": {}})
    rows = [dict(model=HOSTILE, method="base", label="Base", group=0, metric="glue", submetric=sub, status="ok",
                 value=60.0, ci_low=59.0, ci_high=61.0, note=n)
            for sub, n in (("glue:rte", ""), ("glue", ""), ("glue_table", note))]  # fmt: skip
    rows.append(dict(rows[0], method="x", label="X", status="n/a", value=None, note=f"n/a because {HOSTILE}"))
    text = render_html(rows)
    page = _Page(text)
    assert 'id="tasks"' in text and "<script" not in text.lower() and "img" not in page.tags
    task_table = next(t for t in page.tables if t[0][:2] == ["model", "method"])
    assert task_table[1] == [HOSTILE, "Base", "60.0 [59.0, 61.0]", "60.0 [59.0, 61.0]"] and f"{LABEL} Acc." in task_table[0]
    assert f"n/a because {HOSTILE}" in html.unescape(text)


def test_markdown_conversion_keeps_escapes_and_pipes():
    assert html_md.inline(r"a \*b\* \| &lt;i&gt; &amp;lt; **1.00** <b>") == \
        "a *b* | &lt;i&gt; &amp;lt; <strong>1.00</strong> &lt;b&gt;"
    assert html_md._cells(r"| a\|b | c\\ | d |") == [r" a\|b ", " c\\\\ ", " d "]


# ---- in a browser ------------------------------------------------------------------------------------------------
def chromium(args: list, tmp_path: Path, timeout: int = 180) -> subprocess.CompletedProcess:
    """Headless chromium with a fresh profile, every host unresolvable, and a JSON net log at tmp_path/net.json."""
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no chromium at {CHROMIUM} (Debian: apt-get install chromium; .ci/run installs it as root)")
    profile = tmp_path / f"profile-{time.monotonic_ns()}"
    cmd = [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--log-net-log={tmp_path / 'net.json'}",
           "--net-log-capture-mode=Everything", *map(str, args)]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True)


def page_requests(net_log: Path) -> list[str]:
    """The URLs a page asked for, from a chromium net log: the URL requests with an initiator (a file:// page's
    is "null"). The browser's own requests (its clock, its account check: initiator "not an origin") are left
    out; --host-resolver-rules sends them nowhere."""
    text = net_log.read_text(encoding="utf-8", errors="replace").rstrip().rstrip(",")
    try:
        log = json.loads(text)
    except json.JSONDecodeError:  # a log cut short when the browser exits: close it
        log = json.loads(text + "]}")
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return [e["params"]["url"] for e in log["events"] if e.get("type") == start and "url" in e.get("params", {})
            and e["params"].get("initiator") != "not an origin"]  # fmt: skip


def leaving(urls: list[str]) -> list[str]:
    """The URLs among `urls` that leave the file: anything but file: and data:."""
    return [u for u in urls if not re.match(r"(file|data):", u)]


def screenshot_and_dom(page: Path, tmp_path: Path) -> tuple[Path, str, list[str]]:
    """(screenshot, dumped DOM, URLs requested) of `page` in headless chromium."""
    shot = tmp_path / "shot.png"
    chromium([f"--screenshot={shot}", "--window-size=1400,2400", page.resolve().as_uri()], tmp_path)
    urls = page_requests(tmp_path / "net.json")
    dom = chromium(["--dump-dom", page.resolve().as_uri()], tmp_path).stdout
    return shot, dom, urls + page_requests(tmp_path / "net.json")


def test_hostile_report_in_a_browser(hostile, tmp_path):
    page = tmp_path / FILENAME
    rows, text = hostile
    page.write_text(text, encoding="utf-8")
    dom = chromium(["--dump-dom", page.resolve().as_uri()], tmp_path).stdout
    parsed = _Page(dom)
    assert "script" not in parsed.tags and "img" not in parsed.tags
    assert parsed.tables[0] == leaderboard_cells(rows)
    assert not leaving(page_requests(tmp_path / "net.json"))
    # the check sees a request when there is one: the same page without its policy, fetching an image
    page.write_text(text.replace("http-equiv", "name").replace(
        "<h1>", '<img src="http://bench.invalid/x.png" alt=""><h1>'), encoding="utf-8")  # fmt: skip
    chromium(["--dump-dom", page.resolve().as_uri()], tmp_path)
    assert leaving(page_requests(tmp_path / "net.json")) == ["http://bench.invalid/x.png"]


@pytest.mark.slow
def test_demo_report_in_a_browser(demo_run, tmp_path):
    from matplotlib.image import imread

    from bench.run.schema import read_rows

    run, _ = demo_run
    page = run / FILENAME
    rows = read_rows(run)
    assert page.read_text(encoding="utf-8") == render_html(rows, [run])  # `bench run` wrote the report
    started = time.perf_counter()
    shot, dom, urls = screenshot_and_dom(page, tmp_path)
    print(f"chromium: screenshot and DOM in {time.perf_counter() - started:.1f}s")
    assert shot.read_bytes().startswith(PNG_SIGNATURE)
    pixels = (imread(shot)[..., :3] * 255).round().astype(int)
    colours = {tuple(p) for p in pixels.reshape(-1, 3)[::7]}
    assert len(colours) > 50 and (pixels.min(axis=2) < 200).mean() > 0.01  # not blank
    red = (abs(pixels - [178, 24, 43]).max(axis=2) < 30).sum()  # forest plots: significant changes are red
    assert red > 50 or not any(r.get("significant") for r in rows)
    parsed = _Page(dom)
    assert parsed.tables[0] == leaderboard_cells(rows) and parsed.tags.count("svg") >= 3
    assert "script" not in parsed.tags
    assert not leaving(urls), leaving(urls)
