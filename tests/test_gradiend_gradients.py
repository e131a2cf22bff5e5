"""g+ and g+ - g- by one forward and two backward passes equal two separate Hugging Face passes; the
forward-mode per-example directional derivatives equal batch-size-1 gradients dotted with the direction."""
from __future__ import annotations

import pytest
import torch

from bench.models.subject import Subject
from methods.gradiend.examples import TrainBatches, collate, gender_rows
from methods.gradiend.data import Template
from methods.gradiend.gradients import GradientPair, directional_derivatives
from methods.gradiend.params import ParamSet
from tests.gradiend_helpers import NAMES, SHARED_DATA, TEMPLATES, tiny_subject
from tests.tokenizers_fixture import tiny_roberta, train_roberta_tokenizer

TRAIN = [Template(t, "M", "train") for t in TEMPLATES[:8]]


def _hf_grad(subject, params, batch, labels):
    """Reference: the full Hugging Face MLM loss (logits at every position, labels -100 elsewhere)."""
    lab = torch.full_like(batch.input_ids, -100)
    lab[batch.rows, batch.cols] = labels
    loss = subject.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=lab).loss
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params.params)])


# These tests state mathematical identities (two ways of computing the same gradient), so the models run in
# float64: in float32 the two summation orders differ by rounding that depends on the CPU's vector width and the
# thread count (3.3124 vs 3.3125 was seen at rtol 1e-5). In float64 the differences are ~1e-13 relative or
# less (measured <= 1.1e-13 on AMD EPYC AVX-512 with 1 or 3 threads and ATEN_CPU_CAPABILITY=default), so a
# tolerance of TOL = 1e-9 (relative to the largest gradient entry) holds with a margin ~1e4 on any
# machine, while any real error (a missed term, a wrong sign, a wrong label) is O(1) relative.
TOL = 1e-9


@pytest.fixture(scope="module")
def bert():
    subject = tiny_subject(hidden=32, layers=2)
    subject.model.double()
    return subject


@pytest.fixture(scope="module")
def roberta(tmp_path_factory):
    tok = train_roberta_tokenizer(SHARED_DATA, tmp_path_factory.mktemp("bpe"), vocab_size=800, max_lines=600)
    model = tiny_roberta(tok, hidden=32, layers=2).double()
    return Subject(model=model, tokenizer=tok, name="tiny-roberta", source="test:roberta")


@pytest.mark.parametrize("which", ["bert", "roberta"])
def test_one_forward_two_backward_equals_two_passes(which, request):
    subject = request.getfixturevalue(which)
    roberta_style = which == "roberta"
    params = ParamSet.select(subject.model)
    batches = TrainBatches(TRAIN, NAMES["train"], subject.tokenizer, roberta=roberta_style, batch_size=6)
    pair = GradientPair(subject, params)
    for k in (0, 1):
        batch = batches.batch(k)
        x, t = pair(batch)
        g_pos = _hf_grad(subject, params, batch, batch.labels)
        g_neg = _hf_grad(subject, params, batch, batch.counter)
        scale = g_pos.abs().max()
        assert x.dtype == torch.float64
        assert torch.allclose(x, g_pos, rtol=0, atol=TOL * scale)
        assert torch.allclose(t, g_pos - g_neg, rtol=0, atol=TOL * scale)
        assert x.data_ptr() == pair.x.data_ptr()  # the preallocated buffers, every step
    assert all(p.grad is None for p in subject.model.parameters())
    assert all(p.requires_grad for p in subject.model.parameters())


def test_gradients_are_taken_in_eval_mode(bert):
    params = ParamSet.select(bert.model)
    batch = TrainBatches(TRAIN, NAMES["train"], bert.tokenizer, roberta=False, batch_size=4).batch(0)
    pair = GradientPair(bert, params)
    bert.model.train()
    try:
        x1 = pair(batch)[0].clone()
        x2 = pair(batch)[0].clone()
        assert bert.model.training, "the model's mode is restored"
    finally:
        bert.model.eval()
    assert torch.equal(x1, x2), "no dropout while taking gradients"


@pytest.mark.parametrize("which", ["bert", "roberta"])
def test_directional_derivatives_equal_per_example_gradients(which, request):
    subject = request.getfixturevalue(which)
    params = ParamSet.select(subject.model)
    rows = gender_rows(TRAIN[:4], NAMES["test"], subject.tokenizer, roberta=which == "roberta")
    batch = collate([r.example for r in rows], subject.tokenizer.pad_token_id)
    direction = torch.randn(params.n, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    impl = subject.model.config._attn_implementation
    got = directional_derivatives(subject, params, direction, batch)
    assert subject.model.config._attn_implementation == impl
    want = []
    for r in rows:  # batch size 1, one backward per example
        one = collate([r.example], subject.tokenizer.pad_token_id)
        want.append(torch.dot(_hf_grad(subject, params, one, one.labels), direction))
    want = torch.stack(want)
    assert got.shape == (len(rows),)
    assert got.dtype == torch.float64
    assert torch.allclose(got, want, rtol=TOL, atol=TOL * want.abs().max())
