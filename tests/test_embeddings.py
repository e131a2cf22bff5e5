"""Sentence embeddings: batched, length-sorted, deduplicated == one sentence per forward pass."""
from __future__ import annotations

import json

import pytest
import torch

from bench.api import Context
from bench.embeddings import hidden_states_batched, sentence_embeddings
from tests.tokenizers_fixture import (  # noqa: F401  (fixtures)
    RemoveDirection,
    bert_subject,
    bert_tokenizer,
    roberta_subject,
    roberta_tokenizer,
    single_thread,
)

pytestmark = pytest.mark.usefixtures("single_thread")


def reference_embedding(model, tokenizer, sentence: str, transform=None) -> torch.Tensor:
    """One sentence alone: mean over all positions (special tokens included) of the last hidden state."""
    with torch.no_grad():
        ids = tokenizer(sentence, return_tensors="pt")["input_ids"]
        h = model.base_model(ids).last_hidden_state[0]
        if transform is not None:
            h = transform(h)
        return h.mean(dim=0)


@pytest.fixture(scope="module")
def sentences(data_dir):
    obj = json.loads((data_dir / "seat" / "sent-weat6b.jsonl").read_text())
    picked = obj["targ1"]["examples"][:6] + obj["attr1"]["examples"][:6] + obj["attr2"]["examples"][-4:]
    # varied lengths, a duplicate, and a long sentence that forces padding in its batch
    return picked + [picked[2], "x", " ".join(obj["attr2"]["examples"][:5])]


@pytest.mark.parametrize("which", ["bert_subject", "roberta_subject"])
def test_batched_embeddings_equal_one_sentence_per_forward(which, sentences, request):
    subject = request.getfixturevalue(which)
    emb = sentence_embeddings(subject, sentences, batch_size=4)
    ref = torch.stack([reference_embedding(subject.model, subject.tokenizer, s) for s in sentences])
    assert emb.dtype == torch.float32 and emb.device.type == "cpu"
    assert emb.shape == (len(sentences), subject.model.config.hidden_size)
    torch.testing.assert_close(emb, ref, atol=1e-6, rtol=1e-5)
    # a duplicate sentence gets the identical row; batch size does not change results
    assert torch.equal(emb[len(sentences) - 3], emb[2])
    torch.testing.assert_close(sentence_embeddings(subject, sentences, batch_size=64), emb, atol=1e-6, rtol=1e-5)


def test_distilbert_embeddings_equal_reference(bert_tokenizer, sentences):
    from transformers import DistilBertConfig, DistilBertForMaskedLM

    from bench.subject import Subject

    torch.manual_seed(0)
    config = DistilBertConfig(vocab_size=len(bert_tokenizer), dim=64, n_layers=2, n_heads=2, hidden_dim=128)
    subject = Subject(DistilBertForMaskedLM(config).eval(), bert_tokenizer, "tiny-distilbert")
    emb = sentence_embeddings(subject, sentences, batch_size=5)
    ref = torch.stack([reference_embedding(subject.model, bert_tokenizer, s) for s in sentences])
    torch.testing.assert_close(emb, ref, atol=1e-6, rtol=1e-5)


def test_roberta_tokenizer_is_byte_level_with_roberta_framing(roberta_tokenizer):
    ids = roberta_tokenizer("This is John.")["input_ids"]
    assert ids[0] == roberta_tokenizer.bos_token_id and ids[-1] == roberta_tokenizer.eos_token_id
    assert any(t.startswith("Ġ") for t in roberta_tokenizer.tokenize("This is John."))


def test_transform_is_applied(bert_subject, sentences):
    torch.manual_seed(1)
    proj = RemoveDirection(torch.randn(bert_subject.model.config.hidden_size))
    debiased = bert_subject.with_transform(proj)
    base = sentence_embeddings(bert_subject, sentences)
    emb = sentence_embeddings(debiased, sentences)
    ref = torch.stack([reference_embedding(bert_subject.model, bert_subject.tokenizer, s, proj) for s in sentences])
    torch.testing.assert_close(emb, ref, atol=1e-6, rtol=1e-5)
    assert (emb - base).abs().max() > 1e-3  # the transform changed the embeddings ...
    torch.testing.assert_close(emb, base @ proj.P, atol=1e-5, rtol=1e-5)  # ... exactly by the projection
    # and the subject's model is left without hooks
    torch.testing.assert_close(sentence_embeddings(bert_subject, sentences), base)


def test_hidden_states_batched_covers_each_distinct_sentence_once(bert_subject, sentences):
    seen, lengths = [], []
    for idx, hidden, mask in hidden_states_batched(bert_subject, sentences, batch_size=3):
        assert hidden.shape[:2] == mask.shape and hidden.shape[0] == len(idx) <= 3
        seen += idx
        lengths += mask.sum(dim=1).tolist()
    assert sorted(sentences[i] for i in seen) == sorted(set(sentences))
    assert lengths == sorted(lengths, reverse=True)  # sorted by length, longest first


def test_progress_bar_and_truncation(bert_subject, sentences, tmp_path):
    ctx = Context(data_dir=None, cache_dir=tmp_path, progress=False)
    full = sentence_embeddings(bert_subject, sentences, ctx=ctx)
    short = sentence_embeddings(bert_subject, sentences, max_length=4)
    ids = bert_subject.tokenizer(sentences[0], truncation=True, max_length=4, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        ref = bert_subject.model.base_model(ids).last_hidden_state[0].mean(0)
    torch.testing.assert_close(short[0], ref, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(short[0], full[0])
    assert sentence_embeddings(bert_subject, []).shape == (0, bert_subject.model.config.hidden_size)
