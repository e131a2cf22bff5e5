"""The Markdown the tables of reports/ write, as HTML: so the HTML report shows every cell exactly as the Markdown
tables do (leaderboard, task tables, rank table), from the same rendering code.

Only what those renderers write is read: GitHub pipe tables (tabulate's "github" format) and paragraphs or
"- " lists of notes below them, whose inline Markdown is `**bold**`, backslash escapes and the entities &amp;
&lt; &gt; (reports.escape.markdown's output). Data-supplied text reaches the Markdown escaped, so every `**`
left is the renderer's; every other character is HTML-escaped here, so no tag, attribute or entity of the data
survives as markup.
"""
from __future__ import annotations

import html
import re

_INLINE = re.compile(r"\\(.)|&(amp|lt|gt);|(\*\*)|(.)", re.DOTALL)
_CELLS = re.compile(r"\\.|\||[^\\|]+|\\$")
_RULE = re.compile(r"^\|?(\s*:?-+:?\s*\|)+\s*:?-*:?\s*$")


def inline(text: str) -> str:
    """One line of the renderers' inline Markdown as HTML (bold, escapes, entities; everything else as text)."""
    out, bold = [], False
    for m in _INLINE.finditer(text.strip()):
        escaped, entity, star, char = m.groups()
        if star:
            out.append("</strong>" if bold else "<strong>")
            bold = not bold
        elif entity:
            out.append(f"&{entity};")
        else:
            out.append(html.escape(escaped if escaped is not None else char, quote=True))
    if bold:
        out.append("</strong>")
    return "".join(out)


def _cells(line: str) -> list[str]:
    """The cells of a pipe-table line, split at the pipes that are not backslash-escaped."""
    cells, current = [], []
    for token in _CELLS.findall(line.strip()):
        if token == "|":
            cells.append("".join(current))
            current = []
        else:
            current.append(token)
    cells.append("".join(current))
    return cells[1:-1] if len(cells) > 2 else cells


def _table(lines: list[str]) -> str:
    head, body = _cells(lines[0]), [_cells(line) for line in lines[2:]]
    rows = ["<tr>" + "".join(f"<th>{inline(c)}</th>" for c in head) + "</tr>"]
    rows += ["<tr>" + "".join(f"<td>{inline(c)}</td>" for c in cells) + "</tr>" for cells in body]
    return '<table class="results">\n<thead>' + rows[0] + "</thead>\n<tbody>\n" + "\n".join(rows[1:]) + \
        "\n</tbody>\n</table>"


def to_html(markdown_text: str) -> str:
    """A renderer's Markdown (tables, notes, lists) as an HTML fragment."""
    blocks, lines = [], markdown_text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("|") and i + 1 < len(lines) and _RULE.match(lines[i + 1]):
            j = i + 2
            while j < len(lines) and lines[j].startswith("|"):
                j += 1
            blocks.append(_table(lines[i:j]))
            i = j
            continue
        if line.startswith("- "):
            j = i
            while j < len(lines) and lines[j].startswith("- "):
                j += 1
            blocks.append("<ul>" + "".join(f"<li>{inline(x[2:])}</li>" for x in lines[i:j]) + "</ul>")
            i = j
            continue
        if line.strip():
            blocks.append(f'<p class="note">{inline(line)}</p>')
        i += 1
    return "\n".join(blocks)
