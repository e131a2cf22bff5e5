"""Counterfactual word swapping with bias-bench's attribute word lists (CDA, SentenceDebias, INLP data).

Gender: [male, female] pairs, swapped both ways (`CounterfactualSwapper`). Race and religion: triples, one column
per group (`GroupSwapper`; bias-bench's race triples black/white/asian, religion jewish/christian/muslim): a word
of group g is replaced by the same tuple's word of another group, `augment_multi_group` draws that group per line
as bias-bench's ternary CDA does.

Two ways of finding the words (SPEC §2.1):

- Default (`exact=False`): words are found by a regular expression, so a word followed by punctuation
  ("him," "he.") or a closing quote, a capitalised or upper-case word ("He", "HIS"), and a possessive
  ("man's") are all swapped, with the capitalisation and the punctuation of the original kept
  ("He said him," -> "She said her,"). Words inside hyphenated compounds ("X-Men", "he-goat") and words glued
  to other letters or digits are left alone. The text between words, whitespace included, is kept verbatim.
- `exact=True` reproduces bias-bench's `gender_counterfactual_augmentation`: split on whitespace, compare each
  piece case-sensitively with the 57 pairs and their copies with one trailing mark of `. , ? ! ; :`
  (57 x 7 = 399 pairs), join the pieces with single spaces. It misses "He", "him)" and "man's", and in bias-bench
  it runs on text decoded by the model's tokenizer (which lower-cases everything for uncased models);
  `paper_roundtrip` does that decoding.

One word, several partners: the list maps some words from two pairs (him/her and his/her; boy/girl and
guy/girl; gentleman/lady and lord/lady; sir/ma'am and sir/miss; mr./mrs. and mr./ms.). As in bias-bench the
pair that comes *last* in the list wins, in both modes: "her" -> "his", "girl" -> "guy", "lady" -> "lord",
"sir" -> "miss", "mr." -> "ms.". Telling the object "her" (-> "him") from the possessive (-> "his") needs a
part-of-speech tagger; neither the paper nor this module uses one.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Sequence

PAPER_PUNCTUATION = (".", ",", "?", "!", ";", ":")

# A candidate word: letters, optionally an inner apostrophe ("ma'am", "man's") and one trailing period ("mr.").
# Not preceded or followed by a letter, digit, underscore or hyphen.
_WORD = re.compile(r"(?<![\w\-])[A-Za-z]+(?:['’][A-Za-z]+)?\.?(?![\w\-])")
_POSSESSIVE = ("'s", "’s")

MALE, FEMALE = 0, 1


def swap_table(pairs: Iterable[Sequence[str]]) -> dict[str, str]:
    """word -> counterpart for [male, female] pairs; a word in several pairs takes the last one (bias-bench)."""
    table: dict[str, str] = {}
    for pair in pairs:
        male, female = pair[0], pair[1]
        table[male] = female
        table[female] = male
    return table


def side_table(pairs: Iterable[Sequence[str]]) -> dict[str, int]:
    """lower-cased word -> MALE (0) or FEMALE (1)."""
    sides: dict[str, int] = {}
    for pair in pairs:
        sides[pair[0].lower()] = MALE
        sides[pair[1].lower()] = FEMALE
    return sides


def paper_pairs(pairs: Iterable[Sequence[str]]) -> list[tuple[str, str]]:
    """bias-bench's `_create_bias_attribute_words`: the pairs, then every pair with each trailing mark."""
    base = [(p[0], p[1]) for p in pairs]
    return base + [(m + mark, f + mark) for mark in PAPER_PUNCTUATION for m, f in base]


def _match_case(original: str, replacement: str) -> str:
    letters = [c for c in original if c.isalpha()]
    if len(letters) > 1 and all(c.isupper() for c in letters):
        return replacement.upper()
    if original[:1].isupper():
        return replacement[:1].upper() + replacement[1:]
    return replacement


def _attribute_word(candidate: str, words) -> str | None:
    """The attribute word (a key of `words`, lower case) at the start of `candidate` (a regex match), or None;
    a trailing possessive and a sentence-final period are not part of it."""
    key = candidate.lower().replace("’", "'")
    forms = [key, key[:-1]] if key.endswith(".") else [key]  # "mr." is a word, "he." is "he" + period
    for form in forms:
        if form in words:
            return candidate[: len(form)]
        for suffix in _POSSESSIVE:
            if form.endswith(suffix) and form[: -len(suffix)] in words:
                return candidate[: len(form) - len(suffix)]
    return None


@dataclass(frozen=True)
class Match:
    start: int  # span of the attribute word in the text (punctuation and possessive excluded)
    end: int
    word: str  # as written
    side: int  # MALE or FEMALE
    pair: tuple[str, str]  # the (male, female) pair the swap uses (last pair in the list containing the word)
    replacement: str  # counterpart, capitalised like `word`


class CounterfactualSwapper:
    """Finds attribute words and swaps them with their counterparts (both directions at once)."""

    def __init__(self, pairs: Iterable[Sequence[str]], exact: bool = False):
        self.pairs = [(p[0], p[1]) for p in pairs]
        if not self.pairs:
            raise ValueError("no attribute word pairs")
        self.exact = exact
        self._table = swap_table((m.lower(), f.lower()) for m, f in self.pairs)
        self._sides = side_table(self.pairs)
        self._pair_of: dict[str, tuple[str, str]] = {}
        for m, f in self.pairs:
            self._pair_of[m.lower()] = (m, f)
            self._pair_of[f.lower()] = (m, f)
        self._exact_table = swap_table(paper_pairs(self.pairs)) if exact else {}

    # ---- finding words -------------------------------------------------------------------------------
    def matches(self, text: str) -> list[Match]:
        """Attribute words in `text` (default matching rules; see the module docstring)."""
        out = []
        for m in _WORD.finditer(text):
            word = _attribute_word(m.group(0), self._table)
            if word is None:
                continue
            key = word.lower().replace("’", "'")
            out.append(Match(m.start(), m.start() + len(word), word, self._sides[key], self._pair_of[key],
                             _match_case(word, self._table[key])))  # fmt: skip
        return out

    def sides(self, text: str) -> set[int]:
        """The genders (MALE, FEMALE) whose attribute words occur in `text`."""
        if not self.exact:
            return {m.side for m in self.matches(text)}
        found = set()
        for w in text.split():
            if w in self._exact_table:
                found.add(self._sides[w.lower() if w.lower() in self._sides else w[:-1].lower()])
        return found

    # ---- swapping ------------------------------------------------------------------------------------
    def swap(self, text: str, only_pair: tuple[str, str] | None = None) -> tuple[str, int]:
        """(counterfactual text, number of words swapped). `only_pair`: swap just the words of that pair
        (SentenceDebias makes one counterfactual per pair); in exact mode it matches that pair's 7 variants."""
        if self.exact:
            return self._swap_exact(text, only_pair)
        pieces, last, n = [], 0, 0
        for m in self.matches(text):
            if only_pair is not None:
                if m.word.lower() not in (only_pair[0].lower(), only_pair[1].lower()):
                    continue
                other = only_pair[1] if m.word.lower() == only_pair[0].lower() else only_pair[0]
                replacement = _match_case(m.word, other)
            else:
                replacement = m.replacement
            pieces.append(text[last : m.start])
            pieces.append(replacement)
            last, n = m.end, n + 1
        pieces.append(text[last:])
        return "".join(pieces), n

    def _swap_exact(self, text: str, only_pair: tuple[str, str] | None) -> tuple[str, int]:
        table = self._exact_table if only_pair is None else swap_table(paper_pairs([only_pair]))
        words = text.split()
        n = 0
        for i, w in enumerate(words):
            if w in table:
                words[i] = table[w]
                n += 1
        return " ".join(words), n


def augment_two_sided(lines: Iterable[str], swapper: CounterfactualSwapper) -> list[str]:
    """Two-sided CDA: for every line with at least one attribute word, its counterfactual then the line itself
    (bias-bench's order); lines without attribute words are dropped."""
    out = []
    for line in lines:
        swapped, n = swapper.swap(line)
        if n:
            out.append(swapped)
            out.append(line)
    return out


def paper_roundtrip(lines: Sequence[str], tokenizer, batch: int = 1000) -> list[str]:
    """Lines as bias-bench sees them before swapping: tokenised and decoded back (uncased models lower-case)."""
    out = []
    for i in range(0, len(lines), batch):
        enc = tokenizer(list(lines[i : i + batch]), add_special_tokens=False, truncation=False, verbose=False)
        out.extend(tokenizer.batch_decode(enc["input_ids"]))
    return out


# ---- race and religion: groups of three (bias-bench's attribute triples) --------------------------------------
@dataclass(frozen=True)
class GroupMatch:
    start: int  # span of the attribute word in the text (punctuation and possessive excluded)
    end: int
    word: str  # as written
    group: int  # column of the word in its tuple (race: black/white/asian; religion: jewish/christian/muslim)
    words: tuple[str, ...]  # the tuple the swap uses (the last tuple in the list containing the word)


class GroupSwapper:
    """Finds the words of attribute tuples (one column per group, bias-bench's race and religion triples) and
    replaces them by the word of another group in the same tuple.

    Matching as CounterfactualSwapper's (default: a regular expression, punctuation, capitalisation and
    possessives kept; `exact=True`: bias-bench's whitespace split and exact case-sensitive comparison with the
    tuples and their copies with one trailing mark of `. , ? ! ; :`). A word in several tuples takes the tuple
    listed last, as in bias-bench's loop (real race list: "black" -> the third triple, black/white/asian)."""

    def __init__(self, tuples: Iterable[Sequence[str]], exact: bool = False):
        self.tuples = [tuple(t) for t in tuples]
        if not self.tuples:
            raise ValueError("no attribute word tuples")
        widths = {len(t) for t in self.tuples}
        if len(widths) != 1 or widths == {1}:
            raise ValueError(f"attribute word tuples must all have the same length >= 2, got lengths {sorted(widths)}")
        self.n_groups = widths.pop()
        self.exact = exact
        self._entry: dict[str, tuple[int, tuple[str, ...]]] = {}
        for t in self.tuples:
            for g, w in enumerate(t):
                self._entry[w.lower()] = (g, t)
        self._exact: dict[str, tuple[int, tuple[str, ...]]] = {}
        if exact:
            for mark in ("",) + PAPER_PUNCTUATION:
                for t in self.tuples:
                    marked = tuple(w + mark for w in t)
                    for g, w in enumerate(marked):
                        self._exact[w] = (g, marked)

    def matches(self, text: str) -> list[GroupMatch]:
        out = []
        for m in _WORD.finditer(text):
            word = _attribute_word(m.group(0), self._entry)
            if word is None:
                continue
            group, words = self._entry[word.lower().replace("’", "'")]
            out.append(GroupMatch(m.start(), m.start() + len(word), word, group, words))
        return out

    def groups(self, text: str) -> set[int]:
        """The groups whose attribute words occur in `text`."""
        if not self.exact:
            return {m.group for m in self.matches(text)}
        return {self._exact[w][0] for w in text.split() if w in self._exact}

    def swap(self, text: str, target: dict[int, int], only: tuple[str, ...] | None = None) -> tuple[str, int]:
        """(text with every attribute word of group g replaced by its tuple's word of group target[g], number
        of words replaced). Groups missing from `target` are left alone; `only`: just the words of that tuple."""
        if self.exact:
            if only is not None:
                raise ValueError("exact (bias-bench) matching swaps whole lines; `only` needs the default matching")
            words, n = text.split(), 0
            for i, w in enumerate(words):
                if w in self._exact and self._exact[w][0] in target:
                    g, t = self._exact[w]
                    words[i], n = t[target[g]], n + 1
            return " ".join(words), n
        pieces, last, n = [], 0, 0
        for m in self.matches(text):
            words = m.words
            if only is not None:
                if m.word.lower() != only[m.group].lower():
                    continue
                words = only
            if m.group not in target:
                continue
            pieces.append(text[last : m.start])
            pieces.append(_match_case(m.word, words[target[m.group]]))
            last, n = m.end, n + 1
        pieces.append(text[last:])
        return "".join(pieces), n


def augment_multi_group(lines: Iterable[str], swapper: GroupSwapper, seed: int = 0) -> list[str]:
    """bias-bench's `ternary_counterfactual_augmentation` (race, religion CDA): for every line one random other
    group per group (group g -> a uniform choice among the others, drawn per line; a seeded random.Random),
    every attribute word replaced accordingly; two-sided as for gender (the counterfactual, then the line);
    lines without attribute words are dropped."""
    import random

    rng = random.Random(seed)
    groups = range(swapper.n_groups)
    out = []
    for line in lines:
        target = {g: rng.choice([h for h in groups if h != g]) for g in groups}
        swapped, n = swapper.swap(line, target)
        if n:
            out.append(swapped)
            out.append(line)
    return out
