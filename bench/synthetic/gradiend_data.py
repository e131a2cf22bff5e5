"""GRADIEND's data files of the synthetic world (GENTER, GENEUTRAL, GENTYPES, NAMEXACT, NAMEXTEND, gendered
words) and bias-bench's attribute word list, in the real formats; GENTER/GENEUTRAL/GENTYPES from HELD-OUT
frames."""
from __future__ import annotations

import json
from collections import Counter

from bench.synthetic import vocab as V
from bench.synthetic.evalsets import heldout_wrapper, n_tokens, rng
from bench.synthetic.grammar import (
    CONNECTIVE_FRAMES,
    HELDOUT_NAME_FRAMES,
    NAME_ONLY_WRAPPER,
    PREDICATES,
    SEAT_VPS,
    Grammar,
    article,
    cap,
    heldout_combo,
    seat_phrase,
    wrapped,
)

SPLITS = ("train", "validation", "test")
GENTER_SPLITS = {"train": 2000, "val": 200, "test": 300}
N_GENEUTRAL = 3000
PREDICATES_OF = {"occupation": V.OCCUPATIONS, "adjective": V.ADJECTIVES, "activity": V.ACTIVITIES}


# ---- names -----------------------------------------------------------------------------------------------
def name_splits(seed: int, tokenizer) -> dict[str, str]:
    """name -> train/validation/test, per gender ~70/10/20 % and stratified by single/multi-token names."""
    r = rng(seed, "name-splits")
    out = {}
    for names in (V.MALE_NAMES, V.FEMALE_NAMES):
        single = [n for n in names if n_tokens(tokenizer, n) == 1]
        for group in (single, [n for n in names if n not in single]):
            r.shuffle(group)
            n_val, n_test = max(1, round(0.1 * len(group))), max(1, round(0.2 * len(group)))
            for i, name in enumerate(group):
                out[name] = "validation" if i < n_val else "test" if i < n_val + n_test else "train"
    return out


def name_counts(lines: list[str]) -> tuple[Counter, Counter]:
    """(occurrences of each name, occurrences of each unisex name by the gender of the pronoun after it)."""
    names = set(V.MALE_NAMES) | set(V.FEMALE_NAMES) | set(V.UNISEX_NAMES)
    counts, unisex = Counter(), Counter()
    for line in lines:
        words = line.replace(",", " ").replace(".", " ").split()
        for i, w in enumerate(words):
            if w in names:
                counts[w] += 1
                if w in V.UNISEX_NAMES:
                    follow = [x.lower() for x in words[i + 1 :] if x.lower() in ("he", "she")]
                    if follow:
                        unisex[(w, "F" if follow[0] == "she" else "M")] += 1
    return counts, unisex


def namexact_rows(lines, splits) -> list[dict]:
    counts, _ = name_counts(lines)
    gender = {**{n: "M" for n in V.MALE_NAMES}, **{n: "F" for n in V.FEMALE_NAMES}}
    total = sum(counts[n] for n in gender)
    rows = [
        {"name": n, "gender": g, "count": counts[n], "probability": f"{counts[n] / total:.6g}", "split": splits[n]}
        for n, g in gender.items()
    ]
    return sorted(rows, key=lambda r: (-r["count"], r["name"]))


def namextend_rows(lines, splits) -> list[dict]:
    counts, unisex = name_counts(lines)
    rows = []
    for r in namexact_rows(lines, splits):
        f = 1.0 if r["gender"] == "F" else 0.0
        rows.append({**r, "gender_agreement": 1.0, "prob_F": f, "prob_M": 1.0 - f, "primary_gender": r["gender"],
                     "genders": r["gender"]})
    total = sum(counts.values())
    for name, p_f in sorted(V.UNISEX_NAMES.items()):
        primary = "F" if p_f >= 0.5 else "M"
        for g in ("M", "F"):
            c = unisex[(name, g)]
            rows.append({"name": name, "gender": g, "count": c, "probability": f"{c / total:.6g}",
                         "split": "train", "gender_agreement": max(p_f, 1 - p_f), "prob_F": p_f,
                         "prob_M": round(1 - p_f, 10), "primary_gender": primary, "genders": "B"})
    keys = ["name", "gender", "count", "probability", "gender_agreement", "prob_F", "prob_M", "primary_gender",
            "genders", "split"]
    return [{k: r[k] for k in keys} for r in sorted(rows, key=lambda r: (-r["count"], r["name"], r["gender"]))]


# ---- GENTER / GENEUTRAL / GENTYPES -----------------------------------------------------------------------
def genter_rows(seed: int, splits: dict[str, str]) -> list[dict]:
    """Name + matching he/she in held-out frames; a template's names come from the names of its split."""
    r = rng(seed, "genter")
    g = Grammar(r, bias=0.0)
    frames = sorted(HELDOUT_NAME_FRAMES)
    names = {(s, gender): [n for n in pool if splits[n] == s] for s in SPLITS
             for gender, pool in (("M", V.MALE_NAMES), ("F", V.FEMALE_NAMES))}
    seen, rows = set(), []
    for split, n in GENTER_SPLITS.items():
        name_split = "validation" if split == "val" else split
        made = 0
        while made < n:
            frame = CONNECTIVE_FRAMES[g.choice(frames)]
            vps = {k: g.neutral_vp() for k in "abc"}
            masked = frame.format(S1="[NAME]", s1="[NAME]", S2="[PRONOUN]", s2="[PRONOUN]", **vps)
            if masked in seen:
                continue
            seen.add(masked)
            gender = g.choice(V.GENDERS)
            name = g.choice(names[(name_split, gender)])
            he = V.pronoun("subject", gender)
            text = frame.format(S1=name, s1=name, S2=cap(he), s2=he, **vps)
            rows.append({"text": text, "masked": masked, "label": gender, "name": name, "pronoun": he,
                         "pronoun_count": masked.count("[PRONOUN]"), "split": split})
            made += 1
    r.shuffle(rows)
    return [{"index": i, **row} for i, row in enumerate(rows)]


def geneutral_rows(seed: int) -> list[dict]:
    g = Grammar(rng(seed, "geneutral"), bias=0.0)
    seen, rows = set(), []
    while len(rows) < N_GENEUTRAL:
        text = g.neutral_heldout()
        if text not in seen:
            seen.add(text)
            rows.append({"index": len(rows), "text": text})
    return rows


def gentypes_rows(seed: int) -> list[dict]:
    """'My friend, [NAME], wants to become a nurse.' and the like, for every occupation, adjective, activity
    and SEAT word (held-out opener/predicate combinations)."""
    r = rng(seed, "gentypes")
    items = [(category, w, PREDICATES[category], w if category != "occupation" else f"{article(w)} {w}")
             for category in ("occupation", "adjective", "activity") for w, _ in V.lean_items(PREDICATES_OF[category])]
    items += [("seat", w.word, SEAT_VPS[name], seat_phrase(w)) for w, name, _ in V.seat_items()]
    texts = []
    for category, _, vps, x in items:
        friend = [j for j in range(len(vps)) if heldout_combo(NAME_ONLY_WRAPPER, j)]
        if friend:
            texts.append(f"{wrapped(NAME_ONLY_WRAPPER, '[NAME]')} {vps[r.choice(friend)].format(x=x)}.")
        if category in ("occupation", "adjective") or not friend:
            j = r.randrange(len(vps))
            texts.append(f"{wrapped(heldout_wrapper(r, j), '[NAME]')} {vps[j].format(x=x)}.")
    return [{"text": t} for t in texts]


# ---- word lists ------------------------------------------------------------------------------------------
PRONOUN_PAIRS = (("he", "she"), ("himself", "herself"), ("him", "her"), ("his", "her"), ("his", "hers"))


def bias_attribute_words() -> dict:
    pairs = [list(p) for p in V.GENDERED_PAIRS + V.PLURAL_PAIRS + PRONOUN_PAIRS]
    pairs += [[cap(m), cap(f)] for m, f in (("he", "she"), ("his", "her"))]  # sentence-initial pronouns
    # race and religion: bias-bench-style triples, one column per group (vocab.GROUPS order)
    return {"gender": pairs, **{t: V.group_attribute_words(t) for t in V.GROUP_TYPES}}


def gendered_words() -> list[dict]:
    entries = []
    for m, f in V.GENDERED_PAIRS + V.PLURAL_PAIRS + PRONOUN_PAIRS[:3] + (("his", "hers"),):
        entries.append({"word": m, "gender": "m", "gender_map": {"f": [{"parts_of_speech": "*", "word": f}]}})
        entries.append({"word": f, "gender": "f", "gender_map": {"m": [{"parts_of_speech": "*", "word": m}]}})
    for word, _ in V.lean_items(V.OCCUPATIONS):
        entries.append({"word": word, "gender": "n"})
    unique = {(e["word"], e["gender"]): e for e in entries}
    return sorted(unique.values(), key=lambda e: (e["word"], e["gender"]))


def gendered_words_json() -> str:
    return "[\n" + ",\n".join(json.dumps(e) for e in gendered_words()) + "\n]\n"
