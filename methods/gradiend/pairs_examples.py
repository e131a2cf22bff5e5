"""Masked examples of a pair GRADIEND (SPEC-beyond §8.3-§8.5): training batches of one direction, encoder rows,
BalancedBS and LMS_Dec items, all as `MaskedExample`s so the shared trainer, `GradientPair` and the forward-mode
encoder run unchanged.

Words of several tokens (§8.7): [MASK] is expanded to the word's k tokens, one label per token (the paper's
expansion), so L = the mean cross-entropy over the masked tokens. When the factual and the counterfactual word
have the same number of tokens they share the input and one forward pass gives both losses; otherwise the
counterfactual input (its own k' masks) is the batch's `twin` and `GradientPair` runs a second forward pass for
L-: exact either way, never the first token only. RoBERTa-style tokenizers encode a word with its leading space
unless it starts the text (SPEC §0.5).
"""
from __future__ import annotations

import random
from typing import Sequence

import numpy as np

from bench.errors import DataError
from methods.gradiend.examples import EncoderRow, MaskedBatch, MaskedExample, collate
from methods.gradiend.pairs_data import MASK, Directed, GroupData, in_casing


def word_tokens(tokenizer, word: str, masked: str, roberta: bool) -> list[int]:
    at_start = masked.split(MASK, 1)[0] == ""
    ids = tokenizer.encode((" " + word) if roberta and not at_start else word, add_special_tokens=False)
    if not ids:
        raise DataError(f"the tokenizer encodes {word!r} to no token")
    return ids


def masked_example(tokenizer, masked: str, labels: list[int], max_length: int) -> MaskedExample | None:
    """`masked` with its [MASK] expanded to len(labels) mask tokens; None when a mask is truncated away."""
    left, right = masked.split(MASK, 1)
    ids = tokenizer(left + " ".join([tokenizer.mask_token] * len(labels)) + right, truncation=True,
                    max_length=max_length)["input_ids"]  # fmt: skip
    positions = [i for i, t in enumerate(ids) if t == tokenizer.mask_token_id]
    if len(positions) != len(labels):
        return None
    return MaskedExample(list(ids), positions, list(labels))


def directed_examples(tokenizer, row: Directed, roberta: bool, max_length: int):
    """(factual example with the counterfactual labels when both words have as many tokens, else the factual
    example and the counterfactual one), or None."""
    fact = word_tokens(tokenizer, row.factual, row.masked, roberta)
    counter = word_tokens(tokenizer, row.counter, row.masked, roberta)
    ex = masked_example(tokenizer, row.masked, fact, max_length)
    if ex is None:
        return None
    if len(fact) == len(counter):
        ex.counter = counter
        return ex, None
    twin = masked_example(tokenizer, row.masked, counter, max_length)
    return None if twin is None else (ex, twin)


def collate_directed(pairs: Sequence[tuple], pad_id: int, device=None) -> MaskedBatch:
    """One batch; with a `twin` (the counterfactual inputs) when any row's two words differ in token count."""
    if all(twin is None for _, twin in pairs):
        return collate([ex for ex, _ in pairs], pad_id, device)
    factual = [MaskedExample(ex.ids, ex.positions, ex.labels) for ex, _ in pairs]
    counter = [twin if twin is not None else MaskedExample(ex.ids, ex.positions, ex.counter) for ex, twin in pairs]
    batch = collate(factual, pad_id, device)
    batch.twin = collate(counter, pad_id, device)
    return batch


class PairTrainBatches:
    """Batches of `batch_size` rows of ONE direction, the directions alternating (SPEC-beyond §8.3): batch k is of
    direction k % 2 and takes the next `batch_size` rows of that direction's seeded permutation (cyclic).
    One epoch = as many batches as it takes to see every training row once."""

    def __init__(self, rows: list[Directed], tokenizer, *, roberta: bool, batch_size: int = 32, max_length: int = 48,
                 order_seed: int = 42):  # fmt: skip
        self.tokenizer, self.batch_size = tokenizer, batch_size
        built = [directed_examples(tokenizer, r, roberta, max_length) for r in rows]
        self.directions = [[b for b, r in zip(built, rows) if b is not None and r.label == sign] for sign in (1, -1)]
        if not all(self.directions):
            raise DataError("pair GRADIEND: a direction has no training row")
        rng = np.random.default_rng(order_seed)
        self.orders = [rng.permutation(len(d)) for d in self.directions]

    def __len__(self) -> int:
        total = sum(len(d) for d in self.directions)
        return max(2, -(-total // self.batch_size))

    def examples(self, k: int) -> list[tuple]:
        d = k % 2
        rows, order = self.directions[d], self.orders[d]
        start = (k // 2) * self.batch_size
        return [rows[int(order[(start + o) % len(rows)])] for o in range(min(self.batch_size, len(rows)))]

    def batch(self, k: int, device=None) -> MaskedBatch:
        return collate_directed(self.examples(k), self.tokenizer.pad_token_id, device)


# ---- encoder rows (SPEC-beyond §8.4) -------------------------------------------------------------------------
def class_rows(data: GroupData, split: str, tokenizer, *, roberta: bool, max_length: int) -> list[EncoderRow]:
    """Each class's `split` sentences with its factual word masked (the factual labels), kind = the class; a
    sentence is one row per class even when several of the six directed sets hold it."""
    out = []
    for cls in data.classes:
        seen = set()
        for r in data.rows[cls]:
            key = (r.masked, r.word(cls))
            if r.split != split or key in seen:
                continue
            seen.add(key)
            ex = masked_example(tokenizer, r.masked, word_tokens(tokenizer, r.word(cls), r.masked, roberta), max_length)
            if ex is not None:
                out.append(EncoderRow(r.masked.replace(MASK, r.word(cls)), cls, 1, -1, ex))
    return out


def random_token_rows(texts: list[str], kind: str, type_: int, tokenizer, protected: list, rng: random.Random,
                      max_length: int) -> list[EncoderRow]:  # fmt: skip
    """One random non-special token of each text masked (never a character of its `protected` span)."""
    out = []
    for text, span in zip(texts, protected):
        enc = tokenizer(text, truncation=True, max_length=max_length, return_offsets_mapping=True,
                        return_special_tokens_mask=True)  # fmt: skip
        ids, special, offsets = enc["input_ids"], enc["special_tokens_mask"], enc["offset_mapping"]
        candidates = [i for i in range(len(ids)) if not special[i]
                      and not (span is not None and offsets[i][0] < span[1] and span[0] < offsets[i][1])]  # fmt: skip
        if not candidates:
            continue
        pos = rng.choice(candidates)
        masked = list(ids)
        masked[pos] = tokenizer.mask_token_id
        out.append(EncoderRow(text, kind, type_, -1, MaskedExample(masked, [pos], [ids[pos]])))
    return out


def written(row: Directed) -> tuple[str, tuple[int, int]]:
    """The sentence with its factual word written out, and that word's character span."""
    left = row.masked.split(MASK, 1)[0]
    return row.masked.replace(MASK, row.factual, 1), (len(left), len(left) + len(row.factual))


def neutral_rows(pair_rows: list[Directed], neutral: list[str], tokenizer, *, seed: int = 42, max_length: int = 48,
                 neutral_max_length: int = 128) -> list[EncoderRow]:  # fmt: skip
    """Type 2: the pair's sentences with one random token other than the group word masked; type 3: neutral
    sentences (no class word of the type) with one random token masked. Label = the original token."""
    rng = random.Random(seed)
    texts, spans = zip(*[written(r) for r in pair_rows]) if pair_rows else ((), ())
    rows = random_token_rows(list(texts), "masked-neutral", 2, tokenizer, list(spans), rng, max_length)
    return rows + random_token_rows(neutral, "neutral", 3, tokenizer, [None] * len(neutral), rng, neutral_max_length)


# ---- decoder items (SPEC-beyond §8.5) -----------------------------------------------------------------------
def group_items(rows: list[Directed], words: dict[str, list[str]], tokenizer, *, roberta: bool, max_length: int):
    """BalancedBS items: for every row and every token count k of a group word (in the factual word's casing), the
    sentence with k masks. Returns (examples, terms): a term (row, group index, example index, token ids) says
    that P(word) = prod_j P(ids[j] at mask j of that example) adds to P_group of that row."""
    examples, terms, index = [], [], {}
    for i, r in enumerate(rows):
        for g, group in enumerate(words.values()):
            for w in group:
                ids = word_tokens(tokenizer, in_casing(w, r.factual), r.masked, roberta)
                key = (i, len(ids))
                if key not in index:
                    ex = masked_example(tokenizer, r.masked, [-1] * len(ids), max_length)
                    if ex is None:
                        continue
                    index[key] = len(examples)
                    examples.append(ex)
                terms.append((i, g, index[key], ids))
    return examples, terms


def lms_items(rows: list[Directed], tokenizer, *, seed: int = 42, rate: float = 0.15, max_length: int = 128):
    """LMS_Dec items: each original sentence (factual word written out) with max(1, floor(rate * L)) of its L
    non-special tokens masked, the group word's tokens never masked (and so never scored); one seeded draw."""
    rng = random.Random(seed)
    out = []
    for r in rows:
        text, span = written(r)
        enc = tokenizer(text, truncation=True, max_length=max_length, return_offsets_mapping=True,
                        return_special_tokens_mask=True)  # fmt: skip
        ids, offsets = enc["input_ids"], enc["offset_mapping"]
        candidates = [i for i, s in enumerate(enc["special_tokens_mask"]) if not s
                      and not (offsets[i][0] < span[1] and span[0] < offsets[i][1])]  # fmt: skip
        if not candidates:
            continue
        positions = sorted(rng.sample(candidates, max(1, int(rate * len(candidates)))))
        masked = list(ids)
        for p in positions:
            masked[p] = tokenizer.mask_token_id
        out.append(MaskedExample(masked, positions, [ids[p] for p in positions]))
    return out
