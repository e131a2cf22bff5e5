"""Sentence embeddings from a subject's last hidden states (SEAT, INLP, SentenceDebias, GLUE features).

A sentence embedding is the mean over *all* token positions of the sentence, special tokens included
(SPEC §3.2), of the last hidden state that `Subject.hidden_states` returns — so representation transforms
(INLP, SentenceDebias) are applied. For a causal LM (SPEC-beyond §9.2, §9.3) that is the base model's output
after its final norm (GPT-2 `ln_f`, Llama `norm`), the input of the LM head; Llama's BOS is one of the tokens
averaged, GPT-2 adds none. Sentences are deduplicated and grouped into forward passes by
`bench.models.batching.token_batches` (one length per pass where possible); where a pass is padded, the
attention-masked mean over a padded row equals the mean of the sentence run alone (a causal LM's batches are
right-padded with pad = eos, and its real tokens never attend to the pads after them).
"""
from __future__ import annotations

from typing import Iterator, Sequence

import torch

from bench.models.batching import batch_limits, token_batches

DEFAULT_MAX_LENGTH = 512
_Batch = tuple[list[int], torch.Tensor, torch.Tensor]  # (row indices, hidden states, attention mask)


def _max_length(subject, max_length: int | None) -> int:
    if max_length is not None:
        return int(max_length)
    limit = getattr(subject.tokenizer, "model_max_length", None)
    if not isinstance(limit, int) or limit <= 0 or limit > 100_000:  # "VERY_LARGE_INTEGER": not set
        limit = DEFAULT_MAX_LENGTH
    positions = getattr(subject.model.config, "max_position_embeddings", None)
    if getattr(subject, "kind", "mlm") == "clm" and isinstance(positions, int) and positions > 0:
        limit = min(limit, positions)  # GPT-2's tokenizer may not know its model's positions (n_positions)
    return limit


def tokenize_sorted(subject, sentences: Sequence[str], max_length: int | None = None):
    """Token ids of the distinct sentences, sorted by length (shortest first).

    Returns (unique_sentences, inverse, ids, order): `sentences[i] == unique_sentences[inverse[i]]`,
    `ids[k]` are the token ids of `unique_sentences[k]`, and `order` lists unique indices shortest first.
    """
    unique: dict[str, int] = {}
    inverse = [unique.setdefault(s, len(unique)) for s in sentences]
    texts = list(unique)
    if not texts:
        return texts, inverse, [], []
    enc = subject.tokenizer(texts, truncation=True, max_length=_max_length(subject, max_length))
    ids = enc["input_ids"]
    order = sorted(range(len(texts)), key=lambda k: len(ids[k]))
    return texts, inverse, ids, order


def _pad_batch(ids: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, x in enumerate(ids):
        input_ids[i, : len(x)] = torch.tensor(x, dtype=torch.long)
        mask[i, : len(x)] = 1
    return input_ids.to(device), mask.to(device)


def _unique_batches(subject, ids, order, batch_size, batch_tokens, ctx) -> Iterator[_Batch]:
    """(unique-sentence indices, hidden states, attention mask) per forward pass, the longest pass first."""
    pad_id = subject.tokenizer.pad_token_id
    pad_id = 0 if pad_id is None else pad_id
    device = subject.device
    max_rows, max_tokens = batch_limits(device, batch_size, batch_tokens)
    batches = token_batches([len(ids[k]) for k in order], max_rows, max_tokens)
    # longest first (a pass too large for the device's memory fails at once)
    batches = [[order[i] for i in reversed(b)] for b in reversed(batches)]
    if ctx is not None:
        batches = ctx.bar(batches, total=len(batches), desc="embedding sentences", unit="batch")
    with torch.inference_mode():
        for rows in batches:
            input_ids, mask = _pad_batch([ids[k] for k in rows], pad_id, device)
            yield rows, subject.hidden_states(input_ids, mask), mask


def hidden_states_batched(
    subject, sentences: Sequence[str], *, batch_size: int | None = None, batch_tokens: int | None = None,
    max_length: int | None = None, ctx=None,
) -> Iterator[_Batch]:  # fmt: skip
    """Yield (indices into `sentences`, last hidden states (b, L, d), attention mask (b, L)) per batch.

    Batches are length-sorted over the distinct sentences; `indices` gives, for each batch row, the first
    position in `sentences` holding that text (duplicates are computed once). Runs under
    torch.inference_mode() on the subject's device; tensors stay on that device.
    """
    texts, inverse, ids, order = tokenize_sorted(subject, sentences, max_length)
    first: dict[int, int] = {}
    for i, u in enumerate(inverse):
        first.setdefault(u, i)
    for rows, hidden, mask in _unique_batches(subject, ids, order, batch_size, batch_tokens, ctx):
        yield [first[k] for k in rows], hidden, mask


def sentence_embeddings(
    subject, sentences: Sequence[str], *, batch_size: int | None = None, batch_tokens: int | None = None,
    max_length: int | None = None, ctx=None,
) -> torch.Tensor:  # fmt: skip
    """Mean-pooled last hidden states, shape (len(sentences), d), float32 on the CPU.

    Row i is the mean over every token position of sentences[i] (special tokens included) of the last
    hidden state with the subject's transforms applied; padding never enters the mean.
    """
    texts, inverse, ids, order = tokenize_sorted(subject, list(sentences), max_length)
    config = subject.model.config
    unique_emb = torch.zeros((len(texts), getattr(config, "hidden_size", None) or config.dim), dtype=torch.float32)
    for rows, hidden, mask in _unique_batches(subject, ids, order, batch_size, batch_tokens, ctx):
        m = mask.unsqueeze(-1).to(torch.float32)
        pooled = (hidden.float() * m).sum(dim=1) / m.sum(dim=1)
        unique_emb[torch.tensor(rows, dtype=torch.long)] = pooled.cpu()
    return unique_emb[torch.tensor(inverse, dtype=torch.long)]
