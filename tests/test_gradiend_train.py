"""GRADIEND training: evaluation, sign normalisation, best checkpoint, seeds, resumable checkpoints, NaN."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bench.api import Context
from bench.errors import BenchError, TrainingDiverged
from methods.gradiend import train as gtrain
from methods.gradiend.data import load
from methods.gradiend.examples import collate, gender_rows
from methods.gradiend.gradients import GradientPair
from methods.gradiend.params import ParamSet
from tests.gradiend_helpers import tiny_subject, write_data_dir

CFG = gtrain.TrainConfig(seeds=(0, 1), lr=1e-3, batch_size=4, max_steps=6, eval_every=2)


@pytest.fixture(scope="module")
def subject():
    """float64 (training follows the model's dtype): the val correlation is recomputed by another route (batch-1
    backward passes instead of batched forward-mode derivatives), which in float32 differs by CPU-dependent
    rounding of dot products over all n parameters."""
    subject = tiny_subject(hidden=16, layers=1)
    subject.model.double()
    return subject


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return load(write_data_dir(tmp_path_factory.mktemp("gdata")))


def _ctx(tmp_path):
    return Context(data_dir=None, cache_dir=tmp_path, progress=False)


def test_training_keeps_best_female_positive_run(subject, data, tmp_path):
    gradiend, summary = gtrain.train(subject, data, CFG, tmp_path / "out", _ctx(tmp_path))
    runs = summary["runs"]
    assert [r["seed"] for r in runs] == [0, 1]
    for r in runs:
        assert [h["step"] for h in r["history"]] == [2, 4, 6]
        assert all(h["r"] >= 0 for h in r["history"]), "every evaluation ends female-positive"
        best = max(range(3), key=lambda i: (r["history"][i]["r"], i))
        assert r["best_step"] == r["history"][best]["step"] and r["best_score"] == r["history"][best]["r"]
    assert summary["selected_seed"] == max(runs, key=lambda r: r["val_cor"])["seed"]
    # the selected GRADIEND's val correlation, recomputed straightforwardly: per-row gradients, then h
    params = ParamSet.select(subject.model)
    rows = gender_rows(data.genter["val"], data.names["val"], subject.tokenizer, roberta=False)
    hs = []
    for row in rows:
        one = collate([row.example], subject.tokenizer.pad_token_id)
        lab = torch.full_like(one.input_ids, -100)
        lab[one.rows, one.cols] = one.labels
        loss = subject.model(input_ids=one.input_ids, attention_mask=one.attention_mask, labels=lab).loss
        g = torch.cat([x.reshape(-1) for x in torch.autograd.grad(loss, params.params)])
        hs.append(float(torch.tanh(gradiend.W_e @ g + gradiend.b_e[0])))
    r = np.corrcoef(hs, [row.kind == "F" for row in rows])[0, 1]
    # float64: the two routes' h agree to ~1e-13 relative (tests/test_gradiend_gradients.py), and Pearson's r
    # moves by <= 2 |dh| / |h - mean(h)|, so 1e-5 holds with a wide margin while the spread of h is >= 1e-6
    assert gradiend.W_e.dtype == torch.float64 and np.std(hs) > 1e-6
    assert summary["val_cor"] == pytest.approx(r, abs=1e-5)
    saved = json.loads((tmp_path / "out" / "gradiend" / "config.json").read_text())
    assert saved["summary"]["selected_seed"] == summary["selected_seed"] and saved["n"] == params.n


def test_finished_training_is_reused_and_foreign_folder_refused(subject, data, tmp_path, monkeypatch):
    first, _ = gtrain.train(subject, data, CFG, tmp_path / "out", _ctx(tmp_path))

    def boom(*a, **k):
        raise AssertionError("must not train again")

    monkeypatch.setattr(gtrain, "train_run", boom)
    again, _ = gtrain.train(subject, data, CFG, tmp_path / "out", _ctx(tmp_path))
    assert torch.equal(first.flat, again.flat)
    with pytest.raises(BenchError, match="another model, data or configuration"):
        gtrain.train(subject, data, gtrain.TrainConfig(seeds=(0,), lr=1e-3, max_steps=3), tmp_path / "out", _ctx(tmp_path))


def test_interrupted_training_resumes_bit_identical(subject, data, tmp_path, monkeypatch):
    cfg = gtrain.TrainConfig(seeds=(0,), lr=1e-3, batch_size=4, max_steps=7, eval_every=2, checkpoint_every=3)
    straight, s1 = gtrain.train(subject, data, cfg, tmp_path / "a", _ctx(tmp_path))

    calls = {"n": 0}
    original = GradientPair.__call__

    def interrupted(self, batch):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return original(self, batch)

    monkeypatch.setattr(GradientPair, "__call__", interrupted)
    with pytest.raises(KeyboardInterrupt):
        gtrain.train(subject, data, cfg, tmp_path / "b", _ctx(tmp_path))
    state = json.loads((tmp_path / "b" / "seed-0" / "checkpoint" / "state.json").read_text())
    assert state["step"] == 3
    monkeypatch.setattr(GradientPair, "__call__", original)
    resumed, s2 = gtrain.train(subject, data, cfg, tmp_path / "b", _ctx(tmp_path))
    assert torch.equal(straight.flat, resumed.flat)
    assert s1["runs"][0]["history"] == s2["runs"][0]["history"]
    assert not (tmp_path / "b" / "seed-0" / "checkpoint").exists()


def test_nan_loss_raises_training_diverged(data, tmp_path):
    broken = tiny_subject(hidden=16, layers=1)
    with torch.no_grad():
        broken.model.bert.encoder.layer[0].output.dense.weight[0, 0] = float("nan")
    with pytest.raises(TrainingDiverged, match="diverged at step 1 .seed 0.*loss is nan"):
        gtrain.train(broken, data, gtrain.TrainConfig(seeds=(0,), max_steps=2, batch_size=2), tmp_path / "o", _ctx(tmp_path))


def test_eval_max_size(data):
    assert len(gtrain.val_templates(data, None)) == 2
    assert len(gtrain.val_templates(data, 0.5)) == 1
    assert len(gtrain.val_templates(data, 1)) == 1
