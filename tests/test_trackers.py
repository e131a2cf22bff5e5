"""`bench run --log-to mlflow --log-to wandb` (issue 21): the `ci` suite's rows, request and tables reach an MLflow
run (local file store) and a W&B run (offline mode), read back with the real libraries, no mocks; running the
command again (a resume) adds nothing twice; a tracker that fails loses no result; the core imports neither
library, and a missing one is named with the extra to install, before the run starts.

The acceptance test runs `bench run --suite ci` three times (~1 min on 2 cores when the session cache holds the
suite's fits and scores, ~2 min from an empty one). Skipped only when mlflow or wandb is not installed
(`pip install -e ".[trackers]"`).
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from ci_runs import REPO, bench_cli, ci_args, rows

HAVE_MLFLOW = importlib.util.find_spec("mlflow") is not None
HAVE_WANDB = importlib.util.find_spec("wandb") is not None
needs_mlflow = pytest.mark.skipif(not HAVE_MLFLOW, reason="mlflow is not installed (pip install -e '.[mlflow]')")
needs_wandb = pytest.mark.skipif(not HAVE_WANDB, reason="wandb is not installed (pip install -e '.[wandb]')")


def tracker_env(root: Path, mlflow_uri: str | None = None) -> dict:
    (root / "wandb").mkdir(parents=True, exist_ok=True)
    return {"MLFLOW_TRACKING_URI": mlflow_uri or (root / "mlruns").as_uri(), "MLFLOW_ALLOW_FILE_STORE": "true",
            "MLFLOW_EXPERIMENT_NAME": "bench-test", "WANDB_MODE": "offline", "WANDB_DIR": str(root / "wandb"),
            "WANDB_PROJECT": "bench-test", "WANDB_SILENT": "true"}  # fmt: skip


def expected_metrics(result_rows: list[dict]) -> dict[str, float]:
    """Every number of every row under its metric name (the naming is checked literally below)."""
    from reports.trackers import FIELDS, row_key

    out = {}
    for row in result_rows:
        for field, name in FIELDS.items():
            if row.get("status") == "ok" and row.get(field) is not None:
                out[f"{row_key(row)}/{name}"] = float(row[field])
    return out


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


# ---- reading back: MLflow through its client, W&B from its offline run files ------------------------------------
def mlflow_run(uri: str, run_id: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    return client, client.get_run(run_id)


def wandb_records(path: Path) -> list:
    """The records of a W&B run file (`run-ID.wandb`): W&B's protobuf records in the LevelDB log framing it writes
    them in (32 KiB blocks; 7-byte chunk headers: crc32, length, type FULL/FIRST/MIDDLE/LAST); the file starts with
    the 7-byte header `:W&B`, magic, version. wandb ships the record definitions but no Python reader any more."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    pos, parts, raw = 7, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 1:
            raw.append(chunk)
        elif kind in (2, 3):
            parts = (b"" if kind == 2 else parts) + chunk
        elif kind == 4:
            raw.append(parts + chunk)
    records = []
    for blob in raw:
        record = pb.Record()
        record.ParseFromString(blob)
        records.append(record)
    return records


def wandb_run(wandb_dir: Path, run_id: str) -> dict:
    """What the offline W&B run `run_id` holds over all its resumptions: its history steps (key -> values in the
    order logged), its config, the files of its artifacts, and how many offline run directories it has."""
    dirs = sorted((wandb_dir / "wandb").glob(f"offline-run-*-{run_id}"))
    history: dict[str, list[float]] = {}
    config: dict = {}
    files: set[str] = set()
    for d in dirs:
        for record in wandb_records(d / f"run-{run_id}.wandb"):
            kind = record.WhichOneof("record_type")
            if kind == "history":
                for item in record.history.item:
                    key = item.key or "/".join(item.nested_key)
                    if not key.startswith("_"):
                        history.setdefault(key, []).append(float(json.loads(item.value_json)))
            elif kind == "run":
                config.update({u.key: json.loads(u.value_json) for u in record.run.config.update})
            elif kind == "config":
                config.update({u.key: json.loads(u.value_json) for u in record.config.update})
            elif kind == "artifact":
                files |= {c.path for c in record.artifact.manifest.contents}
    return {"history": history, "config": config, "files": files, "dirs": len(dirs)}


def assert_mlflow_holds(uri: str, run_id: str, out: Path, want: dict[str, float], once: list[str] = ()) -> None:
    """The MLflow run holds `want` exactly; the metrics `once` have one value in their history (asked key by key:
    ~40 ms each on the file store, so the caller names those at risk rather than all ~900)."""
    client, run = mlflow_run(uri, run_id)
    assert run.info.status == "FINISHED"
    held = run.data.metrics
    assert set(held) == set(want), (sorted(set(want) - set(held))[:5], sorted(set(held) - set(want))[:5])
    assert all(same(held[k], v) for k, v in want.items())
    assert all(len(client.get_metric_history(run_id, k)) == 1 for k in once), "a number was logged twice"
    params = run.data.params
    assert params["models"] == "synthetic" and params["metrics"] == "stereoset,seat,crows"
    assert params["methods"] == "base,cda,inlp,sentence-debias,cda+inlp"
    assert params["options.inlp.n_iterations"] == "10" and params["stats.resamples"] == "200"
    names = {a.path for a in client.list_artifacts(run_id)}
    assert {"results.jsonl", "manifest.json", "leaderboard.md", "leaderboard.tex", "results_full.md"} <= names
    local = Path(client.download_artifacts(run_id, "results.jsonl", str(out.parent / f"dl-{len(names)}")))
    assert local.read_bytes() == (out / "results.jsonl").read_bytes()


def assert_wandb_holds(wandb_dir: Path, run_id: str, want: dict[str, float]) -> dict:
    held = wandb_run(wandb_dir, run_id)
    history = held["history"]
    assert set(history) == set(want), (sorted(set(want) - set(history))[:5], sorted(set(history) - set(want))[:5])
    assert all(len(v) == 1 for v in history.values()), "a number was logged twice"
    assert all(same(history[k][0], v) for k, v in want.items())
    assert held["config"]["models"] == "synthetic" and held["config"]["options.cda.max_steps"] == "100"
    assert {"results.jsonl", "manifest.json", "leaderboard.md", "leaderboard.tex"} <= held["files"]
    return held


# ---- the acceptance test -----------------------------------------------------------------------------------------
@needs_mlflow
@needs_wandb
def test_ci_suite_reaches_mlflow_and_wandb_once(tmp_path, cache_dir, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # for the client that reads the store back here
    out, root = tmp_path / "run", tmp_path / "trackers"
    env = tracker_env(root)
    args = ci_args(out, cache_dir, "--log-to", "mlflow", "--log-to", "wandb")

    # 1. MLflow cannot write (its store lies under a file): the results, the tables and W&B are not lost for it
    (tmp_path / "not-a-dir").write_text("")
    done = bench_cli(args, env=dict(env, MLFLOW_TRACKING_URI=(tmp_path / "not-a-dir" / "mlruns").as_uri()))
    assert done.returncode == 2, done.stderr[-3000:]
    assert "logging to mlflow failed" in done.stderr and "run the same command again" in done.stderr
    assert "| synthetic | Base" in done.stdout and (out / "leaderboard.md").is_file()
    result_rows = rows(out)
    want = expected_metrics(result_rows)
    assert len(result_rows) >= 150 and len(want) >= 4 * len(result_rows)
    state = json.loads((out / "trackers.json").read_text())
    assert set(state) == {"wandb"} and len(state["wandb"]["logged"]) == len(result_rows)
    wandb_id = state["wandb"]["run_id"]
    assert_wandb_holds(root / "wandb", wandb_id, want)

    # 2. the same command again: MLflow gets every row, W&B nothing (it holds them all)
    done = bench_cli(args, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"wandb: run {wandb_id} at project bench-test: 0 row(s) logged, {len(result_rows)} already there" in done.stderr
    state = json.loads((out / "trackers.json").read_text())
    mlflow_id, uri = state["mlflow"]["run_id"], state["mlflow"]["tracking_uri"]
    assert f"mlflow: run {mlflow_id} at {uri}: {len(result_rows)} row(s) logged" in done.stderr
    assert_mlflow_holds(uri, mlflow_id, out, want)
    key = "synthetic/gender/cda__inlp/stereoset/ss_gender/seed0"  # the naming, literally
    row = next(r for r in result_rows if r["method"] == "cda+inlp" and r["submetric"] == "ss_gender")
    assert (want[f"{key}/value"], want[f"{key}/ci_low"], want[f"{key}/change_high"]) == (
        row["value"], row["ci_low"], row["delta_high"])
    assert "synthetic/gender/base/stereoset/ss_gender/seed0/change" not in want  # base has no change

    # 3. a resume: the last cell's rows are recomputed (results.jsonl changes), and nothing is logged twice
    from reports.trackers import artifacts, digest

    before = digest(artifacts(out))
    lines = (out / "results.jsonl").read_text().splitlines(keepends=True)
    last = json.loads(lines[-1])
    from reports.trackers import part

    kept = [ln for ln in lines if (json.loads(ln)["method"], json.loads(ln)["metric"]) != (last["method"], last["metric"])]
    (out / "results.jsonl").write_text("".join(kept))
    done = bench_cli(args, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(rows(out)) == len(result_rows)
    recomputed = {k for k in want if k.startswith(f"synthetic/gender/{part(last['method'])}/{last['metric']}/")}
    assert len(recomputed) >= 10
    assert f"mlflow: run {mlflow_id} at {uri}: 0 row(s) logged, {len(result_rows)} already there" in done.stderr
    assert f"wandb: run {wandb_id} at project bench-test: 0 row(s) logged, {len(result_rows)} already" in done.stderr
    state = json.loads((out / "trackers.json").read_text())
    assert (state["mlflow"]["run_id"], state["wandb"]["run_id"]) == (mlflow_id, wandb_id)
    assert_mlflow_holds(uri, mlflow_id, out, want, once=sorted(recomputed | {k for k in want if k.endswith("/value")}))
    held = assert_wandb_holds(root / "wandb", wandb_id, want)
    # resumed once more (with no history step) only to upload the artifacts again if a file changed: the recomputed
    # rows differ only in runtime_s, which can round to the same milliseconds when both runs read the cache
    assert held["dirs"] == (2 if digest(artifacts(out)) != before else 1)
    _, run = mlflow_run(uri, mlflow_id)
    from mlflow.tracking import MlflowClient

    assert len(MlflowClient(tracking_uri=uri).search_runs([run.info.experiment_id])) == 1  # one tracker run per run


# ---- cheaper checks: the tracker API on hand-made rows, the command line's refusals, the core's imports -------------
def _row(method: str, sub: str, value: float, delta: float | None = None, **extra) -> dict:
    row = {"model": "org/model", "bias_type": "gender", "method": method, "metric": "seat", "submetric": sub,
           "seed": 0, "status": "ok", "value": value, "ci_low": value - 1, "ci_high": value + 1, "delta": delta,
           "delta_low": None if delta is None else delta - 1, "delta_high": None if delta is None else delta + 1,
           "significant": None if delta is None else True}  # fmt: skip
    return {**row, **extra}


HAND_ROWS = [_row("base", "seat", 1.5), _row("base", "d:sent-weat6", 0.5), _row("base", "lms", 99.0, ci_low=None,
             ci_high=None), _row("cda+inlp", "seat", 0.75, -0.75), _row("cda+inlp", "d:sent-weat6", float("nan"), 0.1),
             {**_row("self-debias", "seat", 0.0), "status": "n/a", "submetric": None, "value": None, "ci_low": None,
              "ci_high": None}]  # fmt: skip
REQUEST = {"request": {"models": ["org/model"], "methods": ["base", "cda+inlp"], "metrics": ["seat"], "seed": 0,
                       "options": {"inlp": {"n_iterations": 10}}, "stats": {"resamples": 200}},
           "request_hash": "0123abcd"}  # fmt: skip


def _run_dir(path: Path, result_rows: list[dict]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "manifest.json").write_text(json.dumps(REQUEST))
    (path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in result_rows))
    (path / "leaderboard.md").write_text("| a |\n")
    return path


def test_metric_names_are_safe_and_distinct():
    from reports.trackers import part, row_key

    assert part("cda+inlp") == "cda__inlp" and part("synthetic") == "synthetic"
    assert part("org/model") != part("org_model") and part("org/model").startswith("org_model-")
    assert row_key(HAND_ROWS[1]).split("/")[:4] == [part("org/model"), "gender", "base", "seat"]
    assert row_key({**HAND_ROWS[0], "seed": None, "aggregate": True}).endswith("/seat/mean")
    import re

    keys = {row_key(r) for r in HAND_ROWS[:5]}
    assert len(keys) == 5 and all(re.fullmatch(r"[A-Za-z0-9_./-]+", k) for k in keys)


@needs_mlflow
@needs_wandb
def test_a_second_log_adds_only_the_new_rows(tmp_path, monkeypatch):
    """The tracker API itself (what `bench run` calls): half the rows, then all of them, into one tracker run each;
    an n/a row has no number and is not sent; NaN goes through."""
    from reports.trackers.to_mlflow import MLflowTracker
    from reports.trackers.to_wandb import WandbTracker

    for key, value in tracker_env(tmp_path / "trackers").items():
        monkeypatch.setenv(key, value)
    out = _run_dir(tmp_path / "run", HAND_ROWS[:3])
    assert "3 row(s) logged" in MLflowTracker().log(HAND_ROWS[:3], out, REQUEST)
    assert "3 row(s) logged" in WandbTracker().log(HAND_ROWS[:3], out, REQUEST)
    _run_dir(out, HAND_ROWS)
    assert "2 row(s) logged, 3 already there" in MLflowTracker().log(HAND_ROWS, out, REQUEST)
    assert "2 row(s) logged, 3 already there" in WandbTracker().log(HAND_ROWS, out, REQUEST)
    want = expected_metrics(HAND_ROWS)
    assert len(want) == 3 + 3 + 1 + 7 + 7
    state = json.loads((out / "trackers.json").read_text())
    client, run = mlflow_run(state["mlflow"]["tracking_uri"], state["mlflow"]["run_id"])
    assert set(run.data.metrics) == set(want) and all(same(run.data.metrics[k], v) for k, v in want.items())
    assert {len(client.get_metric_history(run.info.run_id, k)) for k in want} == {1}
    assert run.data.params["options.inlp.n_iterations"] == "10" and run.data.params["request_hash"] == "0123abcd"
    held = wandb_run(tmp_path / "trackers" / "wandb", state["wandb"]["run_id"])
    assert set(held["history"]) == set(want) and all(len(v) == 1 for v in held["history"].values())
    assert all(same(held["history"][k][0], v) for k, v in want.items()) and held["dirs"] == 2


def test_the_core_imports_no_tracker_library():
    code = ("import sys; from bench.registry import TRACKERS; import bench.cli; "
            "[TRACKERS.get(n) for n in TRACKERS.names()]; "
            "assert not {'mlflow', 'wandb'} & set(sys.modules), sorted({'mlflow', 'wandb'} & set(sys.modules)); "
            "print(TRACKERS.names())")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "'mlflow'" in done.stdout and "'wandb'" in done.stdout


@pytest.mark.parametrize("blocked", ["mlflow", "wandb"])
def test_a_missing_tracker_library_is_named_before_the_run(tmp_path, blocked):
    """Without the library (blocked here as if not installed), `--log-to` fails at once with the extra to install,
    before any model is loaded, and writes nothing."""
    out = tmp_path / "run"
    code = (f"import sys; sys.modules[{blocked!r}] = None; from bench.cli import main; "
            f"main(['run', '--models', 'synthetic', '--metrics', 'crows', '--out', {str(out)!r}, '--log-to', {blocked!r}])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"pip install 'bench-debias[{blocked}]'" in done.stderr and not out.exists()


@pytest.mark.parametrize("args, message", [
    (["--log-to", "nope", "--out", "OUT"], "unknown tracker 'nope'; valid trackers: mlflow, wandb"),
    (["--log-to", "mlflow"], "--log-to needs --out"),
])  # fmt: skip
def test_log_to_refusals(tmp_path, capsys, args, message):
    from cli_helpers import run_bench

    args = [str(tmp_path / "run") if a == "OUT" else a for a in args]
    code, _, err = run_bench(["run", "--models", "synthetic", "--metrics", "crows", *args], capsys)
    assert code == 2 and message in err and not (tmp_path / "run").exists()
