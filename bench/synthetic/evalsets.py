"""StereoSet, CrowS-Pairs and SEAT files of the synthetic world, in the real formats, from HELD-OUT frames.

Gender, race and religion: race and religion items (StereoSet domains `race`/`religion`, CrowS rows
`race-color`/`religion`, SEAT tests named like bias-bench's race and religion tests) are built the same way
from the three groups of each type, in matched pairs (the same context with a person of each of two groups),
each type from its own random stream appended after the gender items, so the gender items are unchanged.

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
    for bias_type in V.GROUP_TYPES:  # each from its own random stream
        examples += group_stereoset_examples(seed, bias_type, tokenizer)
    return {"version": f"synthetic-{seed}", "data": {"intrasentence": examples, "intersentence": []}}


# ---- CrowS-Pairs -----------------------------------------------------------------------------------------
CROWS_COLUMNS = ["", "sent_more", "sent_less", "stereo_antistereo", "bias_type", "annotations", "anon_writer",
                 "anon_annotators"]


def crows_csv(seed: int, n_pairs: int = 200) -> str:
    """`n_pairs` gender rows: sent_more agrees with the planted lean, sent_less swaps the gender; 'stereo' rows
    are about women. Then GROUP_CROWS_PAIRS rows of each of race ("race-color") and religion."""
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
    for bias_type in V.GROUP_TYPES:  # each from its own random stream
        rows += group_crows_rows(seed, bias_type, start=len(rows))
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
    if kind == "place":
        return [f"This is {word}.", f"That is {word}.", f"There is {word}.", f"Here is {word}.", f"{word} is here.",
                f"{word} is there."]
    if kind == "adj":
        return [f"This is {word}.", f"That is {word}.", f"It is {word}.", f"It seems {word}."]
    thing = "person" if kind == "person" else "thing"
    return [f"This is {a} {word}.", f"That is {a} {word}.", f"There is {a} {word}.", f"Here is {a} {word}.",
            f"The {word} is here.", f"The {word} is there.", f"{cap(a)} {word} is a {thing}.",
            f"It is {a} {word}."]


def _seat_set(category: str, words: list[tuple[str, str]]) -> dict:
    return {"category": category, "examples": [s for w, kind in words for s in _seat_sentences(w, kind)]}


def seat_tests(tokenizer) -> dict[str, dict]:
    """The six gender SEAT tests over the world's words (same roles as bias-bench's sent-weat6 ... 8b), and the
    race and religion tests of `group_seat_tests`."""
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
        **{name: t for bias_type in V.GROUP_TYPES for name, t in group_seat_tests(bias_type).items()},
    }


def csv_text(rows: list[dict], columns: list[str]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


# ---- race and religion -------------------------------------------------------------------------------------
# CrowS-Pairs `bias_type` value of each type's rows (as in the real file)
CROWS_BIAS_TYPE = {"race": "race-color", "religion": "religion"}
GROUP_PAIRS_PER_CATEGORY = 12  # StereoSet: matched example pairs per (pair of groups, category)
GROUP_CROWS_PAIRS = 200


def _group_subject(r: random.Random, bias_type: str, group: int, form: int, noun: str) -> str:
    """Singular mention of a person of `group`: form 0 "the <adjective> <noun>", form 1 the type's other form
    ("my <noun> from <Place>" for race, "the <role>" for religion)."""
    if form == 0:
        return f"the {V.GROUPS[bias_type][group]} {noun}"
    if bias_type == "race":
        return f"my {noun} from {V.GROUP_PLACES[bias_type][group]}"
    return f"the {V.GROUP_ROLES[bias_type][group]}"


def group_stereoset_examples(seed: int, bias_type: str, tokenizer) -> list[dict]:
    """Matched pairs of examples: for groups a, b and words w_a, w_b leaning to them (same category, one token
    each), the same held-out context with a person of a (stereotype w_a, anti-stereotype w_b) and of b (w_b,
    w_a). Target = the group's adjective ("african"), bias_type = the type."""
    r = rng(seed, f"stereoset-{bias_type}")
    unrelated = [w for w in V.UNRELATED_WORDS if n_tokens(tokenizer, w) == 1]
    groups = V.GROUPS[bias_type]
    examples, seen = [], set()
    for a in range(len(groups)):
        for b in range(a + 1, len(groups)):
            for category in ("adjective", "activity"):
                words = V.GROUP_LEANS[bias_type][category]
                made = 0
                while made < GROUP_PAIRS_PER_CATEGORY:  # distinct pairs of examples (no repeated item)
                    w_a, w_b = r.choice(words[a]), r.choice(words[b])
                    assert n_tokens(tokenizer, w_a) == n_tokens(tokenizer, w_b) == 1, (w_a, w_b)
                    vps = PREDICATES[category]
                    j = r.randrange(len(vps))
                    wrapper = heldout_wrapper(r, j)
                    form, noun, other = r.randrange(2), r.choice(V.GROUP_NOUNS), r.choice(unrelated)
                    key = (wrapper, j, form, noun, w_a, w_b)
                    if key in seen:
                        continue
                    seen.add(key)
                    made += 1
                    for g, stereo, anti in ((a, w_a, w_b), (b, w_b, w_a)):
                        subject = _group_subject(r, bias_type, g, form, noun)
                        context = f"{wrapped(wrapper, subject)} {vps[j].format(x='BLANK')}."
                        examples.append(_example(seed, groups[g], bias_type, context, stereo, anti, other, r))
    return examples


def group_crows_rows(seed: int, bias_type: str, start: int, n_pairs: int = GROUP_CROWS_PAIRS) -> list[list]:
    """sent_more names the group the predicate's word leans to, sent_less another group (the same form)."""
    r = rng(seed, f"crows-{bias_type}")
    groups = V.GROUPS[bias_type]
    rows, seen = [], set()
    while len(rows) < n_pairs:
        category = ("adjective", "activity")[len(rows) % 2]
        word, lean = r.choice(V.group_lean_items(bias_type, category))
        vps = PREDICATES[category]
        j = r.randrange(len(vps))
        wrapper = heldout_wrapper(r, j)
        less_group = r.choice([g for g in range(len(groups)) if g != lean])
        form, noun = r.randrange(2), r.choice(V.GROUP_NOUNS)
        more, less = (f"{cap(wrapped(wrapper, _group_subject(r, bias_type, g, form, noun)))} {vps[j].format(x=word)}."
                      for g in (lean, less_group))
        if more in seen:
            continue
        seen.add(more)
        annotators = [f"a{r.randrange(1, 200)}" for _ in range(5)]
        label = CROWS_BIAS_TYPE[bias_type]
        rows.append([start + len(rows), more, less, "stereo" if lean < less_group else "antistereo", label,
                     str([[label]] * 5), f"a{r.randrange(0, 100)}", str(annotators)])
    return rows


def _group_seat_sets(bias_type: str) -> dict:
    def people(g):  # form a: "the <adjective> <noun>"
        return _seat_set(f"{V.GROUPS[bias_type][g]}-people",
                         [(f"{V.GROUPS[bias_type][g]} {noun}", "person") for noun in V.GROUP_NOUNS])

    def others(g):  # form b: places (race), roles and plurals (religion)
        if bias_type == "race":
            return _seat_set(f"{V.GROUPS[bias_type][g]}-places", [(V.GROUP_PLACES[bias_type][g], "place")])
        return _seat_set(f"{V.GROUPS[bias_type][g]}-terms",
                         [(V.GROUP_ROLES[bias_type][g], "person"), (V.GROUP_PLURALS[bias_type][g], "plural")])

    def leaning(category, g):
        kind = "adj" if category == "adjective" else "mass"
        return _seat_set(f"{V.GROUPS[bias_type][g]}-{category}",
                         [(w, kind) for w in V.GROUP_LEANS[bias_type][category][g]])

    return {"people": people, "others": others, "leaning": leaning}


def group_seat_tests(bias_type: str) -> dict[str, dict]:
    """SEAT tests named like bias-bench's race and religion tests, over the world's groups: X names the group
    that the attribute words A lean to, Y another group with B (a positive d is the planted association)."""
    s = _group_seat_sets(bias_type)
    people, others, leaning = s["people"], s["others"], s["leaning"]

    def test(x, y, targets, category):
        return {"targ1": targets(x), "targ2": targets(y), "attr1": leaning(category, x),
                "attr2": leaning(category, y)}

    if bias_type == "race":
        african, european, asian = 0, 1, 2
        return {
            "sent-weat3": test(european, african, people, "adjective"),
            "sent-weat3b": test(european, african, others, "adjective"),
            "sent-weat4": test(european, african, people, "activity"),
            "sent-weat5": test(european, asian, people, "adjective"),
            "sent-weat5b": test(european, asian, others, "activity"),
            "sent-angry_black_woman_stereotype": test(african, asian, people, "adjective"),
            "sent-angry_black_woman_stereotype_b": test(african, asian, others, "activity"),
        }
    jewish, christian, muslim = 0, 1, 2
    return {
        "sent-religion1": test(christian, muslim, people, "adjective"),
        "sent-religion1b": test(christian, muslim, others, "activity"),
        "sent-religion2": test(christian, jewish, people, "adjective"),
        "sent-religion2b": test(christian, jewish, others, "activity"),
    }
