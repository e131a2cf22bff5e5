"""Suites: declarative run definitions in TOML (suites/NAME.toml, or any path to a .toml file).

    description = "what this suite is for"
    models  = ["synthetic"]
    methods = ["base", "gradiend-bpi", "gradiend-bpi+inlp"]
    metrics = ["stereoset", "seat", "crows"]
    seed = 0                # or a seed axis: seeds = [0, 1, 2] (rows per seed + rows aggregated over seeds)
    bias_type = "gender"    # or "race", "religion"
    [options.inlp]          # constructor arguments of a method or metric
    n_iterations = 20
    [stats]                 # bench.stats.StatsConfig fields
    resamples = 1000
"""
from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

from bench.errors import BenchError, UnknownName
from bench.run.checks import check_stats, is_seed

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

KEYS = {"description", "models", "methods", "metrics", "seed", "seeds", "bias_type", "options", "stats"}


def suite_names() -> list[str]:
    folder = resources.files("suites")
    return sorted(p.name[: -len(".toml")] for p in folder.iterdir() if p.name.endswith(".toml"))


def load_suite(name: str) -> dict:
    path = Path(name)
    if path.suffix == ".toml" and path.is_file():
        from bench.data.paths import read_text

        text, where = read_text(path), str(path)
    else:
        entry = resources.files("suites") / f"{name}.toml"
        if not entry.is_file():
            raise UnknownName("suite", name, suite_names())
        text, where = entry.read_text(encoding="utf-8"), f"suites/{name}.toml"
    try:
        suite = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise BenchError(f"{where}: malformed TOML: {e}") from None
    unknown = set(suite) - KEYS
    if unknown:
        raise BenchError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(KEYS))}")
    for key in ("models", "methods", "metrics"):
        if key in suite and not (isinstance(suite[key], list) and all(isinstance(x, str) for x in suite[key])):
            raise BenchError(f"{where}: {key} must be a list of strings")
    seed = suite.get("seed", 0)
    if not is_seed(seed):
        raise BenchError(f"{where}: seed must be a non-negative integer, got {seed!r}")
    if "seeds" in suite:
        seeds = suite["seeds"]
        if "seed" in suite:
            raise BenchError(f"{where}: give `seed` or `seeds`, not both")
        if not (isinstance(seeds, list) and seeds and all(is_seed(x) for x in seeds)):
            raise BenchError(f"{where}: seeds must be a non-empty list of non-negative integers, got {seeds!r}")
        seed = seeds[0]
    from bench.api import BIAS_TYPES

    if suite.get("bias_type", "gender") not in BIAS_TYPES:
        raise BenchError(f"{where}: bias_type must be one of {', '.join(BIAS_TYPES)}, got {suite['bias_type']!r}")
    if not isinstance(suite.get("stats", {}), dict):
        raise BenchError(f"{where}: [stats] must be a table")
    options = suite.get("options", {})
    if not isinstance(options, dict) or not all(isinstance(v, dict) for v in options.values()):
        raise BenchError(f"{where}: options must be tables, e.g. [options.inlp] with n_iterations = 20")
    if "stats" in suite:
        try:
            check_stats(suite["stats"], seed)
        except BenchError as e:
            raise BenchError(f"{where}: {e}") from None
    return suite
