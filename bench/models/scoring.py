"""Batched masked-token log-probabilities, the scoring primitive of the MLM metrics (StereoSet, CrowS-Pairs).

A `MaskedQuery` asks for log P(target | input) at one position of one tokenized input (the position normally
holds the mask token). `masked_log_probs` answers many queries at once:

- identical inputs are run once (StereoSet's first masked input is the same for its three candidates), and all
  queried positions of one input go through the MLM head together;
- inputs are grouped into forward passes by `bench.models.batching.token_batches`: bounded in rows and in tokens,
  one length per pass where possible, padded (attention mask) only where lengths are too rare to fill one;
- everything runs under `torch.inference_mode()` on the subject's device, in eval mode;
- the logits come from `Subject.mlm_logits`, so representation transforms (INLP, SentenceDebias) and output
  transforms (SelfDebias) are respected; the log-probabilities are `log_softmax` of what it returns.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from bench.models.batching import batch_limits, token_batches


@dataclass(frozen=True)
class MaskedQuery:
    input_ids: tuple[int, ...]  # with special tokens, unpadded
    position: int  # index into input_ids
    target: int  # vocabulary id whose log-probability is wanted


def encode(tokenizer, texts: Sequence[str]) -> list[tuple[int, ...]]:
    """Token ids (with special tokens) of each text, one fast-tokenizer call for all of them."""
    if not texts:
        return []
    encoded = tokenizer(list(texts), add_special_tokens=True, return_attention_mask=False, return_token_type_ids=False)
    return [tuple(ids) for ids in encoded["input_ids"]]


def max_input_length(subject) -> int:
    """Longest input the subject's position embeddings accept (RoBERTa reserves padding_idx + 1 positions)."""
    config = subject.model.config
    limit = getattr(config, "max_position_embeddings", None) or 512
    if subject.is_roberta_style:
        limit -= (getattr(config, "pad_token_id", 1) or 0) + 1
    return int(limit)


@contextlib.contextmanager
def eval_mode(model):
    """Eval mode (no dropout) while scoring; the model's previous mode is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _group(queries: Sequence[MaskedQuery]) -> dict[tuple[int, ...], dict[int, list[tuple[int, int]]]]:
    """input ids -> position -> [(target, query index)]: every distinct input appears once."""
    grouped: dict[tuple[int, ...], dict[int, list[tuple[int, int]]]] = {}
    for qi, q in enumerate(queries):
        if not 0 <= q.position < len(q.input_ids):
            raise IndexError(f"query {qi}: position {q.position} outside an input of length {len(q.input_ids)}")
        grouped.setdefault(tuple(q.input_ids), {}).setdefault(q.position, []).append((q.target, qi))
    return grouped


def _vocab_size(subject) -> int | None:
    head = subject.model.get_output_embeddings()
    return None if head is None else int(head.weight.shape[0])


@dataclass
class _Pass:
    """One forward pass: padded inputs, the (row, position) pairs the head runs at, and per query its head row,
    target and index in the caller's list."""

    ids: np.ndarray
    attention: np.ndarray
    rows: list = field(default_factory=list)
    cols: list = field(default_factory=list)
    head_row: list = field(default_factory=list)
    target: list = field(default_factory=list)
    query_index: list = field(default_factory=list)


def _pack(batch: list[tuple[int, ...]], grouped: dict, pad_id: int) -> _Pass:
    width = max(len(key) for key in batch)
    packed = _Pass(np.full((len(batch), width), pad_id, dtype=np.int64), np.zeros((len(batch), width), dtype=np.int64))
    for b, key in enumerate(batch):
        packed.ids[b, : len(key)] = key
        packed.attention[b, : len(key)] = 1
        for position, wanted in grouped[key].items():
            for t, qi in wanted:
                packed.head_row.append(len(packed.rows))
                packed.target.append(t)
                packed.query_index.append(qi)
            packed.rows.append(b)
            packed.cols.append(position)
    return packed


def _log_probs(subject, packed: _Pass, vocab: int | None):
    """log P(target) of every query of one pass (a tensor on the subject's device)."""
    import torch

    device = subject.device
    if vocab is not None and max(packed.target) >= vocab:
        raise IndexError(f"target id {max(packed.target)} outside the vocabulary of size {vocab}")
    logits = subject.mlm_logits(
        torch.from_numpy(packed.ids).to(device),
        torch.from_numpy(packed.attention).to(device),
        torch.tensor(packed.rows, device=device),
        torch.tensor(packed.cols, device=device),
    )
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    log_probs = torch.log_softmax(logits, dim=-1)
    return log_probs[torch.tensor(packed.head_row, device=device), torch.tensor(packed.target, device=device)]


def masked_log_probs(
    subject,
    queries: Sequence[MaskedQuery],
    *,
    batch_size: int | None = None,
    batch_tokens: int | None = None,
    bar: Callable | None = None,
    desc: str = "masked LM",
) -> np.ndarray:
    """log P(query.target | query.input_ids) at query.position for every query, in query order (float64
    array holding the float32 values the model computes).

    `batch_size` bounds the distinct inputs and `batch_tokens` the padded tokens per forward pass (None: the
    device's defaults, `bench.models.batching.DEFAULT_LIMITS`); `bar` is a tqdm-like factory such as `ctx.bar`.
    """
    import torch  # here: metric plugins import this module, and `bench report` (which reads their columns) needs no torch

    max_rows, max_tokens = batch_limits(subject.device, batch_size, batch_tokens)
    out = np.full(len(queries), np.nan)
    if not queries:
        return out
    grouped = _group(queries)
    inputs = sorted(grouped, key=len)
    batches = [[inputs[i] for i in b] for b in token_batches([len(x) for x in inputs], max_rows, max_tokens)]
    batches.reverse()  # longest first: a pass too large for the device's memory fails at once
    vocab = _vocab_size(subject)
    pad_id = subject.tokenizer.pad_token_id if subject.tokenizer.pad_token_id is not None else 0
    progress = bar(total=len(batches), desc=desc, unit="batch") if bar is not None else None

    with torch.inference_mode(), eval_mode(subject.model):
        for batch in batches:
            packed = _pack(batch, grouped, pad_id)
            out[np.asarray(packed.query_index)] = _log_probs(subject, packed, vocab).double().cpu().numpy()
            if progress is not None:
                progress.update(1)
    if progress is not None:
        progress.close()
    return out
