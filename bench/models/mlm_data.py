"""Language-model training data: token sequences, their order and their masking (for bench.models.mlm_training).

Two ways to cut a corpus into sequences, as bias-bench's `run_mlm.py` does:
- `group_into_blocks`: every line tokenised with its special tokens ([CLS] line [SEP]), all lines concatenated and
  cut into blocks of `max_seq_length` tokens, remainder dropped (run_mlm's `group_texts`); a corpus shorter than
  one block becomes a single shorter block;
- `encode_line_by_line`: run_mlm's `--line_by_line`, one sequence per line (truncated), padded per micro-batch.

Causal LMs (`kind="clm"`, run_clm's recipe) cut the same two ways, but every line is written as a causal LM sees a
document: its tokens after the start token (`bench.models.causal.start_id`: Llama's BOS, GPT-2's
`<|endoftext|>`), then EOS where that is another token (Llama, the synthetic world's [SEP]), so concatenated
lines are separated and the first token of a line is learnt after the start token, the context StereoSet and
CrowS score a sentence's first token in. run_clm concatenates GPT-2's lines with no separator at all, gluing the
last word of one line to the first of the next; that is not reproduced.

`CollatorBatches` is the batch source of the run_mlm recipe (CDA, Dropout): a fresh seeded permutation of the
sequences per epoch, read as one endless stream (`block_order`, resumable by position), masked by
`transformers.DataCollatorForLanguageModeling` (80/10/10, special tokens and padding never masked) with its own
seeded generator. `CausalBatches` is run_clm's: the same order, labels = the input ids (the causal LM shifts them
itself), -100 at padding. Any object with the same `micro_batches`, `get_state` and `set_state` can feed the loop
(the synthetic world's length-bucketed batches with boosted masking are one: bench.synthetic.train).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch

from bench.errors import BenchError


@dataclass
class TokenData:
    """Training sequences: `ids` (n, L) right-padded with `pad_id`, true lengths in `lengths`."""

    ids: torch.Tensor
    lengths: torch.Tensor
    pad_id: int = 0

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def batch(self, idx) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids, attention_mask) of the sequences `idx`, cut to the longest of them."""
        lengths = self.lengths[idx]
        width = int(lengths.max())
        attention = (torch.arange(width)[None, :] < lengths[:, None]).long()
        return self.ids[idx, :width], attention


def _encode(tokenizer, lines: Sequence[str], batch: int, kind: str = "mlm",
            max_length: int | None = None) -> list[list[int]]:  # fmt: skip
    """Token ids per line, truncated to `max_length` if given: with the tokenizer's special tokens (masked LMs), or
    between the start token and EOS (causal LMs; the module docstring)."""
    if not lines:
        raise BenchError("MLM training: the training corpus is empty")
    start = end = None
    if kind == "clm":
        from bench.models.causal import start_id

        start = [start_id(tokenizer)]
        end = [tokenizer.eos_token_id] if tokenizer.eos_token_id not in (None, start[0]) else []
    truncate = dict(truncation=True, max_length=max_length) if max_length else dict(truncation=False)
    out: list[list[int]] = []
    for i in range(0, len(lines), batch):
        chunk = list(lines[i : i + batch])
        if start is None:
            out.extend(tokenizer(chunk, add_special_tokens=True, verbose=False, **truncate)["input_ids"])
        else:
            ids = tokenizer(chunk, add_special_tokens=False, verbose=False)["input_ids"]
            out.extend((start + seq + end)[:max_length] for seq in ids)
    return out


def _pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


def group_into_blocks(tokenizer, lines: Sequence[str], max_seq_length: int, batch: int = 1000,
                      kind: str = "mlm") -> TokenData:  # fmt: skip
    """Blocks of `max_seq_length` tokens of the concatenated lines (run_mlm's and run_clm's `group_texts`)."""
    ids = [t for seq in _encode(tokenizer, lines, batch, kind) for t in seq]
    n = len(ids) // max_seq_length
    if n == 0:
        return TokenData(torch.tensor([ids], dtype=torch.long), torch.tensor([len(ids)]), _pad_id(tokenizer))
    blocks = torch.tensor(ids[: n * max_seq_length], dtype=torch.long).view(n, max_seq_length)
    return TokenData(blocks, torch.full((n,), max_seq_length), _pad_id(tokenizer))


def encode_line_by_line(tokenizer, lines: Sequence[str], max_seq_length: int, batch: int = 1000,
                        kind: str = "mlm") -> TokenData:  # fmt: skip
    """One sequence per line, truncated to `max_seq_length` (run_mlm's `--line_by_line`)."""
    seqs = _encode(tokenizer, lines, batch, kind, max_seq_length)
    lengths = torch.tensor([len(s) for s in seqs])
    ids = torch.full((len(seqs), int(lengths.max())), _pad_id(tokenizer), dtype=torch.long)
    for i, seq in enumerate(seqs):
        ids[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
    return TokenData(ids, lengths, _pad_id(tokenizer))


def training_data(tokenizer, lines: Sequence[str], cfg, kind: str = "mlm") -> TokenData:
    """The sequences of `lines` for an `MLMTrainingConfig` or `CLMTrainingConfig` (`line_by_line` or blocks of
    `max_seq_length`); `kind` "clm" writes each line after the start token (module docstring)."""
    if cfg.line_by_line:
        return encode_line_by_line(tokenizer, lines, cfg.max_seq_length, kind=kind)
    return group_into_blocks(tokenizer, lines, cfg.max_seq_length, kind=kind)


def block_order(n_blocks: int, seed: int, start: int, count: int) -> np.ndarray:
    """Indices `start .. start+count` of the endless stream of per-epoch permutations (resumable by position)."""
    out = np.empty(count, dtype=np.int64)
    pos = start
    filled = 0
    while filled < count:
        epoch, offset = divmod(pos, n_blocks)
        perm = np.random.default_rng([seed, epoch]).permutation(n_blocks)
        take = min(count - filled, n_blocks - offset)
        out[filled : filled + take] = perm[offset : offset + take]
        filled += take
        pos += take
    return out


def make_collator(tokenizer, mlm_probability: float, seed: int):
    from transformers import DataCollatorForLanguageModeling

    collator = DataCollatorForLanguageModeling(tokenizer=tokenizer, mlm_probability=mlm_probability, seed=seed)
    collator.create_rng()
    return collator


def special_ids(tokenizer) -> torch.Tensor:
    return torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long)


def mask_batch(collator, ids: torch.Tensor, special: torch.Tensor,
               attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """(inputs, labels) for MLM: the collator's 80/10/10 masking; special tokens and padding never masked."""
    never = torch.isin(ids, special)
    if attention_mask is not None:
        never |= attention_mask == 0
    return collator.torch_mask_tokens(ids.clone(), special_tokens_mask=never)


class CollatorBatches:
    """run_mlm's batches: per-epoch seeded permutations of `data`, masked by the collator (seeded by `seed`)."""

    def __init__(self, tokenizer, data: TokenData, *, batch_size: int, mlm_probability: float, seed: int):
        self.data, self.batch_size, self.seed = data, batch_size, seed
        self.collator = make_collator(tokenizer, mlm_probability, seed)
        self.special = special_ids(tokenizer)

    def micro_batches(self, step: int, grad_accum: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """(inputs, labels, attention_mask) of each micro-batch of optimizer step `step` (from 0)."""
        per_step = self.batch_size * grad_accum
        order = block_order(len(self.data), self.seed, step * per_step, per_step)
        for micro in range(grad_accum):
            ids, attention = self.data.batch(order[micro * self.batch_size : (micro + 1) * self.batch_size])
            inputs, labels = mask_batch(self.collator, ids, self.special, attention)
            yield inputs, labels, attention

    def get_state(self) -> torch.Tensor:
        return self.collator.generator.get_state()

    def set_state(self, state: torch.Tensor) -> None:
        self.collator.generator.set_state(state)


class CausalBatches:
    """run_clm's batches: per-epoch seeded permutations of `data` (as `CollatorBatches`), labels = the input ids
    with -100 at padding and at position 0 (nothing predicts it; the model shifts the labels itself, so this
    only keeps the loop's "anything to learn" check honest). No randomness besides the order, which is resumed
    by position: the state is empty."""

    def __init__(self, data: TokenData, *, batch_size: int, seed: int):
        self.data, self.batch_size, self.seed = data, batch_size, seed

    def micro_batches(self, step: int, grad_accum: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """(input_ids, labels, attention_mask) of each micro-batch of optimizer step `step` (from 0)."""
        per_step = self.batch_size * grad_accum
        order = block_order(len(self.data), self.seed, step * per_step, per_step)
        for micro in range(grad_accum):
            ids, attention = self.data.batch(order[micro * self.batch_size : (micro + 1) * self.batch_size])
            labels = ids.masked_fill(attention == 0, -100)
            labels[:, 0] = -100
            yield ids, labels, attention

    def get_state(self) -> None:
        return None

    def set_state(self, state: None) -> None:
        pass
