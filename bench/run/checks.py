"""What a run request must satisfy before anything is loaded: seeds, the bootstrap's [stats] and its memory, the
cache folder. One-line BenchErrors that say what to pass instead."""
from __future__ import annotations

import dataclasses
import math
import os
import typing
from pathlib import Path

from bench.errors import BenchError
from bench.files import nearest_existing
from bench.hints import conforms, type_name
from bench.stats import StatsConfig


def is_seed(value) -> bool:
    """A seed is a non-negative integer (not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def check_stats(stats: dict, seed: int = 0) -> dict:
    """A suite's [stats] table or --resamples: only StatsConfig fields, typed and in range."""

    if not isinstance(stats, dict):
        raise BenchError(f"[stats] must be a table of StatsConfig fields, got {stats!r}")
    hints = typing.get_type_hints(StatsConfig)
    fields = [f.name for f in dataclasses.fields(StatsConfig) if f.name != "seed"]
    for key, value in stats.items():
        if key == "seed":
            raise BenchError("[stats] seed: the bootstrap uses the run's seed; set it with `seed =` or --seed")
        if key not in fields:
            raise BenchError(f"[stats] unknown key {key!r}; allowed: {', '.join(fields)}")
        if not conforms(value, hints[key]):
            name = "--resamples" if key == "resamples" else f"[stats] {key}"
            raise BenchError(f"{name} must be {type_name(hints[key])}, got {value!r}")
    if "resamples" in stats and stats["resamples"] < 1:
        raise BenchError(f"--resamples (or [stats] resamples) must be >= 1, got {stats['resamples']!r}")
    if "resamples" in stats:  # items are unknown before scoring: at least one (Runner._rows checks the real count)
        check_bootstrap_memory(stats["resamples"], 1)
    if "level" in stats and not (0 < stats["level"] < 1 and math.isfinite(stats["level"])):
        raise BenchError(f"[stats] level must be between 0 and 1 (exclusive), got {stats['level']!r}")
    try:
        StatsConfig(seed=seed, **stats)
    except (TypeError, ValueError) as e:
        raise BenchError(f"[stats]: {e}") from None
    return dict(stats)


# Peak bytes per resample and item of a bootstrap: the int64 index arrays (bench.stats.bootstrap_indices) and up
# to three arrays of their shape that a metric's statistic builds from them at once (values[idx], offsets, ...).
BOOTSTRAP_BYTES = 32


def memory_available() -> int | None:
    """Bytes this process can still allocate (Linux: MemAvailable, within the container's cgroup limit), else the
    machine's physical memory; None when unknown."""
    avail = None
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            avail = next((int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:")), None)
    except (OSError, ValueError):
        pass
    if avail is None:
        try:
            import psutil

            avail = psutil.virtual_memory().available
        except ImportError:
            try:
                avail = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
            except (AttributeError, ValueError, OSError):
                return None
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            avail = min(avail, int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text()))
    except (OSError, ValueError):
        pass
    return avail


def _size(n: float) -> str:
    units = ["bytes", "KB", "MB", "GB", "TB", "PB"]
    i = 0
    while n >= 1000 and i < len(units) - 1:
        n, i = n / 1000, i + 1
    return f"{n:.0f} bytes" if i == 0 else f"{n:.1f} {units[i]}"


def check_bootstrap_memory(resamples: int, items: int, what: str = "") -> None:
    """Refuse a bootstrap of `resamples` x `items` that cannot fit in the memory available, saying which
    --resamples would."""
    need = BOOTSTRAP_BYTES * resamples * max(1, items)
    avail = memory_available()
    if avail is None or need <= avail:
        return
    fits = avail // (BOOTSTRAP_BYTES * max(1, items))
    over = f"{what} over {items:,} items" if what else ("even one item" if items <= 1 else f"{items:,} items")
    advice = f"use --resamples {fits:,} or fewer" if fits >= 1 else "free some memory"
    raise BenchError(f"--resamples {resamples} needs about {_size(need)} for the bootstrap of {over} "
                     f"({BOOTSTRAP_BYTES} bytes per resample and item), but {_size(avail)} of memory is available; "
                     f"{advice}")  # fmt: skip


def check_cache_dir(root: Path, given: bool) -> None:
    """The cache folder is a folder, or a folder that can be created (given: --cache-dir, else the default or
    BENCH_CACHE_DIR). An existing one may be read-only: a run that finds everything cached only reads it."""
    from bench.data.paths import ENV_CACHE_DIR

    name = f"--cache-dir {root}" if given else f"the cache folder {root}" + (
        f" (from {ENV_CACHE_DIR})" if os.environ.get(ENV_CACHE_DIR) else "")
    fix = "choose another --cache-dir" if given else f"pass --cache-dir or set {ENV_CACHE_DIR} to another folder"
    existing = nearest_existing(root)
    if existing == root and not root.is_dir():
        raise BenchError(f"{name} is not a directory; {fix}")
    if not existing.is_dir():
        raise BenchError(f"{name} cannot be created: {existing} is not a directory; {fix}")
    if existing != root and not os.access(existing, os.W_OK | os.X_OK):
        raise BenchError(f"{name} cannot be created: no write permission on {existing}; {fix}")
