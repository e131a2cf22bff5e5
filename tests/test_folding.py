"""Folding projections into the LM head (bench.models.folding, used by `bench export`): the folded model's LM outputs
equal the hooked model's, in float64, for every architecture the harness scores; its hidden states are unprojected;
a causal LM is untied and survives save_pretrained / from_pretrained; what cannot be folded is refused."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import (AutoModelForCausalLM, BertConfig, BertForMaskedLM, DistilBertConfig, DistilBertForMaskedLM,
                          GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, RobertaConfig, RobertaForMaskedLM)

from bench.errors import BenchError
from bench.models.folding import composed_affine, fold_into_head
from bench.models.subject import Subject
from methods.projection import AffineErasure, SubspaceRemoval

D, V = 32, 120


def tiny(arch: str):
    torch.manual_seed(0)
    if arch == "bert":
        model = BertForMaskedLM(BertConfig(vocab_size=V, hidden_size=D, num_hidden_layers=2, num_attention_heads=2,
                                           intermediate_size=64, max_position_embeddings=64))  # fmt: skip
    elif arch == "roberta":
        model = RobertaForMaskedLM(RobertaConfig(vocab_size=V, hidden_size=D, num_hidden_layers=2, num_attention_heads=2,
                                                 intermediate_size=64, max_position_embeddings=66, pad_token_id=1))  # fmt: skip
    elif arch == "distilbert":
        model = DistilBertForMaskedLM(DistilBertConfig(vocab_size=V, dim=D, n_layers=2, n_heads=2, hidden_dim=64,
                                                       max_position_embeddings=64))  # fmt: skip
    elif arch == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(vocab_size=V, n_embd=D, n_layer=2, n_head=2, n_positions=64,
                                           initializer_range=0.3))  # fmt: skip
    else:
        model = LlamaForCausalLM(LlamaConfig(vocab_size=V, hidden_size=D, intermediate_size=64, num_hidden_layers=2,
                                             num_attention_heads=2, num_key_value_heads=1, initializer_range=0.3))  # fmt: skip
    return model.to(torch.float64).eval()


KIND = {"bert": "mlm", "roberta": "mlm", "distilbert": "mlm", "gpt2": "clm", "llama": "clm"}


def removal(k: int, seed: int) -> SubspaceRemoval:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(D, k)))
    return SubspaceRemoval(torch.tensor(q))


def erasure(seed: int, centred: bool) -> AffineErasure:
    rng = np.random.default_rng(seed)
    left, right = rng.normal(size=(D, 3)) * 0.3, rng.normal(size=(3, D)) * 0.3
    return AffineErasure(torch.tensor(left), torch.tensor(right), torch.tensor(rng.normal(size=D)) if centred else None)


def hooked_logits(model, kind, transforms, ids):
    subject = Subject(model=model, tokenizer=None, name="tiny", transforms=tuple(transforms), kind=kind)
    with torch.no_grad(), subject.hooks(model):
        return model(input_ids=ids).logits


def ids_batch():
    return torch.randint(3, V, (4, 11), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("arch", sorted(KIND))
@pytest.mark.parametrize("chain", ["removal", "erasure", "removal+erasure"])
def test_folded_head_gives_the_hooked_models_logits_in_float64(arch, chain):
    kind = KIND[arch]
    centred = kind == "mlm"  # a causal LM's output projection has no bias to carry the offset (refused below)
    transforms = {"removal": [removal(5, 1)], "erasure": [erasure(2, centred)],
                  "removal+erasure": [removal(4, 3), erasure(2, centred)]}[chain]  # fmt: skip
    model, ids = tiny(arch), ids_batch()
    expected = hooked_logits(model, kind, transforms, ids)
    unprojected = model(input_ids=ids, output_hidden_states=True).hidden_states[-1].detach().clone()
    folded = fold_into_head(tiny(arch), kind, transforms)
    with torch.no_grad():
        out = folded(input_ids=ids, output_hidden_states=True)
    torch.testing.assert_close(out.logits, expected, rtol=1e-10, atol=1e-10)
    assert not torch.allclose(model(input_ids=ids).logits, expected)  # the transform does change the outputs
    torch.testing.assert_close(out.hidden_states[-1], unprojected, rtol=0, atol=0)  # hidden states unprojected


def test_composed_affine_is_the_transforms_in_order():
    transforms = [removal(4, 3), erasure(2, True)]
    a, c = composed_affine(transforms)
    h = torch.tensor(np.random.default_rng(5).normal(size=(7, D)))
    expected = transforms[1](transforms[0](h))
    torch.testing.assert_close(h @ a + c, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_folded_causal_lm_is_untied_and_reloads_with_transformers(arch, tmp_path):
    transforms = [removal(6, 2)]
    model, ids = tiny(arch), ids_batch()
    tied = model.get_input_embeddings().weight is model.get_output_embeddings().weight
    expected = hooked_logits(model, "clm", transforms, ids)
    folded = fold_into_head(tiny(arch), "clm", transforms)
    folded.save_pretrained(tmp_path, safe_serialization=True)
    again = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float64).eval()
    with torch.no_grad():
        torch.testing.assert_close(again(input_ids=ids).logits, expected, rtol=1e-10, atol=1e-10)
    # the input side keeps the original embedding
    torch.testing.assert_close(again.get_input_embeddings().weight, model.get_input_embeddings().weight, rtol=0, atol=0)
    if tied:
        assert again.get_input_embeddings().weight is not again.get_output_embeddings().weight


def test_a_constant_offset_without_a_head_bias_is_refused():
    with pytest.raises(BenchError, match="no bias"):
        fold_into_head(tiny("gpt2"), "clm", [erasure(2, centred=True)])


def test_a_transform_that_is_not_affine_is_refused():
    with pytest.raises(BenchError, match="not an affine map"):
        fold_into_head(tiny("bert"), "mlm", [torch.nn.Tanh()])

