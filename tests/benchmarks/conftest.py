"""Every benchmark has two sizes. With `--benchmark-enable` the full one: full-size models and data sets, timed,
its figures printed and its ratio targets asserted. Without it (the plain test command, CI) its tiny mode: a small
random model and a few items through the same code, every exactness check kept and no speed asserted, so that a
benchmark that breaks fails the suite instead of rotting until someone runs it (issue 22, item 4)."""
from __future__ import annotations

import pytest

TINY_BERT = "random:bert-base-uncased,num_hidden_layers=2,hidden_size=64,num_attention_heads=2,intermediate_size=128"
TINY_GPT2 = "random:gpt2,n_layer=2,n_embd=64,n_head=4"


@pytest.fixture(scope="session")
def full(request) -> bool:
    """True with --benchmark-enable (the full size), False in the tiny mode."""
    return bool(request.config.getoption("benchmark_enable", False))
