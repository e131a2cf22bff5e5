"""Combinations `a+b`: `b` is fitted on the output of `a`; artifacts are cached; an identical subject is refused."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from bench.api import EMBED, Column, Debiaser, Estimate, Metric, Scores, statistic
from bench.errors import IdenticalSubject
from bench.registry import METHODS, METRICS
from bench.run.request import RunRequest
from bench.run.runner import Runner
from bench.models.subject import Subject
from tests.tokenizers_fixture import load_bert_tokenizer, tiny_bert


class Shift(nn.Module):
    def __init__(self, vector: torch.Tensor):
        super().__init__()
        self.register_buffer("vector", vector)

    def forward(self, h):
        return h - self.vector


class RecordingSecond(Debiaser):
    """A representation method that remembers which subject it was fitted on."""

    label = "Second"
    changes = "representation"
    fitted_on: list = []

    def fit(self, subject, ctx):
        RecordingSecond.fitted_on.append(subject)
        emb = subject.model.get_input_embeddings().weight.detach()
        return {"vector": emb.mean(0).clone(), "fingerprint": emb.sum().item()}

    def apply(self, subject, artifact):
        return subject.with_transform(Shift(artifact["vector"]))


class IdentityInDisguise(Debiaser):
    """Returns a copy of the input model with the same weights: must be refused, not reported."""

    label = "Identity in disguise"
    changes = "weights"

    def fit(self, subject, ctx):
        return None

    def apply(self, subject, artifact):
        return subject.with_model(copy.deepcopy(subject.model))


@statistic
def _mean_hidden(values, idx):
    return values[idx[0]].mean(axis=1)


class MeanHidden(Metric):
    """A fast metric: mean of the last hidden states over a few fixed inputs, one item per input."""

    requires = EMBED
    columns = (Column("MeanH", "mean_hidden", "0", 99),)

    def score(self, subject, ctx):
        ids = torch.tensor([[101, 2002 + i, 2003, 102] for i in range(6)], device=subject.device)
        with torch.inference_mode():
            h = subject.hidden_states(ids, torch.ones_like(ids))
        values = h.mean(dim=(1, 2)).double().cpu().numpy()
        import functools

        return Scores("test-mean-hidden", {"mean_hidden": Estimate((len(values),), functools.partial(_mean_hidden, values))})


@pytest.fixture(autouse=True)
def test_plugins():
    """Registered only while a test of this module runs, so the conformance suite never sees them."""
    plugins = [(METHODS, "test-second", RecordingSecond), (METHODS, "test-identity", IdentityInDisguise),
               (METRICS, "test-mean-hidden", MeanHidden)]  # fmt: skip
    for registry, name, obj in plugins:
        registry.register(name, obj)
    yield
    for registry, name, _ in plugins:
        registry.unregister(name)

TINY_CDA = {"max_steps": 2, "batch_size": 4, "grad_accum": 1, "max_seq_length": 32, "lr": 1e-3, "max_lines": 40}


@pytest.fixture()
def tiny_subject(data_dir):
    tokenizer = load_bert_tokenizer(data_dir)
    return Subject(model=tiny_bert(tokenizer, hidden=32), tokenizer=tokenizer, name="tiny", source="test:tiny-combo")


def _runner(data_dir, tmp_path, methods, echo, metrics=(), out=None):
    request = RunRequest(
        models=[str(tmp_path / "tiny-model")] if out else ["random:bert-base-uncased-tokenizer"], methods=methods,
        metrics=list(metrics), device="cpu", data_dir=str(data_dir), cache_dir=str(tmp_path / "cache"),
        options={"cda": TINY_CDA, "dropout": TINY_CDA}, stats={"resamples": 50}, progress=False,
    )  # fmt: skip
    return Runner(request, out=out, echo=echo)


def _params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_second_method_is_fitted_on_the_first_methods_output(data_dir, tmp_path, tiny_subject):
    messages: list[str] = []
    runner = _runner(data_dir, tmp_path, ["cda+test-second"], messages.append)
    ctx = runner.context(tiny_subject)
    base_params = _params(tiny_subject.model)
    RecordingSecond.fitted_on.clear()

    out = runner.debias(tiny_subject, "cda+test-second", ctx)
    assert len(RecordingSecond.fitted_on) == 1
    fitted_on = RecordingSecond.fitted_on[0]
    assert fitted_on.method == "cda" and fitted_on.model is not tiny_subject.model
    assert any(not torch.equal(base_params[k], v) for k, v in fitted_on.model.state_dict().items())
    # the combination's subject carries CDA's weights and the second method's transform
    assert out.method == "cda+test-second" and [m for m, _ in out.lineage] == ["cda", "test-second"]
    assert out.model is fitted_on.model and len(out.transforms) == 1
    assert all(torch.equal(base_params[k], v) for k, v in tiny_subject.model.state_dict().items())

    # run again: both artifacts come from the cache, nothing is refitted
    messages.clear()
    again = runner.debias(tiny_subject, "cda+test-second", ctx)
    assert messages == ["  cda: cached artifact", "  test-second: cached artifact"]
    assert len(RecordingSecond.fitted_on) == 1
    assert all(torch.equal(a, b) for a, b in zip(_params(again.model).values(), _params(out.model).values()))
    assert torch.equal(again.transforms[0].vector, out.transforms[0].vector)

    # alone, the second method is fitted on the base model: a different artifact
    alone = runner.debias(tiny_subject, "test-second", ctx)
    assert len(RecordingSecond.fitted_on) == 2 and RecordingSecond.fitted_on[1] is tiny_subject
    assert not torch.equal(alone.transforms[0].vector, out.transforms[0].vector)


def test_dropout_chain_order_matters(data_dir, tmp_path, tiny_subject):
    runner = _runner(data_dir, tmp_path, ["dropout+test-second"], lambda m: None)
    ctx = runner.context(tiny_subject)
    RecordingSecond.fitted_on.clear()
    out = runner.debias(tiny_subject, "dropout+test-second", ctx)
    assert RecordingSecond.fitted_on[0].method == "dropout"
    assert out.model is RecordingSecond.fitted_on[0].model


def test_identical_subject_is_refused(data_dir, tmp_path, tiny_subject):
    runner = _runner(data_dir, tmp_path, ["test-identity"], lambda m: None)
    with pytest.raises(IdenticalSubject, match="test-identity"):
        runner.debias(tiny_subject, "test-identity", runner.context(tiny_subject))
    # also as the second part of a chain
    with pytest.raises(IdenticalSubject):
        runner.debias(tiny_subject, "test-second+test-identity", runner.context(tiny_subject))


def test_identical_subject_gives_an_error_not_a_row(data_dir, tmp_path, tiny_subject):
    tiny_subject.model.save_pretrained(tmp_path / "tiny-model")
    tiny_subject.tokenizer.save_pretrained(tmp_path / "tiny-model")
    runner = _runner(data_dir, tmp_path, ["test-identity", "test-second"], lambda m: None,
                     metrics=["test-mean-hidden"], out=tmp_path / "run")  # fmt: skip
    rows = runner.run()
    methods = {r["method"] for r in rows}
    assert methods == {"base", "test-second"}
    assert len(runner.errors) == 1 and "test-identity" in runner.errors[0]
    second = next(r for r in rows if r["method"] == "test-second")
    base = next(r for r in rows if r["method"] == "base")
    assert second["value"] != base["value"] and np.isfinite(second["delta"])


@pytest.mark.slow
@pytest.mark.parametrize("chain", ["cda+inlp", "dropout+sentence-debias", "gradiend-bpi+leace", "cda+rlace"])
def test_paper_combinations_refit_on_the_debiased_model(chain, synthetic, tmp_path):
    """`cda+inlp`: INLP's projection is estimated on the CDA model (not the base) and applied on top of it."""
    first, second = chain.split("+")
    if second not in METHODS:
        pytest.skip(f"{second} is not registered yet")
    runner = Runner(RunRequest(models=["synthetic"], methods=[chain], metrics=[], device="cpu", progress=False,
                               options={second: dict(METHODS.get(second).quick)}), echo=lambda m: None)  # fmt: skip
    ctx = runner.context(synthetic)
    combined = runner.debias(synthetic, chain, ctx)
    first_only = runner.debias(synthetic, first, ctx)
    second_only = runner.debias(synthetic, second, ctx)
    # the weights are the first method's, the representation transform is the second's
    assert all(torch.equal(a, b) for a, b in zip(_params(combined.model).values(), _params(first_only.model).values()))
    assert len(combined.transforms) == 1 and first_only.transforms == ()
    # and the transform was fitted on the first method's model: it differs from the one fitted on the base
    ids = torch.randint(5, len(synthetic.tokenizer), (4, 8))
    with torch.inference_mode():
        h = synthetic.model.base_model(input_ids=ids)[0]
        assert not torch.allclose(combined.transforms[0](h), second_only.transforms[0](h))
