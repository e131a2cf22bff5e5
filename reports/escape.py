"""One escaping function per output format, for every piece of data-supplied text that reaches a table (model
names, method labels, option values, notes, headers from rows): `latex`, `markdown`, `html`.

Each makes the text typeset or render as itself, and nothing else: no command (`\\input`, TeX's `^^5c` for a
backslash), no unbalanced group, no extra table cell, no raw HTML, no link or emphasis. Only data goes through
them; the renderer's own markup (bold, daggers, CIs in brackets) is added around the escaped text. Line breaks
and other control characters become spaces (a newline would end a Markdown row or a LaTeX paragraph).
"""
from __future__ import annotations

import html as _html
import re
import unicodedata

_LATEX = {
    "\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "$": r"\$", "&": r"\&", "#": r"\#", "%": r"\%", "_": r"\_",
    "^": r"\textasciicircum{}", "~": r"\textasciitilde{}", "|": r"\textbar{}", "<": r"\textless{}",
    ">": r"\textgreater{}",
    # a bracket right after a row's `\\` would be read as its optional argument (a length)
    "[": "{[}", "]": "{]}",
}  # fmt: skip
_LATEX_TABLE = str.maketrans(_LATEX)

# TeX's ligatures (-- ---, `` '', !` ?`, ,,) would merge two characters into another glyph: split them with {}
_LIGATURE = re.compile(r"(?<=[-`',!?])(?=[-`',])")

# Markdown punctuation with a meaning inline (code, emphasis, links, strikethrough, math, table cells) or as an
# escape is backslash-escaped; <, > and & become entities, so no HTML survives.
_MARKDOWN = re.compile(r"[\\`*_\[\]|~$&<>]")
_ENTITY = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


def plain(text) -> str:
    """str(text) with line breaks, other control and format characters (e.g. a right-to-left override) and
    separators other than the space as spaces."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(" " if unicodedata.category(c)[0] in "CZ" and c != " " else c for c in text)


def latex(text) -> str:
    """`text` as LaTeX that typesets it literally (text mode; any TeX engine, any catcodes of `^`)."""
    return _LIGATURE.sub("{}", plain(text).translate(_LATEX_TABLE))


def markdown(text) -> str:
    """`text` as GitHub-flavoured Markdown that renders it literally, also inside a table cell."""
    text = plain(text)
    return _MARKDOWN.sub(_markdown_char, text) if _MARKDOWN.search(text) else text


def _markdown_char(match: re.Match) -> str:
    c, at, text = match.group(), match.start(), match.string
    if c in _ENTITY:
        return _ENTITY[c]
    if c == "_" and 0 < at < len(text) - 1 and text[at - 1].isalnum() and text[at + 1].isalnum():
        return c  # inside a word (ss_gender, bert_base): never emphasis in CommonMark, kept as typed
    return "\\" + c


def html(text) -> str:
    """`text` as HTML character data or a quoted attribute value."""
    return _html.escape(plain(text), quote=True)
