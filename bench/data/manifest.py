"""The data manifest (`bench/data/manifest.toml`, or BENCH_DATA_MANIFEST): every file of the data layout with its
public source, size, sha256 and licence (the file's own comments explain the fields).

Its schema is checked when it is read, each problem a one-line DataError: known fields of the right types, paths
confined to the data directory (and out of `.partial`, bench's download folder), archives and inputs that name a
size or max_size (a download is never read beyond it). A manifest is read once per process and path. Nothing here
downloads; `group_of` answers which `bench data fetch` group provides a file (for the messages of
bench.data.paths).
"""
from __future__ import annotations

import functools
import os
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from bench.errors import BenchError, DataError, UnknownName

ENV_MANIFEST = "BENCH_DATA_MANIFEST"
PARTIAL = ".partial"  # bench's download folder in a data directory (bench.data.download): never a manifest path
# the conversions a manifest entry may name besides "hub-dataset-csv": GLUE's MRPC files (bench.data.hub)
CONVERSIONS = {"glue-mrpc-train": "train", "glue-mrpc-dev": "dev", "glue-mrpc-test": "test"}


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
            return f"{hub_site()}/datasets/{self.hub}{rev} (all splits as one CSV)"
        if self.hub:
            return f"{hub_site()}/datasets/{self.hub}/blob/{self.revision or 'main'}/{self.hub_path}"
        if self.url:
            return self.url
        if self.archive:
            url = (manifest.archives.get(self.archive, {}) if manifest else {}).get("url", self.archive)
            return f"{url} (member {self.member})"
        if self.convert:
            urls = [(manifest.inputs.get(i, {}) if manifest else {}).get("url", i) for i in self.inputs]
            return f"built ({self.convert}) from {', '.join(urls)}"
        return "no automatic source"


def hub_site() -> str:
    """The Hugging Face endpoint (HF_ENDPOINT, read at call time)."""
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
