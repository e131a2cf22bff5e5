"""How inference inputs of different lengths are grouped into forward passes (masked scoring, embeddings).

A forward pass costs about (rows x padded width) token-steps, and its speed per token depends on how many tokens
it holds: on a 2-core CPU a bert-base forward runs ~600 tokens/s for one 25-token sentence, ~1,550 tokens/s
for 500-1,300 tokens, and slows down again above ~2,500 tokens (the activations leave the caches). A GPU wants
far more tokens per pass. So batches are bounded in tokens, not only in rows, and are made of inputs of one
length wherever there are enough of them (no padding at all); only lengths too rare to fill a useful batch
share a padded one.

Rule (inputs sorted by length, shortest first): a batch holds at most `max_rows` inputs and at most
`max_tokens` padded tokens (at least one input); when the length changes, a batch that already holds
`max_tokens / 4` tokens is closed, so only small groups are padded up to a longer length.
"""
from __future__ import annotations

from typing import Sequence

# (rows, padded tokens) per forward pass. CPU: the fastest range measured for bert-base on 2 cores
# (tests/benchmarks/test_scoring_throughput.py); CUDA: chosen, not yet measured (no GPU lent so far): passes large
# enough to keep a GPU busy whose activations (bert-large: ~0.3 GB per layer at most) stay far below its memory.
DEFAULT_LIMITS = {"cpu": (64, 1024), "cuda": (256, 16384)}


def batch_limits(device, max_rows: int | None = None, max_tokens: int | None = None) -> tuple[int, int]:
    """(max rows, max padded tokens) per forward pass on `device`; explicit values win over the defaults."""
    import torch  # here, not at the top: plugins import this module and `bench report` needs no torch

    kind = torch.device(device).type
    rows, tokens = DEFAULT_LIMITS.get(kind, DEFAULT_LIMITS["cuda"])
    rows = rows if max_rows is None else int(max_rows)
    tokens = tokens if max_tokens is None else int(max_tokens)
    if rows < 1 or tokens < 1:
        raise ValueError(f"batch_size and batch_tokens must be >= 1, got {rows} and {tokens}")
    return rows, tokens


def optional_int(value) -> int | None:
    """A batch option as given on the command line or in a suite: None/"auto" for the device default."""
    return None if value is None or value == "auto" else int(value)


def token_batches(lengths: Sequence[int], max_rows: int, max_tokens: int) -> list[list[int]]:
    """Indices into `lengths` (which must be sorted ascending), grouped into forward passes by the rule above."""
    if any(a > b for a, b in zip(lengths, lengths[1:])):
        raise ValueError("token_batches needs lengths sorted ascending")
    batches: list[list[int]] = []
    current: list[int] = []
    real = 0
    for i, length in enumerate(lengths):
        if current:
            full = len(current) + 1 > max_rows or (len(current) + 1) * length > max_tokens
            new_length = length != lengths[current[-1]]
            if full or (new_length and real * 4 >= max_tokens):
                batches.append(current)
                current, real = [], 0
        current.append(i)
        real += length
    if current:
        batches.append(current)
    return batches
