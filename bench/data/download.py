"""Getting bytes into a data directory without trusting the source: HTTP(S) transfers and placing files.

- A transfer (`Transfers.url`) streams into `DIR/.partial/` (same filesystem) and resumes a partial download
  with an HTTP Range request, only for a file of known size and only when the answer's Content-Range continues
  exactly where the part stops (otherwise it starts again from zero). It never reads more than the entry's
  `size` (or `max_size`) and ends at the file's deadline (`Transfers.deadline`) however slowly the server
  drips: at the deadline the connection's socket is shut down. `--mirror` rewrites `https://host/p` to
  `MIRROR/host/p`; a host that refuses a connection is not asked again in the same run; offline nothing is
  attempted.
- `place` checks the finished bytes against the manifest (size and sha256; without a verified hash, that the
  file is well-formed UTF-8/JSON) and only then moves them into place with `os.replace`; a bad download is
  deleted. `inside` refuses a symbolic link at any step below the data directory: bench never writes, renames
  or deletes through one.
"""
from __future__ import annotations

import http.client
import json
import os
import re
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from bench.data.manifest import Entry
from bench.data.paths import file_sha256
from bench.errors import BenchError

CHUNK = 1 << 16
USER_AGENT = "bench-data-fetch"
MIN_RATE = 1 << 16  # bytes per second a transfer must average (after --timeout) before its deadline


# ---- hashing and placing -------------------------------------------------------------------------------------
class Rejected(BenchError):
    """Bytes that do not match the manifest (deleted, never placed)."""


class HashMismatch(Rejected):
    pass


class Unreachable(BenchError):
    """The source cannot be reached (host down, offline mode): nothing was downloaded."""


class Interrupted(BenchError):
    """A transfer stopped midway; what arrived is kept for the next run to resume."""


def inside(root: Path, rel: str) -> Path:
    """`root/rel`, refusing a symbolic link at any existing step below `root` (bench never writes, renames or
    deletes through a link in the data directory: whoever can write there could point one anywhere). Missing
    folders are created later with mkdir, which follows nothing."""
    path = root
    for name in rel.split("/"):
        path = path / name
        if path.is_symlink():
            raise BenchError(f"{path} is a symbolic link; bench does not write or delete through links in the "
                             "data directory: remove it (or pass the real folder as --data-dir)")
    return path


def clear(path: Path) -> Path:
    """Make way for a new file at `path` (to be opened with mode "x"): whatever was there (a file, a link) is
    removed, not followed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    return path


def new_file(path: Path):
    return open(clear(path), "xb")


def _well_formed(path: Path, suffix: str) -> str | None:
    """Why a file without a verified hash cannot be placed (not UTF-8, or not JSON), or None."""
    try:
        if suffix == ".json":
            with open(path, encoding="utf-8") as f:
                json.load(f)
        elif suffix == ".jsonl":
            with open(path, encoding="utf-8") as f:
                for line in f:
                    if line.strip():
                        json.loads(line)
        else:
            with open(path, encoding="utf-8") as f:
                while f.read(1 << 20):
                    pass
    except UnicodeDecodeError:
        return "not UTF-8 text"
    except ValueError as e:
        return f"not valid JSON ({str(e)[:80]})"
    return None


def place(part: Path, dest: Path, entry: Entry, check_text: bool = True) -> str:
    """Check `part` against the entry's size and sha256 (a file without a hash: that it is well-formed), then
    move it to `dest` atomically. Returns the hash. A file that fails is deleted (never placed) and Rejected
    (HashMismatch for a hash) raised."""
    size = part.lstat().st_size
    problem = None
    if entry.size is not None and size != entry.size:
        problem = f"{size} bytes, the manifest says {entry.size}"
    elif entry.max_size is not None and size > entry.max_size:
        problem = f"{size} bytes, more than the manifest's max_size {entry.max_size}"
    elif not entry.sha256 and check_text:
        problem = _well_formed(part, Path(entry.path).suffix)
    if problem:
        part.unlink(missing_ok=True)
        raise Rejected(f"{problem}; the download was deleted, not placed")
    digest = file_sha256(part)
    if entry.sha256 and digest != entry.sha256:
        part.unlink(missing_ok=True)
        raise HashMismatch(f"sha256 {digest[:16]}… differs from the manifest's {entry.sha256[:16]}…; the download "
                           "was deleted, not placed")
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(part, dest)
    return digest


# ---- transfers -----------------------------------------------------------------------------------------------
def offline_mode() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


class _Deadline:
    """Ends a transfer at its deadline whatever the server does: a socket timeout never fires for a server that
    sends a byte every few seconds, so at the deadline the connection's socket is shut down (which wakes a
    blocked read)."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.expired = False
        self._sock = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self):
        self._timer.start()
        return self

    def __exit__(self, *exc):
        self._timer.cancel()

    def _expire(self):
        with self._lock:
            self.expired = True
            self._shut()

    def watch(self, sock) -> None:
        with self._lock:
            self._sock = sock
            if self.expired:
                self._shut()

    def _shut(self):
        try:
            if self._sock is not None:
                self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class _Watched:
    """An HTTP(S) connection that reports its socket (to the transfer's deadline) once connected."""

    def __init__(self, *args, on_connect, **kwargs):
        super().__init__(*args, **kwargs)
        self._on_connect = on_connect

    def connect(self):
        super().connect()
        self._on_connect(self.sock)


class _HTTP(_Watched, http.client.HTTPConnection):
    pass


class _HTTPS(_Watched, http.client.HTTPSConnection):
    pass


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, on_connect):
        super().__init__()
        self.on_connect = on_connect

    def http_open(self, req):
        return self.do_open(_HTTP, req, on_connect=self.on_connect)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, on_connect):
        super().__init__()
        self.on_connect = on_connect

    def https_open(self, req):
        return self.do_open(_HTTPS, req, context=self._context, on_connect=self.on_connect)


def open_url(request, timeout: float, on_connect):
    """`urllib.request.urlopen` whose connections (redirects included) are handed to `on_connect`."""
    return urllib.request.build_opener(_HTTPHandler(on_connect), _HTTPSHandler(on_connect)).open(request,
                                                                                                 timeout=timeout)


def _content_range(value: str | None) -> tuple[int, int] | None:
    """(start, total) of a `bytes START-END/TOTAL` header whose END is the last byte, or None."""
    m = re.fullmatch(r"\s*bytes\s+(\d+)-(\d+)/(\d+)\s*", value or "")
    if not m or int(m.group(2)) != int(m.group(3)) - 1:
        return None
    return int(m.group(1)), int(m.group(3))


class _StartOver(Interrupted):
    """The server's answer to a resume could not be spliced onto the part: the part was deleted."""


class TooLarge(Rejected):
    pass


@dataclass
class Transfers:
    """Downloads for one run: remembers unreachable hosts so that a dead network costs one attempt, not one per
    file, and draws a progress bar per transfer."""

    partial: Path
    progress: bool = True
    offline: bool = False
    mirror: str | None = None
    timeout: float = 30.0
    retries: int = 2
    down: dict = field(default_factory=dict)  # host -> reason
    _up: set = field(default_factory=set)
    range_requests: int = 0

    def deadline(self, nbytes: int) -> float:
        """Seconds a file of `nbytes` may take in all (connections, retries and resumes of this run included):
        --timeout plus one second per 64 KiB."""
        return self.timeout + nbytes / MIN_RATE

    # -- plain URLs --
    def resolve(self, url: str) -> str:
        if not self.mirror:
            return url
        u = urllib.parse.urlsplit(url)
        return f"{self.mirror.rstrip('/')}/{u.netloc}{u.path}" + (f"?{u.query}" if u.query else "")

    def url(self, url: str, part: Path, size: int | None = None, desc: str = "", max_size: int | None = None) -> Path:
        """Download `url` to `part`, resuming what `part` already holds when `size` is known; returns `part` when
        complete. Never reads more than `size` (or `max_size`) bytes, and gives up at the file's deadline."""
        real = self.resolve(url)
        host = urllib.parse.urlsplit(real).netloc
        if self.offline:
            raise Unreachable("offline")
        if host in self.down:
            raise Unreachable(f"{host} unreachable ({self.down[host]})")
        cap = size if size is not None else max_size
        if cap is None:
            raise BenchError(f"{url}: the manifest gives no size or max_size")
        part.parent.mkdir(parents=True, exist_ok=True)
        tries = 0
        with _Deadline(self.deadline(cap)) as deadline:
            while True:
                have = part.lstat().st_size if part.exists() else 0
                if have and (size is None or have > size):  # a resume could not be checked: start over
                    part.unlink()
                    have = 0
                if size is not None and have == size:
                    return part
                try:
                    self._get(real, part, have, size, cap, desc, deadline)
                    return part
                except Interrupted as err:
                    if deadline.expired:
                        raise Interrupted(f"not complete within its deadline of {deadline.seconds:.0f} s (--timeout "
                                          f"plus 1 s per 64 KiB); what arrived is kept, rerun to resume") from None
                    got = part.lstat().st_size if part.exists() else 0
                    tries += 1
                    if tries > self.retries or (got <= have and not isinstance(err, _StartOver)):
                        raise
    def _get(self, url: str, part: Path, have: int, size: int | None, cap: int, desc: str,
             deadline: _Deadline) -> None:
        resp = self._open(url, part, have, deadline)
        with resp:
            start, total = _answer(resp, url, part, have, size, cap)
            got = self._write(resp, part, start, total, cap, desc)
        if deadline.expired:
            raise Interrupted("deadline")
        expected = total if total is not None else got
        if got < expected:
            raise Interrupted(f"transfer ended after {got} of {expected} bytes; rerun to resume")

    def _open(self, url: str, part: Path, have: int, deadline: _Deadline):
        """The server's answer to a GET of `url` (from byte `have` on, when the part holds some)."""
        headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
        if have:
            headers["Range"] = f"bytes={have}-"
            self.range_requests += 1
        host = urllib.parse.urlsplit(url).netloc
        try:
            return open_url(urllib.request.Request(url, headers=headers), self.timeout, deadline.watch)
        except urllib.error.HTTPError as e:
            if e.code == 416 and have:  # the part is complete (or larger than the file): start over
                part.unlink(missing_ok=True)
                raise _StartOver(f"{url}: the server rejected the resume range; restarting") from None
            raise BenchError(f"{url}: HTTP {e.code} {e.reason}") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            if deadline.expired:
                raise Interrupted("deadline") from None
            if isinstance(e, http.client.HTTPException):
                raise Interrupted(f"{url}: malformed answer ({type(e).__name__}); rerun to retry") from None
            reason = getattr(e, "reason", e)
            self.down[host] = str(reason)
            raise Unreachable(f"{host} unreachable ({reason})") from None

    def _write(self, resp, part: Path, start: int, total: int | None, cap: int, desc: str) -> int:
        """Stream the answer's body onto the part (appended from `start`, or from zero); returns the part's size.
        Stops one byte past the cap (the part is deleted), and keeps what arrived when the transfer breaks."""
        from bench.progress import bar

        flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if start else os.O_TRUNC) | getattr(os, "O_NOFOLLOW", 0)
        got = start
        with os.fdopen(os.open(part, flags, 0o666), "wb") as f, \
                bar(total=total, initial=start, desc=desc or part.name, unit="B", unit_scale=True,
                    unit_divisor=1024, leave=False, enabled=self.progress) as pbar:
            try:
                while True:
                    block = resp.read1(min(CHUNK, cap - got + 1))  # one byte past the cap is enough to know
                    if not block:
                        break
                    got += len(block)
                    if got > cap:
                        f.close()
                        part.unlink(missing_ok=True)
                        raise TooLarge(f"the server sent more than the manifest's {cap} bytes; stopped there and "
                                       "deleted the download")
                    f.write(block)
                    pbar.update(len(block))
            except (http.client.HTTPException, ConnectionError, socket.timeout, TimeoutError) as e:
                f.flush()
                raise Interrupted(f"transfer interrupted after {f.tell()} bytes ({type(e).__name__}); "
                                  "rerun to resume") from None
        return got

    def reachable(self, endpoint: str) -> bool:
        """One TCP connection attempt per host and run: huggingface_hub backs off for ~20 s on a refused
        connection before it falls back to its cache; a dead endpoint should cost nothing per file."""
        u = urllib.parse.urlsplit(endpoint)
        if u.netloc in self.down:
            return False
        if u.netloc in self._up:
            return True
        why = connection_refused(endpoint, min(self.timeout, 10))
        if why:
            self.down[u.netloc] = why
            return False
        self._up.add(u.netloc)
        return True


def http_refused(endpoint: str, timeout: float) -> str | None:
    """One HTTP HEAD request to the endpoint: None if any HTTP answer comes back (an error status too), else why
    not. Stricter than a TCP connection, which a middlebox may accept for a host that never answers."""
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=timeout).close()
    except urllib.error.HTTPError:
        return None
    except (OSError, ValueError) as e:  # URLError, timeouts, resets, a malformed endpoint
        return str(getattr(e, "reason", None) or e) or type(e).__name__
    return None


def connection_refused(endpoint: str, timeout: float) -> str | None:
    """One TCP connection attempt to the endpoint's host: None if it answers, else why not."""
    u = urllib.parse.urlsplit(endpoint)
    try:
        port = u.port or (443 if u.scheme == "https" else 80)
        socket.create_connection((u.hostname, port), timeout=timeout).close()
    except (OSError, ValueError) as e:
        return getattr(e, "strerror", None) or str(e) or type(e).__name__
    return None


def _answer(resp, url: str, part: Path, have: int, size: int | None, cap: int) -> tuple[int, int | None]:
    """(first byte, total size or None) of a server's answer, after checking that it may be written onto the
    part: a 200, or a 206 whose Content-Range continues the part exactly, announcing no more than the cap."""
    status = getattr(resp, "status", 200)
    if status not in (200, 206) or (status == 206 and not have):
        raise BenchError(f"{url}: unexpected HTTP {status}")
    if status == 206 and _content_range(resp.headers.get("Content-Range")) != (have, size):
        part.unlink(missing_ok=True)  # bytes from elsewhere must never be spliced onto the part
        raise _StartOver(f"{url}: the answer to a resume (Content-Range "
                         f"{resp.headers.get('Content-Range')!r}) does not continue the file at byte {have}; "
                         "starting again from zero")
    start = have if status == 206 else 0
    length = resp.headers.get("Content-Length")
    length = int(length) if length and length.isdigit() else None
    if length is not None and start + length > cap:
        part.unlink(missing_ok=True)
        raise TooLarge(f"the server announces {start + length} bytes, more than the manifest's {cap}; "
                       "nothing was read")
    total = size if size is not None else (start + length if length is not None else None)
    return start, total
