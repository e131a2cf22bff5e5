"""Zip archives from an untrusted source: one member out of an archive, checked before it is extracted.

What the archive says about the member (a regular file, at a confined path, of the manifest's size) is checked
first, and the extraction itself stops as soon as more bytes than the manifest allows come out (an archive
whose header lies). A broken archive is deleted so that the next run downloads it again.
"""
from __future__ import annotations

import stat
import zipfile
import zlib
from pathlib import Path

from bench.data.download import CHUNK, Rejected, new_file
from bench.data.manifest import Entry, confined
from bench.errors import BenchError


def extract_member(zpath: Path, e: Entry, part: Path, url: str) -> None:
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
            with z.open(info) as src, new_file(part) as dst:
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
