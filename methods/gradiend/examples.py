"""Masked examples for GRADIEND: training batches (SPEC §1.2), encoder evaluation rows (§1.6) and the
decoder's evaluation sets (§1.7), all as token ids with their masked positions and label ids.

Label tokens (SPEC §1.2.6, §0.5):
- the factual label is `he` (male name) or `she` (female name), the counterfactual the other one;
- `He`/`She` when the first [PRONOUN] starts a sentence (nothing before it, or `.`/`!`/`?` but not `..`),
  the same case for every mask of the template. Unlike the paper's evaluation code, the encoder evaluation
  uses the same rule as training (it always used lower case); for uncased tokenizers both are identical;
- RoBERTa-style (byte-level BPE) tokenizers: the word with its leading space (`Ġhe`), except at the very
  start of a text where running text has no space either;
- the id is the first sub-token of the word (`tokenizer.encode(word, add_special_tokens=False)[0]`).

`filter_by_model` is the paper's last GENTER filter (methods.gradiend.data): it needs a model's predictions.
"""
from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from bench.errors import DataError
from methods.gradiend.data import GENDERS, NAME, PRONOUN, SUBJECT_PRONOUN, Template

OTHER = {"M": "F", "F": "M"}


def length_cap(subject, wanted: int) -> int:
    """`wanted`, but no longer than the model's position embeddings allow (RoBERTa uses 2 of them for padding)."""
    config = subject.model.config
    limit = getattr(config, "max_position_embeddings", None) or wanted
    if subject.is_roberta_style:
        limit -= 2
    return min(int(wanted), int(limit))


@dataclass
class MaskedExample:
    ids: list[int]
    positions: list[int]  # masked positions
    labels: list[int]  # one label id per masked position (-1: no label, e.g. GENTYPES)
    counter: list[int] | None = None  # counterfactual label ids (training)


@dataclass
class MaskedBatch:
    input_ids: torch.Tensor  # (b, L)
    attention_mask: torch.Tensor  # (b, L)
    rows: torch.Tensor  # (m,) example index of every masked position
    cols: torch.Tensor  # (m,) token index of every masked position
    labels: torch.Tensor  # (m,)
    counter: torch.Tensor | None  # (m,)
    size: int  # number of examples
    # The counterfactual inputs with their labels, when they differ from the factual ones (a pair GRADIEND's words
    # of different token counts, pairs_examples.py): `counter` is then None and L- comes from a second pass.
    twin: "MaskedBatch | None" = None

    def to(self, device) -> "MaskedBatch":
        move = lambda t: None if t is None else t.to(device, non_blocking=True)  # noqa: E731
        return MaskedBatch(move(self.input_ids), move(self.attention_mask), move(self.rows), move(self.cols),
                           move(self.labels), move(self.counter), self.size,
                           None if self.twin is None else self.twin.to(device))  # fmt: skip


def collate(examples: Sequence[MaskedExample], pad_id: int, device=None) -> MaskedBatch:
    """Pad to the longest example; masked positions are listed example by example."""
    width = max(len(e.ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    att = torch.zeros((len(examples), width), dtype=torch.long)
    rows, cols, labels, counter = [], [], [], []
    for i, e in enumerate(examples):
        ids[i, : len(e.ids)] = torch.tensor(e.ids, dtype=torch.long)
        att[i, : len(e.ids)] = 1
        rows += [i] * len(e.positions)
        cols += e.positions
        labels += e.labels
        if e.counter is not None:
            counter += e.counter
    has_counter = all(e.counter is not None for e in examples)
    batch = MaskedBatch(ids, att, torch.tensor(rows, dtype=torch.long), torch.tensor(cols, dtype=torch.long),
                        torch.tensor(labels, dtype=torch.long),
                        torch.tensor(counter, dtype=torch.long) if has_counter else None, len(examples))  # fmt: skip
    return batch.to(device) if device is not None else batch


def length_batches(examples: Sequence[MaskedExample], batch_size: int) -> list[list[int]]:
    """Indices of `examples` in batches of similar length (longest first) to limit padding."""
    order = sorted(range(len(examples)), key=lambda i: -len(examples[i].ids))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


# ---- templates and labels ------------------------------------------------------------------------------
def fill(masked: str, name: str, pronoun: str) -> str:
    return masked.replace(NAME, name).replace(PRONOUN, pronoun)


def starts_sentence(before: str) -> bool:
    s = before.rstrip()
    return not s or (s[-1] in ".!?" and not s.endswith(".."))


def pronoun_words(masked: str, gender: str, capitalise: bool = True) -> list[str]:
    """The pronoun for each [PRONOUN] of the template: `he`/`she`, capitalised when the first one starts a
    sentence (SPEC §1.2.6), the same case for all."""
    word = SUBJECT_PRONOUN[gender]
    if capitalise and starts_sentence(masked.split(PRONOUN, 1)[0]):
        word = word.capitalize()
    return [word] * masked.count(PRONOUN)


def word_id(tokenizer, word: str, leading_space: bool) -> int:
    ids = tokenizer.encode((" " + word) if leading_space else word, add_special_tokens=False)
    if not ids:
        raise DataError(f"the tokenizer encodes {word!r} to no token")
    return ids[0]


def label_ids(tokenizer, masked: str, gender: str, roberta: bool, capitalise: bool = True) -> list[int]:
    """Label ids for every [PRONOUN] of `masked` for a name of `gender`."""
    words = pronoun_words(masked, gender, capitalise)
    starts = [k == 0 and piece == "" for k, piece in enumerate(masked.split(PRONOUN)[:-1])]
    return [word_id(tokenizer, w, roberta and not at_start) for w, at_start in zip(words, starts)]


def usable_names(tokenizer, names: dict[str, list[str]], roberta: bool) -> dict[str, list[str]]:
    """Names whose token count occurs for both genders (the paper's restriction), per gender."""
    lengths = {g: {n: len(tokenizer.encode((" " + n) if roberta else n, add_special_tokens=False)) for n in names[g]}
               for g in GENDERS}  # fmt: skip
    common = set(lengths["M"].values()) & set(lengths["F"].values())
    out = {g: [n for n in names[g] if lengths[g][n] in common] for g in GENDERS}
    if not all(out.values()):
        raise DataError("no name token length is shared by male and female names")
    return out


def encode_masked(tokenizer, texts: list[str], labels: list[list[int]], counter: list[list[int]] | None,
                  max_length: int) -> list[MaskedExample | None]:  # fmt: skip
    """Tokenise texts whose masks are written as the mask token; None where every mask was truncated away."""
    out = []
    for j, ids in enumerate(tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]):
        positions = [i for i, t in enumerate(ids) if t == tokenizer.mask_token_id]
        k = len(positions)  # truncation keeps a prefix, so the first k labels belong to the k masks left
        out.append(MaskedExample(ids, positions, labels[j][:k], None if counter is None else counter[j][:k]) if k else None)
    return out


# ---- training (SPEC §1.2 with decision §0.4) ---------------------------------------------------------------
class TrainBatches:
    """Deterministic GENTER training batches: batch k takes the `batch_size` consecutive templates from a
    start drawn from a seeded permutation of range(batch_size * N) (mod N, as the paper's code); its gender is `Random(k).choice(['M', 'F'])`; every example
    gets its own name, drawn with a seed of (name_seed, k) from the NAMExact split of the templates."""

    def __init__(self, templates: list[Template], names: dict[str, list[str]], tokenizer, *, roberta: bool,
                 batch_size: int = 32, max_length: int = 48, order_seed: int = 42, name_seed: int = 42):  # fmt: skip
        if not templates:
            raise DataError("no GENTER training templates")
        self.templates, self.tokenizer, self.roberta = templates, tokenizer, roberta
        self.names = usable_names(tokenizer, names, roberta)
        self.batch_size, self.max_length, self.name_seed = batch_size, max_length, name_seed
        self._starts = np.random.default_rng(order_seed).permutation(batch_size * len(templates))

    def __len__(self) -> int:
        """Steps of one epoch (SPEC §1.2.7)."""
        return len(self.templates)

    def gender(self, k: int) -> str:
        return random.Random(k).choice(["M", "F"])

    def draw(self, k: int) -> tuple[str, list[str], list[str]]:
        """Batch k's gender, its templates and the name of each."""
        n = len(self.templates)
        start = int(self._starts[k % len(self._starts)]) % n
        gender = self.gender(k)
        rng = random.Random(f"gradiend-names:{self.name_seed}:{k}")
        templates = [self.templates[(start + o) % n].masked for o in range(self.batch_size)]
        return gender, templates, [rng.choice(self.names[gender]) for _ in templates]

    def examples(self, k: int) -> list[MaskedExample]:
        gender, templates, names = self.draw(k)
        texts = [fill(t, name, self.tokenizer.mask_token) for t, name in zip(templates, names)]
        factual = [label_ids(self.tokenizer, t, gender, self.roberta) for t in templates]
        counter = [label_ids(self.tokenizer, t, OTHER[gender], self.roberta) for t in templates]
        out = [e for e in encode_masked(self.tokenizer, texts, factual, counter, self.max_length) if e is not None]
        if not out:
            raise DataError(f"GRADIEND batch {k}: every pronoun mask lies beyond max_length={self.max_length}")
        return out

    def batch(self, k: int, device=None) -> MaskedBatch:
        return collate(self.examples(k), self.tokenizer.pad_token_id, device)


# ---- encoder evaluation rows (SPEC §1.6) -------------------------------------------------------------------
@dataclass
class EncoderRow:
    text: str
    kind: str  # "F", "M", "masked-neutral" (type 2), "neutral" (type 3)
    type: int  # 1, 2, 3
    template: int  # index of the GENTER template (-1 for GENEUTRAL)
    example: MaskedExample


def gender_rows(templates: list[Template], names: dict[str, list[str]], tokenizer, *, roberta: bool,
                max_length: int = 48) -> list[EncoderRow]:  # fmt: skip
    """Type 1: every template filled with the next female and the next male name (cycling through the
    split's names), all pronouns masked, factual labels."""
    cycles = {g: itertools.cycle(names[g]) for g in GENDERS}
    meta = [(i, g, fill(t.masked, next(cycles[g]), tokenizer.mask_token), label_ids(tokenizer, t.masked, g, roberta))
            for i, t in enumerate(templates) for g in ("F", "M")]  # fmt: skip
    encoded = encode_masked(tokenizer, [m[2] for m in meta], [m[3] for m in meta], None, max_length)
    return [EncoderRow(text, g, 1, i, ex) for (i, g, text, _), ex in zip(meta, encoded) if ex is not None]


def _random_mask(tokenizer, text: str, rng: random.Random, max_length: int, protected: list[tuple[int, int]] = ()):
    enc = tokenizer(text, truncation=True, max_length=max_length, return_offsets_mapping=True,
                    return_special_tokens_mask=True)  # fmt: skip
    ids, special, offsets = enc["input_ids"], enc["special_tokens_mask"], enc["offset_mapping"]
    candidates = [i for i in range(len(ids)) if not special[i]
                  and not any(a < e and s < b for s, e in [offsets[i]] for a, b in protected)]  # fmt: skip
    if not candidates:
        return None
    pos = rng.choice(candidates)
    label = ids[pos]
    ids = list(ids)
    ids[pos] = tokenizer.mask_token_id
    return MaskedExample(ids, [pos], [label])


def neutral_rows(templates: list[Template], names: dict[str, list[str]], neutral: list[str], tokenizer, *,
                 roberta: bool, seed: int = 42, max_length: int = 48, neutral_max_length: int = 128) -> list[EncoderRow]:  # fmt: skip
    """Type 2: the type-1 texts with their pronouns written out and one random token masked; type 3:
    GENEUTRAL sentences with one random token masked. Label = the original token. Unlike the paper's code,
    special tokens and the tokens of the name and the pronouns are never the masked one."""
    rng = random.Random(seed)
    cycles = {g: itertools.cycle(names[g]) for g in GENDERS}
    rows = []
    for i, t in enumerate(templates):
        for g in ("F", "M"):
            text, protected = written_out(t.masked, next(cycles[g]), g)
            ex = _random_mask(tokenizer, text, rng, max_length, protected)
            if ex is not None:
                rows.append(EncoderRow(text, "masked-neutral", 2, i, ex))
    for text in neutral:
        ex = _random_mask(tokenizer, text, rng, neutral_max_length)
        if ex is not None:
            rows.append(EncoderRow(text, "neutral", 3, -1, ex))
    return rows


def _pieces(masked: str) -> list[str]:
    import re

    return [p for p in re.split(r"(\[NAME\]|\[PRONOUN\])", masked) if p]


def written_out(masked: str, name: str, gender: str) -> tuple[str, list[tuple[int, int]]]:
    """The template with its name and pronouns written out, and the character spans of those words."""
    words = iter(pronoun_words(masked, gender))
    text, protected = "", []
    for piece in _pieces(masked):
        if piece in (NAME, PRONOUN):
            word = name if piece == NAME else next(words)
            protected.append((len(text), len(text) + len(word)))
            text += word
        else:
            text += piece
    return text, protected


# ---- decoder evaluation sets (SPEC §1.7) -------------------------------------------------------------------
def lms_examples(sentences: list[str], tokenizer, *, seed: int = 42, rate: float = 0.15,
                 max_length: int = 512) -> list[MaskedExample]:  # fmt: skip
    """LMS_Dec items: each sentence with max(1, floor(rate * L)) of its L non-special tokens masked (one
    seeded `random.Random(seed)` for the whole set; special tokens are never masked, SPEC §0.6)."""
    rng = random.Random(seed)
    out = []
    enc = tokenizer(list(sentences), truncation=True, max_length=max_length, return_special_tokens_mask=True)
    for ids, special in zip(enc["input_ids"], enc["special_tokens_mask"]):
        candidates = [i for i, s in enumerate(special) if not s]
        if not candidates:
            continue
        positions = sorted(rng.sample(candidates, max(1, int(rate * len(candidates)))))
        labels = [ids[p] for p in positions]
        masked = list(ids)
        for p in positions:
            masked[p] = tokenizer.mask_token_id
        out.append(MaskedExample(masked, positions, labels))
    return out


def gentypes_examples(templates: list[str], tokenizer, max_length: int = 128) -> list[MaskedExample]:
    out = []
    for k, t in enumerate(templates):
        ids = tokenizer(t.replace(NAME, tokenizer.mask_token), truncation=True, max_length=max_length)["input_ids"]
        positions = [i for i, x in enumerate(ids) if x == tokenizer.mask_token_id]
        if len(positions) != 1:
            raise DataError(f"GENTYPES template {k}: expected one {NAME} slot after tokenisation: {t!r}")
        out.append(MaskedExample(ids, positions, [-1]))
    return out


def filter_by_model(subject, templates: list[Template], names: dict[str, list[str]], top_k: int = 50,
                    batch_size: int = 64) -> list[Template]:  # fmt: skip
    """Keep templates for which `subject` predicts the right pronoun (he/she) as argmax at every mask, for
    each of the first `top_k` names of each gender (the paper uses bert-base-uncased and the 50 most
    frequent NAMExact train names; `names` is in file order = frequency order of NAMExact)."""
    tok = subject.tokenizer
    keep = []
    for t in templates:
        ok = True
        for g in GENDERS:
            texts = [fill(t.masked, n, tok.mask_token) for n in names[g][:top_k]]
            enc = tok(texts, padding=True, truncation=True, max_length=length_cap(subject, 128), return_tensors="pt").to(subject.device)
            rows, cols = (enc["input_ids"] == tok.mask_token_id).nonzero(as_tuple=True)
            with torch.inference_mode():
                pred = subject.mlm_logits(enc["input_ids"], enc["attention_mask"], rows, cols).argmax(-1).cpu()
            want = torch.tensor([label_ids(tok, t.masked, g, subject.is_roberta_style)[0]] * len(pred))
            if not torch.equal(pred, want):
                ok = False
                break
        if ok:
            keep.append(t)
    return keep
