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
import errno
import hashlib
import inspect
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable

from bench.errors import BenchError, DataError, RunConflict

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


def umask() -> int:
    """The process's umask, read without changing it where the OS allows (os.umask alone must set it)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: Path):
    """Yield a temporary path next to `path`; on success it replaces `path` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~umask())  # mkstemp makes 0600; the result gets the user's usual permissions
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
def atomic_dir(path: Path, complete: Callable[[Path], bool] | None = None):
    """Yield a temporary directory that becomes `path` when the block succeeds.

    `complete(path)`: whether a directory already at `path` is a complete result. If given and true, the first
    complete writer has won: the new directory is dropped (concurrent writers of one cache entry). Otherwise
    (no `complete`, or an incomplete directory) the new directory replaces the old one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    os.chmod(tmp, 0o777 & ~umask())  # mkdtemp makes 0700; the result gets the user's usual permissions
    try:
        yield tmp
        _install_dir(tmp, path, complete)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _install_dir(tmp: Path, path: Path, complete: Callable[[Path], bool] | None) -> None:
    """Rename `tmp` to `path` (one rename, so readers never see half a directory); see atomic_dir."""
    for _ in range(100):
        try:
            os.rename(tmp, path)  # succeeds when `path` is absent or an empty directory
            return
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.EISDIR, errno.ENOTDIR):
                raise
        if complete is not None and complete(path):
            shutil.rmtree(tmp, ignore_errors=True)  # the first complete writer wins
            return
        remove_dir(path)  # an old or damaged directory: move it aside, then try again
    raise OSError(errno.EBUSY, f"could not install {tmp} as {path}: it keeps being replaced")


def remove_dir(path: Path) -> None:
    """Remove a directory (or file) so that it disappears at once: renamed aside first, then deleted."""
    path = Path(path)
    trash = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
    try:
        os.rename(path, trash / "x")
    except FileNotFoundError:  # someone else removed it
        pass
    shutil.rmtree(trash, ignore_errors=True)


def read_rows(path: Path) -> list[dict]:
    path = Path(path)
    if path.is_dir():
        path = path / "results.jsonl"
    if not path.is_file():
        raise BenchError(f"no results at {path}")
    rows = []
    from bench.data import open_text

    with open_text(path) as f:
        for i, line in enumerate(f, start=1):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path} line {i}: malformed row ({e.msg})") from None
                if not isinstance(row, dict):
                    raise DataError(f"{path} line {i}: malformed row (not a JSON object)")
                rows.append(row)
    return rows


def request_hash(request: dict) -> str:
    """Hash of a run request that ignores the order of its models, methods and metrics."""
    canon = dict(request)
    for key in ("models", "methods", "metrics"):
        if isinstance(canon.get(key), list):
            canon[key] = sorted({str(v) for v in canon[key]})
    return stable_hash(canon)


class RunStore:
    """A run directory: manifest + results rows, resumable.

    Everything about the directory is checked when the store is opened (a file in the way, no write permission,
    a corrupted manifest, a different run), but nothing is written until the first rows are: a run that fails
    before that leaves the directory as it was. The manifest records the fingerprint of every data file the run
    read; a resume over changed data is refused, naming the file.
    """

    def __init__(self, out: Path, manifest: dict):
        self.out = Path(out)
        self.manifest = dict(manifest)
        self.manifest.setdefault("data", {})
        self.manifest_path = self.out / "manifest.json"
        self.results_path = self.out / "results.jsonl"
        self._check_writable()
        old = self._read_manifest()
        if old is not None:
            same = old.get("request_hash") == manifest.get("request_hash") or (
                isinstance(old.get("request"), dict) and request_hash(old["request"]) == manifest.get("request_hash"))
            if not same:
                raise RunConflict(
                    f"{self.out} already holds a different run (its request: {_describe(old)}); "
                    "choose another --out directory or remove it"
                )
            self.manifest["data"] = dict(old.get("data") or {})
        elif self.out.exists() and any(not p.name.startswith(".bench-") for p in self.out.iterdir()):
            raise RunConflict(f"{self.out} exists and is not a bench run directory; choose another --out")
        self.rows = read_rows(self.results_path) if self.results_path.is_file() else []
        self._dirty = old is None or old != self.manifest

    def _check_writable(self) -> None:
        if self.out.exists() and not self.out.is_dir():
            raise BenchError(f"--out {self.out} is a file, not a directory; choose a directory")
        existing = self.out
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            raise BenchError(f"--out {self.out}: {existing} is a file, not a directory; choose another --out")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise BenchError(f"--out {self.out} is not writable (no write permission on {existing}); choose another --out")

    def _read_manifest(self) -> dict | None:
        if not self.manifest_path.is_file():
            return None
        try:
            old = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            old = e
        if not isinstance(old, dict) or "request_hash" not in old:
            why = f" ({old})" if isinstance(old, Exception) else ""
            raise BenchError(f"{self.manifest_path} is corrupted{why}; remove the directory or choose another --out")
        return old

    def record_data(self, fingerprints: dict[str, str]) -> None:
        """Data files (path -> content fingerprint) the run reads; refuses when one changed since it was recorded."""
        known = self.manifest["data"]
        changed = sorted(k for k, v in fingerprints.items() if k in known and known[k] != v)
        if changed:
            raise RunConflict(
                f"data file {changed[0]} changed since the results in {self.out} were computed"
                f"{f' (and {len(changed) - 1} more)' if len(changed) > 1 else ''}; resuming would mix rows from old "
                "and new data: restore the file or choose another --out"
            )
        new = {k: v for k, v in fingerprints.items() if k not in known}
        if new:
            known.update(new)
            self._dirty = True

    def done(self, model: str, method: str, metric: str, seed: int) -> bool:
        return any(
            r.get("model") == model and r.get("method") == method and r.get("metric") == metric and r.get("seed") == seed
            for r in self.rows
        )

    def aggregated(self, model: str, method: str, metric: str) -> bool:
        """Whether the rows aggregated over seeds of (model, method, metric) are stored."""
        return any(
            r.get("aggregate") and r.get("model") == model and r.get("method") == method and r.get("metric") == metric
            for r in self.rows
        )

    def add(self, rows: Iterable[dict], order: Callable[[dict], Any] | None = None) -> None:
        """Add rows and rewrite results.jsonl (atomically); `order`: a sort key for the whole file (the plan's
        order; a stable sort, so rows of one cell keep theirs)."""
        self.rows.extend(rows)
        if order is not None:
            self.rows.sort(key=order)
        try:
            if self._dirty:
                write_json(self.manifest_path, self.manifest)
                self._dirty = False
            write_text(self.results_path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in self.rows))
        except OSError as e:
            raise BenchError(f"cannot write to --out {self.out}: {e.strerror or e}") from None


def _describe(manifest: dict) -> str:
    req = manifest.get("request", {})
    return f"models={req.get('models')} methods={req.get('methods')} metrics={req.get('metrics')} seed={req.get('seed')}"


class Cache:
    """Content-addressed cache of artifacts and scores: `root/kind/name/key/` holding `artifact` (what `save`
    wrote) and the marker `done`. Entries are data (bench.serialize), never pickles.

    Concurrent writers of one key are safe: each writes a private directory and renames it into place; the first
    complete one wins and the others drop theirs. An entry that fails to load (truncated, tampered with, written
    in an old format) is reported with its path, removed and recomputed.
    """

    def __init__(self, root: Path, warn: Callable[[str], None] | None = None):
        self.root = Path(root)
        self.warn = warn

    def path(self, kind: str, name: str, key: str) -> Path:
        return self.root / kind / name.replace("/", "_") / key

    @staticmethod
    def complete(folder: Path) -> bool:
        return (Path(folder) / "done").is_file()

    def get_or_create(self, kind: str, name: str, key: str, create: Callable[[], Any],
                      save: Callable[[Any, Path], None], load: Callable[[Path], Any]) -> tuple[Any, bool]:
        """Load the entry if present, else create it and store it atomically. Returns (value, was_cached).

        The cache's `warn` (else logging) receives one line when a damaged entry is found."""
        folder = self.path(kind, name, key)
        if self.complete(folder):
            try:
                return load(folder / "artifact"), True
            except Exception as e:  # noqa: BLE001 - any failure to load means the entry is damaged
                message = (f"damaged cache entry {folder} ({type(e).__name__}: {str(e)[:200]}); "
                           "removed, recomputing")  # fmt: skip
                (self.warn or _log.warning)(message)
                remove_dir(folder)
        value = create()
        with atomic_dir(folder, complete=self.complete) as tmp:
            save(value, tmp / "artifact")
            (tmp / "done").write_text("ok\n")
        return value, False

    def data(self, kind: str, name: str, key: str, create: Callable[[], Any],
             allowed: Iterable[str] = ()) -> tuple[Any, bool]:
        """`get_or_create` for a value stored with bench.serialize (functions and dataclasses of the packages
        `allowed` and bench only)."""
        from bench.serialize import load_data, save_data

        allowed = tuple(allowed)
        return self.get_or_create(kind, name, key, create, lambda v, p: save_data(v, p, allowed),
                                  lambda p: load_data(p, allowed))


_log = logging.getLogger("bench")
