"""Causal (next-token) examples for GRADIEND on decoder-only LMs (SPEC-beyond §9.1), in the masked examples' form.

A causal example is a `MaskedExample` whose one "position" is the LAST token of its input and whose label is the
token that comes next: `Subject.mlm_logits` and the trainer's gradients read the logits at (row, col), which for a
causal LM predict column col + 1. So training batches, encoder rows and the decoder's evaluation sets reach the
one trainer, the one gradient code and the one evaluator as the same (rows, cols, labels) batches; the causal case
is data. Batches are right-padded (`examples.collate`), and the column read is each row's last REAL token: in a
causal LM no real position attends to a later one, so its logits are those of the text run alone (the reference
reads `logits[:, -1]` of a right-padded batch, i.e. a pad position for all but the longest text: a bug).

Inputs: the tokens the tokenizer puts IN FRONT of a text (Llama's `<|begin_of_text|>`; a BERT-style tokenizer's
[CLS]; GPT-2 none), then the text's tokens; nothing the tokenizer appends at the end (a text cut before its next
token has no end). An empty context (a GENTER template that starts with its pronoun, on GPT-2) is the start token
alone (`bench.models.causal.start_id`: GPT-2's `<|endoftext|>`, the token bias-bench conditions on).

GENTER training examples (§9.1 and decisions of this project):
- the template with its name filled, cut before the first [PRONOUN]; the rest is dropped (later pronouns do not
  matter: nothing after the cut is seen). Factual and counterfactual share the input;
- the target is the pronoun as running text puts it there: with its leading space when whitespace precedes the
  [PRONOUN] (` he`: GPT-2 / Llama byte-BPE keep the space in the token), capitalised at a sentence start (` He`
  after `. `, `He` at the very start of a text), else lower case; the context is cut before that whitespace (the
  reference keeps it: its input ends in a lone space token and its target is `he` without space for GPT-2 and
  Llama-Instruct, ` he` for Llama base). The id is the first token of that word; for GPT-2 and Llama-3 it is
  exactly the token the whole running text has there (tested);
- a template whose cut input is longer than `max_length` tokens is dropped from the batch.
Encoder rows use the same targets (the reference's encoder analysis uses other ones: GPT-2 `Ġhe`, Llama base two
tokens); type 2/3 rows are texts cut before one random token (never the first text token without context, a
special token, the name or a pronoun), the target that token. LMS_Dec items are whole GENEUTRAL texts with every
token after the first as a target (the shifted next-token loss). GENTYPES prompts: "My friend, [NAME], X." becomes
"The person, who X, has the first name" (§9.1); any other template is cut before its [NAME].
"""
from __future__ import annotations

import itertools
import random
import re

from bench.errors import DataError
from bench.models.causal import start_id
from methods.gradiend.data import GENDERS, NAME, PRONOUN, Template
from methods.gradiend.examples import OTHER, EncoderRow, MaskedExample, TrainBatches, pronoun_words, written_out

FRIEND = re.compile(r"^My friend, \[NAME\], (?P<x>.+?)\.?$")


def leading_ids(tokenizer) -> list[int]:
    """The special tokens the tokenizer puts in front of a text (Llama: BOS; GPT-2: none)."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    for i in range(len(full) - len(plain) + 1):
        if full[i : i + len(plain)] == plain:
            return list(full[:i])
    return []


class CausalText:
    """A tokenizer's causal inputs and next-word targets."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.front = leading_ids(tokenizer)
        self.start = start_id(tokenizer)
        self._words: dict[str, int] = {}

    def contexts(self, texts: list[str]) -> list[list[int]]:
        """Front tokens + each text's tokens; the start token alone for an empty one."""
        if not texts:
            return []
        plain = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        return [(self.front + list(ids)) or [self.start] for ids in plain]

    def word_id(self, word: str) -> int:
        """The first token of `word` (written with its leading space where it has one)."""
        if word not in self._words:
            ids = self.tokenizer.encode(word, add_special_tokens=False)
            if not ids:
                raise DataError(f"the tokenizer encodes {word!r} to no token")
            self._words[word] = ids[0]
        return self._words[word]


# ---- GENTER: cut before the first pronoun ---------------------------------------------------------------------
def cut(masked: str, name: str) -> tuple[str, bool]:
    """(the filled text before the first [PRONOUN] without trailing whitespace, whether whitespace preceded it)."""
    before = masked.split(PRONOUN, 1)[0].replace(NAME, name)
    return before.rstrip(), before != before.rstrip() and bool(before.strip())


def next_pronoun(masked: str, gender: str, spaced: bool) -> str:
    """The first pronoun of `masked` for `gender` as running text writes it after the cut (module docstring)."""
    word = pronoun_words(masked, gender)[0]
    return " " + word if spaced else word


def genter_examples(text: CausalText, masked: list[str], names: list[str], genders: list[str], max_length: int,
                    counter: bool = True) -> list[MaskedExample | None]:  # fmt: skip
    """One causal example per template (None where the cut input is longer than `max_length`)."""
    cuts = [cut(m, n) for m, n in zip(masked, names)]
    out = []
    for ids, m, g, (_, spaced) in zip(text.contexts([c for c, _ in cuts]), masked, genders, cuts):
        if len(ids) > max_length:
            out.append(None)
            continue
        label = text.word_id(next_pronoun(m, g, spaced))
        other = [text.word_id(next_pronoun(m, OTHER[g], spaced))] if counter else None
        out.append(MaskedExample(ids, [len(ids) - 1], [label], other))
    return out


class CausalTrainBatches(TrainBatches):
    """`TrainBatches` (the same templates, genders and names per batch) with causal examples."""

    def __init__(self, templates: list[Template], names: dict[str, list[str]], tokenizer, **kwargs):
        super().__init__(templates, names, tokenizer, roberta=True, **kwargs)  # names as in running text: ` Mary`
        self.text = CausalText(tokenizer)

    def examples(self, k: int) -> list[MaskedExample]:
        gender, templates, names = self.draw(k)
        out = genter_examples(self.text, templates, names, [gender] * len(templates), self.max_length)
        out = [e for e in out if e is not None]
        if not out:
            raise DataError(f"GRADIEND batch {k}: every text before the pronoun is longer than max_length={self.max_length}")
        return out


def gender_rows(templates: list[Template], names: dict[str, list[str]], tokenizer, *, max_length: int = 48) -> list[EncoderRow]:
    """Type 1 (SPEC §1.6): every template with the next female and the next male name, cut before the pronoun."""
    cycles = {g: itertools.cycle(names[g]) for g in GENDERS}
    meta = [(i, g, t.masked, next(cycles[g])) for i, t in enumerate(templates) for g in ("F", "M")]
    text = CausalText(tokenizer)
    examples = genter_examples(text, [m[2] for m in meta], [m[3] for m in meta], [m[1] for m in meta], max_length, False)
    return [EncoderRow(cut(m, name)[0], g, 1, i, ex) for (i, g, m, name), ex in zip(meta, examples) if ex is not None]


# ---- random cuts (encoder rows of type 2 and 3) ---------------------------------------------------------------
def _random_cut(text: CausalText, sentence: str, rng: random.Random, max_length: int, protected=()) -> MaskedExample | None:
    enc = text.tokenizer(sentence, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = list(enc["input_ids"]), enc["offset_mapping"]
    front = len(text.front)
    candidates = [j for j in range(len(ids)) if (j or front) and front + j <= max_length
                  and not any(a < e and s < b for s, e in [offsets[j]] for a, b in protected)]  # fmt: skip
    if not candidates:
        return None
    j = rng.choice(candidates)
    context = text.front + ids[:j]
    return MaskedExample(context, [len(context) - 1], [ids[j]])


def neutral_rows(templates: list[Template], names: dict[str, list[str]], neutral: list[str], tokenizer, *,
                 seed: int = 42, max_length: int = 48, neutral_max_length: int = 128) -> list[EncoderRow]:  # fmt: skip
    """Type 2: the type-1 texts with their pronouns written out, cut before one random token that is neither the
    name nor a pronoun; type 3: GENEUTRAL texts cut before one random token. Target = that token."""
    rng = random.Random(seed)
    cycles = {g: itertools.cycle(names[g]) for g in GENDERS}
    text = CausalText(tokenizer)
    rows = []
    for i, t in enumerate(templates):
        for g in ("F", "M"):
            written, protected = written_out(t.masked, next(cycles[g]), g)
            ex = _random_cut(text, written, rng, max_length, protected)
            if ex is not None:
                rows.append(EncoderRow(written, "masked-neutral", 2, i, ex))
    for sentence in neutral:
        ex = _random_cut(text, sentence, rng, neutral_max_length)
        if ex is not None:
            rows.append(EncoderRow(sentence, "neutral", 3, -1, ex))
    return rows


# ---- decoder evaluation sets ----------------------------------------------------------------------------------
def lms_examples(sentences: list[str], tokenizer, *, max_length: int = 512) -> list[MaskedExample]:
    """LMS_Dec items: each text (front tokens + at most `max_length` tokens in all) with every token after the
    first as the target of the one before it (the shifted next-token loss)."""
    out = []
    for ids in CausalText(tokenizer).contexts(list(sentences)):
        ids = ids[:max_length]
        if len(ids) >= 2:
            out.append(MaskedExample(ids, list(range(len(ids) - 1)), ids[1:]))
    return out


NAME_PROMPTS = ("person", "before")


def name_prompt(template: str, style: str = "person") -> str:
    """The text after which a name comes. "person" (SPEC-beyond §9.1): "My friend, [NAME], X." -> "The person, who
    X, has the first name", any other template cut before its [NAME]; "before": every template cut before its
    [NAME] (for a model that has never seen the words of the person prompt: the synthetic world's)."""
    if template.count(NAME) != 1:
        raise DataError(f"GENTYPES template without exactly one {NAME} slot: {template!r}")
    if style not in NAME_PROMPTS:
        raise DataError(f"unknown GENTYPES prompt style {style!r}; use one of {', '.join(NAME_PROMPTS)}")
    match = FRIEND.match(template.strip()) if style == "person" else None
    if match:
        return f"The person, who {match.group('x')}, has the first name"
    return template.split(NAME, 1)[0].rstrip()


def gentypes_examples(templates: list[str], tokenizer, max_length: int = 128, style: str = "person") -> list[MaskedExample]:
    out = []
    for k, ids in enumerate(CausalText(tokenizer).contexts([name_prompt(t, style) for t in templates])):
        if len(ids) > max_length:
            raise DataError(f"GENTYPES template {k}: its prompt is longer than {max_length} tokens: {templates[k]!r}")
        out.append(MaskedExample(ids, [len(ids) - 1], [-1]))
    return out

