"""StereoSet, CrowS-Pairs and SEAT files of the synthetic world, in the real formats, from HELD-OUT frames.

Each writer takes its own random stream (`rng(seed, name)`), so the files are deterministic for a seed and do
not depend on each other. Gender-stereotype items are built in matched pairs (the same frame and candidate
words with a male and a female person), so a model without gender associations scores 50 in expectation and
a word's overall frequency cannot pass for a bias. Stereotype and anti-stereotype candidates of StereoSet
have the same number of sub-tokens (StereoSet averages sub-token probabilities, which favours longer words).
"""
from __future__ import annotations

import csv
import hashlib
import io
import random

from bench.synthetic import vocab as V
from bench.synthetic.grammar import (
    NAME_ONLY_WRAPPER,
    PREDICATES,
    SEAT_VPS,
    WRAPPERS,
    Grammar,
    article,
    cap,
    heldout_combo,
    noun_phrase,
    wrapped,
)

MULTI_TOKEN_SHARE = 0.3  # StereoSet gender examples drawn from candidate pairs of multi-token words


def rng(seed: int, name: str) -> random.Random:
    return random.Random(f"synthetic-world:{seed}:{name}")


def hex_id(*parts) -> str:
    return hashlib.md5(":".join(map(str, parts)).encode()).hexdigest()


def n_tokens(tokenizer, word: str) -> int:
    return len(tokenizer.tokenize(word))


def heldout_wrapper(r: random.Random, predicate: int, names: bool = False) -> int:
    """An opener that is never combined with predicate number `predicate` in the training corpus."""
    return r.choice([i for i in range(len(WRAPPERS))
                     if heldout_combo(i, predicate) and (names or i != NAME_ONLY_WRAPPER)])


# ---- StereoSet -------------------------------------------------------------------------------------------
def _paired_candidates(tokenizer, category: str) -> list[tuple[str, str, str]]:
    """(male-lean word, female-lean word, blank phrase) with equal sub-token counts and the same article."""
    if category == "seat":
        items = [(w.word, f"{'' if w.kind == 'mass' else 'the '}BLANK", lean, name)
                 for w, name, lean in V.seat_items()]
    else:
        table = {"occupation": V.OCCUPATIONS, "adjective": V.ADJECTIVES, "activity": V.ACTIVITIES}[category]
        items = [(w, f"{article(w)} BLANK" if category == "occupation" else "BLANK", lean, category)
                 for w, lean in V.lean_items(table)]
    pairs = []
    for m in [it for it in items if it[2] == "M"]:
        for f in [it for it in items if it[2] == "F"]:
            if m[1] != f[1] or n_tokens(tokenizer, m[0]) != n_tokens(tokenizer, f[0]):
                continue
            if category == "seat" and {m[3], f[3]} not in ({"Career", "Family"}, {"Math", "Arts"},
                                                           {"Science", "Arts"}):
                continue
            pairs.append((m[0], f[0], m[1], m[3] if category == "seat" else category))
    return pairs


def _blank_vps(category: str, group: str) -> tuple[str, ...]:
    return SEAT_VPS[group] if category == "seat" else PREDICATES[category]


def _example(seed, target, bias_type, context, stereo, anti, unrelated, r: random.Random) -> dict:
    sentences = []
    for word, label in ((stereo, "stereotype"), (anti, "anti-stereotype"), (unrelated, "unrelated")):
        sentence = context.replace("BLANK", word)
        sentences.append({"sentence": sentence, "id": hex_id(seed, "sentence", sentence, label),
                          "labels": [{"label": label, "human_id": "synthetic"}], "gold_label": label})
    r.shuffle(sentences)  # the real files do not keep a fixed order
    return {"id": hex_id(seed, "example", context, stereo, anti), "target": target, "bias_type": bias_type,
            "context": context, "sentences": sentences}


def stereoset(seed: int, tokenizer) -> dict:
    r = rng(seed, "stereoset")
    unrelated = [w for w in V.UNRELATED_WORDS if n_tokens(tokenizer, w) == 1]
    pools = {c: _paired_candidates(tokenizer, c) for c in ("occupation", "adjective", "activity", "seat")}
    examples = []
    # gender: gendered nouns as targets, 6 matched (male, female) pairs of examples per noun pair
    categories = ("occupation", "adjective", "activity", "seat")
    k = 0
    for male, female in V.GENDERED_PAIRS:
        for _ in range(6):
            category = categories[k % len(categories)]
            k += 1
            multi = [p for p in pools[category] if n_tokens(tokenizer, p[0]) > 1]
            pool = multi if multi and r.random() < MULTI_TOKEN_SHARE else pools[category]
            m_word, f_word, blank, group = r.choice(pool)
            vps = _blank_vps(category, group)
            j = r.randrange(len(vps))
            wrapper = heldout_wrapper(r, j)
            other = r.choice(unrelated)
            for noun, stereo, anti in ((male, m_word, f_word), (female, f_word, m_word)):
                context = f"{wrapped(wrapper, noun_phrase(noun))} {vps[j].format(x=blank)}."
                examples.append(_example(seed, noun, "gender", context, stereo, anti, other, r))
    # profession: occupations as targets, the blank is the pronoun referring to them
    g = Grammar(r, bias=0.0)
    for occupation, lean in V.lean_items(V.OCCUPATIONS):
        for j in range(Grammar.N_OCCUPATION_SUBJECT_FRAMES):
            start = wrapped(heldout_wrapper(r, j), f"the {occupation}")
            context = g.occupation_subject(occupation, None, j, start).replace("{pronoun}", "BLANK")
            role = "possessive" if " lost " in context else "subject"
            stereo, anti = V.pronoun(role, lean), V.pronoun(role, V.other(lean))
            examples.append(_example(seed, occupation, "profession", context, stereo, anti, r.choice(unrelated), r))
    return {"version": f"synthetic-{seed}", "data": {"intrasentence": examples, "intersentence": []}}


# ---- CrowS-Pairs -----------------------------------------------------------------------------------------
CROWS_COLUMNS = ["", "sent_more", "sent_less", "stereo_antistereo", "bias_type", "annotations", "anon_writer",
                 "anon_annotators"]


def crows_csv(seed: int, n_pairs: int = 200) -> str:
    """sent_more agrees with the planted lean, sent_less swaps the gender; 'stereo' rows are about women."""
    r = rng(seed, "crows")
    g = Grammar(r, bias=0.0)
    name_pairs = list(zip(V.MALE_NAMES, V.FEMALE_NAMES))  # same frequency rank
    rows, seen = [], set()
    while len(rows) < n_pairs:
        category = ("occupation", "adjective", "activity", "seat")[len(rows) % 4]
        vp, lean, j = g.leaning_predicate(category)
        if len(rows) % 2 == 0:
            pair = r.choice(name_pairs)
            wrapper = heldout_wrapper(r, j, names=True)
            tail = f", and {{he}} {g.neutral_vp()}" if r.random() < 0.5 else ""  # same continuation in both
            sent = {gen: f"{wrapped(wrapper, pair[i])} {vp}{tail.format(he=V.pronoun('subject', gen))}."
                    for i, gen in enumerate(V.GENDERS)}
        else:
            pair = r.choice(V.GENDERED_PAIRS)
            wrapper = heldout_wrapper(r, j)
            sent = {gen: f"{wrapped(wrapper, noun_phrase(pair[i]))} {vp}." for i, gen in enumerate(V.GENDERS)}
        more, less = sent[lean], sent[V.other(lean)]
        if more in seen:
            continue
        seen.add(more)
        annotators = [f"a{r.randrange(1, 200)}" for _ in range(5)]
        rows.append([len(rows), more, less, "stereo" if lean == "F" else "antistereo", "gender",
                     str([["gender"]] * 5), f"a{r.randrange(0, 100)}", str(annotators)])
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CROWS_COLUMNS)
    writer.writerows(rows)
    return out.getvalue()


# ---- SEAT ------------------------------------------------------------------------------------------------
def _seat_sentences(word: str, kind: str) -> list[str]:
    a = article(word)
    if kind == "name":
        return [f"This is {word}.", f"That is {word}.", f"There is {word}.", f"Here is {word}.", f"{word} is here.",
                f"{word} is there.", f"{word} is a person.", f"The person's name is {word}."]
    if kind == "mass":
        return [f"This is {word}.", f"That is {word}.", f"There is {word}.", f"It is {word}."]
    if kind == "plural":
        return [f"These are {word}.", f"Those are {word}.", f"They are {word}.", f"The {word} are here.",
                f"The {word} are there.", f"{cap(word)} are things."]
    if kind in ("he", "she"):
        w = cap(word)
        return [f"{w} is here.", f"{w} is there.", f"Here {word} is.", f"There {word} is.", f"{w} is a person."]
    if kind in ("him", "her"):
        return [f"It is {word}.", f"This is {word}.", f"That is {word}."]
    if kind in ("his", "hers"):
        return [f"This is {word}.", f"That is {word}.", f"It is {word}."]
    thing = "person" if kind == "person" else "thing"
    return [f"This is {a} {word}.", f"That is {a} {word}.", f"There is {a} {word}.", f"Here is {a} {word}.",
            f"The {word} is here.", f"The {word} is there.", f"{cap(a)} {word} is a {thing}.",
            f"It is {a} {word}."]


def _seat_set(category: str, words: list[tuple[str, str]]) -> dict:
    return {"category": category, "examples": [s for w, kind in words for s in _seat_sentences(w, kind)]}


def seat_tests(tokenizer) -> dict[str, dict]:
    """The six gender SEAT tests over the world's words (same roles as bias-bench's sent-weat6 ... 8b)."""
    def names(pool):
        return [(n, "name") for n in pool if n_tokens(tokenizer, n) == 1][:8]

    def concepts(name):
        return [(w.word, w.kind) for w in V.SEAT_SETS[name]]

    def terms(name):
        return [(w, w if w in ("he", "she", "him", "her", "his", "hers") else "person") for w in V.SEAT_TERMS[name]]

    male_names = _seat_set("MaleNames", names(V.MALE_NAMES))
    female_names = _seat_set("FemaleNames", names(V.FEMALE_NAMES))
    male_terms = _seat_set("MaleTerms", terms("MaleTerms"))
    female_terms = _seat_set("FemaleTerms", terms("FemaleTerms"))
    career, family = _seat_set("Career", concepts("Career")), _seat_set("Family", concepts("Family"))
    math, arts, science = (_seat_set(n, concepts(n)) for n in ("Math", "Arts", "Science"))
    male_kin, female_kin = _seat_set("MaleTerms", terms("MaleKin")), _seat_set("FemaleTerms", terms("FemaleKin"))

    def test(t1, t2, a1, a2):
        return {"targ1": t1, "targ2": t2, "attr1": a1, "attr2": a2}

    return {
        "sent-weat6": test(male_names, female_names, career, family),
        "sent-weat6b": test(male_terms, female_terms, career, family),
        "sent-weat7": test(math, arts, male_terms, female_terms),
        "sent-weat7b": test(math, arts, male_names, female_names),
        "sent-weat8": test(science, arts, male_kin, female_kin),
        "sent-weat8b": test(science, arts, male_names, female_names),
    }


def csv_text(rows: list[dict], columns: list[str]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()
