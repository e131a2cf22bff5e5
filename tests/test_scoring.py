"""bench.models.scoring.masked_log_probs against a direct one-input-per-forward computation."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from bench.models.scoring import MaskedQuery, masked_log_probs
from bench.models.subject import encoder_module, last_layer_tail
from tiny_mlms import SUBJECTS, bert_subject, single_thread  # noqa: F401 (autouse)

SENTENCES = [
    "the nurse said that she would be late .",
    "he is a doctor .",
    "my neighbour, a retired engineer from the north of the country, fixed the old bicycle in an afternoon .",
    "she paints .",
    "the engineer and the nurse walked home together after the long night shift .",
]


def direct_log_prob(model, q: MaskedQuery) -> float:
    with torch.no_grad():
        logits = model(torch.tensor([q.input_ids])).logits[0, q.position]
    return float(torch.log_softmax(logits, dim=-1)[q.target])


def make_queries(tokenizer, seed: int = 0) -> list[MaskedQuery]:
    """Queries on inputs of different lengths: one or several masks per input, several positions and targets
    per input, and exact duplicates."""
    rng = np.random.default_rng(seed)
    queries = []
    for text in SENTENCES:
        ids = tokenizer(text)["input_ids"]
        inner = list(range(1, len(ids) - 1))
        for n_masks in (1, 2):
            masked_at = sorted(rng.choice(inner, size=n_masks, replace=False).tolist())
            masked = list(ids)
            for p in masked_at:
                masked[p] = tokenizer.mask_token_id
            for p in masked_at:
                queries.append(MaskedQuery(tuple(masked), p, ids[p]))
                queries.append(MaskedQuery(tuple(masked), p, int(rng.integers(5, len(tokenizer)))))
        queries.append(queries[-1])  # a duplicate
    return queries


@pytest.fixture(scope="module", params=sorted(SUBJECTS))
def subject(request, data_dir):
    return SUBJECTS[request.param](str(data_dir))


# The tiny models are float64 (tests/tiny_mlms.py): batched and one-input-per-forward passes sum in different
# orders, a float64 log-probability of magnitude ~15 computed through ~20 stages of dot products of <= 128
# terms is off by <= ~20 * 128 * 2^-53 * 15 ~ 5e-12 either way, so TOL64 = 1e-10 (absolute) holds on any CPU and
# thread count, while a wrong position, mask or target is off by >= 1e-2.
TOL64 = 1e-10
# The float32 path (the production default) is compared with the float64 result: float32 log-probabilities
# carry <= ~20 * 128 * 2^-24 * 15 ~ 2e-3 worst case (measured ~5e-6); TOL32 = 5e-3 absolute, still far below
# the O(1) change from a wrong position or target.
TOL32 = 5e-3


def test_equals_direct_forward(subject):
    queries = make_queries(subject.tokenizer)
    expected = np.array([direct_log_prob(subject.model, q) for q in queries])
    for batch_size in (1, 3, 64):
        got = masked_log_probs(subject, queries, batch_size=batch_size)
        np.testing.assert_allclose(got, expected, rtol=0, atol=TOL64)
    assert np.ptp(expected) > 5  # the test model's distributions are far from uniform


def test_float32_model_scores_close_to_float64(subject):
    narrow = subject.with_model(copy.deepcopy(subject.model).float())
    queries = make_queries(subject.tokenizer)
    expected = np.array([direct_log_prob(subject.model, q) for q in queries])
    got = masked_log_probs(narrow, queries, batch_size=3)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOL32)


def test_equals_direct_forward_in_float64(subject):
    wide = subject.with_model(copy.deepcopy(subject.model).double())
    queries = make_queries(subject.tokenizer, seed=2)
    expected = np.array([direct_log_prob(wide.model, q) for q in queries])
    lengths = sorted(len(ids) for ids in {q.input_ids for q in queries})
    assert len(set(lengths)) > 1 and len(lengths) > len(set(lengths))
    # padded passes of mixed lengths, passes of one length (no padding), and one input per pass
    for batch_size, batch_tokens in ((4, None), (64, None), (64, 2 * lengths[-1]), (1, None)):
        got = masked_log_probs(wide, queries, batch_size=batch_size, batch_tokens=batch_tokens)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


def test_identical_inputs_run_once(data_dir):
    subject = bert_subject(str(data_dir))
    queries = make_queries(subject.tokenizer)
    seen = []

    def count_rows(_module, args, kwargs):
        seen.append((args[0] if args else kwargs["hidden_states"]).shape[0])

    handle = encoder_module(subject.model).register_forward_pre_hook(count_rows, with_kwargs=True)
    try:
        masked_log_probs(subject, queries, batch_size=4)
    finally:
        handle.remove()
    distinct = len({q.input_ids for q in queries})
    assert distinct < len(queries)
    assert sum(seen) == distinct
    assert max(seen) <= 4


def test_query_order_does_not_matter(data_dir):
    subject = bert_subject(str(data_dir))
    queries = make_queries(subject.tokenizer)
    perm = np.random.default_rng(1).permutation(len(queries))
    a = masked_log_probs(subject, queries)
    b = masked_log_probs(subject, [queries[i] for i in perm])
    np.testing.assert_allclose(b, a[perm], rtol=0, atol=TOL64)


class Shift(torch.nn.Module):
    def __init__(self, d: int, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("v", torch.randn(d, generator=g))

    def forward(self, h):
        return h + self.v


def test_representation_transform_is_respected(data_dir):
    subject = bert_subject(str(data_dir))
    shifted = subject.with_transform(Shift(subject.model.config.hidden_size))
    queries = make_queries(subject.tokenizer)
    plain = masked_log_probs(subject, queries)
    got = masked_log_probs(shifted, queries)
    with shifted.hooks():
        expected = np.array([direct_log_prob(subject.model, q) for q in queries])
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOL64)
    assert np.abs(got - plain).max() > 0.1


def test_output_transform_is_respected(data_dir):
    subject = bert_subject(str(data_dir))
    bonus = torch.zeros(subject.model.config.vocab_size)
    bonus[1000:1100] = 3.0

    def transform(subj, input_ids, attention_mask, rows, cols, logits):
        return logits + bonus.to(logits.device)

    debiased = subject.with_logits_transform(transform)
    queries = make_queries(subject.tokenizer)
    got = masked_log_probs(debiased, queries)
    expected = []
    for q in queries:
        with torch.no_grad():
            logits = subject.model(torch.tensor([q.input_ids])).logits[0, q.position] + bonus
        expected.append(float(torch.log_softmax(logits, -1)[q.target]))
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOL64)


def test_eval_mode_while_scoring_and_restored(data_dir):
    subject = bert_subject(str(data_dir))
    queries = make_queries(subject.tokenizer)
    expected = masked_log_probs(subject, queries)
    subject.model.train()  # dropout would make scores random
    try:
        got = masked_log_probs(subject, queries)
        assert subject.model.training
    finally:
        subject.model.eval()
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOL64)


def test_progress_bar_and_edge_cases(data_dir):
    subject = bert_subject(str(data_dir))
    assert masked_log_probs(subject, []).shape == (0,)
    updates = []

    class Bar:
        def __init__(self, total, **kwargs):
            self.total = total

        def update(self, n):
            updates.append(n)

        def close(self):
            updates.append("closed")

    queries = make_queries(subject.tokenizer)
    masked_log_probs(subject, queries, batch_size=2, bar=Bar)
    assert updates[-1] == "closed" and len(updates) - 1 == -(-len({q.input_ids for q in queries}) // 2)
    with pytest.raises(IndexError, match="position"):
        masked_log_probs(subject, [MaskedQuery((101, 103, 102), 5, 7)])
    with pytest.raises(IndexError, match="vocabulary"):
        masked_log_probs(subject, [MaskedQuery((101, 103, 102), 1, 10**6)])
    with pytest.raises(ValueError, match="batch_size"):
        masked_log_probs(subject, queries, batch_size=0)


def test_last_layer_tail_runs_only_at_the_queried_positions(subject):
    """The MLM path computes the last layer's position-wise tail at the queried rows only: found for every
    family, and (in float64) the same hidden states as the full forward pass gathered afterwards."""
    assert last_layer_tail(subject.model) is not None
    wide = subject.with_model(copy.deepcopy(subject.model).double())
    enc = wide.tokenizer(SENTENCES[:3], padding=True, return_tensors="pt")
    rows, cols = torch.tensor([0, 2, 2, 1]), torch.tensor([1, 3, 1, 2])
    tail_rows = []
    handle = last_layer_tail(wide.model).register_forward_hook(lambda m, args, out: tail_rows.append(out.shape))
    try:
        with torch.no_grad():
            full = wide.hidden_states(enc["input_ids"], enc["attention_mask"])
            picked = wide.hidden_states(enc["input_ids"], enc["attention_mask"], positions=(rows, cols))
    finally:
        handle.remove()
    assert tail_rows == [full.shape, (len(rows), full.shape[-1])]
    torch.testing.assert_close(picked, full[rows, cols], rtol=0, atol=1e-12)
