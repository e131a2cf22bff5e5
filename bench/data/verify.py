"""`bench data verify`: a data directory compared with the manifest, file by file (ok, mismatch, missing,
unverified, and extra: a file in the layout's folders that the manifest does not know)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.data.manifest import Manifest, load_manifest
from bench.data.paths import file_sha256
from bench.errors import DataError


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
