"""GRADIEND-BPI/-FPI/-MPI as Debiasers: registry, configuration, shared cached training and grid, artifact
round trip, apply = theta + alpha * dec(h) on a copy."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from bench.api import Context
from bench.registry import METHODS
from methods.gradiend import GradiendBPI, GradiendFPI, GradiendMPI
from methods.gradiend import decoder_eval, train as gtrain
from methods.gradiend.decoder_eval import edit_delta, select
from methods.gradiend.method import PAPER_DEFAULTS, SYNTHETIC_DEFAULTS, GradiendArtifact
from methods.gradiend.model import Gradiend
from methods.gradiend.params import ParamSet
from tests.gradiend_helpers import tiny_subject, write_data_dir

SMALL = dict(seeds=(0,), lr=1e-3, batch_size=4, max_steps=4, eval_every=2, h_values=(-1.0, 1.0),
             alpha_values=(-0.1, 0.1), lms_max_sentences=8)  # fmt: skip


def test_registered_names_and_labels():
    assert METHODS.get("gradiend") is GradiendBPI
    for name, cls, label in (("gradiend-bpi", GradiendBPI, "GRADIEND-BPI"), ("gradiend-fpi", GradiendFPI, "GRADIEND-FPI"),
                             ("gradiend-mpi", GradiendMPI, "GRADIEND-MPI")):  # fmt: skip
        assert METHODS.get(name) is cls and cls.label == label and cls.group == 1 and cls.changes == "weights"
    assert (GradiendBPI.criterion, GradiendFPI.criterion, GradiendMPI.criterion) == ("bpi", "fpi", "mpi")


def test_defaults_paper_and_synthetic():
    m = GradiendBPI()
    paper = tiny_subject(hidden=16, layers=1)
    synthetic = dataclasses.replace(paper, meta={"synthetic": True})
    assert m.resolved(paper) == PAPER_DEFAULTS and m.resolved(synthetic) == SYNTHETIC_DEFAULTS
    cfg = m.train_config(paper)
    assert (cfg.seeds, cfg.lr, cfg.eps, cfg.weight_decay, cfg.batch_size, cfg.eval_every, cfg.max_steps) == (
        (0, 1, 2), 1e-5, 1e-8, 1e-2, 32, 250, None)
    assert m.train_config(synthetic).eps == SYNTHETIC_DEFAULTS["eps"]
    assert len(m.h_values) == 15 and len(m.alpha_values) == 16
    assert GradiendBPI(lr=5e-5).train_config(synthetic).lr == 5e-5  # explicit arguments win
    assert GradiendBPI(**GradiendBPI().config()).config() == GradiendBPI().config()


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    root = tmp_path_factory.mktemp("gm")
    subject = tiny_subject(hidden=16, layers=1)
    ctx = Context(data_dir=write_data_dir(root / "data"), cache_dir=root / "cache", progress=False)
    method = GradiendBPI(**SMALL)
    return subject, ctx, method, method.fit(subject, ctx)


def test_fit_selects_the_grid_argmax(fitted):
    subject, ctx, method, art = fitted
    assert len(art.grid) == 5
    best = select(art.grid)["bpi"]
    assert (art.h, art.alpha) == (float(best["h"]), float(best["alpha"]))
    gradiend, _ = Gradiend.load(ctx.cache_dir / "gradiend" / "train" / art.summary["train_folder"].split("/")[-1] / "gradiend")
    assert torch.equal(art.delta, edit_delta(gradiend, art.h, art.alpha))
    assert "GRADIEND-BPI" in art.summary["selection"]


def test_variants_share_one_training_and_one_grid(fitted, monkeypatch):
    subject, ctx, _, art = fitted

    def boom(*a, **k):
        raise AssertionError("recomputed a cached stage")

    monkeypatch.setattr(gtrain, "train_run", boom)
    monkeypatch.setattr(decoder_eval, "run_grid", boom)
    import methods.gradiend.stages as stages

    monkeypatch.setattr(stages, "run_grid", boom)
    for cls in (GradiendFPI, GradiendMPI, GradiendBPI):
        other = cls(**SMALL).fit(subject, ctx)
        assert other.grid.equals(art.grid)
        chosen = select(art.grid)[cls.criterion]
        assert (other.h, other.alpha) == (float(chosen["h"]), float(chosen["alpha"]))


def test_apply_writes_the_edit_into_a_copy(fitted, tmp_path):
    subject, _, method, art = fitted
    params = ParamSet.select(subject.model)
    delta = torch.randn(params.n, generator=torch.Generator().manual_seed(0)) * 1e-3
    artifact = GradiendArtifact("bpi", 1.0, 0.1, params.signature(), delta, art.grid, {})
    before = params.flatten().clone()
    new = method.apply(subject, artifact)
    assert torch.equal(params.flatten(), before), "the input subject is untouched"
    assert new.model is not subject.model and not new.same_as(subject)
    assert torch.equal(ParamSet.select(new.model).flatten(), before + delta)
    assert torch.equal(new.model.cls.predictions.bias, subject.model.cls.predictions.bias)
    method.save_artifact(artifact, tmp_path / "artifact")
    loaded = method.load_artifact(tmp_path / "artifact")
    assert torch.equal(loaded.delta, delta) and (loaded.h, loaded.alpha, loaded.criterion) == (1.0, 0.1, "bpi")
    assert loaded.grid.equals(art.grid) and loaded.signature == params.signature()
    from bench.errors import BenchError

    with pytest.raises(BenchError, match="other model parameters"):
        method.apply(tiny_subject(hidden=32, layers=1), loaded)
