"""Results and artifacts on disk.

- Every write is atomic (temporary file + rename), so an interrupted run leaves either the old or the new
  file, never half of one.
- A run directory holds `manifest.json` (the request) and `results.jsonl` (one row per number). Re-running
  the same request resumes; a different request into the same directory is refused.
- The cache (`~/.cache/bench` or BENCH_CACHE_DIR) is content-addressed: fitted artifacts and metric scores
  are stored under a hash of everything they depend on and never recomputed.
"""
from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import os
import pickle
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable

from bench.errors import BenchError, RunConflict

RESULT_FIELDS = (
    "model", "method", "label", "group", "metric", "submetric", "seed", "status", "value", "ci_low", "ci_high",
    "n", "resamples", "delta", "delta_low", "delta_high", "significant", "runtime_s", "config_hash", "note",
    "versions",
)  # fmt: skip


def stable_hash(obj: Any, length: int = 16) -> str:
    blob = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def source_hash(*paths) -> str:
    """Hash of the contents of source files, in the order given."""
    h = hashlib.sha256()
    for p in paths:
        h.update(Path(p).read_bytes())
    return h.hexdigest()[:12]


def code_hash(obj: Any) -> str:
    """Hash of the code that computes a plugin's result: every module of the plugin's top-level package (so
    shared helpers such as methods/projection.py count) plus the core computation modules. A change to any of
    them invalidates the plugin's cache entries."""
    try:
        path = Path(inspect.getsourcefile(obj if inspect.isclass(obj) or inspect.isfunction(obj) else type(obj)))
    except (TypeError, OSError):
        return "unknown"
    top = path.parent
    while (top.parent / "__init__.py").is_file():
        top = top.parent
    files = sorted(top.rglob("*.py")) if (top / "__init__.py").is_file() else [path]
    core = Path(__file__).resolve().parent
    files += [core / f for f in CORE_COMPUTATION if (core / f).is_file()]
    return source_hash(*files)


CORE_COMPUTATION = ("subject.py", "scoring.py", "batching.py", "embeddings.py", "finetune.py", "models.py")


@contextlib.contextmanager
def atomic_path(path: Path):
    """Yield a temporary path next to `path`; on success it replaces `path` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


@contextlib.contextmanager
def atomic_dir(path: Path):
    """Yield a temporary directory that becomes `path` when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_rows(path: Path) -> list[dict]:
    path = Path(path)
    if path.is_dir():
        path = path / "results.jsonl"
    if not path.is_file():
        raise BenchError(f"no results at {path}")
    rows = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise BenchError(f"{path} line {i}: malformed row ({e.msg})") from None
    return rows


class RunStore:
    """A run directory: manifest + results rows, resumable."""

    def __init__(self, out: Path, manifest: dict):
        self.out = Path(out)
        self.manifest = manifest
        self.results_path = self.out / "results.jsonl"
        existing = self.out / "manifest.json"
        if existing.is_file():
            old = json.loads(existing.read_text())
            if old.get("request_hash") != manifest.get("request_hash"):
                raise RunConflict(
                    f"{self.out} already holds a different run (its request: {_describe(old)}); "
                    "choose another --out directory or remove it"
                )
        elif self.out.exists() and any(self.out.iterdir()):
            raise RunConflict(f"{self.out} exists and is not a bench run directory; choose another --out")
        self.rows = read_rows(self.results_path) if self.results_path.is_file() else []
        write_json(existing, manifest)

    def done(self, model: str, method: str, metric: str, seed: int) -> bool:
        return any(
            r["model"] == model and r["method"] == method and r["metric"] == metric and r["seed"] == seed
            for r in self.rows
        )

    def add(self, rows: Iterable[dict]) -> None:
        self.rows.extend(rows)
        write_text(self.results_path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in self.rows))


def _describe(manifest: dict) -> str:
    req = manifest.get("request", {})
    return f"models={req.get('models')} methods={req.get('methods')} metrics={req.get('metrics')} seed={req.get('seed')}"


class Cache:
    """Content-addressed cache of artifacts and scores."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, kind: str, name: str, key: str) -> Path:
        return self.root / kind / name.replace("/", "_") / key

    def get_or_create(self, kind: str, name: str, key: str, create: Callable[[], Any],
                      save: Callable[[Any, Path], None], load: Callable[[Path], Any]) -> tuple[Any, bool]:
        """Load the entry if present, else create it and store it atomically. Returns (value, was_cached)."""
        folder = self.path(kind, name, key)
        marker = folder / "done"
        if marker.is_file():
            return load(folder / "artifact"), True
        value = create()
        with atomic_dir(folder) as tmp:
            save(value, tmp / "artifact")
            (tmp / "done").write_text("ok\n")
        return value, False

    def pickled(self, kind: str, name: str, key: str, create: Callable[[], Any]) -> tuple[Any, bool]:
        def save(v, p):
            with open(p, "wb") as f:
                pickle.dump(v, f)

        def load(p):
            with open(p, "rb") as f:
                return pickle.load(f)

        return self.get_or_create(kind, name, key, create, save, load)
