"""Benchmark data by name: the data manifest (`bench/data/manifest.toml`), downloads and checks.

The manifest lists every file of the data layout with its public source, sha256 and licence (the file's own
comments explain the fields). `fetch` downloads what a data directory lacks:

- into `DIR/.partial/` first (same filesystem), resuming a partial download with an HTTP Range request (only
  for a file with a known size, and only when the answer's Content-Range continues exactly where the part
  stops; otherwise it starts again from zero);
- bounded by the manifest, which a mirror cannot change: a transfer stops as soon as more bytes than the
  entry's `size` (or `max_size`) arrive, an archive member is checked for size and kind before it is
  extracted, and each file has an overall deadline (`Transfers.deadline`) however slowly the server drips;
- checks the sha256 (and size) of the finished bytes and only then moves the file into place with
  `os.replace`, so a file in the layout is never half-written and never has an unexpected hash (a bad
  download is deleted); a file without a verified hash must at least be well-formed (UTF-8, JSON);
- never writes or deletes through a symbolic link inside the data directory, and the manifest's paths are
  confined to it (checked when the manifest is read, with the rest of its schema);
- Hugging Face sources go through `huggingface_hub.hf_hub_download` (HF_ENDPOINT, HF_HUB_OFFLINE and the hub
  cache apply); URLs through urllib (`--mirror`/BENCH_DATA_MIRROR rewrites `https://host/p` to `MIRROR/host/p`);
- a host that refuses a connection is not asked again in the same run, and offline (`--offline`, or
  HF_HUB_OFFLINE=1) nothing is attempted: the missing files are listed with where to get them.

`verify` compares a folder with the manifest. Nothing here knows a metric or a method.
"""
from __future__ import annotations

import csv
import functools
import http.client
import json
import os
import re
import shutil
import socket
import stat
import threading
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from bench.data.paths import file_sha256
from bench.errors import BenchError, DataError, UnknownName

ENV_MANIFEST = "BENCH_DATA_MANIFEST"
ENV_MIRROR = "BENCH_DATA_MIRROR"
PARTIAL = ".partial"
CHUNK = 1 << 16
USER_AGENT = "bench-data-fetch"
MIN_RATE = 1 << 16  # bytes per second a transfer must average (after --timeout) before its deadline


# ---- the manifest --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Entry:
    path: str
    group: str
    size: int | None = None
    max_size: int | None = None
    sha256: str | None = None
    verified: bool = False
    licence: str | None = None
    note: str | None = None
    url: str | None = None
    hub: str | None = None
    hub_path: str | None = None
    revision: str | None = None
    archive: str | None = None
    member: str | None = None
    convert: str | None = None
    inputs: tuple[str, ...] = ()

    @property
    def cap(self) -> int | None:
        """The most bytes the file may have (its size when known)."""
        return self.size if self.size is not None else self.max_size

    def source_text(self, manifest: "Manifest | None" = None) -> str:
        """Where the file comes from, in words (for `list` and for messages)."""
        rev = f"@{self.revision}" if self.revision else ""
        if self.convert == "hub-dataset-csv":
            return f"{_hub_site()}/datasets/{self.hub}{rev} (all splits as one CSV)"
        if self.hub:
            return f"{_hub_site()}/datasets/{self.hub}/blob/{self.revision or 'main'}/{self.hub_path}"
        if self.url:
            return self.url
        if self.archive:
            url = (manifest.archives.get(self.archive, {}) if manifest else {}).get("url", self.archive)
            return f"{url} (member {self.member})"
        if self.convert:
            urls = [(manifest.inputs.get(i, {}) if manifest else {}).get("url", i) for i in self.inputs]
            return f"built ({self.convert}) from {', '.join(urls)}"
        return "no automatic source"


def _hub_site() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


@dataclass
class Manifest:
    groups: dict
    archives: dict
    inputs: dict
    files: list[Entry]
    path: Path

    def entry(self, relative: str) -> Entry | None:
        rel = Path(relative).as_posix().removeprefix("./")
        return next((e for e in self.files if e.path == rel), None)

    def select(self, groups=()) -> list[Entry]:
        for g in groups:
            if g not in self.groups:
                raise UnknownName("data group", g, self.groups)
        return [e for e in self.files if not groups or e.group in groups]

    def licence(self, e: Entry) -> str:
        return e.licence or self.groups.get(e.group, {}).get("licence", "")

    def top_folders(self) -> set[str]:
        return {e.path.split("/", 1)[0] for e in self.files}


def _toml_load(path: Path) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    with open(path, "rb") as f:
        return tomllib.load(f)


# ---- the manifest's schema: checked when it is read, each problem a one-line error ----------------------------
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")
_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*\Z")
_SHA256 = re.compile(r"[0-9a-f]{64}\Z")


def confined(rel) -> bool:
    """Whether `rel` is a relative path that stays inside the folder it is joined to (no `..`, no absolute
    path, no empty or `.` component, no backslash or control character)."""
    return (isinstance(rel, str) and rel != "" and not rel.startswith("/") and "\\" not in rel
            and not any(ord(c) < 32 for c in rel) and all(p not in ("", ".", "..") for p in rel.split("/")))


def _is_url(value) -> bool:
    try:
        u = urllib.parse.urlsplit(value)
        u.port  # noqa: B018  (raises ValueError for a malformed port)
    except (ValueError, TypeError, AttributeError):
        return False
    return u.scheme in ("http", "https") and bool(u.hostname)


def _count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _text(v) -> bool:
    return isinstance(v, str)


# field -> (check, what it must be)
_FIELDS = {
    "path": (confined, "a relative path inside the data directory (no '..', no leading '/')"),
    "group": (_text, "a group name"),
    "size": (_count, "a whole number of bytes"),
    "max_size": (_count, "a whole number of bytes"),
    "sha256": (lambda v: isinstance(v, str) and bool(_SHA256.match(v)), "64 lowercase hex digits"),
    "verified": (lambda v: isinstance(v, bool), "true or false"),
    "licence": (_text, "text"),
    "note": (_text, "text"),
    "url": (_is_url, "an http(s) URL"),
    "hub": (lambda v: isinstance(v, str) and bool(_REPO_ID.match(v)), "a Hugging Face repo id owner/name"),
    "hub_path": (confined, "a relative path inside the repo"),
    "revision": (_text, "a revision name"),
    "archive": (lambda v: isinstance(v, str) and bool(_SAFE_NAME.match(v)), "an archive name"),
    "member": (confined, "a relative path inside the archive"),
    "convert": (lambda v: v in CONVERSIONS or v == "hub-dataset-csv", "a known conversion"),
    "inputs": (lambda v: isinstance(v, list) and all(isinstance(i, str) and _SAFE_NAME.match(i) for i in v),
               "a list of input names"),
}
_DOWNLOAD_FIELDS = {"url", "size", "max_size", "sha256", "hub", "hub_path", "revision"}
_GROUP_FIELDS = {"description", "licence", "homepage"}


def _check_table(where: str, item, allowed: set) -> None:
    if not isinstance(item, dict):
        raise DataError(f"{where} must be a table, not {type(item).__name__}")
    for key, value in item.items():
        if key not in allowed:
            raise DataError(f"{where}: unknown field {key!r}")
        check, what = _FIELDS.get(key, (_text, "text"))
        if not check(value):
            raise DataError(f"{where}: {key} must be {what}, got {value!r}"[:300])


def _check_downloads(where: str, kind: str, table) -> dict:
    if not isinstance(table, dict):
        raise DataError(f"{where}: [{kind}] must be a table of downloads, not {type(table).__name__}")
    for name, spec in table.items():
        w = f"{where}: [{kind}.{name}]"
        if not _SAFE_NAME.match(name):
            raise DataError(f"{w}: the name must be letters, digits, '.', '_' or '-'")
        _check_table(w, spec, _DOWNLOAD_FIELDS)
        if not spec.get("url") and not (spec.get("hub") and spec.get("hub_path")):
            raise DataError(f"{w}: needs url, or hub and hub_path")
        if spec.get("size") is None and spec.get("max_size") is None:
            raise DataError(f"{w}: needs size or max_size (a download is never read beyond it)")
    return table


def _check_entry(where: str, item: dict, m: "Manifest") -> Entry:
    _check_table(where, item, set(_FIELDS))
    if "path" not in item or "group" not in item:
        raise DataError(f"{where}: needs path and group")
    if item["group"] not in m.groups:
        raise DataError(f"{where}: unknown group {item['group']!r}")
    if item["path"].split("/", 1)[0] == PARTIAL:
        raise DataError(f"{where}: {PARTIAL} is bench's download folder, not a place for data")
    e = Entry(**{**item, "inputs": tuple(item.get("inputs", ()))})
    if e.archive and (e.archive not in m.archives or not e.member):
        raise DataError(f"{where}: archive needs a member and a name listed under [archives]")
    for name in e.inputs:
        if name not in m.inputs:
            raise DataError(f"{where}: input {name!r} is not listed under [inputs]")
    if e.hub and not (e.hub_path or e.convert == "hub-dataset-csv"):
        raise DataError(f"{where}: hub needs hub_path (or convert = \"hub-dataset-csv\")")
    if (e.url or e.hub or e.archive or e.convert) and e.cap is None:
        raise DataError(f"{where}: needs size or max_size (a download is never read beyond it)")
    return e


@functools.lru_cache(maxsize=8)
def _load(path: str) -> Manifest:
    p = Path(path)
    try:
        raw = _toml_load(p)
    except OSError as e:
        raise DataError(f"cannot read the data manifest {p}: {e.strerror}") from None
    except ValueError as e:
        raise DataError(f"malformed data manifest {p}: {e}") from None
    where = f"data manifest {p}"
    unknown = set(raw) - {"version", "groups", "archives", "inputs", "file"}
    if unknown:
        raise DataError(f"{where}: unknown top-level field(s) {', '.join(sorted(unknown))}")
    groups = raw.get("groups", {})
    if not isinstance(groups, dict):
        raise DataError(f"{where}: [groups] must be a table")
    for name, info in groups.items():
        _check_table(f"{where}: [groups.{name}]", info, _GROUP_FIELDS)
    m = Manifest(groups, _check_downloads(where, "archives", raw.get("archives", {})),
                 _check_downloads(where, "inputs", raw.get("inputs", {})), [], p)
    files = raw.get("file", [])
    if not isinstance(files, list):
        raise DataError(f"{where}: file must be a list of [[file]] tables")
    seen = set()
    for i, item in enumerate(files, start=1):
        label = item.get("path", "?") if isinstance(item, dict) else "?"
        e = _check_entry(f"{where}: [[file]] number {i} ({str(label)[:80]})", item, m)
        if e.path in seen:
            raise DataError(f"{where}: [[file]] number {i}: {e.path} is listed twice")
        seen.add(e.path)
        m.files.append(e)
    return m


def manifest_path() -> Path:
    env = os.environ.get(ENV_MANIFEST)
    return Path(env).expanduser() if env else Path(__file__).with_name("manifest.toml")


def load_manifest(path=None) -> Manifest:
    return _load(str(path or manifest_path()))


def group_of(relative: str) -> str | None:
    """The `bench data fetch` group that provides `relative` (a path inside the data directory), or None."""
    try:
        e = load_manifest().entry(relative)
    except BenchError:
        return None
    return e.group if e else None


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


def _clear(path: Path) -> Path:
    """Make way for a new file at `path` (to be opened with mode "x"): whatever was there (a file, a link) is
    removed, not followed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    return path


def _new_file(path: Path):
    return open(_clear(path), "xb")


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
        headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
        if have:
            headers["Range"] = f"bytes={have}-"
            self.range_requests += 1
        host = urllib.parse.urlsplit(url).netloc
        try:
            resp = open_url(urllib.request.Request(url, headers=headers), self.timeout, deadline.watch)
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
        with resp:
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
        if deadline.expired:
            raise Interrupted("deadline")
        expected = total if total is not None else got
        if got < expected:
            raise Interrupted(f"transfer ended after {got} of {expected} bytes; rerun to resume")

    # -- Hugging Face --
    def hub(self, repo: str, path: str, revision: str | None) -> Path:
        """A file of a dataset repo through the hub cache (HF_ENDPOINT, HF_HUB_OFFLINE, HF_HUB_CACHE apply, read at
        call time)."""
        endpoint = _hub_site()
        host = urllib.parse.urlsplit(endpoint).netloc
        local_only = self.offline or not self._reachable(endpoint)
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError

        try:
            return Path(hf_hub_download(repo, path, repo_type="dataset", revision=revision, endpoint=endpoint,
                                        cache_dir=os.environ.get("HF_HUB_CACHE") or None,
                                        local_files_only=local_only, etag_timeout=self.timeout))
        except LocalEntryNotFoundError:
            if not local_only:
                self.down[host] = "no connection"
            raise Unreachable("offline and not in the Hugging Face cache" if self.offline else
                              f"{host} unreachable ({self.down.get(host)}) and not in the Hugging Face cache") from None
        except (RepositoryNotFoundError, EntryNotFoundError) as e:
            raise BenchError(f"{repo}/{path} not found on {endpoint}: {str(e).splitlines()[0]}") from None
        except OSError as e:  # e.g. a transfer that kept failing after huggingface_hub's own resumes
            raise Interrupted(f"{repo}/{path}: {e}; rerun to resume") from None

    def _reachable(self, endpoint: str) -> bool:
        """One TCP connection attempt per host and run: huggingface_hub backs off for ~20 s on a refused
        connection before it falls back to its cache; a dead endpoint should cost nothing per file."""
        u = urllib.parse.urlsplit(endpoint)
        if u.netloc in self.down:
            return False
        if u.netloc in self._up:
            return True
        try:
            port = u.port or (443 if u.scheme == "https" else 80)
            socket.create_connection((u.hostname, port), timeout=min(self.timeout, 10)).close()
        except OSError as e:
            self.down[u.netloc] = getattr(e, "strerror", None) or str(e) or type(e).__name__
            return False
        self._up.add(u.netloc)
        return True

    def hub_dataset(self, repo: str, revision: str | None):
        """A whole dataset through `datasets` (online only: offline, `datasets` would need HF_HUB_OFFLINE set before
        it is imported, which a caller cannot rely on)."""
        if self.offline:
            raise Unreachable("offline")
        if not self._reachable(_hub_site()):
            raise Unreachable(f"{urllib.parse.urlsplit(_hub_site()).netloc} unreachable")
        import datasets

        try:  # hf://datasets/ makes `datasets` look only on the hub, never in a same-named local folder
            return datasets.load_dataset(f"hf://datasets/{repo}", revision=revision)
        except ConnectionError as e:
            raise Unreachable(f"{repo}: {e}") from None
        except Exception as e:  # datasets raises many kinds; the message is what matters
            raise BenchError(f"{repo}: could not load the dataset ({type(e).__name__}: {str(e).splitlines()[0]})") from None


def drop_from_hub_cache(path: Path) -> None:
    """Forget a cached hub file with unexpected bytes (its snapshot link and blob) so a rerun downloads it again."""
    try:
        blob = path.resolve()
        path.unlink(missing_ok=True)
        if blob != path:
            blob.unlink(missing_ok=True)
    except OSError:
        pass


# ---- conversions ---------------------------------------------------------------------------------------------
def mrpc_split(msr_train: Path, msr_test: Path, dev_ids: Path, which: str, out: Path) -> None:
    """GLUE's MRPC files from the Microsoft release, exactly as GLUE's download_glue_data.py writes them: train.tsv
    and dev.tsv split msr_paraphrase_train.txt by the pairs in dev_ids.tsv (header kept), test.tsv numbers the
    rows of msr_paraphrase_test.txt and drops the label."""
    with open(dev_ids, encoding="utf-8") as f:
        dev = {tuple(line.strip().split("\t")) for line in f}
    src = msr_test if which == "test" else msr_train
    with open(src, encoding="utf-8") as f, open(out, "x", encoding="utf-8", newline="\n") as o:
        header = f.readline()
        if which == "test":
            o.write("index\t#1 ID\t#2 ID\t#1 String\t#2 String\n")
        else:
            o.write(header if header.endswith("\n") else header + "\n")
        for idx, row in enumerate(f):
            fields = row.strip().split("\t")
            if len(fields) != 5:
                raise DataError(f"{src} line {idx + 2}: expected 5 tab-separated fields, got {len(fields)}")
            label, id1, id2, s1, s2 = fields
            if which == "test":
                o.write(f"{idx}\t{id1}\t{id2}\t{s1}\t{s2}\n")
            elif ((id1, id2) in dev) == (which == "dev"):
                o.write(f"{label}\t{id1}\t{id2}\t{s1}\t{s2}\n")


def dataset_to_csv(dataset, out: Path) -> None:
    """All splits of a `datasets.DatasetDict` as one CSV, with a `split` column when the rows have none."""
    with open(out, "x", encoding="utf-8", newline="") as f:
        writer = None
        for split in dataset:
            for row in dataset[split]:
                row = dict(row)
                row.setdefault("split", split)
                if writer is None:
                    writer = csv.DictWriter(f, fieldnames=list(row), lineterminator="\n")
                    writer.writeheader()
                writer.writerow(row)


CONVERSIONS = {"glue-mrpc-train": "train", "glue-mrpc-dev": "dev", "glue-mrpc-test": "test"}


# ---- fetch ---------------------------------------------------------------------------------------------------
@dataclass
class Outcome:
    entry: Entry
    status: str  # present | fetched | unverified | mismatch | failed | offline
    detail: str = ""


def fetch(data_dir, groups=(), *, manifest: Manifest | None = None, transfers: Transfers | None = None,
          echo=None) -> list[Outcome]:
    """Download every selected file `data_dir` lacks. Returns one Outcome per selected file."""
    m = manifest or load_manifest()
    data_dir = Path(data_dir).expanduser()
    entries = m.select(tuple(groups))
    partial = inside(data_dir, PARTIAL)  # a link there is refused before anything is written or deleted
    t = transfers or Transfers(partial)
    out: list[Outcome] = []
    downloads: dict[tuple, Path] = {}  # (kind, name) -> archive or conversion input fetched in this run
    archive_users: dict[str, int] = {}
    todo = []
    for e in entries:
        dest = data_dir / e.path
        if dest.is_file():
            if e.sha256 and file_sha256(dest) != e.sha256:
                out.append(Outcome(e, "mismatch", "present with an unexpected sha256 (left as it is; delete it to fetch it again)"))
            else:
                out.append(Outcome(e, "present"))
            continue
        todo.append(e)
        if e.archive:
            archive_users[e.archive] = archive_users.get(e.archive, 0) + 1
    for e in todo:
        hub_file = None
        try:
            dest = inside(data_dir, e.path)
            part = inside(data_dir, f"{PARTIAL}/{e.path}.part")
            if e.convert == "hub-dataset-csv":
                dataset = t.hub_dataset(e.hub, e.revision)
                _clear(part)
                dataset_to_csv(dataset, part)
            elif e.hub:
                hub_file = t.hub(e.hub, e.hub_path, e.revision)
                with open(hub_file, "rb") as src, _new_file(part) as dst:
                    shutil.copyfileobj(src, dst, CHUNK)
            elif e.url:
                t.url(e.url, part, e.size, desc=e.path, max_size=e.max_size)
            elif e.archive:
                zpath = _download(t, m, "archives", e.archive, data_dir, downloads)
                _extract(zpath, e, part, m.archives[e.archive]["url"])
            elif e.convert in CONVERSIONS:
                ins = {name: _download(t, m, "inputs", name, data_dir, downloads) for name in e.inputs}
                _clear(part)
                mrpc_split(ins["mrpc-msr-train"], ins["mrpc-msr-test"], ins["mrpc-dev-ids"], CONVERSIONS[e.convert], part)
            else:
                raise BenchError(f"no automatic source ({e.note or 'see the manifest'})")
            place(part, dest, e)
            out.append(Outcome(e, "fetched" if e.sha256 else "unverified",
                               "" if e.sha256 else "placed without a hash check (no verified hash yet)"))
        except Rejected as err:
            if hub_file is not None:
                drop_from_hub_cache(hub_file)
            out.append(Outcome(e, "mismatch" if isinstance(err, HashMismatch) else "failed", str(err)))
        except Unreachable as err:
            out.append(Outcome(e, "offline", str(err)))
        except BenchError as err:
            out.append(Outcome(e, "failed", str(err)))
        if e.archive:
            archive_users[e.archive] -= 1
            if archive_users[e.archive] == 0 and ("archives", e.archive) in downloads:
                downloads.pop(("archives", e.archive)).unlink(missing_ok=True)
        if echo and out[-1].status != "present":
            echo(out[-1])
    _tidy(partial)
    return out


def _extract(zpath: Path, e: Entry, part: Path, url: str) -> None:
    """The entry's member of a zip archive into `part`, after checking what the archive says about it (a regular
    file of the manifest's size, at a confined path), and never more than the manifest allows."""
    try:
        with zipfile.ZipFile(zpath) as z:
            try:
                info = z.getinfo(e.member)
            except KeyError:
                raise BenchError(f"{e.member} is not in the archive {url}") from None
            kind = stat.S_IFMT(info.external_attr >> 16)
            if not confined(info.filename) or info.is_dir() or kind not in (0, stat.S_IFREG):
                problem = "is not a regular file at a relative path"
            elif e.size is not None and info.file_size != e.size:
                problem = f"is {info.file_size} bytes, the manifest says {e.size}"
            elif e.max_size is not None and info.file_size > e.max_size:
                problem = f"is {info.file_size} bytes, more than the manifest's max_size {e.max_size}"
            else:
                problem = None
            if problem:
                raise Rejected(f"{e.member} in {url} {problem}; nothing was extracted")
            with z.open(info) as src, _new_file(part) as dst:
                got = 0
                while block := src.read(min(CHUNK, e.cap - got + 1)):
                    got += len(block)
                    if got > e.cap:
                        raise Rejected(f"{e.member} in {url} expands beyond the manifest's {e.cap} bytes; "
                                       "extraction stopped")
                    dst.write(block)
    except (zipfile.BadZipFile, zlib.error, EOFError) as err:
        part.unlink(missing_ok=True)
        zpath.unlink(missing_ok=True)
        raise BenchError(f"{url} is not a valid zip archive ({err}; deleted, rerun)") from None
    except Rejected:
        part.unlink(missing_ok=True)
        raise


def _download(t: Transfers, m: Manifest, kind: str, name: str, data_dir: Path, downloads: dict) -> Path:
    """An archive or conversion input ([archives.NAME] or [inputs.NAME]): downloaded (resumably) once per run,
    checked against the manifest's size and hash. A finished file left by an earlier run is not trusted."""
    if (kind, name) in downloads and downloads[kind, name].is_file():  # (a broken archive was deleted)
        return downloads[kind, name]
    spec = getattr(m, kind)[name]
    done = inside(data_dir, f"{PARTIAL}/{kind}/{name}")
    part = inside(data_dir, f"{PARTIAL}/{kind}/{name}.part")
    done.unlink(missing_ok=True)
    if spec.get("hub"):
        src = t.hub(spec["hub"], spec["hub_path"], spec.get("revision"))
        with open(src, "rb") as s, _new_file(part) as d:
            shutil.copyfileobj(s, d, CHUNK)
    else:
        t.url(spec["url"], part, spec.get("size"), desc=name, max_size=spec.get("max_size"))
    place(part, done, Entry(path=name, group="", size=spec.get("size"), max_size=spec.get("max_size"),
                            sha256=spec.get("sha256")), check_text=False)
    downloads[kind, name] = done
    return done


def _tidy(partial: Path) -> None:
    """Remove finished intermediates (archives, conversion inputs: their files are in place or failed their
    check) and empty folders under .partial; partial downloads (*.part) stay for the next run to resume.
    Links are not followed, and only regular files are deleted."""
    if not partial.is_dir() or partial.is_symlink():
        return
    for root, dirs, files in os.walk(partial, topdown=False):
        here = Path(root)
        if here.parent == partial and here.name in ("archives", "inputs"):
            for name in files:
                f = here / name
                if not name.endswith(".part") and stat.S_ISREG(f.lstat().st_mode):
                    f.unlink()
        for name in dirs:
            d = here / name
            if not d.is_symlink() and not any(d.iterdir()):
                d.rmdir()
    if not any(partial.iterdir()):
        partial.rmdir()


# ---- verify --------------------------------------------------------------------------------------------------
@dataclass
class Check:
    path: str
    status: str  # ok | mismatch | missing | unverified | extra
    group: str = ""
    detail: str = ""


def verify(data_dir, groups=(), manifest: Manifest | None = None) -> list[Check]:
    m = manifest or load_manifest()
    data_dir = Path(data_dir).expanduser()
    if not data_dir.is_dir():
        raise DataError(f"no data directory {data_dir}")
    checks = []
    known = {e.path for e in m.files}
    for e in m.select(tuple(groups)):
        p = data_dir / e.path
        if not p.is_file():
            checks.append(Check(e.path, "missing", e.group, f"bench data fetch {e.group}"))
        elif not e.sha256:
            checks.append(Check(e.path, "unverified", e.group, "no verified hash in the manifest yet"))
        else:
            digest = file_sha256(p)
            if digest == e.sha256:
                checks.append(Check(e.path, "ok", e.group))
            else:
                checks.append(Check(e.path, "mismatch", e.group,
                                    f"sha256 {digest[:16]}…, expected {e.sha256[:16]}… ({p.stat().st_size} bytes"
                                    + (f", expected {e.size})" if e.size else ")")))
    folders = {e.path.split("/", 1)[0] for e in m.select(tuple(groups))}
    for top in sorted(folders):
        root = data_dir / top
        if root.is_dir():
            for f in sorted(root.rglob("*")):
                rel = f.relative_to(data_dir).as_posix()
                if f.is_file() and rel not in known:
                    checks.append(Check(rel, "extra", "", "not in the manifest"))
    return checks


def human_size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)
