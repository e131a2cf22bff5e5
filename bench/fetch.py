"""Benchmark data by name: the data manifest (`bench/data_manifest.toml`), downloads and checks.

The manifest lists every file of the data layout with its public source, sha256 and licence (the file's own
comments explain the fields). `fetch` downloads what a data directory lacks:

- into `DIR/.partial/` first (same filesystem), resuming a partial download with an HTTP Range request;
- checks the sha256 of the finished bytes and only then moves the file into place with `os.replace`, so a
  file in the layout is never half-written and never has an unexpected hash (a bad download is deleted);
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
import io
import os
import shutil
import socket
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from bench.data import file_sha256
from bench.errors import BenchError, DataError, UnknownName

ENV_MANIFEST = "BENCH_DATA_MANIFEST"
ENV_MIRROR = "BENCH_DATA_MIRROR"
PARTIAL = ".partial"
CHUNK = 1 << 16
USER_AGENT = "bench-data-fetch"


# ---- the manifest --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Entry:
    path: str
    group: str
    size: int | None = None
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


_ENTRY_FIELDS = set(Entry.__dataclass_fields__)


@functools.lru_cache(maxsize=8)
def _load(path: str) -> Manifest:
    p = Path(path)
    try:
        raw = _toml_load(p)
    except OSError as e:
        raise DataError(f"cannot read the data manifest {p}: {e.strerror}") from None
    except ValueError as e:
        raise DataError(f"malformed data manifest {p}: {e}") from None
    groups = raw.get("groups", {})
    files = []
    for i, item in enumerate(raw.get("file", []), start=1):
        unknown = set(item) - _ENTRY_FIELDS
        if unknown or "path" not in item or item.get("group") not in groups:
            raise DataError(f"data manifest {p}: [[file]] number {i} ({item.get('path', '?')}) has "
                            f"{'unknown fields ' + ', '.join(sorted(unknown)) if unknown else 'no path or an unknown group'}")
        item = dict(item)
        item["inputs"] = tuple(item.get("inputs", ()))
        files.append(Entry(**item))
    return Manifest(groups, raw.get("archives", {}), raw.get("inputs", {}), files, p)


def manifest_path() -> Path:
    env = os.environ.get(ENV_MANIFEST)
    return Path(env).expanduser() if env else Path(__file__).with_name("data_manifest.toml")


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
class HashMismatch(BenchError):
    pass


class Unreachable(BenchError):
    """The source cannot be reached (host down, offline mode): nothing was downloaded."""


class Interrupted(BenchError):
    """A transfer stopped midway; what arrived is kept for the next run to resume."""


def place(part: Path, dest: Path, entry: Entry) -> str:
    """Check `part` against the entry's sha256, then move it to `dest` atomically. Returns the hash. A file with
    an unexpected hash is deleted (never placed) and HashMismatch raised."""
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

    # -- plain URLs --
    def resolve(self, url: str) -> str:
        if not self.mirror:
            return url
        u = urllib.parse.urlsplit(url)
        return f"{self.mirror.rstrip('/')}/{u.netloc}{u.path}" + (f"?{u.query}" if u.query else "")

    def url(self, url: str, part: Path, size: int | None = None, desc: str = "") -> Path:
        """Download `url` to `part`, resuming what `part` already holds; returns `part` when complete."""
        real = self.resolve(url)
        host = urllib.parse.urlsplit(real).netloc
        if self.offline:
            raise Unreachable("offline")
        if host in self.down:
            raise Unreachable(f"{host} unreachable ({self.down[host]})")
        part.parent.mkdir(parents=True, exist_ok=True)
        tries = 0
        while True:
            have = part.stat().st_size if part.exists() else 0
            if size is not None and have == size:
                return part
            try:
                self._get(real, part, have, size, desc)
                return part
            except Interrupted:
                got = part.stat().st_size if part.exists() else 0
                tries += 1
                if got <= have or tries > self.retries:
                    raise

    def _get(self, url: str, part: Path, have: int, size: int | None, desc: str) -> None:
        headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
        if have:
            headers["Range"] = f"bytes={have}-"
            self.range_requests += 1
        host = urllib.parse.urlsplit(url).netloc
        try:
            resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=self.timeout)
        except urllib.error.HTTPError as e:
            if e.code == 416 and have:  # the part is complete (or larger than the file): start over
                part.unlink(missing_ok=True)
                raise Interrupted(f"{url}: the server rejected the resume range; restarting") from None
            raise BenchError(f"{url}: HTTP {e.code} {e.reason}") from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            self.down[host] = str(reason)
            raise Unreachable(f"{host} unreachable ({reason})") from None
        with resp:
            status = getattr(resp, "status", 200)
            mode = "ab" if have and status == 206 else "wb"
            start = have if mode == "ab" else 0
            length = resp.headers.get("Content-Length")
            total = size if size is not None else (start + int(length) if length and length.isdigit() else None)
            from bench.progress import bar

            with open(part, mode) as f, bar(total=total, initial=start, desc=desc or part.name, unit="B",
                                            unit_scale=True, unit_divisor=1024, leave=False,
                                            enabled=self.progress) as pbar:
                try:
                    while True:
                        block = resp.read(CHUNK)
                        if not block:
                            break
                        f.write(block)
                        pbar.update(len(block))
                except (http.client.IncompleteRead, ConnectionError, socket.timeout, TimeoutError) as e:
                    f.flush()
                    raise Interrupted(f"transfer interrupted after {f.tell()} bytes ({type(e).__name__}); "
                                      "rerun to resume") from None
        got = part.stat().st_size
        if total is not None and got < total:
            raise Interrupted(f"transfer ended after {got} of {total} bytes; rerun to resume")

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

        try:
            return datasets.load_dataset(repo, revision=revision)
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
    with open(src, encoding="utf-8") as f, open(out, "w", encoding="utf-8", newline="\n") as o:
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
    with open(out, "w", encoding="utf-8", newline="") as f:
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


def _part(partial: Path, rel: str) -> Path:
    return partial / (rel + ".part")


def fetch(data_dir, groups=(), *, manifest: Manifest | None = None, transfers: Transfers | None = None,
          echo=None) -> list[Outcome]:
    """Download every selected file `data_dir` lacks. Returns one Outcome per selected file."""
    m = manifest or load_manifest()
    data_dir = Path(data_dir).expanduser()
    entries = m.select(tuple(groups))
    partial = data_dir / PARTIAL
    t = transfers or Transfers(partial)
    out: list[Outcome] = []
    archives: dict[str, Path] = {}
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
        dest = data_dir / e.path
        try:
            part = _part(partial, e.path)
            hub_file = None
            if e.convert == "hub-dataset-csv":
                dataset = t.hub_dataset(e.hub, e.revision)
                part.parent.mkdir(parents=True, exist_ok=True)
                dataset_to_csv(dataset, part)
            elif e.hub:
                hub_file = t.hub(e.hub, e.hub_path, e.revision)
                part.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(hub_file, part)
            elif e.url:
                t.url(e.url, part, e.size, desc=e.path)
            elif e.archive:
                zpath = archives.get(e.archive) or _download_input(t, m.archives, e.archive, partial / "archives", ".zip")
                archives[e.archive] = zpath
                part.parent.mkdir(parents=True, exist_ok=True)
                try:
                    with zipfile.ZipFile(zpath) as z, z.open(e.member) as src, open(part, "wb") as dst:
                        shutil.copyfileobj(src, dst, CHUNK)
                except KeyError:
                    raise BenchError(f"{e.member} is not in the archive {m.archives[e.archive].get('url')}") from None
                except zipfile.BadZipFile:
                    zpath.unlink(missing_ok=True)
                    archives.pop(e.archive, None)
                    raise BenchError(f"{m.archives[e.archive].get('url')} is not a valid zip archive (deleted; rerun)") from None
            elif e.convert in CONVERSIONS:
                ins = {name: _download_input(t, m.inputs, name, partial / "inputs", "") for name in e.inputs}
                part.parent.mkdir(parents=True, exist_ok=True)
                mrpc_split(ins["mrpc-msr-train"], ins["mrpc-msr-test"], ins["mrpc-dev-ids"], CONVERSIONS[e.convert], part)
            else:
                raise BenchError(f"no automatic source ({e.note or 'see the manifest'})")
            try:
                place(part, dest, e)
            except HashMismatch:
                if hub_file is not None:
                    drop_from_hub_cache(hub_file)
                raise
            out.append(Outcome(e, "fetched" if e.sha256 else "unverified",
                               "" if e.sha256 else "placed without a hash check (no verified hash yet)"))
        except HashMismatch as err:
            out.append(Outcome(e, "mismatch", str(err)))
        except Unreachable as err:
            out.append(Outcome(e, "offline", str(err)))
        except BenchError as err:
            out.append(Outcome(e, "failed", str(err)))
        if e.archive:
            archive_users[e.archive] -= 1
            if archive_users[e.archive] == 0 and e.archive in archives:
                archives.pop(e.archive).unlink(missing_ok=True)
        if echo and out[-1].status != "present":
            echo(out[-1])
    _tidy(partial)
    return out


def _download_input(t: Transfers, table: dict, name: str, folder: Path, suffix: str) -> Path:
    """An archive or conversion input: downloaded (resumably) once, hash-checked when the manifest has a hash."""
    spec = table.get(name)
    if spec is None:
        raise BenchError(f"the manifest names an unknown download {name!r}")
    done = folder / (name + suffix)
    if done.is_file():
        return done
    if spec.get("hub"):
        src = t.hub(spec["hub"], spec["hub_path"], spec.get("revision"))
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, done.with_name(done.name + ".part"))
    else:
        t.url(spec["url"], done.with_name(done.name + ".part"), spec.get("size"), desc=name)
    place(done.with_name(done.name + ".part"), done, Entry(path=name, group="", sha256=spec.get("sha256")))
    return done


def _tidy(partial: Path) -> None:
    """Remove finished intermediates (archives, conversion inputs: their files are in place or failed their
    check) and empty folders under .partial; partial downloads (*.part) stay for the next run to resume."""
    if not partial.is_dir():
        return
    for sub in ("archives", "inputs"):
        for f in (partial / sub).glob("*"):
            if f.is_file() and not f.name.endswith(".part"):
                f.unlink()
    for d in sorted((p for p in partial.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        if not any(d.iterdir()):
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
