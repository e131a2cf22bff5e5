"""bench.models.batching: how inputs of different lengths are grouped into forward passes."""
import numpy as np
import pytest
import torch

from bench.models.batching import DEFAULT_LIMITS, batch_limits, optional_int, token_batches


def padded_tokens(lengths, batches) -> int:
    """Token-steps the batches run, padding included."""
    return sum(len(b) * max(lengths[i] for i in b) for b in batches)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("max_rows,max_tokens", [(64, 1024), (8, 1024), (64, 128), (3, 10)])
def test_batches_cover_every_input_once_within_the_limits(seed, max_rows, max_tokens):
    lengths = sorted(np.random.default_rng(seed).integers(3, 60, size=400).tolist())
    batches = token_batches(lengths, max_rows, max_tokens)
    assert [i for b in batches for i in b] == list(range(len(lengths)))  # each once, in order
    for b in batches:
        width = max(lengths[i] for i in b)
        assert len(b) <= max_rows
        assert len(b) * width <= max_tokens or len(b) == 1
    # a batch spans several lengths only while it holds less than a quarter of the token budget
    for b in batches:
        distinct = sorted({lengths[i] for i in b})
        if len(distinct) > 1:
            before_last = [i for i in b if lengths[i] < distinct[-1]]
            assert sum(lengths[i] for i in before_last) * 4 < max_tokens


def test_frequent_lengths_run_without_padding():
    lengths = sorted([20] * 100 + [21] * 80 + [30] * 2 + [31] * 1 + [50])
    batches = token_batches(lengths, 64, 1024)
    # 20s: 51 fill the token budget, the other 49 (980 tokens) are closed at the length change
    assert [len(b) for b in batches[:2]] == [51, 49]
    waste = padded_tokens(lengths, batches) - sum(lengths)
    assert waste <= 1 * 30 + 3 * 19  # only the rare long inputs share a padded pass
    one_per_pass = [[i] for i in range(len(lengths))]
    assert padded_tokens(lengths, one_per_pass) == sum(lengths)


def test_limits_and_options():
    assert batch_limits("cpu") == DEFAULT_LIMITS["cpu"]
    assert batch_limits(torch.device("cuda", 0)) == DEFAULT_LIMITS["cuda"]
    assert batch_limits("cpu", 8, None) == (8, DEFAULT_LIMITS["cpu"][1])
    with pytest.raises(ValueError, match="batch_size and batch_tokens"):
        batch_limits("cpu", 0)
    with pytest.raises(ValueError, match="sorted"):
        token_batches([3, 2], 4, 100)
    assert token_batches([], 4, 100) == []
    assert optional_int("auto") is None and optional_int(None) is None and optional_int("12") == 12
