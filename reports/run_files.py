"""What the HTML report reads from a run directory besides its rows: the manifest (the request and the data
fingerprints) and the figures the run holds (PNG files under RUN/figures/, e.g. GRADIEND's encoder plot and
(h, alpha) heatmap written there by `bench gradiend encoder|decoder --out RUN/figures/gradiend`).

A run directory may be shared, so everything is read as untrusted data: JSON only, a manifest checked by
bench.run.schema, figures only as plain files inside the folder (no link followed), with PNG's signature and
a size bound; they are embedded as data, never as markup.
"""
from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from pathlib import Path

from bench.run.schema import manifest_problem

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_FIGURE_BYTES = 8 * 1024 * 1024
MAX_FIGURES = 40
FIGURES = "figures"


@dataclass(frozen=True)
class Figure:
    name: str  # the path below RUN/figures, with /
    data_uri: str


@dataclass(frozen=True)
class RunFiles:
    run: str  # the run directory as given
    manifest: dict | None
    problem: str | None  # why the manifest could not be shown
    figures: tuple[Figure, ...]


def run_dir_of(path: Path) -> Path:
    """The run directory of a run directory or of its results.jsonl."""
    path = Path(path)
    return path if path.is_dir() else path.parent


def read_manifest(run_dir: Path) -> tuple[dict | None, str | None]:
    """(manifest, None), or (None, why not) when it is missing or malformed."""
    path = Path(run_dir) / "manifest.json"
    if not path.is_file() or path.is_symlink():
        return None, "no manifest.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return None, f"manifest.json unreadable: {e}"
    problem = manifest_problem(manifest)
    return (None, f"manifest.json malformed: {problem}") if problem else (manifest, None)


def _png(path: Path) -> bytes | None:
    """The bytes of a plain PNG file within the size bound, else None."""
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > MAX_FIGURE_BYTES:
            return None
        data = path.read_bytes()
    except OSError:
        return None
    return data if data.startswith(PNG_SIGNATURE) and len(data) <= MAX_FIGURE_BYTES else None


def read_figures(run_dir: Path) -> tuple[Figure, ...]:
    """The PNG figures under RUN/figures (sorted by path, at most MAX_FIGURES), as data: URIs."""
    root = Path(run_dir) / FIGURES
    if root.is_symlink() or not root.is_dir():
        return ()
    found = []
    for folder, dirs, files in os.walk(root, followlinks=False):
        dirs.sort()
        found += [Path(folder) / f for f in sorted(files) if f.lower().endswith(".png")]
    figures = []
    for path in sorted(found)[: MAX_FIGURES * 2]:
        data = _png(path)
        if data is not None and len(figures) < MAX_FIGURES:
            uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
            figures.append(Figure(path.relative_to(root).as_posix(), uri))
    return tuple(figures)


def read_run(path: Path) -> RunFiles:
    run_dir = run_dir_of(path)
    manifest, problem = read_manifest(run_dir)
    return RunFiles(str(path), manifest, problem, read_figures(run_dir))
