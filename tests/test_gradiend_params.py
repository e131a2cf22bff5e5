"""GRADIEND's parameter set (SPEC §1.1, §0.2): which tensors, flat layout, in-place writes."""
from __future__ import annotations

import pytest
import torch

from methods.gradiend.params import ParamSet


def _tiny(kind: str):
    from transformers import (BertConfig, BertForMaskedLM, DistilBertConfig, DistilBertForMaskedLM, RobertaConfig,
                              RobertaForMaskedLM)  # fmt: skip

    torch.manual_seed(0)
    if kind == "bert":
        return BertForMaskedLM(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32))
    if kind == "distilbert":
        return DistilBertForMaskedLM(DistilBertConfig(vocab_size=50, dim=16, n_layers=1, n_heads=2, hidden_dim=32))
    return RobertaForMaskedLM(RobertaConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                            intermediate_size=32))  # fmt: skip


@pytest.mark.parametrize("kind,head", [("bert", "cls."), ("distilbert", "vocab_"), ("roberta", "lm_head")])
def test_selection_is_the_core_model_without_head(kind, head):
    model = _tiny(kind)
    ps = ParamSet.select(model)
    every = dict(model.named_parameters())
    expected = [n for n in every if not n.startswith(head) and "pooler" not in n]
    assert ps.names == expected
    assert any("word_embeddings" in n for n in ps.names)
    assert ps.n == sum(every[n].numel() for n in expected)
    assert ps.offsets == [sum(every[m].numel() for m in expected[:i]) for i in range(len(expected))]


def test_bert_counts_match_spec_table():
    """bert-base-cased: n = 107,719,680 under the G2 rule (SPEC §1.1), counted on the meta device."""
    from transformers import BertConfig, BertForMaskedLM

    config = BertConfig(vocab_size=28996)  # bert-base-cased
    with torch.device("meta"):
        model = BertForMaskedLM(config)
    assert ParamSet.select(model).n == 107_719_680


def test_flatten_write_and_views_round_trip():
    model = _tiny("bert")
    ps = ParamSet.select(model)
    flat = ps.flatten()
    assert torch.equal(flat, torch.cat([p.detach().reshape(-1) for p in ps.params]))
    for v, p in zip(ps.views(flat), ps.params):
        assert torch.equal(v, p.detach())
    delta = torch.randn(ps.n)
    ps.write_sum(flat, delta)
    assert torch.equal(ps.flatten(), flat + delta)
    ps.write(flat)
    assert torch.equal(ps.flatten(), flat)
    # the tied output projection follows the word embedding
    assert torch.equal(model.cls.predictions.decoder.weight, ps.views(flat)[0])


def test_grads_into_restores_flags_and_grads():
    model = _tiny("bert")
    model.cls.predictions.bias.requires_grad_(False)
    ps = ParamSet.select(model)
    head = model.cls.predictions.transform.dense.weight
    before = {n: p.requires_grad for n, p in model.named_parameters()}
    with ps.grads_into(model):
        assert not head.requires_grad and all(p.requires_grad for p in ps.params)
        buf = torch.zeros(ps.n)
        ps.point_grads(buf)
        assert ps.params[0].grad.data_ptr() == buf.data_ptr()
    assert {n: p.requires_grad for n, p in model.named_parameters()} == before
    assert all(p.grad is None for p in model.parameters())


def test_signature_mismatch_is_refused():
    from bench.errors import BenchError

    ps = ParamSet.select(_tiny("bert"))
    sig = ps.signature()
    ps.check_signature(sig)
    with pytest.raises(BenchError, match="other model parameters"):
        ps.check_signature(sig[:-1])
    with pytest.raises(BenchError):
        ParamSet.select(_tiny("bert"), exclude=("",))
