"""Data directory handling and validated loading of the shared file formats.

A data directory has the layout of the project's `shared/data` (see its PROVENANCE.md):
  stereoset/dev.json, crows_pairs/crows_pairs_anonymized.csv, seat/*.jsonl,
  bias_attribute_words/bias_attribute_words.json, gradiend/{namexact,namextend,genter,geneutral,gentypes}.csv,
  text_corpus/*.txt, glue/<TASK>/{train,dev}.tsv.
It is chosen with `--data-dir` or the environment variable BENCH_DATA_DIR. Every loader names the file and
row of a malformed record.
"""
from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
from pathlib import Path
from typing import Iterable

from bench.errors import DataError

ENV_DATA_DIR = "BENCH_DATA_DIR"
ENV_CACHE_DIR = "BENCH_CACHE_DIR"


def default_data_dir() -> Path | None:
    value = os.environ.get(ENV_DATA_DIR)
    return Path(value).expanduser() if value else None


def default_cache_dir() -> Path:
    value = os.environ.get(ENV_CACHE_DIR)
    if value:
        return Path(value).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "bench"


def fetch_hint(relative: str, data_dir=None) -> str:
    """How to get `relative` (a path inside the data directory): the `bench data fetch` command of the data
    manifest's group that provides it, or a pointer to `bench data list` for a file the manifest does not know."""
    from bench.data.manifest import group_of  # read only for a message: reading files needs no manifest

    group = group_of(relative)
    where = f" --data-dir {data_dir}" if data_dir is not None else " --data-dir DIR"
    if group is None:
        return "not a file that `bench data fetch` provides (`bench data list --files` lists those)"
    return f"`bench data fetch {group}{where}` downloads it"


def require_file(data_dir, relative: str, what: str = "data file") -> Path:
    if data_dir is None:
        raise DataError(
            f"no data directory for {what} {relative!r}: pass --data-dir or set {ENV_DATA_DIR} "
            f"(a folder in the documented layout; {fetch_hint(relative)})"
        )
    path = Path(data_dir) / relative
    if not path.is_file():
        raise DataError(f"missing {what}: {path} (expected in the data directory {data_dir}; "
                        f"{fetch_hint(relative, data_dir)})")
    return path


def resolve_file(data_dir, file: str, what: str = "data file") -> Path:
    """A metric's file option: an absolute path as given, otherwise relative to the data directory."""
    path = Path(file).expanduser()
    if path.is_absolute():
        if not path.is_file():
            raise DataError(f"missing {what}: {path}")
        return path
    return require_file(data_dir, file, what)


def fingerprint(paths: Iterable[Path]) -> str:
    """Content hash of data files (part of every cache key)."""
    h = hashlib.sha256()
    for p in sorted(Path(p) for p in paths):
        h.update(str(p.name).encode())
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def not_text(path, encoding: str = "utf-8") -> DataError:
    """The DataError for a file that is not valid `encoding` text: names the file and the first bad byte."""
    try:
        data = Path(path).read_bytes()
        data.decode(encoding)
        where = ""
    except UnicodeDecodeError as e:
        where = f" at byte offset {e.start} (0x{data[e.start]:02x})"
    except OSError:
        where = ""
    codec = "UTF-8" if encoding.lower().replace("_", "-").startswith("utf-8") else encoding
    return DataError(f"{path}: not valid {codec} text{where}; re-save the file as {codec}")


@contextlib.contextmanager
def open_text(path, encoding: str = "utf-8", newline: str | None = None):
    """`open(path)` for reading text; a decoding error anywhere in the block becomes a DataError naming the file
    and byte offset (every reader of data files uses this, never a bare `open`)."""
    try:
        with open(path, encoding=encoding, newline=newline) as f:
            yield f
    except UnicodeDecodeError:
        raise not_text(path, encoding) from None


def read_text(path, encoding: str = "utf-8") -> str:
    with open_text(path, encoding) as f:
        return f.read()


def file_sha256(path) -> str:
    """sha256 (hex) of one file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


_FILE_HASHES: dict[tuple, str] = {}


def file_fingerprints(paths: Iterable[Path]) -> dict[str, str]:
    """{resolved path: content hash} of each file (a folder: all files under it), remembered per process by
    (path, size, mtime) so that a run hashes each file once. What a run directory's manifest records."""
    out = {}
    for p in paths:
        p = Path(p).resolve()
        files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
        for f in files:
            st = f.stat()
            key = (str(f), st.st_size, st.st_mtime_ns)
            if key not in _FILE_HASHES:
                _FILE_HASHES[key] = file_sha256(f)[:16]
            out[str(f)] = _FILE_HASHES[key]
    return out


def read_json(path: Path):
    try:
        with open_text(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from None


def read_csv_rows(path: Path, required: Iterable[str], delimiter: str = ",") -> list[dict]:
    """Rows of a CSV/TSV as dicts; raises DataError naming file and row for a missing column or empty value."""
    required = list(required)
    rows = []
    with open_text(path, newline="") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        header = reader.fieldnames or []
        missing = [c for c in required if c not in header]
        if missing:
            raise DataError(f"{path}: missing column(s) {', '.join(missing)} (header: {', '.join(header)})")
        for i, row in enumerate(reader, start=2):  # row 1 is the header
            if None in row or any(row.get(c) in (None, "") for c in required):
                bad = [c for c in required if row.get(c) in (None, "")] or ["(extra fields)"]
                raise DataError(f"{path} row {i}: malformed record, empty or missing {', '.join(bad)}")
            row["_row"] = i
            rows.append(row)
    return rows


def attribute_words(data_dir, bias_type: str = "gender") -> list[tuple[str, ...]]:
    """bias-bench's attribute word tuples (gender: 57 [male, female] pairs)."""
    path = require_file(data_dir, "bias_attribute_words/bias_attribute_words.json", "attribute word list")
    table = read_json(path)
    if bias_type not in table:
        raise DataError(f"{path}: no entry {bias_type!r} (has {', '.join(table)})")
    out = []
    for i, pair in enumerate(table[bias_type]):
        if not isinstance(pair, list) or len(pair) < 2 or not all(isinstance(w, str) and w for w in pair):
            raise DataError(f"{path}: {bias_type} entry {i} is malformed: {pair!r}")
        out.append(tuple(pair))
    return out


def text_corpus(data_dir, name: str | None = None, max_lines: int | None = None) -> list[str]:
    """Non-empty lines of a text corpus in text_corpus/ (all files, sorted, when `name` is None)."""
    if name is not None:
        paths = [require_file(data_dir, f"text_corpus/{name}", "text corpus")]
    else:
        folder = Path(data_dir or "") / "text_corpus"
        paths = sorted(folder.glob("*.txt")) if data_dir else []
        if not paths:
            raise DataError(f"no text corpus: expected *.txt files in {folder} (pass --data-dir or set {ENV_DATA_DIR}; "
                            f"`bench data fetch corpus --data-dir DIR` downloads one)")
    lines = []
    for p in paths:
        with open_text(p) as f:
            for line in f:
                line = line.strip()
                if line and not line.startswith("="):  # WikiText section headings
                    lines.append(line)
                    if max_lines and len(lines) >= max_lines:
                        return lines
    return lines
