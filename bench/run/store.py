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
import datetime
import errno
import fcntl
import hashlib
import inspect
import json
import logging
import math
import os
import shutil
import socket
import tempfile
import weakref
from pathlib import Path
from typing import Any, Callable, Iterable

from bench.errors import BenchError, DataError, RunConflict, RunLocked

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
    files += sorted(CORE_COMPUTATION.glob("*.py"))
    return source_hash(*files)


CORE_COMPUTATION = Path(__file__).resolve().parents[1] / "models"  # the subject, its loading, scoring and fine-tuning


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


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


_NAME = ("a non-empty string", lambda v: isinstance(v, str) and v != "")
_TEXT = ("a string", lambda v: isinstance(v, str))
_COUNT = ("an integer >= 0", lambda v: _is_int(v) and v >= 0)
# An estimate may be NaN or infinite: an undefined statistic (e.g. a CI with too few finite resamples) is stored so.
_ESTIMATE = ("a number", _is_number)
_FINITE = ("a finite number >= 0", lambda v: _is_number(v) and math.isfinite(v) and v >= 0)
_FLAG = ("true or false", lambda v: isinstance(v, bool))
STATUSES = ("ok", "n/a", "error")

# The one schema of a results row (results.jsonl, a baseline): field -> (what it must be, test, may be null).
# Fields not listed are kept unchecked (they reach no table); model, method and metric are required.
ROW_SCHEMA: dict[str, tuple[str, Callable[[Any], bool], bool]] = {
    "model": (*_NAME, False), "method": (*_NAME, False), "metric": (*_NAME, False), "bias_type": (*_NAME, False),
    "label": (*_TEXT, True), "submetric": (*_TEXT, True), "note": (*_TEXT, True), "config_hash": (*_TEXT, True),
    "group": ("an integer", _is_int, False),
    "status": (f"one of {', '.join(STATUSES)}", lambda v: v in STATUSES, False),
    "seed": (*_COUNT, True), "n": (*_COUNT, True), "resamples": (*_COUNT, True),
    "seeds": ("a list of integers >= 0", lambda v: isinstance(v, list) and all(_COUNT[1](x) for x in v), False),
    "aggregate": (*_FLAG, False), "significant": (*_FLAG, True),
    "value": (*_ESTIMATE, True), "ci_low": (*_ESTIMATE, True), "ci_high": (*_ESTIMATE, True),
    "delta": (*_ESTIMATE, True), "delta_low": (*_ESTIMATE, True), "delta_high": (*_ESTIMATE, True),
    "runtime_s": (*_FINITE, True), "tolerance": (*_FINITE, False),
    "versions": ("an object", lambda v: isinstance(v, dict), True),
}  # fmt: skip
REQUIRED_FIELDS = ("model", "method", "metric")


# The JSON types each field may have (a first, cheap look at every row: `bench report` reads 100,000 rows in ~1 s);
# fields whose rule says more than their type (a non-empty name, a count >= 0, ...) are then tested by ROW_SCHEMA.
_JSON_TYPES = {"string": (str,), "integer": (int,), "number": (int, float), "flag": (bool,), "list": (list,),
               "object": (dict,)}  # fmt: skip
_FIELD_TYPES = {
    **dict.fromkeys(("model", "method", "metric", "bias_type", "label", "submetric", "note", "config_hash", "status"),
                    "string"),
    **dict.fromkeys(("group", "seed", "n", "resamples"), "integer"),
    **dict.fromkeys(("value", "ci_low", "ci_high", "delta", "delta_low", "delta_high", "runtime_s", "tolerance"),
                    "number"),
    "aggregate": "flag", "significant": "flag", "seeds": "list", "versions": "object",
}  # fmt: skip
_TYPE_ONLY = {"label", "submetric", "note", "config_hash", "group", "aggregate", "significant", "value", "ci_low",
              "ci_high", "delta", "delta_low", "delta_high", "versions"}  # their ROW_SCHEMA test is their type alone
_ALLOWED = {f: frozenset(_JSON_TYPES[k] + ((type(None),) if ROW_SCHEMA[f][2] else ())) for f, k in _FIELD_TYPES.items()}
_TESTED = tuple(f for f in ROW_SCHEMA if f not in _TYPE_ONLY)
_SHAPES: dict[tuple, list[str]] = {}  # (fields, their types) of rows whose types are right -> the fields left to test


def row_problem(row: Any) -> str | None:
    """What is wrong with a results row by ROW_SCHEMA (None: nothing)."""
    if not isinstance(row, dict):
        return "not a JSON object"
    missing = [k for k in REQUIRED_FIELDS if k not in row]
    if missing:
        return f"lacks {', '.join(missing)}"
    shape = (tuple(row), tuple(map(type, row.values())))
    fields = _SHAPES.get(shape)
    if fields is None:
        fields = list(row)
        if all(t in _ALLOWED[f] for f, t in zip(*shape) if f in _ALLOWED):
            fields = _SHAPES[shape] = [f for f in _TESTED if f in row]
    for field in fields:
        rule, value = ROW_SCHEMA.get(field), row[field]
        if rule is None or (value is None and rule[2]):
            continue
        what, test, nullable = rule
        if not test(value):
            return f"{field} must be {what}{' or null' if nullable else ''}, got {_shown(value)}"
    return None


def _shown(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


class MalformedRow(DataError):
    """A results row that does not follow ROW_SCHEMA; `row` is its 1-based position among the rows."""

    def __init__(self, path: Path, line: int, row: int, problem: str):
        super().__init__(f"{path} line {line}: malformed row ({problem}); fix or remove the line, or rerun into "
                         "a new --out")
        self.path, self.line, self.row, self.problem = path, line, row, problem


def read_rows(path: Path) -> list[dict]:
    """The rows of a results.jsonl (or of RUN_DIR/results.jsonl), each checked against ROW_SCHEMA: a malformed
    row raises MalformedRow (a DataError) naming the file, the line and the field."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.jsonl"
    if not path.is_file():
        raise BenchError(f"no results at {path}")
    rows = []
    from bench.data.paths import open_text

    with open_text(path) as f:
        for i, line in enumerate(f, start=1):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise MalformedRow(path, i, len(rows) + 1, f"not JSON: {e.msg}") from None
                problem = row_problem(row)
                if problem:
                    raise MalformedRow(path, i, len(rows) + 1, problem)
                rows.append(row)
    return rows


def request_hash(request: dict) -> str:
    """Hash of a run request that ignores the order of its models, methods and metrics."""
    canon = dict(request)
    for key in ("models", "methods", "metrics"):
        if isinstance(canon.get(key), list):
            canon[key] = sorted({str(v) for v in canon[key]})
    return stable_hash(canon)


LOCK_FILE = ".bench-lock"


class RunLock:
    """One writer per run directory: an advisory lock (flock) on OUT/.bench-lock, whose text names the holder
    (pid, host, start time) for the message another run gets.

    The kernel drops a flock when its holder dies, so a lock file left by a killed run is simply taken over (and
    its text rewritten). Acquiring creates OUT (and its missing parents); releasing removes the lock file and
    those directories again while they are empty, so a run that wrote nothing leaves no trace.
    """

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self._fd: int | None = None
        self._created: list[Path] = []
        self._closer = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        if self.held:
            return
        self._make_folder()
        for _ in range(100):  # the holder may remove the file between our open and our flock: open it again
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(fd)
                os.close(fd)
                self._remove_folder()
                raise RunLocked(f"--out {self.folder} is in use by another bench run ({holder}); wait for it to "
                                "finish, or choose another --out") from None  # fmt: skip
            except OSError as e:  # a file system without locks (some NFS mounts): go on unprotected
                _log.warning(f"cannot lock {self.path} ({e.strerror}); make sure no other run writes {self.folder}")
            if _same_file(fd, self.path):
                break
            os.close(fd)
        else:
            raise OSError(errno.EBUSY, f"could not lock {self.path}: it keeps being replaced")
        if os.fstat(fd).st_size:  # the file of a run that ended (the kernel dropped its lock)
            _log.info(f"{self.path}: taking over from a run that ended ({_holder(fd)})")
        _write_holder(fd)
        self._fd = fd
        self._closer = weakref.finalize(self, os.close, fd)  # a store dropped without release() still unlocks

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            if _same_file(self._fd, self.path):
                os.unlink(self.path)  # while still locked: a run that opened this file sees it is gone and retries
        self._closer()
        self._fd = None
        self._remove_folder()

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
        except OSError as e:
            self._remove_folder()
            raise BenchError(f"cannot lock --out {self.folder}: {self.path}: {e.strerror} (a symbolic link or not "
                             "a file? remove it)") from None  # fmt: skip

    def _make_folder(self) -> None:
        missing = []
        folder = self.folder
        while not folder.exists() and folder != folder.parent:
            missing.append(folder)
            folder = folder.parent
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise BenchError(f"cannot create --out {self.folder}: {e.strerror or e}") from None
        self._created = missing  # deepest first

    def _remove_folder(self) -> None:
        for folder in self._created:
            try:
                folder.rmdir()  # only while empty: the run wrote nothing into it
            except OSError:
                break
        self._created = []


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _write_holder(fd: int) -> None:
    since = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    text = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": since}) + "\n"
    os.ftruncate(fd, 0)
    os.pwrite(fd, text.encode(), 0)


def _holder(fd: int) -> str:
    """'pid 12 on host, since 2025-...' from the lock file's text (anyone may write it: shown only when sane)."""
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
        pid, host, since = info["pid"], info["host"], info["since"]
    except (OSError, ValueError, KeyError, TypeError):
        return "its details are not written yet"
    if not (_is_int(pid) and isinstance(host, str) and isinstance(since, str)):
        return "its details are unreadable"
    clean = lambda s: "".join(c for c in s if c.isprintable())[:80]  # noqa: E731
    return f"pid {pid} on {clean(host)}, since {clean(since)}"


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


def manifest_problem(manifest: Any) -> str | None:
    """What is wrong with a run directory's manifest.json (None: nothing)."""
    if not isinstance(manifest, dict):
        return "not a JSON object"
    if not isinstance(manifest.get("request_hash"), str):
        return "request_hash must be a string"
    if not isinstance(manifest.get("request", {}), dict):
        return "request must be an object"
    data = manifest.get("data", {})
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        return "data must be an object of file fingerprints (strings)"
    return None


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
