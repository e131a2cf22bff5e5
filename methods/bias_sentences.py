"""Gendered and neutral sentences from a plain-text corpus, shared by INLP (SPEC §2.3) and SentenceDebias (§2.4).

bias-bench reads Wikipedia-2.5 and splits it with `nltk.sent_tokenize`. Neither is available here: the data
directory's `text_corpus/*.txt` is used instead (WikiText-2 valid+test on the shared data, the synthetic
corpus in the synthetic world), split into sentences by a small regular expression (a sentence ends at
`.`, `!` or `?` followed by whitespace and an upper-case letter, a digit, an opening quote or bracket, or
WikiText's `<unk>`). WikiText's tokenisation artefacts (` @-@ `, ` @,@ `, ` @.@ `) are joined back; `<unk>`
is left as the corpus has it.

Sentences are plain text, cut and joined at whitespace; a model's tokenizer encodes each whole sentence, so
nothing here depends on the tokenizer: byte-level BPE (RoBERTa, GPT-2, Llama) keeps each later word's leading
space inside its token and the first word has none, as in running text (no word is encoded alone).

Attribute words are found and swapped by `methods.counterfactual.CounterfactualSwapper` (the CDA swapper):
bias-bench compares whitespace tokens exactly, so it misses "He", "him," and "man's"; the swapper finds them
and keeps capitalisation and punctuation.

Race and religion (the run's `ctx.bias_type`): the type's attribute triples and `GroupSwapper`.
- `group_sentences`: sentences with an attribute word of any group (bias-bench's INLP "bias" class), sentences
  with words of exactly one group (labelled by the group: the classes of LEACE and RLACE), and neutral ones,
  randomly truncated like the gender sentences (cut after a random token at or after the first attribute word;
  bias-bench's race/religion loader cuts at or after the *last* one, tokens[:randint(idx, n) + 1]: the
  same rule as for gender is kept here, so the classes are not told apart by where they are cut).
- `counterfactual_tuples`: SentenceDebias's examples, as bias-bench's `_race_augment_func`: for every sentence
  and every triple one of whose words occurs in it, the sentence in each group's version (that triple's
  word swapped in, in group order).
- `concept_examples(..., bias_type=...)`: the group sentences (balanced, labels = group index 0..k-1); a
  Bias-in-Bios file has gender labels only, so `bios_file` is refused for race and religion.
"""
from __future__ import annotations

import csv
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from bench.errors import DataError
from methods.counterfactual import MALE as SIDE_MALE
from methods.counterfactual import CounterfactualSwapper, GroupSwapper

_WIKITEXT_JOINS = ((" @-@ ", "-"), (" @,@ ", ","), (" @.@ ", "."))
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"'”’)\]]*\s+(?=(?:[\"'“‘(\[]\s?)?[A-Z0-9]|<unk>)")

# INLP class labels as bias-bench uses them (SPEC §2.3)
MALE, FEMALE, NEUTRAL = 1, 0, -1


def clean_line(line: str) -> str:
    for old, new in _WIKITEXT_JOINS:
        line = line.replace(old, new)
    return " ".join(line.split())


def split_sentences(text: str) -> list[str]:
    """Sentences of one paragraph (regular-expression replacement for nltk.sent_tokenize)."""
    return [s.strip() for s in _SENTENCE_END.split(clean_line(text)) if s.strip()]


def load_swapper(data_dir) -> CounterfactualSwapper:
    from bench.data.paths import attribute_words

    return CounterfactualSwapper(attribute_words(data_dir, "gender"))


def load_group_swapper(data_dir, bias_type: str) -> GroupSwapper:
    from bench.data.paths import attribute_words

    return GroupSwapper(attribute_words(data_dir, bias_type))


def group_names(swapper: GroupSwapper) -> list[str]:
    """The groups, named by the first tuple's words (real race list: black, caucasian, asian)."""
    return [w.lower() for w in swapper.tuples[0]]


def corpus_data_files(ctx, corpus: str | None) -> list:
    """The files a corpus-reading method needs: the attribute word list and the chosen corpus file (None: every
    `text_corpus/*.txt`)."""
    files = [ctx.data_path("bias_attribute_words/bias_attribute_words.json", "attribute word list")]
    if corpus is not None:
        return files + [ctx.data_path(f"text_corpus/{corpus}", "text corpus")]
    return files + sorted((Path(ctx.data_dir) / "text_corpus").glob("*.txt"))


def corpus_sentences(lines: Iterable[str], min_tokens: int = 1) -> list[str]:
    """All sentences of the corpus lines with at least `min_tokens` whitespace tokens, in corpus order."""
    out = []
    for line in lines:
        out.extend(s for s in split_sentences(line) if len(s.split()) >= min_tokens)
    return out


# ---- INLP: male / female / neutral sentences ----------------------------------------------------------------
@dataclass
class GenderedSentences:
    male: list[str]
    female: list[str]
    neutral: list[str]

    def counts(self) -> dict[str, int]:
        return {"male": len(self.male), "female": len(self.female), "neutral": len(self.neutral)}


def _cut_neutral(tokens: list[str], rng: random.Random) -> str:
    """A random prefix of at least 4 tokens (neutral sentences)."""
    return " ".join(tokens[: rng.randint(4, len(tokens))])


def _cut_after(sentence: str, tokens: list[str], start: int, rng: random.Random) -> str:
    """Cut after a random token at or after the whitespace token holding the character at `start` (the first
    attribute word)."""
    first = len(sentence[: start + 1].split()) - 1
    return " ".join(tokens[: rng.randint(first + 1, len(tokens))])


def _shuffled_matches(sentences: Sequence[str], swapper, rng: random.Random, min_tokens: int,
                      full: Callable[[], bool]) -> Iterator[tuple[str, list[str], list]]:
    """The sentences in an order shuffled with `rng`, each with its tokens and the swapper's matches in it;
    sentences of fewer than `min_tokens` tokens skipped; stops as soon as `full()` says every class is full."""
    order = list(range(len(sentences)))
    rng.shuffle(order)
    for k in order:
        if full():
            return
        sentence = sentences[k]
        tokens = sentence.split()
        if len(tokens) < min_tokens:
            continue
        yield sentence, tokens, swapper.matches(sentence)


def gendered_sentences(
    sentences: Sequence[str], swapper: CounterfactualSwapper, per_class: int, seed: int = 0, min_tokens: int = 5,
    balance: bool = True,
) -> GenderedSentences:
    """Male, female and neutral sentences for INLP (SPEC §2.3), randomly truncated like bias-bench.

    Sentences (shuffled with `seed`) with fewer than `min_tokens` whitespace tokens are skipped; a male
    sentence holds a male attribute word and no female one (female likewise), a neutral one holds none. A
    gendered sentence is cut after a random token at or after its first attribute word; a neutral one to a
    random prefix of at least 4 tokens, so length does not tell the classes apart. At most `per_class` of each
    class; with `balance` every class is cut to the size of the smallest, so chance accuracy is 1/3.
    """
    rng = random.Random(seed)
    male, female, neutral = [], [], []

    def full() -> bool:
        return len(male) >= per_class and len(female) >= per_class and len(neutral) >= per_class

    for sentence, tokens, found in _shuffled_matches(sentences, swapper, rng, min_tokens, full):
        sides = {m.side for m in found}
        if len(sides) > 1:
            continue
        if not sides:
            if len(neutral) < per_class:
                neutral.append(_cut_neutral(tokens, rng))
            continue
        bucket = male if sides == {SIDE_MALE} else female
        if len(bucket) < per_class:
            bucket.append(_cut_after(sentence, tokens, found[0].start, rng))
    if balance:
        n = min(len(male), len(female), len(neutral))
        male, female, neutral = male[:n], female[:n], neutral[:n]
    return GenderedSentences(male, female, neutral)


# ---- race and religion: sentences by group ---------------------------------------------------------------------
@dataclass
class GroupSentences:
    names: list[str]  # group names
    groups: list[list[str]]  # per group: sentences with attribute words of that group only
    any_group: list[str]  # sentences with an attribute word of any group (bias-bench's INLP "bias" class)
    neutral: list[str]

    def counts(self) -> dict[str, int]:
        return {**{n: len(g) for n, g in zip(self.names, self.groups)}, "any": len(self.any_group),
                "neutral": len(self.neutral)}


def group_sentences(
    sentences: Sequence[str], swapper: GroupSwapper, per_class: int, seed: int = 0, min_tokens: int = 5,
    names: Sequence[str] | None = None,
) -> GroupSentences:
    """Race / religion sentences (shuffled with `seed`, fewer than `min_tokens` tokens skipped), truncated as in
    `gendered_sentences`; at most `per_class` in each list. Not balanced here: callers choose their classes."""
    rng = random.Random(seed)
    k = swapper.n_groups
    groups: list[list[str]] = [[] for _ in range(k)]
    any_group: list[str] = []
    neutral: list[str] = []

    def full() -> bool:
        return len(neutral) >= per_class and len(any_group) >= per_class and all(len(g) >= per_class for g in groups)

    for sentence, tokens, found in _shuffled_matches(sentences, swapper, rng, min_tokens, full):
        if not found:
            if len(neutral) < per_class:
                neutral.append(_cut_neutral(tokens, rng))
            continue
        cut = _cut_after(sentence, tokens, found[0].start, rng)
        if len(any_group) < per_class:
            any_group.append(cut)
        present = {m.group for m in found}
        if len(present) == 1:
            g = present.pop()
            if len(groups[g]) < per_class:
                groups[g].append(cut)
    return GroupSentences(list(names or group_names(swapper)), groups, any_group, neutral)


def corpus_group_sentences(ctx, corpus: str | None, per_class: int, min_tokens: int) -> GroupSentences:
    """`group_sentences` of the run's corpus for the run's bias type (race / religion), seeded by the run."""
    from bench.data.paths import text_corpus

    return group_sentences(corpus_sentences(text_corpus(ctx.data_dir, corpus)),
                           load_group_swapper(ctx.data_dir, ctx.bias_type), per_class, seed=ctx.seed,
                           min_tokens=min_tokens)  # fmt: skip


def labelled_classes(classes: list[list[str]], labels: list[int], names: list[str], balance: bool, ctx,
                     needs: str) -> tuple[list[str], np.ndarray, dict]:
    """(texts, labels, counts) of the given classes (each cut to the smallest with `balance`); a class with
    fewer than MIN_PER_CLASS texts raises DataError "<needs> per class from text_corpus/ ..." (`needs` names
    the method and what it counts)."""
    if balance:
        n = min(len(c) for c in classes)
        classes = [c[:n] for c in classes]
    counts = {name: len(c) for name, c in zip(names, classes)}
    if min(counts.values()) < MIN_PER_CLASS:
        raise DataError(f"{needs} per class from text_corpus/ in {ctx.data_dir} ({ctx.bias_type}); found {counts}")
    texts = [t for c in classes for t in c]
    return texts, np.array([y for c, y in zip(classes, labels) for _ in c], dtype=np.int64), counts


def counterfactual_tuples(
    sentences: Iterable[str], swapper: GroupSwapper, lowercase: bool = True, max_tuples: int | None = None
) -> list[tuple[str, ...]]:
    """SentenceDebias's race / religion examples: for every sentence and every attribute tuple one of whose words
    occurs in it, the sentence in every group's version of that tuple (group order); bias-bench's
    `_race_augment_func` / `_religion_augment_func`."""
    out: list[tuple[str, ...]] = []
    tuples = list(dict.fromkeys(tuple(w.lower() for w in t) for t in swapper.tuples))
    for sentence in sentences:
        if lowercase:
            sentence = sentence.lower()
        present = {m.word.lower().replace("’", "'") for m in swapper.matches(sentence)}
        if not present:
            continue
        for t in tuples:
            for g, word in enumerate(t):
                if word not in present:
                    continue
                versions = []
                for h in range(len(t)):
                    versions.append(sentence if h == g else swapper.swap(sentence, {g: h}, only=t)[0])
                out.append(tuple(versions))
                if max_tuples is not None and len(out) >= max_tuples:
                    return out
    return out


# ---- SentenceDebias: counterfactual pairs ---------------------------------------------------------------------
def counterfactual_pairs(
    sentences: Iterable[str], swapper: CounterfactualSwapper, lowercase: bool = True, max_pairs: int | None = None
) -> list[tuple[str, str]]:
    """(male, female) sentence pairs (SPEC §2.4): for every sentence and every attribute pair one of whose
    words occurs in it, the sentence and its copy with only that pair's words swapped."""
    pairs: list[tuple[str, str]] = []
    # a list may repeat a pair in another case ("He"/"She"); matching ignores case, so each pair counts once
    attribute_pairs = list(dict.fromkeys((m.lower(), f.lower()) for m, f in swapper.pairs))
    for sentence in sentences:
        if lowercase:
            sentence = sentence.lower()
        present = {m.word.lower().replace("’", "'") for m in swapper.matches(sentence)}
        if not present:
            continue
        for m, f in attribute_pairs:
            if m in present:
                pairs.append((sentence, swapper.swap(sentence, only_pair=(m, f))[0]))
            elif f in present:
                pairs.append((swapper.swap(sentence, only_pair=(m, f))[0], sentence))
            if max_pairs is not None and len(pairs) >= max_pairs:
                return pairs[:max_pairs]
    return pairs


def read_bios(path: Path, limit: int | None = None) -> tuple[list[str], np.ndarray]:
    """Texts and labels (MALE / FEMALE) of a Bias-in-Bios-style file for the concept-erasure methods (LEACE, RLACE):
    JSON Lines (one object per line) or CSV (header row) with the fields `text` and `gender` ("M" or "F"); the
    first `limit` rows. Bias-in-Bios itself is not shipped."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
        where = lambda i: f"{path} row {i + 2}"  # noqa: E731  (header is line 1)
    elif path.suffix.lower() in (".jsonl", ".json"):
        rows = []
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise DataError(f"{path} line {i + 1}: not JSON ({e})") from None
        where = lambda i: f"{path} record {i + 1}"  # noqa: E731
    else:
        raise DataError(f"bios_file {path}: expected a .jsonl/.json (JSON Lines) or .csv file")
    if limit is not None:
        rows = rows[:limit]
    texts, labels = [], []
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or "text" not in row or "gender" not in row:
            raise DataError(f"{where(i)}: needs the fields 'text' and 'gender'")
        gender = str(row["gender"]).strip().upper()
        if gender not in ("M", "F") or not isinstance(row["text"], str) or not row["text"].strip():
            raise DataError(f"{where(i)}: gender must be 'M' or 'F' and text a non-empty string, got {row!r:.200}")
        texts.append(row["text"])
        labels.append(MALE if gender == "M" else FEMALE)
    return texts, np.array(labels, dtype=np.int64)


MIN_PER_CLASS = 10  # fewer examples of a class than this cannot estimate a gender direction


def concept_data_files(ctx, bios_file: str | None, corpus: str | None) -> list:
    """What a concept-erasure fit (LEACE, RLACE) reads: the Bias-in-Bios-style file when one is given, else the
    attribute words and the corpus (`corpus_data_files`)."""
    if bios_file is not None:
        from bench.data.paths import resolve_file

        return [resolve_file(ctx.data_dir, bios_file, "Bias-in-Bios file")]
    return corpus_data_files(ctx, corpus)


def concept_examples(ctx, method: str, *, bios_file: str | None, max_bios: int | None, corpus: str | None,
                     per_class: int, min_tokens: int, balance: bool = True, neutral: bool = False):
    """(texts, labels MALE / FEMALE [/ NEUTRAL], class counts) a concept-erasure method is fitted on: the rows of
    `bios_file`, else the gendered corpus sentences INLP uses (neutral ones only with `neutral`). Raises
    DataError naming `method` when a class has fewer than MIN_PER_CLASS examples.

    Race / religion (`ctx.bias_type`): the corpus sentences with attribute words of exactly one group, labels
    0..k-1 by group (group order of the attribute triples), each group cut to the smallest with `balance`;
    neutral sentences (label NEUTRAL) only with `neutral`."""
    bias_type = ctx.bias_type
    if bias_type != "gender":
        if bios_file is not None:
            raise DataError(f"{method}: bios_file (Bias-in-Bios) has gender labels only; a {bias_type} fit reads "
                            "the corpus sentences (leave bios_file unset)")
        found = corpus_group_sentences(ctx, corpus, per_class, min_tokens)
        k = len(found.groups)
        return labelled_classes(list(found.groups) + ([found.neutral] if neutral else []),
                                list(range(k)) + ([NEUTRAL] if neutral else []),
                                found.names + (["neutral"] if neutral else []), balance, ctx,
                                f"{method} needs at least {MIN_PER_CLASS} examples")  # fmt: skip
    if bios_file is not None:
        texts, labels = read_bios(concept_data_files(ctx, bios_file, corpus)[0], max_bios)
        counts = {"male": int(np.sum(labels == MALE)), "female": int(np.sum(labels == FEMALE))}
        where = f"bios_file {bios_file}"
    else:
        from bench.data.paths import text_corpus

        found = gendered_sentences(corpus_sentences(text_corpus(ctx.data_dir, corpus)), load_swapper(ctx.data_dir),
                                   per_class, seed=ctx.seed, min_tokens=min_tokens, balance=balance)  # fmt: skip
        extra = found.neutral if neutral else []
        texts = found.male + found.female + extra
        labels = np.array([MALE] * len(found.male) + [FEMALE] * len(found.female) + [NEUTRAL] * len(extra),
                          dtype=np.int64)  # fmt: skip
        counts = {k: v for k, v in found.counts().items() if neutral or k != "neutral"}
        where = f"text_corpus/ in {ctx.data_dir}"
    if min(counts.values()) < MIN_PER_CLASS:
        raise DataError(f"{method} needs at least {MIN_PER_CLASS} examples per class from {where}; found {counts}")
    return texts, labels, counts
