"""Stored scores, artifacts and checkpoints are data, never pickles; damaged cache entries are reported and
recomputed; concurrent writers of one cache key are safe (the first complete writer wins)."""
from __future__ import annotations

import csv
import functools
import json
import os
import pathlib
import pickle
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import bench.serialize as ser
from bench.api import Context, Estimate, Scores, statistic, storable
from bench.errors import BenchError
from bench.api import load_scores, save_scores
from bench.serialize import load_data, save_data
from bench.files import atomic_dir
from bench.cache import Cache
from stored_scores import assert_identical, round_trip

REPO = Path(__file__).resolve().parents[1]


class _Planted:
    """Unpickling this creates the marker file: what an attacker's file in a shared cache would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def plant(path: Path, marker: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps({"scores": _Planted(marker)}))


def planted_torch(path: Path, marker: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": _Planted(marker)}, path)


# ---- the format ---------------------------------------------------------------------------------------------------


@storable
@dataclass
class Record:  # a dataclass of an allowed package (tests' own module is allowed where named)
    name: str
    weights: torch.Tensor
    extra: dict


@statistic
def _stat(indices, *, values, parts=()):
    (idx,) = indices[:1]
    return values[np.asarray(idx)].mean(axis=1)


@pytest.mark.parametrize("parquet", [True, False])
def test_values_round_trip_exactly(tmp_path, parquet, monkeypatch):
    monkeypatch.setattr(ser, "_use_parquet", parquet)
    shared = torch.randn(4, 3)
    value = {
        "none": None, "flag": True, "int": 2**70, "float": 0.1, "nan": float("nan"), "neg0": -0.0, "str": "é",
        "list": [1, 2.5, "x", [None]], "tuple": (1, (np.arange(3), "a")), 7: "int key", (1, 2): "tuple key",
        "$odd": {"$tensor": "not a tag"},
        "np_scalars": [np.float32(1.5), np.float64(0.1), np.int64(3), np.bool_(True)],
        "arrays": [np.arange(6, dtype=np.int16).reshape(2, 3), np.array(["ab", "c"]), np.zeros((0, 3))],
        "tensors": [shared, shared[1:], shared.T, torch.zeros(0, 5), torch.tensor(3.0), torch.ones(2, dtype=torch.bfloat16),
                    torch.arange(4, dtype=torch.uint8)],
        "frame": pd.DataFrame({"a": [1, 2, 3], "b": [0.5, np.nan, 2.0], "s": ["x", "y", "z"], "t": [True, False, True]}),
        "partial": functools.partial(_stat, values=np.arange(5.0), parts=(functools.partial(_stat, values=np.ones(2)),)),
        "record": Record("r", torch.eye(2), {"k": [1, 2]}),
    }
    save_data(value, tmp_path / "v", allowed=("test_cache_safety",))
    again = load_data(tmp_path / "v", allowed=("test_cache_safety",))
    assert list(again) == list(value)
    for k in ("none", "flag", "int", "str", "list", 7, (1, 2), "$odd"):
        assert again[k] == value[k] and type(again[k]) is type(value[k])
    assert again["float"] == 0.1 and np.isnan(again["nan"]) and str(again["neg0"]) == "-0.0"
    assert again["tuple"][0] == 1 and type(again["tuple"][1]) is tuple
    np.testing.assert_array_equal(again["tuple"][1][0], np.arange(3))
    for a, b in zip(again["np_scalars"], value["np_scalars"]):
        assert a == b and type(a) is type(b)
    for a, b in zip(again["arrays"], value["arrays"]):
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
    for a, b in zip(again["tensors"], value["tensors"]):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    pd.testing.assert_frame_equal(again["frame"], value["frame"], check_exact=True)
    idx = [np.random.default_rng(0).integers(0, 5, size=(4, 5))]
    np.testing.assert_array_equal(again["partial"](idx), value["partial"](idx))
    assert again["partial"].keywords["parts"][0].func is _stat
    rec = again["record"]
    assert isinstance(rec, Record) and rec.name == "r" and torch.equal(rec.weights, torch.eye(2)) and rec.extra == {"k": [1, 2]}
    assert not any(p.suffix == ".pkl" for p in (tmp_path / "v").iterdir())


@pytest.mark.parametrize("value", [lambda x: x, np.mean, os.system, {1, 2}, object(), np.array([object()]),
                                   functools.partial(os.system, "true"), torch.nn.Linear(2, 2)])
def test_values_that_are_not_data_are_refused_on_save(tmp_path, value):
    with pytest.raises(BenchError, match="cannot store"):
        save_data({"x": value}, tmp_path / "v", allowed=("metrics",))


def test_functions_outside_the_allow_list_are_refused_on_save(tmp_path):
    from metrics.crows import crows_statistic

    save_data(crows_statistic, tmp_path / "ok", allowed=("metrics",))
    assert load_data(tmp_path / "ok", allowed=("metrics",)) is crows_statistic
    with pytest.raises(BenchError, match="only those of the packages"):
        save_data(crows_statistic, tmp_path / "no", allowed=())


@pytest.mark.parametrize("node", [
    {"$function": "os:system"}, {"$function": "builtins:eval"}, {"$function": "subprocess:run"},
    {"$function": "bench.run.store:os"}, {"$function": "metrics.crows:np"}, {"$function": "metrics.crows:CrowS"},
    {"$function": "metrics.crows:crows_statistic.__globals__"}, {"$function": "metrics..x:y"},
    {"$partial": {"func": {"$function": "os:system"}, "args": ["touch MARKER"], "keywords": {}}},
    {"$dataclass": "subprocess:Popen", "fields": {"args": "true"}},
    {"$dataclass": "bench.api:Debiaser", "fields": {}},
])  # fmt: skip
def test_references_outside_the_allow_list_are_refused_on_load(tmp_path, node):
    folder = tmp_path / "v"
    folder.mkdir()
    (folder / "data.json").write_text(json.dumps({"format": ser.FORMAT, "value": node}))
    with pytest.raises(BenchError, match="refusing|malformed"):
        load_data(folder, allowed=("metrics",))


def test_functions_must_be_module_level_of_an_allowed_package(tmp_path):
    folder = tmp_path / "v"
    folder.mkdir()
    (folder / "data.json").write_text(json.dumps({"format": ser.FORMAT, "value": {"$function": "metrics.crows:crows_statistic"}}))
    with pytest.raises(BenchError, match="refusing"):
        load_data(folder, allowed=("methods",))  # a method's artifact cannot name a metric's function...
    assert load_data(folder, allowed=("metrics",)).__name__ == "crows_statistic"  # ...a metric's scores can


# ---- every metric's Scores round-trips bit-identically --------------------------------------------------------------


def test_glue_shaped_scores_round_trip(tmp_path):
    """GLUE's estimates: partials of task_statistic with tuples of arrays, and mean_statistic over partials."""
    from metrics.glue_tasks import mean_statistic, task_statistic

    rng = np.random.default_rng(0)
    labels = (rng.integers(0, 3, 40), rng.integers(0, 3, 30))
    preds = (rng.integers(0, 3, (2, 40)), rng.integers(0, 3, (2, 30)))
    mnli = functools.partial(task_statistic, metric="accuracy", num_labels=3, labels=labels, predictions=preds)
    y, p = rng.normal(size=25), rng.normal(size=(2, 25))
    stsb = functools.partial(task_statistic, metric="pearson", num_labels=1, labels=(y,), predictions=(p,))
    estimates = {"glue:mnli": Estimate((40, 30), mnli), "glue:stsb": Estimate((25,), stsb),
                 "glue": Estimate((40, 30, 25), functools.partial(mean_statistic, parts=(mnli, stsb), widths=(2, 1)))}
    items = pd.DataFrame({"task": ["mnli"] * 3, "split": ["dev", "dev", "mm"], "item": [0, 1, 2], "prediction": [0.5, 1.0, 2.0]})
    scores = Scores("glue", estimates, items=items, extras={"glue_missing": 1.0}, notes={"glue": "mean over 2"})
    assert_identical(scores, round_trip(scores, tmp_path / "s"), resamples=200)


def test_glue_scores_of_a_finetuned_tiny_model_round_trip(tmp_path):
    from glue_tiny import tiny_subject, write_glue, write_tiny_bert
    from metrics.glue import GLUE

    tiny = tiny_subject(write_tiny_bert(tmp_path / "tiny"))
    ctx = Context(data_dir=write_glue(tmp_path / "data", n_train=24, n_dev=16), cache_dir=tmp_path / "cache", progress=False)
    scores = GLUE(tasks="sst2,stsb,mnli", epochs=1, lr=1e-3, batch_size=16, max_seq_length=32, seeds=(0, 1),
                  source="files").score(tiny, ctx)  # fmt: skip
    assert {"glue:sst2", "glue:stsb", "glue:mnli", "glue"} <= set(scores.estimates)
    assert_identical(scores, round_trip(scores, tmp_path / "s"), resamples=200)


@pytest.mark.parametrize("bootstrap", ["sentences", "dimensions"])
def test_seat_shaped_scores_round_trip(tmp_path, bootstrap):
    """SEAT's statistics take nested tuples of arrays (`embeddings=tuple(sets)`, `cosines`)."""
    from metrics.seat import SEAT

    rng = np.random.default_rng(1)
    from metrics.seat import unit_rows

    sets = [tuple(unit_rows(rng.normal(size=(n, 8))) for n in (5, 6, 4, 7)) for _ in range(2)]  # as SEAT's
    metric = SEAT(bootstrap=bootstrap)
    estimates = {"seat": metric._estimate(sets, "mean_abs"), "d:a": metric._estimate(sets[:1], "signed")}
    scores = Scores("seat", estimates, items=pd.DataFrame({"test": ["a", "b"], "p_exact": [True, False]}), extras={"p:a": 0.25})
    assert_identical(scores, round_trip(scores, tmp_path / "s"), resamples=200)


# ---- planted pickles never run; damaged entries are reported, removed and recomputed ------------------------------


def _scores(value: float = 60.0) -> Scores:
    from metrics.crows import crows_estimates

    items = pd.DataFrame({"biased": [1.0, 0.0, 1.0, 1.0, 0.0], "direction": ["stereo", "antistereo", "stereo", "stereo", "stereo"]})
    return Scores("crows", crows_estimates(items), items=items, extras={"x": value})


def _get_scores(cache: Cache, create, warnings: list):
    cache.warn = warnings.append
    return cache.get_or_create("scores", "crows", "k", create, lambda v, p: save_scores(v, p, ("metrics",)),
                               lambda p: load_scores(p, ("metrics",)))  # fmt: skip


def _plant_file(entry: Path, marker: Path):
    plant(entry / "artifact", marker)  # where the old format kept its pickle
    (entry / "done").write_text("ok\n")


def _plant_in_arrays(entry: Path, marker: Path):
    save_scores(_scores(), entry / "artifact", ("metrics",))
    (entry / "done").write_text("ok\n")
    plant(entry / "artifact" / "arrays.npz", marker)


def _plant_in_frame(entry: Path, marker: Path):
    save_scores(_scores(), entry / "artifact", ("metrics",))
    (entry / "done").write_text("ok\n")
    frame = next((entry / "artifact").glob("frame-0.*"))
    plant(frame, marker)


def _plant_os_system(entry: Path, marker: Path):
    save_scores(_scores(), entry / "artifact", ("metrics",))
    (entry / "done").write_text("ok\n")
    doc = json.loads((entry / "artifact" / "data.json").read_text())
    doc["value"]["fields"]["estimates"]["crows"]["fields"]["statistic"] = {
        "$partial": {"func": {"$function": "os:system"}, "args": [f"touch {marker}"], "keywords": {}}}
    (entry / "artifact" / "data.json").write_text(json.dumps(doc))


def _truncate(entry: Path, marker: Path):
    save_scores(_scores(), entry / "artifact", ("metrics",))
    (entry / "done").write_text("ok\n")
    data = entry / "artifact" / "arrays.npz"
    data.write_bytes(data.read_bytes()[:100])


@pytest.mark.parametrize("damage", [_plant_file, _plant_in_arrays, _plant_in_frame, _plant_os_system, _truncate])
def test_damaged_or_planted_score_entries_are_reported_and_recomputed(tmp_path, damage):
    cache = Cache(tmp_path / "cache")
    entry = cache.path("scores", "crows", "k")
    marker = tmp_path / "PWNED"
    damage(entry, marker)
    warnings: list[str] = []
    fresh = _scores(61.0)
    got, cached = _get_scores(cache, lambda: fresh, warnings)
    assert not marker.exists(), "a stored file ran code"
    assert not cached and got is fresh
    assert len(warnings) == 1 and str(entry) in warnings[0] and "damaged" in warnings[0]
    again, cached = _get_scores(cache, lambda: pytest.fail("recomputed a good entry"), warnings)
    assert cached and len(warnings) == 1
    assert_identical(fresh, again)
    assert not marker.exists()


def _few_crows(data_dir, tmp_path) -> Path:
    with open(data_dir / "crows_pairs" / "crows_pairs_anonymized.csv", newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["bias_type"] == "gender"][:6]
    path = tmp_path / "few.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_runner_reports_a_damaged_score_entry_and_recomputes(data_dir, tmp_path):
    from bench.run.request import RunRequest
    from bench.run.runner import Runner
    from tiny_mlms import bert_subject

    lines: list[str] = []
    runner = Runner(RunRequest(models=[], methods=[], metrics=["crows"], device="cpu", cache_dir=str(tmp_path / "cache"),
                               options={"crows": {"file": str(_few_crows(data_dir, tmp_path))}}, progress=False),
                    echo=lines.append)  # fmt: skip
    subject = bert_subject(str(data_dir))
    ctx = runner.context(subject)
    first = runner.scores(subject, "crows", ctx)
    (entry,) = [p.parent for p in (tmp_path / "cache" / "scores" / "crows").glob("*/done")]
    marker = tmp_path / "PWNED"
    for f in (entry / "artifact").iterdir():
        if f.name != "data.json":
            plant(f, marker)
    again = runner.scores(subject, "crows", ctx)
    assert not marker.exists()
    assert any("warning: damaged cache entry" in line and str(entry) in line for line in lines), lines
    assert_identical(first, again)
    assert (entry / "done").is_file()
    third = runner.scores(subject, "crows", ctx)  # now a good entry again
    assert_identical(first, third) and sum("damaged" in line for line in lines) == 1


def test_default_artifacts_are_data_and_planted_ones_do_not_run(tmp_path):
    from methods.inlp import INLP
    from methods.self_debias import SelfDebias

    inlp = INLP()
    artifact = {"basis": torch.randn(8, 2), "projection": torch.eye(8), "classifiers": torch.zeros(0, 3, 8),
                "dev_accuracy": [0.9, 0.5], "counts": {"male": 3}, "rank": 2, "chance": 0.34, "convergence_warnings": 0}
    inlp.save_artifact(artifact, tmp_path / "inlp")
    loaded = inlp.load_artifact(tmp_path / "inlp")
    assert set(loaded) == set(artifact) and torch.equal(loaded["basis"], artifact["basis"])
    assert loaded["classifiers"].shape == (0, 3, 8) and loaded["counts"] == {"male": 3}
    sd = SelfDebias()
    art = {"prompt_ids": [[1, 2], [3]], "prompts": ["a", "b"]}
    sd.save_artifact(art, tmp_path / "sd")
    assert sd.load_artifact(tmp_path / "sd") == art
    with pytest.raises(BenchError, match="override save_artifact"):
        inlp.save_artifact({"model": torch.nn.Linear(2, 2)}, tmp_path / "bad")

    warnings: list[str] = []
    cache = Cache(tmp_path / "cache", warn=warnings.append)
    entry = cache.path("artifacts", "inlp", "k")
    marker = tmp_path / "PWNED"
    planted_torch(entry / "artifact", marker)  # where torch.save used to put it
    (entry / "done").write_text("ok\n")
    got, cached = cache.get_or_create("artifacts", "inlp", "k", lambda: artifact, inlp.save_artifact,
                                      inlp.load_artifact)
    assert not marker.exists() and not cached and got is artifact and str(entry) in warnings[0]
    got, cached = cache.get_or_create("artifacts", "inlp", "k", lambda: None, inlp.save_artifact, inlp.load_artifact)
    assert cached and torch.equal(got["projection"], torch.eye(8))


def test_planted_model_weights_in_a_cda_artifact_do_not_run(tmp_path, data_dir):
    from methods.cda import CDA
    from methods.mlm_training import FittedWeights
    from tests.tokenizers_fixture import load_bert_tokenizer, tiny_bert

    model = tiny_bert(load_bert_tokenizer(data_dir), hidden=16, layers=1)
    method = CDA()
    method.save_artifact(FittedWeights(model=model, history={"losses": [1.0]}), tmp_path / "a")
    assert (tmp_path / "a" / "model.safetensors").is_file()
    loaded = method.load_artifact(tmp_path / "a")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.model.state_dict().values()))
    marker = tmp_path / "PWNED"
    (tmp_path / "a" / "model.safetensors").unlink()
    planted_torch(tmp_path / "a" / "pytorch_model.bin", marker)
    with pytest.raises(Exception):
        method.load_artifact(tmp_path / "a")
    assert not marker.exists()


def test_planted_or_damaged_training_checkpoints_do_not_run(tmp_path, data_dir):
    from bench.models.mlm_data import encode_line_by_line
    from bench.models.mlm_training import MLMTrainingConfig, train_mlm
    from tests.tokenizers_fixture import load_bert_tokenizer, tiny_bert

    tokenizer = load_bert_tokenizer(data_dir)
    blocks = encode_line_by_line(tokenizer, ["the king met his son and he smiled", "a woman walked her dog"] * 8, 16)
    cfg = MLMTrainingConfig(max_steps=2, batch_size=4, grad_accum=1, max_seq_length=16, lr=1e-3, checkpoint_every=1)
    ref = train_mlm(tiny_bert(tokenizer, hidden=16, layers=1), tokenizer, blocks, cfg)
    marker = tmp_path / "PWNED"
    for name, make in [("checkpoint.pt", planted_torch), ("checkpoint/data.json", plant),
                       ("checkpoint/tensors.safetensors", planted_torch)]:  # fmt: skip
        ckpt = tmp_path / name.replace("/", "_")
        target = ckpt / name
        if target.parent.name == "checkpoint":
            save_data({"data_key": "x", "step": 1, "t": torch.ones(2)}, target.parent)
        make(target, marker)
        history = train_mlm(tiny_bert(tokenizer, hidden=16, layers=1), tokenizer, blocks, cfg, checkpoint_dir=ckpt)
        assert not marker.exists(), name
        assert history.resumed_from == 0 and history.losses == ref.losses
        assert not ckpt.exists()


# ---- concurrent writers ------------------------------------------------------------------------------------------------

_WRITER = r"""
import sys, time, random
import numpy as np
from bench.cache import Cache
root, start, who = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
cache = Cache(root)
random.seed(who)
while time.time() < start:
    time.sleep(0.001)
written = 0
for j in range(200):
    name, key = f"round{j // 10}", f"key{j % 10}"
    def create(j=j):
        time.sleep(random.random() * 0.002)
        return {"j": j, "values": np.arange(2000, dtype=np.float64) * j, "who": who}
    value, cached = cache.data("test", name, key, create)
    assert value["j"] == j and value["values"].shape == (2000,) and value["values"][1] == j, (name, key, value)
    written += not cached
print(written)
"""


def test_concurrent_writers_of_the_same_keys(tmp_path):
    """Four processes (four workers of a distributed run) write the same 200 keys at the same moment: no error,
    one complete entry per key, no leftovers."""
    root = tmp_path / "cache"
    start = time.time() + 3.0
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(root), str(start), str(i)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for i in range(4)]  # fmt: skip
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    assert sum(int(out) for out, _ in outs) >= 200  # every entry written at least once (most several times)
    cache = Cache(root)
    for j in range(200):
        value, cached = cache.data("test", f"round{j // 10}", f"key{j % 10}", lambda: pytest.fail("entry missing"))
        assert cached and value["j"] == j and np.array_equal(value["values"], np.arange(2000.0) * j)
    leftovers = [p for p in (root / "test").rglob(".*")]
    assert not leftovers, leftovers[:5]  # no temporary or discarded directories remain
    entries = sorted(p.relative_to(root / "test").as_posix() for p in (root / "test").glob("*/*"))
    assert entries == sorted(f"round{j // 10}/key{j % 10}" for j in range(200))  # one entry per key
    assert all(sorted(q.name for q in (root / "test" / e).iterdir()) == ["artifact", "done"] for e in entries)


def test_atomic_dir_first_complete_writer_wins_and_replaces_incomplete(tmp_path):
    target = tmp_path / "entry"
    done = lambda p: (p / "done").is_file()  # noqa: E731
    with atomic_dir(target, complete=done) as tmp:
        (tmp / "v").write_text("first")
        (tmp / "done").write_text("ok")
    with atomic_dir(target, complete=done) as tmp:
        (tmp / "v").write_text("second")
        (tmp / "done").write_text("ok")
    assert (target / "v").read_text() == "first"
    (target / "done").unlink()  # incomplete now: the next writer replaces it
    with atomic_dir(target, complete=done) as tmp:
        (tmp / "v").write_text("third")
        (tmp / "done").write_text("ok")
    assert (target / "v").read_text() == "third"
    with atomic_dir(target) as tmp:  # no `complete`: replace (resumable checkpoints)
        (tmp / "v").write_text("fourth")
    assert (target / "v").read_text() == "fourth" and not (target / "done").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entry"]


# ---- names in stored data come from closed tables; values are checked before use (issue 17) -----------------------


def _entry_with(tmp_path, statistic_node=None, **changes):
    """A stored CrowS score whose 'crows' statistic node (or other fields) an attacker rewrote."""
    folder = tmp_path / "entry"
    save_scores(_scores(), folder, ("metrics",))
    doc = json.loads((folder / "data.json").read_text())
    fields = doc["value"]["fields"]
    if statistic_node is not None:
        fields["estimates"]["crows"]["fields"]["statistic"] = statistic_node
    for key, value in changes.items():
        fields[key] = value
    (folder / "data.json").write_text(json.dumps(doc))
    return folder


def _exploits(tmp_path):
    target = tmp_path / "site-packages" / "evil.pth"
    src = tmp_path / "src.txt"
    src.write_text("import os; os.system('touch PWNED')\n")
    return target, {
        "bench function with attacker arguments": {"$partial": {
            "func": {"$function": "bench.data.fetch:mrpc_split"},
            "args": [str(src), str(src), str(src)], "keywords": {"which": "train", "out": str(target)}}},
        "the resolver itself": {"$partial": {
            "func": {"$function": "bench.serialize:_resolve"},
            "args": ["tabnanny:check", ["tabnanny"], "function"], "keywords": {}}},
        "a statistic wrapping a bench function": {"$partial": {
            "func": {"$function": "metrics.crows:crows_statistic"}, "args": [],
            "keywords": {"biased": {"$partial": {"func": {"$function": "bench.data.fetch:mrpc_split"}, "args": [],
                                                 "keywords": {"out": str(target)}}}}}},
        "a module-level function that is no statistic": {"$function": "metrics.crows:crows_estimates"},
    }


@pytest.mark.parametrize("case", ["bench function with attacker arguments", "the resolver itself",
                                  "a statistic wrapping a bench function",
                                  "a module-level function that is no statistic"])
def test_only_declared_statistics_are_named_and_nothing_is_imported_or_called(tmp_path, case):
    """A name from the data is looked up in bench.storable's closed table: a bench function that is not a declared
    statistic (called with attacker arguments it wrote a .pth file on 4d743cf) and the resolver are refused."""
    target, nodes = _exploits(tmp_path)
    folder = _entry_with(tmp_path, nodes[case])
    before = set(sys.modules)
    with pytest.raises(BenchError, match="refusing|malformed|statistic"):
        load_scores(folder, ("metrics", "bench"))
    assert not target.exists() and not target.parent.exists()
    assert "tabnanny" not in set(sys.modules) - before


@pytest.mark.parametrize("change", [
    "extra nan", "extra inf", "extra text", "biased longer", "biased shorter", "biased not 0/1", "strata",
    "stereoset statistic on crows data",
])  # fmt: skip
def test_loaded_scores_that_do_not_fit_their_data_are_damaged(tmp_path, change):
    """Counts, shapes and finiteness are checked on load: on 4d743cf `extras.skipped = NaN` reached results.jsonl."""
    doc_changes, node = {}, None
    n = 5
    if change.startswith("extra"):
        value = {"extra nan": float("nan"), "extra inf": float("inf"), "extra text": "12"}[change]
        doc_changes["extras"] = {"skipped": value}
    elif change.startswith("biased"):
        biased = {"biased longer": np.ones(n + 3), "biased shorter": np.ones(n - 2),
                  "biased not 0/1": np.full(n, 7.0)}[change]  # fmt: skip
        folder = tmp_path / "entry"
        est = Estimate((n,), functools.partial(__import__("metrics.crows").crows.crows_statistic, biased=biased))
        save_scores(Scores("crows", {"crows": est}), folder, ("metrics",))
        with pytest.raises(BenchError, match="does not fit"):
            load_scores(folder, ("metrics",))
        return
    elif change == "strata":
        doc_changes = {}
        node = None
    else:
        node = {"$partial": {"func": {"$function": "metrics.stereoset:stereoset_statistic"}, "args": [],
                             "keywords": {"kind": "ss"}}}
    folder = _entry_with(tmp_path, node, **doc_changes)
    if change == "strata":
        doc = json.loads((folder / "data.json").read_text())
        doc["value"]["fields"]["estimates"]["crows"]["fields"]["strata"] = {"$tuple": [-1]}
        (folder / "data.json").write_text(json.dumps(doc))
    with pytest.raises(BenchError):
        load_scores(folder, ("metrics",))


@pytest.mark.parametrize("case", ["bench function with attacker arguments", "the resolver itself", "extra nan"])
def test_a_run_over_an_exploited_score_entry_reports_it_and_recomputes(data_dir, tmp_path, case):
    from bench.run.request import RunRequest
    from bench.run.runner import Runner
    from tiny_mlms import bert_subject

    lines: list[str] = []
    runner = Runner(RunRequest(models=[], methods=[], metrics=["crows"], device="cpu", cache_dir=str(tmp_path / "cache"),
                               options={"crows": {"file": str(_few_crows(data_dir, tmp_path))}}, progress=False),
                    echo=lines.append)  # fmt: skip
    subject = bert_subject(str(data_dir))
    ctx = runner.context(subject)
    first = runner.scores(subject, "crows", ctx)
    (entry,) = [p.parent for p in (tmp_path / "cache" / "scores" / "crows").glob("*/done")]
    doc = json.loads((entry / "artifact" / "data.json").read_text())
    target, nodes = _exploits(tmp_path)
    if case == "extra nan":
        doc["value"]["fields"]["extras"]["skipped"] = float("nan")
    else:
        doc["value"]["fields"]["estimates"]["crows"]["fields"]["statistic"] = nodes[case]
    (entry / "artifact" / "data.json").write_text(json.dumps(doc))
    again = runner.scores(subject, "crows", ctx)
    assert not target.exists()
    assert any("warning: damaged cache entry" in line and str(entry) in line for line in lines), lines
    assert_identical(first, again)
    assert all(np.isfinite(v) for v in again.extras.values())


def test_tensor_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        save_data({"t": torch.ones(2)}, tmp_path / "v")
        save_tensor = tmp_path / "v" / "tensors.safetensors"
        assert save_tensor.stat().st_mode & 0o777 == 0o644  # 0600 on 4d743cf
        os.umask(0o002)
        ser.save_tensors_and_json(tmp_path / "w", {"x": torch.zeros(3)}, {})
        assert (tmp_path / "w" / "tensors.safetensors").stat().st_mode & 0o777 == 0o664
    finally:
        os.umask(old)


# ---- the pinned world's cached copy is checked on every load ------------------------------------------------------


def _scale_embeddings(world_root: Path) -> None:
    from safetensors.torch import load_file, save_file

    path = world_root / "model" / "model.safetensors"
    tensors = load_file(str(path))
    key = next(k for k in tensors if k.endswith("word_embeddings.weight"))
    tensors[key] = tensors[key] * 0.5
    save_file(tensors, str(path))


def _pickle_instead(world_root: Path, marker: Path) -> None:
    (world_root / "model" / "model.safetensors").unlink()
    planted_torch(world_root / "model" / "pytorch_model.bin", marker)


def _other_config(world_root: Path) -> None:
    path = world_root / "model" / "config.json"
    config = json.loads(path.read_text())
    config["layer_norm_eps"] = 0.5
    path.write_text(json.dumps(config))


def _other_data(world_root: Path) -> None:
    path = world_root / "data" / "crows_pairs" / "crows_pairs_anonymized.csv"
    path.write_text(path.read_text().replace("stereo", "antistereo"))


def _other_tokenizer(world_root: Path) -> None:
    path = world_root / "model" / "tokenizer.json"
    doc = json.loads(path.read_text())
    vocab = doc["model"]["vocab"]
    vocab["he"], vocab["she"] = vocab["she"], vocab["he"]
    path.write_text(json.dumps(doc))


@pytest.mark.parametrize("damage", ["weights x 0.5", "pickle instead of safetensors", "config", "data set", "tokenizer"])
def test_a_tampered_pinned_world_in_the_cache_is_noticed_and_regenerated(tmp_path, damage, capfd):
    """On 4d743cf the pinned weights' hash was checked only when the world was first installed: scaling the cached
    word embeddings by 0.5 gave CrowS 63.00 instead of 82.00, exit 0."""
    from safetensors.torch import load_file

    from bench.models.loading import load_subject
    from bench.synthetic import pinned
    from bench.synthetic.world import build_world

    world = build_world(cache_dir=tmp_path, progress=False)
    marker = tmp_path / "PWNED"
    {"weights x 0.5": lambda: _scale_embeddings(world.root),
     "pickle instead of safetensors": lambda: _pickle_instead(world.root, marker),
     "config": lambda: _other_config(world.root), "data set": lambda: _other_data(world.root),
     "tokenizer": lambda: _other_tokenizer(world.root)}[damage]()  # fmt: skip
    capfd.readouterr()
    subject = load_subject("synthetic", cache_dir=tmp_path)
    err = capfd.readouterr().err
    assert not marker.exists()
    pinned_weights = load_file(str(pinned.FOLDER / pinned.WEIGHTS))
    state = subject.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in pinned_weights.items() if k in state)
    assert subject.model.config.layer_norm_eps != 0.5
    ids = subject.tokenizer("he she", add_special_tokens=False)["input_ids"]
    vocab = (world.root / "model" / "vocab.txt").read_text().splitlines()
    assert ids == [vocab.index("he"), vocab.index("she")]
    assert pinned.damage(world.root, pinned.record()) is None
    if damage != "tokenizer":  # the tokenizer is built from the hashed vocab.txt: tokenizer.json is never read
        assert "is damaged" in err and str(world.root) in err, err
