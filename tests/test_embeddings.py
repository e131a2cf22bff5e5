"""Sentence embeddings: batched, length-sorted, deduplicated == one sentence per forward pass."""
from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from bench.api import Context
from bench.models.embeddings import hidden_states_batched, sentence_embeddings
from tests.tokenizers_fixture import (  # noqa: F401  (fixtures)
    RemoveDirection,
    bert_subject,
    bert_tokenizer,
    roberta_subject,
    roberta_tokenizer,
    single_thread,
)

pytestmark = pytest.mark.usefixtures("single_thread")


def reference_states(model, tokenizer, sentence: str, transform=None, **kw) -> torch.Tensor:
    """One sentence alone: its last hidden states (their mean over all positions, special tokens included, is
    the reference embedding)."""
    with torch.no_grad():
        ids = tokenizer(sentence, return_tensors="pt", **kw)["input_ids"]
        h = model.base_model(ids).last_hidden_state[0]
        return h if transform is None else transform(h)


# The equality tests run float64 copies of the models (the one-sentence reference is then exact to ~1e-13), but
# sentence_embeddings returns float32 by design: it casts each hidden state to float32 (error <= u*H, u = 2^-24,
# H = max |h|), sums the L rows in float32 (<= (L-1)*u*L*H in any order) and divides by L, so every coordinate
# is within delta = (L + 2) * u * H of the float64 mean. A wrong mean (padding or a missing token included)
# is off by O(H / L) ~ 1e-1.
def wide(subject):
    return subject.with_model(copy.deepcopy(subject.model).double())


def reference(subject, sentences, transform=None, **kw):
    """float64 reference embeddings and the float32 bound delta (max over the sentences)."""
    states = [reference_states(subject.model, subject.tokenizer, s, transform, **kw) for s in sentences]
    assert states[0].dtype == torch.float64
    delta = max((len(h) + 2) * 2.0**-24 * float(h.abs().max()) for h in states)
    return torch.stack([h.mean(dim=0) for h in states]), delta


@pytest.fixture(scope="module")
def sentences(data_dir):
    obj = json.loads((data_dir / "seat" / "sent-weat6b.jsonl").read_text())
    picked = obj["targ1"]["examples"][:6] + obj["attr1"]["examples"][:6] + obj["attr2"]["examples"][-4:]
    # varied lengths, a duplicate, and a long sentence that forces padding in its batch
    return picked + [picked[2], "x", " ".join(obj["attr2"]["examples"][:5])]


@pytest.mark.parametrize("which", ["bert_subject", "roberta_subject"])
def test_batched_embeddings_equal_one_sentence_per_forward(which, sentences, request):
    subject = wide(request.getfixturevalue(which))
    emb = sentence_embeddings(subject, sentences, batch_size=4)
    ref, delta = reference(subject, sentences)
    assert emb.dtype == torch.float32 and emb.device.type == "cpu"
    assert emb.shape == (len(sentences), subject.model.config.hidden_size)
    torch.testing.assert_close(emb.double(), ref, atol=delta, rtol=0)
    # a duplicate sentence gets the identical row; batch size does not change results (both within delta)
    assert torch.equal(emb[len(sentences) - 3], emb[2])
    torch.testing.assert_close(sentence_embeddings(subject, sentences, batch_size=64), emb, atol=2 * delta, rtol=0)


def test_distilbert_embeddings_equal_reference(bert_tokenizer, sentences):
    from transformers import DistilBertConfig, DistilBertForMaskedLM

    from bench.models.subject import Subject

    torch.manual_seed(0)
    config = DistilBertConfig(vocab_size=len(bert_tokenizer), dim=64, n_layers=2, n_heads=2, hidden_dim=128)
    subject = Subject(DistilBertForMaskedLM(config).double().eval(), bert_tokenizer, "tiny-distilbert")
    emb = sentence_embeddings(subject, sentences, batch_size=5)
    ref, delta = reference(subject, sentences)
    torch.testing.assert_close(emb.double(), ref, atol=delta, rtol=0)


def test_roberta_tokenizer_is_byte_level_with_roberta_framing(roberta_tokenizer):
    ids = roberta_tokenizer("This is John.")["input_ids"]
    assert ids[0] == roberta_tokenizer.bos_token_id and ids[-1] == roberta_tokenizer.eos_token_id
    assert any(t.startswith("Ġ") for t in roberta_tokenizer.tokenize("This is John."))


def test_transform_is_applied(bert_subject, sentences):
    plain = bert_subject
    bert_subject = wide(bert_subject)
    torch.manual_seed(1)
    proj = RemoveDirection(torch.randn(bert_subject.model.config.hidden_size, dtype=torch.float64))
    debiased = bert_subject.with_transform(proj)
    base = sentence_embeddings(bert_subject, sentences)
    emb = sentence_embeddings(debiased, sentences)
    ref, delta = reference(bert_subject, sentences, proj)
    _, delta_base = reference(bert_subject, sentences)
    torch.testing.assert_close(emb.double(), ref, atol=delta, rtol=0)
    assert (emb - base).abs().max() > 1e-3  # the transform changed the embeddings ...
    # ... exactly by the projection: emb within delta, base's delta_base error mapped by P (row sums of |P| =
    # |I - u u^T| <= 1 + sqrt(D)); the float64 product adds ~1e-15
    D = proj.P.shape[0]
    tol = delta + (1 + math.sqrt(D)) * delta_base + 1e-12
    torch.testing.assert_close(emb.double(), base.double() @ proj.P, atol=tol, rtol=0)
    # and the subject's model is left without hooks
    torch.testing.assert_close(sentence_embeddings(bert_subject, sentences), base, atol=0, rtol=0)
    assert plain.transforms == () and bert_subject.transforms == ()


def test_hidden_states_batched_covers_each_distinct_sentence_once(bert_subject, sentences):
    seen, lengths = [], []
    for idx, hidden, mask in hidden_states_batched(bert_subject, sentences, batch_size=3):
        assert hidden.shape[:2] == mask.shape and hidden.shape[0] == len(idx) <= 3
        seen += idx
        lengths += mask.sum(dim=1).tolist()
    assert sorted(sentences[i] for i in seen) == sorted(set(sentences))
    assert lengths == sorted(lengths, reverse=True)  # sorted by length, longest first


def test_progress_bar_and_truncation(bert_subject, sentences, tmp_path):
    bert_subject = wide(bert_subject)
    ctx = Context(data_dir=None, cache_dir=tmp_path, progress=False)
    full = sentence_embeddings(bert_subject, sentences, ctx=ctx)
    short = sentence_embeddings(bert_subject, sentences, max_length=4)
    ref, delta = reference(bert_subject, sentences[:1], truncation=True, max_length=4)
    torch.testing.assert_close(short[0].double(), ref[0], atol=delta, rtol=0)
    assert not torch.allclose(short[0], full[0])
    assert sentence_embeddings(bert_subject, []).shape == (0, bert_subject.model.config.hidden_size)
