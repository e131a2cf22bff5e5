"""Batched next-token log-probabilities, the scoring primitive of causal LMs (StereoSet, CrowS-Pairs).

A `TokenQuery` asks for log P(ids[p] | ids[:p]) for every position p >= `first` of one token sequence (the
sequence holds its own prefix: a start token, a context). `token_log_probs` answers many queries at once:

- identical sequences are run once, and all their scored positions go through the LM head together;
- sequences are grouped into forward passes by `bench.models.batching.token_batches` (bounded in rows and in
  tokens, one length per pass where possible), as the masked scorer does;
- passes are right-padded with an attention mask and default position ids: in a causal LM a real position never
  attends to a later one, so the logits read at real positions are those of the sequence run alone. (Reading
  `logits[:, -1]` of a right-padded batch, as the reference code does, reads a pad position: SPEC-beyond §9.1.)
- the logits come from `Subject.mlm_logits` (the LM head at the asked positions only, transforms applied), in
  chunks that bound the (positions x vocabulary) logits a pass holds at once;
- everything runs under `torch.inference_mode()` in eval mode on the subject's device.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from bench.models.batching import batch_limits, token_batches
from bench.models.scoring import eval_mode

LOGITS_PER_CHUNK = 1 << 26  # float32 logits held at once per pass (256 MB), e.g. 1,335 positions of GPT-2


@dataclass(frozen=True)
class TokenQuery:
    input_ids: tuple[int, ...]  # the whole sequence, unpadded
    first: int = 1  # first scored position (>= 1: position 0 has nothing to be predicted from)


def _group(queries: Sequence[TokenQuery]) -> dict[tuple[int, ...], int]:
    """distinct sequence -> the smallest first position any query asks for."""
    grouped: dict[tuple[int, ...], int] = {}
    for qi, q in enumerate(queries):
        if not 1 <= q.first <= len(q.input_ids):
            raise IndexError(f"query {qi}: first scored position {q.first} outside 1..{len(q.input_ids)}")
        key = tuple(q.input_ids)
        grouped[key] = min(grouped.get(key, q.first), q.first)
    return grouped


def _pass(subject, batch: list[tuple[int, ...]], grouped: dict, pad_id: int, out: dict) -> None:
    """One forward pass: per sequence of `batch`, its log-probabilities from its first asked position on."""
    import torch

    width = max(len(seq) for seq in batch)
    ids = np.full((len(batch), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(batch), width), dtype=np.int64)
    rows, cols, targets, spans = [], [], [], []
    for b, seq in enumerate(batch):
        ids[b, : len(seq)] = seq
        mask[b, : len(seq)] = 1
        first = grouped[seq]
        spans.append((seq, len(rows), len(seq) - first))
        rows += [b] * (len(seq) - first)
        cols += range(first - 1, len(seq) - 1)  # the logits at p - 1 predict the token at p
        targets += seq[first:]
    device = subject.device
    input_ids, attention = torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device)
    vocab = subject.model.get_output_embeddings().weight.shape[0]
    if max(targets, default=0) >= vocab:
        raise IndexError(f"token id {max(targets)} outside the vocabulary of size {vocab}")
    chunk = max(1, LOGITS_PER_CHUNK // vocab)
    values = np.empty(len(rows))
    hidden_rows, hidden_cols = torch.tensor(rows, device=device), torch.tensor(cols, device=device)
    for start in range(0, len(rows), chunk):
        sl = slice(start, start + chunk)
        logits = subject.mlm_logits(input_ids, attention, hidden_rows[sl], hidden_cols[sl])
        logits = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
        picked = torch.log_softmax(logits, dim=-1).gather(1, torch.tensor(targets[sl], device=device)[:, None])
        values[sl] = picked[:, 0].double().cpu().numpy()
    for seq, offset, count in spans:
        out[seq] = values[offset : offset + count]


def token_log_probs(
    subject,
    queries: Sequence[TokenQuery],
    *,
    batch_size: int | None = None,
    batch_tokens: int | None = None,
    bar: Callable | None = None,
    desc: str = "causal LM",
) -> list[np.ndarray]:
    """Per query, the float64 array of log P(ids[p] | ids[:p]) for p = first .. len(ids) - 1 (the float32 values
    the model computes); limits and `bar` as in `bench.models.scoring.masked_log_probs`.

    Note: with a representation transform, each pass runs the base model on whole sequences; the LM head runs
    only at the scored positions."""
    import torch

    if not queries:
        return []
    max_rows, max_tokens = batch_limits(subject.device, batch_size, batch_tokens)
    grouped = _group(queries)
    inputs = sorted(grouped, key=len)
    batches = [[inputs[i] for i in b] for b in token_batches([len(x) for x in inputs], max_rows, max_tokens)]
    batches.reverse()  # longest first: a pass too large for the device's memory fails at once
    pad_id = subject.tokenizer.pad_token_id if subject.tokenizer.pad_token_id is not None else 0
    progress = bar(total=len(batches), desc=desc, unit="batch") if bar is not None else None
    found: dict[tuple[int, ...], np.ndarray] = {}
    with torch.inference_mode(), eval_mode(subject.model):
        for batch in batches:
            _pass(subject, batch, grouped, pad_id, found)
            if progress is not None:
                progress.update(1)
    if progress is not None:
        progress.close()
    return [found[tuple(q.input_ids)][q.first - grouped[tuple(q.input_ids)] :] for q in queries]


def sentence_ids(tokenizer, texts: Sequence[str]) -> list[tuple[int, ...]]:
    """Token ids of each text without special tokens (the scorer adds the start token where it wants one)."""
    if not texts:
        return []
    encoded = tokenizer(list(texts), add_special_tokens=False, return_attention_mask=False, return_token_type_ids=False)
    return [tuple(ids) for ids in encoded["input_ids"]]
