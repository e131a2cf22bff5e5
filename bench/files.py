"""Files written so that readers never see half of one: atomic files and folders, removal in one rename, the
user's umask for what bench creates, and the content hashes that name cache entries."""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable


def stable_hash(obj: Any, length: int = 16) -> str:
    blob = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def source_hash(*paths) -> str:
    """Hash of the contents of source files, in the order given."""
    h = hashlib.sha256()
    for p in paths:
        h.update(Path(p).read_bytes())
    return h.hexdigest()[:12]




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


def nearest_existing(path: Path) -> Path:
    """`path` itself if it exists, else its closest existing ancestor (what decides whether it can be created)."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    return path
