"""`bench data fetch`: which files a data directory lacks, where each comes from, and what became of each.

For every selected manifest entry whose file is not in place, `fetch` gets the bytes by the entry's route (a
pinned URL, a file of a Hugging Face dataset, a whole dataset as CSV, a member of a zip archive, or a conversion
of downloaded inputs) into `DIR/.partial/`, places them only after they matched the manifest, and reports one
Outcome per file (present, fetched, unverified, mismatch, failed, offline). An archive or input is downloaded
once per run and deleted when the last file that needs it is done; partial downloads stay for the next run to
resume. The transfers, placing, archives and hub route live in their own modules (see bench/data/__init__.py).
"""
from __future__ import annotations

import os
import shutil
import stat
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench.data.archives import extract_member
from bench.data.download import (CHUNK, HashMismatch, Rejected, Transfers, Unreachable, clear, inside, new_file,
                                 place)
from bench.data.hub import dataset_to_csv, drop_from_hub_cache, hub_dataset, hub_file, mrpc_split
from bench.data.manifest import CONVERSIONS, PARTIAL, Entry, Manifest, load_manifest
from bench.data.paths import file_sha256
from bench.errors import BenchError


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
    out, todo = _present(data_dir, entries)
    downloads: dict[tuple, Path] = {}  # (kind, name) -> archive or conversion input fetched in this run
    archive_users = Counter(e.archive for e in todo if e.archive)
    for e in todo:
        out.append(_fetch_one(e, t, m, data_dir, downloads))
        if e.archive:
            archive_users[e.archive] -= 1
            if archive_users[e.archive] == 0 and ("archives", e.archive) in downloads:
                downloads.pop(("archives", e.archive)).unlink(missing_ok=True)
        if echo and out[-1].status != "present":
            echo(out[-1])
    _tidy(partial)
    return out


def _present(data_dir: Path, entries: list[Entry]) -> tuple[list[Outcome], list[Entry]]:
    """The Outcomes of the files already in place (their hash checked), and the entries still to fetch."""
    out, todo = [], []
    for e in entries:
        dest = data_dir / e.path
        if dest.is_file():
            if e.sha256 and file_sha256(dest) != e.sha256:
                out.append(Outcome(e, "mismatch", "present with an unexpected sha256 (left as it is; delete it to "
                                                  "fetch it again)"))
            else:
                out.append(Outcome(e, "present"))
            continue
        todo.append(e)
    return out, todo


def _fetch_one(e: Entry, t: Transfers, m: Manifest, data_dir: Path, downloads: dict) -> Outcome:
    """One missing file: its bytes by the entry's route into .partial, then placed; what became of it."""
    cached = None
    try:
        dest = inside(data_dir, e.path)
        part = inside(data_dir, f"{PARTIAL}/{e.path}.part")
        cached = _bytes(e, part, t, m, data_dir, downloads)
        place(part, dest, e)
        return Outcome(e, "fetched" if e.sha256 else "unverified",
                       "" if e.sha256 else "placed without a hash check (no verified hash yet)")
    except Rejected as err:
        if cached is not None:
            drop_from_hub_cache(cached)
        return Outcome(e, "mismatch" if isinstance(err, HashMismatch) else "failed", str(err))
    except Unreachable as err:
        return Outcome(e, "offline", str(err))
    except BenchError as err:
        return Outcome(e, "failed", str(err))


def _bytes(e: Entry, part: Path, t: Transfers, m: Manifest, data_dir: Path, downloads: dict) -> Path | None:
    """Write the entry's bytes to `part` by its route; returns the hub cache's file when they came from there
    (forgotten if they fail their check)."""
    if e.convert == "hub-dataset-csv":
        dataset = hub_dataset(t, e.hub, e.revision)
        clear(part)
        dataset_to_csv(dataset, part)
    elif e.hub:
        cached = hub_file(t, e.hub, e.hub_path, e.revision)
        with open(cached, "rb") as src, new_file(part) as dst:
            shutil.copyfileobj(src, dst, CHUNK)
        return cached
    elif e.url:
        t.url(e.url, part, e.size, desc=e.path, max_size=e.max_size)
    elif e.archive:
        zpath = _download(t, m, "archives", e.archive, data_dir, downloads)
        extract_member(zpath, e, part, m.archives[e.archive]["url"])
    elif e.convert in CONVERSIONS:
        ins = {name: _download(t, m, "inputs", name, data_dir, downloads) for name in e.inputs}
        clear(part)
        mrpc_split(ins["mrpc-msr-train"], ins["mrpc-msr-test"], ins["mrpc-dev-ids"], CONVERSIONS[e.convert], part)
    else:
        raise BenchError(f"no automatic source ({e.note or 'see the manifest'})")
    return None


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
        src = hub_file(t, spec["hub"], spec["hub_path"], spec.get("revision"))
        with open(src, "rb") as s, new_file(part) as d:
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
