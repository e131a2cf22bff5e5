"""The causal model kind: loading from the name forms, tokenizer quirks, next-token scoring against one sentence per
forward pass, hidden states and representation transforms, and methods that do not serve causal LMs."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoConfig

from bench.api import CAUSAL_CAPABILITIES, CLM, Debiaser, model_kind_note, served, serves_model_kind
from bench.errors import BenchError
from bench.models.causal import adds_bos, model_kind, start_id
from bench.models.causal_scoring import TokenQuery, sentence_ids, token_log_probs
from bench.models.loading import ALIASES, load_subject, parse_model_name

SMALL = {
    "gpt2": "random:gpt2,n_layer=2,n_embd=64,n_head=4,initializer_range=0.25",
    "llama": "random:llama-small,num_hidden_layers=2,hidden_size=64,intermediate_size=128,num_attention_heads=4,"
             "num_key_value_heads=2,head_dim=16,initializer_range=0.25",
}  # fmt: skip
SENTENCES = [
    "The nurse said that she would be late.",
    "He is a doctor.",
    "My neighbour, a retired engineer from the north of the country, fixed the old bicycle in an afternoon.",
    "She paints.",
    "He is a doctor.",  # a duplicate
]
# float64 models: batched (right-padded) and one-sentence passes sum in different orders; a log-probability of
# magnitude ~20 through ~10 stages of dot products of <= 128 terms differs by <= ~10 * 128 * 2^-53 * 20 ~ 3e-12.
TOL64 = 1e-10


@pytest.fixture(scope="module", params=sorted(SMALL))
def subject(request, data_dir):
    s = load_subject(SMALL[request.param], data_dir=str(data_dir))
    s.model.double()
    return s


def direct(model, ids: tuple[int, ...], first: int) -> np.ndarray:
    """log P(ids[p] | ids[:p]) for p >= first from one unpadded forward pass."""
    with torch.no_grad():
        log_probs = torch.log_softmax(model(torch.tensor([ids])).logits[0], dim=-1)
    return np.array([float(log_probs[p - 1, ids[p]]) for p in range(first, len(ids))])


def test_names_and_kinds(data_dir):
    assert parse_model_name("gpt2").target == "gpt2" and ALIASES["llama-3.2-3b"] == "meta-llama/Llama-3.2-3B"
    assert ALIASES["llama-3.2-3b-instruct"] == "meta-llama/Llama-3.2-3B-Instruct"
    assert model_kind(AutoConfig.from_pretrained(data_dir / "models" / "gpt2-tokenizer")) == "clm"
    assert model_kind(AutoConfig.from_pretrained(data_dir / "models" / "bert-base-uncased-tokenizer")) == "mlm"
    with pytest.raises(BenchError, match="built-in configurations: llama-3.2-3b, llama-small"):
        load_subject("random:no-such-config", data_dir=str(data_dir))
    with pytest.raises(BenchError, match="'gpt2:n_layer' is no option name; write random:target,key=value"):
        parse_model_name("random:gpt2:n_layer=2")


def test_tokenizer_quirks(data_dir):
    gpt2 = load_subject(SMALL["gpt2"], data_dir=str(data_dir))
    llama = load_subject(SMALL["llama"], data_dir=str(data_dir))
    for s in (gpt2, llama):
        assert s.kind == "clm" and s.capabilities == CAUSAL_CAPABILITIES and served(("mlm", CLM), s.capabilities)
        assert s.tokenizer.pad_token_id == s.tokenizer.eos_token_id == s.model.config.pad_token_id
    assert not adds_bos(gpt2.tokenizer) and start_id(gpt2.tokenizer) == 50256  # <|endoftext|>
    assert adds_bos(llama.tokenizer) and start_id(llama.tokenizer) == llama.tokenizer.convert_tokens_to_ids("<|begin_of_text|>")
    assert llama.tokenizer("a b")["input_ids"][1:] == gpt2.tokenizer("a b")["input_ids"]  # same BPE after the BOS
    assert gpt2.tokenizer.convert_ids_to_tokens(gpt2.tokenizer(" he")["input_ids"]) == ["Ġhe"]  # the space in the token


@pytest.mark.parametrize("limits", [(64, 1024), (3, 40), (1, 10_000)])
def test_batched_next_token_scores_equal_one_sentence_per_pass(subject, limits):
    start = start_id(subject.tokenizer)
    queries = [TokenQuery((start, *ids), first) for ids in sentence_ids(subject.tokenizer, SENTENCES) for first in (1, 3)]
    got = token_log_probs(subject, queries, batch_size=limits[0], batch_tokens=limits[1])
    assert len({len(q.input_ids) for q in queries}) > 2  # passes are padded: lengths differ
    for q, values in zip(queries, got):
        want = direct(subject.model, q.input_ids, q.first)
        assert values.shape == want.shape and np.max(np.abs(values - want)) < TOL64


def test_logits_at_the_last_real_token_under_right_padding(subject):
    """What the reference gets wrong: in a right-padded batch `logits[:, -1]` is a pad position for every row but
    the longest; the scorer reads each row at its own last token."""
    ids = sentence_ids(subject.tokenizer, ["He is.", "The nurse said that she would be late."])
    got = token_log_probs(subject, [TokenQuery(ids[0], len(ids[0]) - 1)], batch_size=8)[0]
    with torch.no_grad():
        padded = torch.full((2, len(ids[1])), subject.tokenizer.pad_token_id)
        mask = torch.zeros_like(padded)
        for i, x in enumerate(ids):
            padded[i, : len(x)], mask[i, : len(x)] = torch.tensor(x), 1
        logits = subject.model(input_ids=padded, attention_mask=mask).logits.log_softmax(-1)
    right = float(logits[0, len(ids[0]) - 2, ids[0][-1]])
    wrong = float(logits[0, -2, ids[0][-1]])
    assert abs(got[0] - right) < TOL64 and abs(got[0] - wrong) > 1e-3


def test_hidden_states_feed_the_head_and_take_transforms(subject):
    ids = torch.tensor([sentence_ids(subject.tokenizer, SENTENCES[:1])[0]])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        h = subject.hidden_states(ids, mask)
        logits = subject.model(input_ids=ids, attention_mask=mask).logits
        assert torch.allclose(subject.model.get_output_embeddings()(h), logits, atol=1e-10)
        halved = subject.with_transform(_Scale(0.5))
        assert torch.allclose(halved.hidden_states(ids, mask), 0.5 * h, atol=1e-12)
        rows, cols = torch.tensor([0, 0]), torch.tensor([1, 3])
        want = subject.model.get_output_embeddings()(0.5 * h[0, [1, 3]])
        assert torch.allclose(halved.mlm_logits(ids, mask, rows, cols), want, atol=1e-10)


class _Scale(torch.nn.Module):
    def __init__(self, factor):
        super().__init__()
        self.factor = factor

    def forward(self, h):
        return h * self.factor


def test_methods_declare_the_kinds_they_debias():
    class MaskedOnly(Debiaser):
        name, label = "masked-only", "Masked only"

        def fit(self, subject, ctx):
            return None

        def apply(self, subject, artifact):
            return subject

    assert serves_model_kind(MaskedOnly, "mlm") and not serves_model_kind(MaskedOnly, "clm")
    assert model_kind_note(MaskedOnly, "clm") == "Masked only is defined for masked LMs, not for a causal LM"
