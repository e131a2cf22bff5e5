"""Experiment trackers: `bench run ... --out OUT --log-to mlflow --log-to wandb` sends a run's rows to MLflow or
Weights & Biases (optional extras: `pip install -e ".[mlflow]"`, `".[wandb]"`, `".[trackers]"` for both).

A tracker is found like a renderer, through an entry-point group (`bench.trackers`, bench/registry.py), so the
core imports neither library: `check()` says before the run starts whether the library is installed, `log(rows,
out, request)` runs after the tables are written. What goes to the tracker run:

- every stored row as metrics named from (model, bias type, method, metric, sub-metric, seed or `mean`):
  `synthetic/gender/cda__inlp/stereoset/ss/seed0/value`, `.../ci_low`, `.../ci_high`, `.../change`,
  `.../change_low`, `.../change_high` (the change vs. the base model and its CI) and `.../significant` (1 or 0);
  fields a row does not have (no CI for an extra, no change for base, n/a) are left out;
- the request (models, methods, metrics, seeds, bias type, options, stats) as flat parameters;
- results.jsonl, manifest.json and the tables beside them (.md, .tex, report.html when present) as artifacts.

One tracker run per run directory: its id is kept in OUT/trackers.json (plain JSON: ids and the keys of the rows
already logged), so running the same command again (a resume, or a SLURM --no-wait round) adds to the same
tracker run the rows it does not hold yet and logs nothing twice.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from bench.errors import BenchError
from bench.files import write_json

STATE_FILE = "trackers.json"
# row field -> the last part of its metric name
FIELDS = {"value": "value", "ci_low": "ci_low", "ci_high": "ci_high", "delta": "change", "delta_low": "change_low",
          "delta_high": "change_high", "significant": "significant"}  # fmt: skip
ARTIFACT_SUFFIXES = (".jsonl", ".md", ".tex", ".html")
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")
_ID = re.compile(r"^[A-Za-z0-9_.:/-]{1,200}$")


def missing_extra(module: str, extra: str, what: str) -> None:
    """Raise a BenchError naming the extra to install when `module` cannot be imported (checked without importing
    it: `bench run` stays as fast without the tracker)."""
    import importlib.util

    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken install, or a module blocked (sys.modules[name] = None)
        found = False
    if not found:
        raise BenchError(f"--log-to {extra} needs {what}, which is not installed: pip install 'bench-debias[{extra}]' "
                         f"(from a checkout: pip install -e \".[{extra}]\")")  # fmt: skip


def part(name: Any) -> str:
    """One part of a metric or parameter name: letters, digits, `_ . -` kept; a method chain's `+` becomes `__`
    (registered names never hold `__`); any other character becomes `_` and the part gets a short hash of the
    original, so two names never collide (a model path `/m/a` and `_m_a`)."""
    text = str(name)
    safe = _SAFE.sub("_", text.replace("+", "__"))
    if safe != text.replace("+", "__") or not safe or safe in (".", ".."):
        safe = f"{safe}-{hashlib.sha256(text.encode()).hexdigest()[:6]}"
    return safe


def row_key(row: dict) -> str:
    """The row's place in the tracker run: model/bias_type/method/metric[/submetric]/seedN or mean."""
    seed = "mean" if row.get("aggregate") else f"seed{row.get('seed')}"
    parts = [row["model"], row.get("bias_type") or "gender", row["method"], row["metric"]]
    if row.get("submetric"):
        parts.append(row["submetric"])
    return "/".join(part(p) for p in [*parts, seed])


def row_metrics(row: dict) -> dict[str, float]:
    """The numbers of one row under their metric names (nothing for an n/a or error row)."""
    if row.get("status", "ok") != "ok":
        return {}
    key, out = row_key(row), {}
    for field, name in FIELDS.items():
        value = row.get(field)
        if isinstance(value, bool):
            value = float(value)
        if isinstance(value, (int, float)):
            out[f"{key}/{name}"] = float(value)
    return out


def rows_metrics(rows: list[dict]) -> dict[str, dict[str, float]]:
    """row key -> its metrics, for every row with a number, in the rows' order."""
    out: dict[str, dict[str, float]] = {}
    for row in rows:
        metrics = row_metrics(row)
        if metrics:
            out.setdefault(row_key(row), {}).update(metrics)
    return out


def params(request: dict, max_len: int = 500) -> dict[str, str]:
    """The run's request as flat parameters: lists joined by commas, tables flattened with dots
    (`options.inlp.n_iterations`), values cut to `max_len` characters."""
    out: dict[str, str] = {}

    def put(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k in sorted(value):
                put(f"{prefix}.{part(k)}" if prefix else part(k), value[k])
            return
        if isinstance(value, (list, tuple)):
            text = ",".join(str(v) for v in value)
        elif value is None or isinstance(value, (bool, int, float, str)):
            text = "" if value is None else str(value)
        else:
            text = json.dumps(value, sort_keys=True, default=str)
        out[prefix] = text if len(text) <= max_len else text[: max_len - 3] + "..."

    put("", request.get("request", request))
    if "request_hash" in request:
        out["request_hash"] = str(request["request_hash"])
    return out


def artifacts(out: Path) -> list[Path]:
    """The files of a run directory a tracker keeps: results.jsonl, manifest.json and the tables (.md, .tex) and
    report (.html) written beside them; sorted by name."""
    out = Path(out)
    found = [p for p in out.iterdir() if p.is_file() and not p.name.startswith(".")
             and (p.suffix in ARTIFACT_SUFFIXES or p.name == "manifest.json")]  # fmt: skip
    return sorted(found, key=lambda p: p.name)


def digest(paths: list[Path]) -> str:
    """A hash of the artifacts' names and contents (the tracker uploads them again only when it changed)."""
    h = hashlib.sha256()
    for p in paths:
        h.update(p.name.encode() + b"\0" + hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()[:16]


def read_state(out: Path, name: str) -> dict:
    """The record of tracker `name` in OUT/trackers.json ({} when none). The file is data from the run directory:
    ids and keys are checked to be short plain strings, anything else is refused."""
    path = Path(out) / STATE_FILE
    if not path.is_file():
        return {}
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BenchError(f"{path} is corrupted ({e}); remove it to log to new tracker runs") from None
    record = state.get(name, {}) if isinstance(state, dict) else None
    ok = isinstance(record, dict) and all(
        isinstance(v, str) and (k not in ("run_id", "experiment_id") or _ID.match(v)) if k != "logged"
        else isinstance(v, list) and all(isinstance(x, str) for x in v) for k, v in record.items())  # fmt: skip
    if not ok:
        raise BenchError(f"{path}: the record of {name!r} is malformed; remove it to log to a new tracker run")
    return record


def write_state(out: Path, name: str, record: dict) -> None:
    """Replace the record of tracker `name` in OUT/trackers.json (atomically; other trackers' records kept)."""
    path = Path(out) / STATE_FILE
    try:
        state = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        state = {}
    state = state if isinstance(state, dict) else {}
    state[name] = record
    write_json(path, state)


def summary(name: str, where: str, run_id: str, new_rows: int, total_rows: int) -> str:
    already = total_rows - new_rows
    return (f"{name}: run {run_id} at {where}: {new_rows} row(s) logged"
            + (f", {already} already there" if already else ""))
