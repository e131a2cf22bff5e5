"""One writer per run directory: an advisory lock on OUT/.bench-lock."""
from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import logging
import os
import socket
import weakref
from pathlib import Path

from bench.errors import BenchError, RunLocked

_log = logging.getLogger("bench")

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
    if not (isinstance(pid, int) and not isinstance(pid, bool) and isinstance(host, str) and isinstance(since, str)):
        return "its details are unreadable"
    clean = lambda s: "".join(c for c in s if c.isprintable())[:80]  # noqa: E731
    return f"pid {pid} on {clean(host)}, since {clean(since)}"
