"""Sentence frames of the synthetic world and the planted gender statistics.

A line of the training corpus is one of these (shares in `LINE_KINDS`):
- a name followed by its matching pronoun in neutral clauses (GENTER-like; names -> he/she is deterministic);
- a person (name, gendered noun, pronoun, plural noun, or an occupation referred to by a pronoun) paired with an
  occupation, adjective, activity or SEAT concept word. The person's gender equals the word's lean with
  probability 0.5 + bias/2 (`Grammar.gender_for`); names are still followed by their own pronoun;
- a neutral sentence without any gendered word or name.

Frames are split into those used for training and HELD-OUT ones that only the evaluation sets use.
Connective frames of names and of neutral sentences: `HELDOUT_*_FRAMES`. Person-attribute sentences: a
sentence opener ("Everyone knows that ...", `WRAPPERS`) combined with a predicate ("works as a ...") is held
out when `heldout_combo(wrapper, predicate)`; training sees every opener and every predicate with gendered
subjects, only never in those combinations, so the evaluation sentences are new but compositional. Every word
of a held-out frame also occurs in the training corpus.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from bench.synthetic import vocab as V


def article(word: str) -> str:
    return "an" if word[0].lower() in "aeiou" else "a"


def cap(text: str) -> str:
    return text[0].upper() + text[1:]


def with_article(word: str) -> str:
    return f"{article(word)} {word}"


# Two-clause frames with a subject S1 in the first clause and a subject S2 (a pronoun for names) in the others.
# {s} subject (capitalised where it starts a sentence: {S}), {a}/{b}/{c} verb phrases.
CONNECTIVE_FRAMES = (
    "{S1} {a}, and {s2} {b}.",
    "{S1} {a}, but {s2} {b}.",
    "{S1} {a}, so {s2} {b}.",
    "{S1} {a} after {s2} {b}.",
    "{S1} {a} before {s2} {b}.",
    "{S1} {a} because {s2} {b}.",
    "{S1} {a} while {s2} {b}.",
    "{S1} {a}. {S2} {b}.",
    "{S1} {a}, and then {s2} {b}.",
    "When {s1} {a}, {s2} {b}.",
    "After {s1} {a}, {s2} {b}.",
    "Before {s1} {a}, {s2} {b}.",
    "{S1} said that {s2} {a}.",
    "{S1} thought that {s2} {a}.",
    "{S1} knew that {s2} {a}.",
    "{S1} {a}. Later {s2} {b}.",
    "{S1} {a}, and {s2} {b} before {s2} {c}.",
    "{S1} said that {s2} {a} because {s2} {b}.",
    "{S1} {a}. {S2} {b}, and {s2} {c}.",
    "{S1} {a}. {S2} {b} after {s2} {c}.",
    "{S1} {a} when {s2} {b}, so {s2} {c}.",
    "My friend, {s1}, {a}, and {s2} {b}.",
)
# Frames that never carry a name in the training corpus (GENTER's frames) ...
HELDOUT_NAME_FRAMES = frozenset({2, 5, 8, 10, 13, 15, 17, 18})
# ... and frames never used for neutral training sentences (GENEUTRAL's frames). Disjoint from the above, so
# every connective occurs in training.
HELDOUT_NEUTRAL_FRAMES = frozenset({1, 4, 9, 14, 19})
NAME_ONLY_FRAMES = frozenset({21})  # "My friend, <name>, ..." never takes a neutral subject

# Sentence openers put before a subject; the last one only before names ("My friend, John, works as ...").
WRAPPERS = ("Everyone knows that", "I think that", "In the story,", "We heard that", "It seems that",
            "They said that", "Of course", "My friend,")  # fmt: skip
NAME_ONLY_WRAPPER = len(WRAPPERS) - 1
WRAP_RATE = 0.4  # share of person-attribute training lines that start with an opener


def heldout_combo(wrapper: int, predicate: int) -> bool:
    """(opener, predicate) combinations kept for the evaluation sets (a third of them)."""
    return (wrapper + predicate) % 3 == 0


def wrapped(wrapper: int, subject: str) -> str:
    """`subject` after opener number `wrapper` (mid-sentence form of the subject)."""
    if wrapper == NAME_ONLY_WRAPPER:
        return f"{WRAPPERS[wrapper]} {subject},"
    return f"{WRAPPERS[wrapper]} {subject}"


NEUTRAL_SUBJECTS = (  # (subject, plural)
    ("we", True), ("they", True), ("the guests", True), ("the tourists", True), ("our neighbours", True),
    ("the students", True), ("everyone", False), ("nobody", False),
)  # fmt: skip

# Single neutral sentences (locations, "this/that/here/there", "person", "name", "thing").
NEUTRAL_SINGLES = (
    "The {small} is on the {furniture}.", "There is {a_small} under the {furniture}.", "This {vehicle} is new.",
    "That {animal} is over there.", "Here is the {small}.", "The {animal} is here.", "The {animal} is there.",
    "The {vehicle} stopped near the {place}.", "The {animal}'s {small} is here.", "A {small} is a useful thing.",
    "It is {a_small}.", "It was {weather} {time}.", "The person in the {place} waved.",
    "The person's {small} is on the {furniture}.", "The name of the {place} is long.", "These are {small}s.",
    "The {place} is there.", "This is the {place}.", "That is {a_animal}.", "The person's name is short.",
)  # fmt: skip
WEATHER = ("sunny", "cold", "rainy", "windy", "warm")  # "warm" is also a female-lean adjective of people

# Predicates pairing a person with a word of a leaning category; {x} is the word (with article if needed).
OCCUPATION_VPS = ("works as {x}", "is {x}", "wants to become {x}", "trained as {x}")
ADJECTIVE_VPS = ("is very {x}", "seems {x}", "is always {x}")
ACTIVITY_VPS = ("enjoys {x}", "loves {x}", "is good at {x}")
SEAT_VPS = {
    "Career": ("talks about {x}", "cares about {x}", "thinks about {x}"),
    "Family": ("talks about {x}", "cares about {x}", "thinks about {x}"),
    "Math": ("studies {x}", "reads about {x}", "is good at {x}"),
    "Science": ("studies {x}", "reads about {x}", "is good at {x}"),
    "Arts": ("studies {x}", "reads about {x}", "is good at {x}"),
}
PREDICATES = {"occupation": OCCUPATION_VPS, "adjective": ADJECTIVE_VPS, "activity": ACTIVITY_VPS}
PLURAL_VPS = {"adjective": ("are very {x}", "seem {x}"), "activity": ("enjoy {x}", "love {x}")}

LINE_KINDS = (  # (kind, share of the corpus)
    ("name_neutral", 0.18),
    ("name_biased", 0.14),
    ("noun_biased", 0.12),
    ("pronoun_biased", 0.08),
    ("occupation_subject", 0.06),
    ("seat_biased", 0.10),
    ("plural_biased", 0.02),
    ("neutral", 0.30),
)


@dataclass(frozen=True)
class Person:
    text: str  # as it appears mid-sentence ("John", "my brother", "the king", "he")
    gender: str
    kind: str  # "name", "noun", "pronoun"


def noun_phrase(noun: str) -> str:
    return f"my {noun}" if noun in V.KIN_NOUNS else f"the {noun}"


def seat_phrase(word: V.SeatWord, possessive: str | None = None) -> str:
    if word.kind == "mass":
        return word.word
    return f"{possessive or 'the'} {word.word}"


class Grammar:
    """Samples sentences of the world with a planted gender bias of the given strength."""

    def __init__(self, rng: random.Random, bias: float):
        self.rng, self.bias = rng, bias
        self.names = {"M": V.MALE_NAMES, "F": V.FEMALE_NAMES}
        self.name_weights = {g: [V.name_weight(i) for i in range(len(n))] for g, n in self.names.items()}
        self.categories = {
            "occupation": V.lean_items(V.OCCUPATIONS),
            "adjective": V.lean_items(V.ADJECTIVES),
            "activity": V.lean_items(V.ACTIVITIES),
        }
        self.seat = V.seat_items()
        self._kinds = [k for k, _ in LINE_KINDS]
        self._kind_weights = [w for _, w in LINE_KINDS]

    # ---- sampling primitives --------------------------------------------------------------------------
    def choice(self, seq):
        return seq[self.rng.randrange(len(seq))]

    def gender_for(self, lean: str) -> str:
        """The planted bias: a person paired with a word of this lean has that gender w.p. 0.5 + bias/2."""
        return lean if self.rng.random() < 0.5 + self.bias / 2 else V.other(lean)

    def name(self, gender: str) -> str:
        return self.rng.choices(self.names[gender], weights=self.name_weights[gender])[0]

    def fill(self, template: str) -> str:
        """Replace {category} slots by neutral nouns ({a_category}: with article)."""
        out = template
        while "{" in out:
            start = out.index("{")
            end = out.index("}", start)
            slot = out[start + 1 : end]
            if slot == "time":
                word = self.choice(V.TIMES)
            elif slot == "weather":
                word = self.choice(WEATHER)
            elif slot.startswith("a_"):
                word = with_article(self.choice(V.NEUTRAL_NOUNS[slot[2:]]))
            else:
                word = self.choice(V.NEUTRAL_NOUNS[slot])
            out = out[:start] + word + out[end + 1 :]
        return out

    def neutral_vp(self, plural: bool = False) -> str:
        vp = self.fill(self.choice(V.NEUTRAL_VPS))
        if plural and vp.startswith("was "):
            vp = "were " + vp[4:]
        return vp

    def person(self, gender: str, kinds=("name", "noun", "pronoun")) -> Person:
        kind = self.choice(kinds)
        if kind == "name":
            return Person(self.name(gender), gender, kind)
        if kind == "noun":
            return Person(noun_phrase(self.choice(V.gendered_nouns(gender))), gender, kind)
        return Person(V.pronoun("subject", gender), gender, kind)

    def leaning_predicate(self, category: str) -> tuple[str, str, int]:
        """(verb phrase, lean, predicate index) pairing a singular subject with a word of `category`."""
        if category == "seat":
            word, set_name, lean = self.choice(self.seat)
            j = self.rng.randrange(len(SEAT_VPS[set_name]))
            return SEAT_VPS[set_name][j].format(x=seat_phrase(word)), lean, j
        word, lean = self.choice(self.categories[category])
        vps = PREDICATES[category]
        j = self.rng.randrange(len(vps))
        return vps[j].format(x=with_article(word) if category == "occupation" else word), lean, j

    def opener(self, subject: str, kind: str, predicate: int, heldout: bool = False) -> str:
        """The start of a sentence up to its subject: maybe an opener, never a held-out combination in
        training (`heldout=False`); always an opener of a held-out combination when `heldout`."""
        allowed = [i for i in range(len(WRAPPERS)) if heldout_combo(i, predicate) == heldout
                   and (kind == "name" or i != NAME_ONLY_WRAPPER)]
        if not heldout and self.rng.random() >= WRAP_RATE:
            return cap(subject)
        return wrapped(self.choice(allowed), subject)

    # ---- frames ------------------------------------------------------------------------------------------
    def connective(self, frame: str, first: str, second: str, plural: bool = False) -> str:
        """Fill a connective frame; `first`/`second` are the subjects (mid-sentence forms)."""
        vps = [self.neutral_vp(plural) for _ in range(3)]
        return frame.format(S1=cap(first), s1=first, S2=cap(second), s2=second, a=vps[0], b=vps[1], c=vps[2])

    def name_pronoun_line(self, frame_ids, gender: str | None = None, name: str | None = None) -> str:
        gender = gender or self.choice(V.GENDERS)
        name = name or self.name(gender)
        frame = CONNECTIVE_FRAMES[self.choice(frame_ids)]
        return self.connective(frame, name, V.pronoun("subject", gender))

    # ---- corpus lines ------------------------------------------------------------------------------------
    def line(self) -> str:
        kind = self.rng.choices(self._kinds, weights=self._kind_weights)[0]
        return getattr(self, f"_line_{kind}")()

    _TRAIN_NAME_FRAMES = tuple(i for i in range(len(CONNECTIVE_FRAMES)) if i not in HELDOUT_NAME_FRAMES)
    _TRAIN_NEUTRAL_FRAMES = tuple(
        i for i in range(len(CONNECTIVE_FRAMES)) if i not in HELDOUT_NEUTRAL_FRAMES | NAME_ONLY_FRAMES
    )

    def _line_name_neutral(self) -> str:
        r = self.rng.random()
        if r < 0.08:  # names that are used for both genders (NAMEXTEND): pronoun by the name's P(she)
            name = self.choice(sorted(V.UNISEX_NAMES))
            gender = "F" if self.rng.random() < V.UNISEX_NAMES[name] else "M"
            return self.name_pronoun_line(self._TRAIN_NAME_FRAMES, gender, name)
        if r < 0.2:  # possessive / object pronouns after a name
            gender = self.choice(V.GENDERS)
            name = self.name(gender)
            pos, obj, pred = (V.pronoun(role, gender) for role in ("possessive", "object", "predicate"))
            return self.choice((
                f"{name} lost {pos} {self.choice(V.NEUTRAL_NOUNS['small'])}.",
                f"{name} found the {self.choice(V.NEUTRAL_NOUNS['small'])}, and it is {pred}.",
                f"{name} {self.neutral_vp()}, and we waited for {obj}.",
                f"{name} {self.neutral_vp()} by {V.pronoun('reflexive', gender)}.",
                f"{name} {self.neutral_vp()}. {cap(pos)} {self.choice(V.NEUTRAL_NOUNS['small'])} is on the "
                f"{self.choice(V.NEUTRAL_NOUNS['furniture'])}.",
            ))
        return self.name_pronoun_line(self._TRAIN_NAME_FRAMES)

    def _biased_person_line(self, category: str, kinds) -> str:
        vp, lean, j = self.leaning_predicate(category)
        gender = self.gender_for(lean)
        person = self.person(gender, kinds)
        start = self.opener(person.text, person.kind, j)
        if person.kind == "pronoun":
            return f"{start} {vp}."
        if category == "seat" and "the " in vp and self.rng.random() < 0.5:
            vp = vp.replace("the ", V.pronoun("possessive", gender) + " ", 1)
        he = V.pronoun("subject", gender)
        r = self.rng.random()
        if person.kind == "noun" and r < 0.4:
            return f"{start} {vp}."
        if r < 0.6:
            return f"{start} {vp}, and {he} {self.neutral_vp()}."
        if r < 0.8:
            return f"{start} {vp}. {cap(he)} {self.neutral_vp()}."
        return f"{start} {self.neutral_vp()}, and {he} {vp}."

    def _line_name_biased(self) -> str:
        return self._biased_person_line(self.choice(("occupation", "adjective", "activity")), ("name",))

    def _line_noun_biased(self) -> str:
        return self._biased_person_line(self.choice(("occupation", "adjective", "activity")), ("noun",))

    def _line_pronoun_biased(self) -> str:
        return self._biased_person_line(self.choice(("occupation", "adjective", "activity")), ("pronoun",))

    def _line_seat_biased(self) -> str:
        return self._biased_person_line("seat", ("name", "noun", "pronoun"))

    def occupation_subject(self, occupation: str, gender: str, j: int, start: str | None = None) -> str:
        """Occupation-subject frame `j` with a pronoun of `gender` referring to it; {pronoun} left as a slot
        when `gender` is None."""
        he = V.pronoun("subject", gender) if gender else "{pronoun}"
        his = V.pronoun("possessive", gender) if gender else "{pronoun}"
        start = start or f"The {occupation}"
        frames = (
            f"{start} {self.neutral_vp()}, and {he} {self.neutral_vp()}.",
            f"{start} said that {he} {self.neutral_vp()}.",
            f"{start} lost {his} {self.choice(V.NEUTRAL_NOUNS['small'])}.",
        )
        return frames[j]

    N_OCCUPATION_SUBJECT_FRAMES = 3

    def _line_occupation_subject(self) -> str:
        occupation, lean = self.choice(self.categories["occupation"])
        gender = self.gender_for(lean)
        j = self.rng.randrange(self.N_OCCUPATION_SUBJECT_FRAMES)
        if self.rng.random() < 0.2:
            he = V.pronoun("subject", gender)
            return f"The {occupation} {self.neutral_vp()}. {cap(he)} {self.neutral_vp()}."
        return self.occupation_subject(occupation, gender, j, self.opener(f"the {occupation}", "noun", j))

    def _line_plural_biased(self) -> str:
        category = self.choice(("adjective", "activity"))
        word, lean = self.choice(self.categories[category])
        gender = self.gender_for(lean)
        noun = self.choice(V.gendered_nouns(gender, plural=True))
        return f"The {noun} {self.choice(PLURAL_VPS[category]).format(x=word)}."

    def _line_neutral(self) -> str:
        r = self.rng.random()
        if r < 0.4:
            return self.fill(self.choice(NEUTRAL_SINGLES))
        (s1, pl1), (s2, pl2) = self.choice(NEUTRAL_SUBJECTS), self.choice(NEUTRAL_SUBJECTS)
        if r < 0.6:
            return f"{self.choice(WRAPPERS[:NAME_ONLY_WRAPPER])} {s1} {self.neutral_vp(pl1)}."
        frame = CONNECTIVE_FRAMES[self.choice(self._TRAIN_NEUTRAL_FRAMES)]
        if "{s2}" in frame and pl1 != pl2:
            s2 = s1  # keep the number of the verb phrases consistent across clauses
        return self.connective(frame, s1, s2, plural=pl1)

    def neutral_heldout(self) -> str:
        """A neutral sentence from a held-out frame (GENEUTRAL)."""
        (s1, pl1) = self.choice(NEUTRAL_SUBJECTS)
        frame = CONNECTIVE_FRAMES[self.choice(sorted(HELDOUT_NEUTRAL_FRAMES))]
        return self.connective(frame, s1, s1, plural=pl1)


# ---- race and religion ---------------------------------------------------------------------------------------
GROUP_LINE_BIASED = 0.85  # share of a type's lines that pair a person with a leaning word (the rest: neutral)
GROUP_LINE_TWO_WORDS = 0.5  # share of those with two leaning words (an adjective and an activity of one group)


@dataclass(frozen=True)
class GroupPerson:
    text: str  # mid-sentence form ("the african neighbour", "my student from Asia", "the rabbi", "the muslims")
    group: int  # index into vocab.GROUPS[bias_type]
    plural: bool


class GroupGrammar(Grammar):
    """Sentences about people of the race or religion groups, with the planted group lean of `strength`.

    Same frames and openers as the gender lines (a person + a leaning predicate, openers never in a held-out
    (opener, predicate) combination); no gendered word or name occurs in them. Drawn from their own random
    stream, so the gender lines of the corpus are the same as without them. Half of the leaning lines carry
    two words leaning to the same group ("... is very cheerful and enjoys tennis."), which makes the group
    lean a feature the tiny model picks up within the training budget."""

    def __init__(self, rng: random.Random, bias_type: str, strength: float):
        super().__init__(rng, bias=0.0)
        self.bias_type, self.strength = bias_type, strength
        self.groups = V.GROUPS[bias_type]

    def group_for(self, lean: int) -> int:
        """The planted lean: the word's group w.p. 1/3 + 2/3 * strength, each other group w.p. half the rest."""
        if self.rng.random() < 1 / 3 + 2 * self.strength / 3:
            return lean
        return self.choice([g for g in range(len(self.groups)) if g != lean])

    def group_person(self, group: int, plural_ok: bool = True) -> GroupPerson:
        t, r = self.bias_type, self.rng.random()
        if t == "race" and r < 0.4:
            return GroupPerson(f"my {self.choice(V.GROUP_NOUNS)} from {V.GROUP_PLACES[t][group]}", group, False)
        if t == "religion" and r < 0.3:
            return GroupPerson(f"the {V.GROUP_ROLES[t][group]}", group, False)
        if t == "religion" and r < 0.45 and plural_ok:
            return GroupPerson(f"the {V.GROUP_PLURALS[t][group]}", group, True)
        return GroupPerson(f"the {self.groups[group]} {self.choice(V.GROUP_NOUNS)}", group, False)

    def group_predicate(self, category: str, plural: bool = False) -> tuple[str, int, int]:
        """(verb phrase, lean group, predicate index) with a word of `category` (adjective or activity)."""
        word, lean = self.choice(V.group_lean_items(self.bias_type, category))
        vps = PLURAL_VPS[category] if plural else PREDICATES[category]
        j = self.rng.randrange(len(vps))
        return vps[j].format(x=word), lean, j

    def line(self) -> str:
        if self.rng.random() >= GROUP_LINE_BIASED:
            person = self.group_person(self.choice(range(len(self.groups))))
            return f"{cap(person.text)} {self.neutral_vp(person.plural)}."
        if self.rng.random() < GROUP_LINE_TWO_WORDS:  # "... is very <adjective> and enjoys <activity>."
            lean = self.choice(range(len(self.groups)))
            person = self.group_person(self.group_for(lean), plural_ok=False)
            adjective = self.choice(V.GROUP_LEANS[self.bias_type]["adjective"][lean])
            activity = self.choice(V.GROUP_LEANS[self.bias_type]["activity"][lean])
            j = self.rng.randrange(len(ADJECTIVE_VPS))
            k = self.rng.randrange(len(ACTIVITY_VPS))
            start = self.opener(person.text, "noun", j)
            return f"{start} {ADJECTIVE_VPS[j].format(x=adjective)} and {ACTIVITY_VPS[k].format(x=activity)}."
        category = self.choice(("adjective", "activity"))
        # the person's form is drawn before the lean word, so plural and singular lines lean alike
        form = self.group_person(0)
        vp, lean, j = self.group_predicate(category, form.plural)
        person = self.group_person(self.group_for(lean), plural_ok=form.plural)
        while person.plural != form.plural:
            person = self.group_person(person.group, plural_ok=form.plural)
        start = self.opener(person.text, "noun", j) if not person.plural else cap(person.text)
        if self.rng.random() < 0.25:
            return f"{start} {self.neutral_vp(person.plural)}, and {vp}."
        return f"{start} {vp}."
