"""`bench data fetch | verify | list`: the benchmark files by name, checked by sha256 (see bench/data/__init__.py)."""
from __future__ import annotations

import os
import sys
from collections import Counter
from pathlib import Path

import click

from bench.errors import BenchError
from bench.files import nearest_existing

GROUPS_HELP = "stereoset, crows, seat, glue, superglue, gradiend, corpus"


def _data_dir(data_dir) -> Path:
    from bench.data.paths import ENV_DATA_DIR

    if data_dir is None:
        value = os.environ.get(ENV_DATA_DIR)
        if not value:
            raise BenchError(f"no data directory: pass --data-dir DIR (e.g. --data-dir ~/bench-data) or set {ENV_DATA_DIR}")
        data_dir = value
    path = Path(data_dir).expanduser()
    above = nearest_existing(path)
    if not above.is_dir():
        where = "" if above == path else f" ({above} is not a folder)"
        raise click.BadParameter(f"{path} cannot be a data directory{where}; pass a folder, or a path whose "
                                 "existing part is a folder (the rest is created)", param_hint="'--data-dir'")
    return path


def _mirror(ctx, param, value):
    """--mirror: an http(s) URL with a host (a malformed one is a usage error, not a traceback)."""
    import urllib.parse

    if not value:
        return None
    try:
        u = urllib.parse.urlsplit(value)
        ok = u.scheme in ("http", "https") and bool(u.hostname) and (u.port or 0) >= 0
    except ValueError:
        ok = False
    if not ok:
        raise click.BadParameter(f"{value!r} is not an http(s) URL; give the mirror's base URL, e.g. "
                                 "--mirror https://mirror.example.org/bench-data")
    return value


_data_dir_option = click.option(
    "--data-dir", type=click.Path(path_type=Path), help="The data directory (default: $BENCH_DATA_DIR).")


@click.group()
def data():
    """Benchmark data by name: download, verify and list the files of the data directory.

    \b
    Every file of the layout is listed in a manifest shipped with bench, with its public source (a Hugging Face
    dataset file or a pinned URL of the original release), its sha256 and its licence.
      bench data list                               groups, sizes, licences, sources
      bench data fetch --data-dir ~/bench-data      everything (or name groups: bench data fetch seat crows ...)
      bench data verify --data-dir ~/bench-data     compare a folder with the manifest
    Groups: stereoset, crows, seat, glue, superglue, gradiend, corpus.
    """


@data.command()
@click.argument("groups", nargs=-1, metavar="[GROUPS]...")
@_data_dir_option
@click.option("--offline", is_flag=True,
              help="Download nothing; list what is missing and where to get it (also when HF_HUB_OFFLINE=1).")
@click.option("--mirror", metavar="URL", default=lambda: os.environ.get("BENCH_DATA_MIRROR"), callback=_mirror,
              help="Fetch URL sources from a mirror: https://host/path is read from URL/host/path "
                   "(default: $BENCH_DATA_MIRROR). Hugging Face sources follow HF_ENDPOINT.")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
              help="Seconds to wait for a server before giving up on it for this run. Each file must also "
                   "arrive within TIMEOUT + 1 s per 64 KiB of its size in the manifest (retries and resumes "
                   "included), however slowly the server sends; what arrived is kept for the next run.")
@click.option("--retries", type=click.IntRange(min=0), default=2, show_default=True,
              help="Resumes of an interrupted transfer within this run (each continues where the last stopped).")
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
def fetch(groups, data_dir, offline, mirror, timeout, retries, no_progress):
    """Download the files of GROUPS (default: all) that the data directory lacks.

    \b
    Each download goes to DIR/.partial first; an interrupted one is resumed by the next run (HTTP Range). The
    sha256 is checked before the file is moved into place, so the layout never holds a half-written file or
    unexpected bytes. Files already present are kept (their hash is checked and reported). Offline, nothing is
    attempted and the missing files are listed with their sources.
    A source or mirror is not trusted: no more bytes than the manifest's size are read, archive members are
    checked before extraction, and bench writes nothing through a symbolic link in DIR.
    Exit status: 0 every selected file is in place; 1 some are missing or have an unexpected hash.
    """
    from bench.data.download import Transfers, offline_mode
    from bench.data.fetch import fetch as run_fetch
    from bench.data.manifest import load_manifest

    target = _data_dir(data_dir)
    manifest = load_manifest()
    manifest.select(groups)  # unknown group names fail before anything is created
    offline = offline or offline_mode()
    transfers = Transfers(target / ".partial", progress=not no_progress, offline=offline, mirror=mirror,
                          timeout=timeout, retries=retries)

    def echo(outcome):
        if outcome.status in ("fetched", "unverified", "offline"):  # unreachable files: listed once at the end
            return
        click.echo(f"{outcome.status}: {outcome.entry.path}: {outcome.detail}", err=True)

    created = not offline and not target.exists()
    if not offline:
        try:
            target.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise click.BadParameter(f"cannot create {target} ({e.strerror}); pass a folder you can write to",
                                     param_hint="'--data-dir'") from None
    # offline, only the Hugging Face cache can provide files: nothing is created unless something is placed
    outcomes = run_fetch(target, groups, manifest=manifest, transfers=transfers, echo=None if offline else echo)
    if created and not any(target.iterdir()):
        target.rmdir()  # nothing arrived: leave no empty folder behind
    _summary(outcomes, manifest)
    _not_in_place(outcomes, manifest, target, groups, offline)


def _not_in_place(outcomes, manifest, target: Path, groups, offline: bool) -> None:
    """The files not in place and where to get them, then exit status 1 (nothing when every file is in place)."""
    bad = [o for o in outcomes if o.status in ("failed", "offline", "mismatch")]
    if bad:
        missing = [o for o in bad if o.status != "mismatch" or not (target / o.entry.path).is_file()]
        lines = [f"  {o.entry.path}  <- {o.entry.source_text(manifest)}" for o in missing]
        if missing:
            why = "offline" if offline else (
                "source unreachable" if all(o.status == "offline" for o in missing) else "see above")
            click.echo(f"missing ({why}): {len(missing)} file(s); get them from:", err=True)
            click.echo("\n".join(lines), err=True)
        names = " ".join(groups) + " " if groups else ""
        click.echo(f"error: {len(bad)} of {len(outcomes)} files not in place in {target}"
                   + ("" if offline else f"; rerun `bench data fetch {names}--data-dir {target}` to resume"),
                   err=True)
        sys.exit(1)


def _summary(outcomes, manifest) -> None:
    from tabulate import tabulate

    by_group: dict[str, Counter] = {}
    for o in outcomes:
        by_group.setdefault(o.entry.group, Counter())[o.status] += 1
    cols = ["present", "fetched", "unverified", "mismatch", "failed", "offline"]
    rows = [[g] + [c.get(k, 0) or "" for k in cols] + [sum(c.values())] for g, c in by_group.items()]
    click.echo(tabulate(rows, headers=["group", "present", "fetched", "fetched unverified", "bad hash", "failed",
                                       "unreachable", "files"], tablefmt="github"))


@data.command()
@click.argument("groups", nargs=-1, metavar="[GROUPS]...")
@_data_dir_option
@click.option("--strict", is_flag=True, help="Also fail on missing files and on files the manifest does not know.")
@click.option("--all", "show_all", is_flag=True, help="List every file, not only the ones that need attention.")
def verify(groups, data_dir, strict, show_all):
    """Check a data directory against the manifest (GROUPS: default all).

    \b
    Reports files with an unexpected sha256 (mismatch), files that are missing (with the `bench data fetch`
    group that provides them), files whose manifest entry has no verified hash yet (unverified), and files in
    the layout's folders that the manifest does not know (extra).
    Exit status: 0 no mismatch; 1 a file has an unexpected hash (with --strict: also a missing or extra file).
    """
    from tabulate import tabulate

    from bench.data.manifest import load_manifest
    from bench.data.verify import verify as run_verify

    target = _data_dir(data_dir)
    checks = run_verify(target, groups, manifest=load_manifest())
    shown = [c for c in checks if show_all or c.status != "ok"]
    if shown:
        click.echo(tabulate([[c.path, c.status, c.detail] for c in shown], headers=["file", "status", "detail"],
                            tablefmt="github"))
    counts = Counter(c.status for c in checks)
    click.echo(", ".join(f"{counts.get(k, 0)} {k}" for k in ("ok", "mismatch", "missing", "unverified", "extra")))
    failing = counts.get("mismatch", 0) + (counts.get("missing", 0) + counts.get("extra", 0) if strict else 0)
    if counts.get("missing"):
        need = sorted({c.group for c in checks if c.status == "missing"})
        click.echo(f"missing files: `bench data fetch {' '.join(need)} --data-dir {target}`", err=True)
    if failing:
        click.echo(f"error: {target}: {counts.get('mismatch', 0)} file(s) with an unexpected sha256"
                   + (f", {counts.get('missing', 0)} missing, {counts.get('extra', 0)} extra" if strict else ""),
                   err=True)
        sys.exit(1)


@data.command(name="list")
@click.option("--files", "per_file", is_flag=True, help="One row per file (path, size, sha256, source).")
@click.argument("groups", nargs=-1, metavar="[GROUPS]...")
def list_(per_file, groups):
    """Show the data groups (files, size, licence, sources), or every file with --files."""
    import urllib.parse

    from tabulate import tabulate

    from bench.data.manifest import CONVERSIONS, load_manifest

    m = load_manifest()
    entries = m.select(groups)
    if per_file:
        rows = [[e.path, e.group, _human_size(e.size) if e.size is not None or e.max_size is None
                 else f"< {_human_size(e.max_size)}", e.sha256[:12] if e.sha256 else "unverified",
                 m.licence(e), e.source_text(m)] for e in entries]
        click.echo(tabulate(rows, headers=["file", "group", "size", "sha256", "licence", "source"], tablefmt="github"))
        return
    rows = []
    for g, info in m.groups.items():
        es = [e for e in entries if e.group == g]
        if not es:
            continue
        known = sum(e.size or 0 for e in es)
        unknown = sum(e.size is None for e in es)
        hosts = []
        for e in es:
            src = e.source_text(m)
            host = f"hf:{e.hub}" if e.hub else urllib.parse.urlsplit(src.split(" ")[0]).netloc or src
            if e.convert in CONVERSIONS:
                host = "dl.fbaipublicfiles.com"
            if host not in hosts:
                hosts.append(host)
        size = (_human_size(known) if known else "") + (f"{' + ' if known else ''}{unknown} of unknown size" if unknown else "")
        unverified = sum(not e.sha256 for e in es)
        rows.append([g, len(es), size, unverified or "", info.get("licence", ""), ", ".join(hosts)])
    click.echo(tabulate(rows, headers=["group", "files", "size", "no verified hash", "licence", "sources"],
                        tablefmt="github"))
    click.echo(f"\nmanifest: {m.path}  (`bench data list --files` for every file and its source)")


def _human_size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)
