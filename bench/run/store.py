"""A run directory: `manifest.json` (the request) and `results.jsonl` (one row per number), written atomically by
one writer at a time (bench.run.lock). Re-running the same request resumes; a different request into the same
directory is refused; a resume over changed data files is refused."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable

from bench.errors import BenchError, RunConflict
from bench.files import nearest_existing, stable_hash, write_json, write_text
from bench.run.lock import RunLock
from bench.run.schema import manifest_problem, read_rows

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

    `lock=True` (the run's driver): the store holds the directory's RunLock from opening until `release()`, so
    a second run into the same directory fails at once, naming the first.
    """

    def __init__(self, out: Path, manifest: dict, lock: bool = False):
        self.out = Path(out)
        self.manifest = dict(manifest)
        self.manifest.setdefault("data", {})
        self.manifest_path = self.out / "manifest.json"
        self.results_path = self.out / "results.jsonl"
        self._check_writable()
        self.lock = RunLock(self.out) if lock else None
        self._open()

    def _open(self) -> None:
        """Take the lock (if any), then check the directory and read its rows (under the lock)."""
        if self.lock is not None:
            self.lock.acquire()
        try:
            self._load()
        except BaseException:
            self.release()
            raise

    def _load(self) -> None:
        old = self._read_manifest()
        if old is not None:
            same = old.get("request_hash") == self.manifest.get("request_hash") or (
                "request" in old and request_hash(old["request"]) == self.manifest.get("request_hash"))
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

    def acquire(self) -> None:
        """Hold the lock again after `release()` (and re-read the directory, which another run may have written)."""
        if self.lock is not None and not self.lock.held:
            self._open()

    def release(self) -> None:
        """Let another run write the directory (the lock file goes, and the directory too if it is still empty)."""
        if self.lock is not None:
            self.lock.release()

    def _check_writable(self) -> None:
        if self.out.exists() and not self.out.is_dir():
            raise BenchError(f"--out {self.out} is a file, not a directory; choose a directory")
        existing = nearest_existing(self.out)
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
        why = f"{old}" if isinstance(old, Exception) else manifest_problem(old)
        if why:
            raise BenchError(f"{self.manifest_path} is corrupted ({why}); remove the directory or choose another --out")
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
