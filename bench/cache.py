"""The content-addressed cache (`~/.cache/bench` or BENCH_CACHE_DIR): fitted artifacts and metric scores stored under
a hash of everything they depend on (code included: `code_hash`) and never recomputed; entries are data, never
pickles, and a damaged one is reported, removed and recomputed."""
from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Any, Callable, Iterable

from bench.files import atomic_dir, remove_dir, source_hash

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


CORE_COMPUTATION = Path(__file__).resolve().parent / "models"  # the subject, its loading, scoring and fine-tuning



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
