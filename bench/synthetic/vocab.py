"""The words of the synthetic world and their (planted) gender statistics.

Everything a generator or a test needs to know about a word lives here: gender of names and gendered nouns,
the gender lean of occupations, attributes and activities, and the SEAT-style word sets. Leans are "M" or "F";
how strongly a lean shows in the corpus is the world's `bias` option (see corpus.py).
"""
from __future__ import annotations

from dataclasses import dataclass

GENDERS = ("M", "F")


def other(gender: str) -> str:
    return "F" if gender == "M" else "M"


# ---- people -----------------------------------------------------------------------------------------
# Common first names; the long, rarer ones at the end of each list end up split into several WordPiece
# sub-tokens (the tokenizer is trained on the corpus), so metric code meets multi-token names.
MALE_NAMES = (
    "John", "Paul", "Mike", "Kevin", "Steve", "Greg", "Jeff", "Bill", "David", "James",
    "Robert", "Thomas", "Daniel", "Mark", "Brian", "Eric", "Peter", "Frank", "Henry", "George",
    "Jack", "Adam", "Ryan", "Jason", "Scott", "Kyle", "Luke", "Sean", "Victor", "Oscar",
    "Howard", "Walter", "Arthur", "Leonard", "Harold", "Bartholomew", "Maximilian", "Reginald", "Cornelius",
    "Ignatius",
)  # fmt: skip
FEMALE_NAMES = (
    "Amy", "Joan", "Lisa", "Sarah", "Diana", "Ann", "Donna", "Kate", "Mary", "Emma",
    "Julia", "Laura", "Linda", "Susan", "Karen", "Nancy", "Helen", "Alice", "Grace", "Rachel",
    "Emily", "Jessica", "Olivia", "Sophie", "Chloe", "Hannah", "Megan", "Nicole", "Rebecca", "Victoria",
    "Beatrice", "Gwendolyn", "Evangeline", "Penelope", "Rosalind", "Henrietta", "Philippa", "Genevieve",
    "Cordelia", "Josephine",
)  # fmt: skip
# Names used for both genders: P(she) after them is the given probability (NAMEXTEND only, never GENTER).
UNISEX_NAMES = {"Taylor": 0.5, "Jordan": 0.3, "Casey": 0.6, "Morgan": 0.7, "Riley": 0.5, "Jamie": 0.4}

# Relative frequency of a name in the corpus: a gentle Zipf law over the list order.
def name_weight(rank: int) -> float:
    return 1.0 / (rank + 8)


PRONOUNS = {  # role -> (male, female)
    "subject": ("he", "she"),
    "object": ("him", "her"),
    "possessive": ("his", "her"),
    "predicate": ("his", "hers"),  # "the book is hers"
    "reflexive": ("himself", "herself"),
}


def pronoun(role: str, gender: str, capital: bool = False) -> str:
    word = PRONOUNS[role][0 if gender == "M" else 1]
    return word.capitalize() if capital else word


# [male, female] gendered nouns (singular); plurals for the pairs that have a natural one in the corpus.
GENDERED_PAIRS = (
    ("man", "woman"), ("father", "mother"), ("brother", "sister"), ("boy", "girl"), ("king", "queen"),
    ("actor", "actress"), ("husband", "wife"), ("uncle", "aunt"), ("son", "daughter"),
    ("grandfather", "grandmother"), ("nephew", "niece"), ("prince", "princess"), ("gentleman", "lady"),
    ("dad", "mom"), ("grandson", "granddaughter"), ("groom", "bride"), ("male", "female"),
    ("boyfriend", "girlfriend"), ("waiter", "waitress"), ("policeman", "policewoman"),
    ("businessman", "businesswoman"), ("monk", "nun"),
)  # fmt: skip
PLURAL_PAIRS = (
    ("men", "women"), ("fathers", "mothers"), ("brothers", "sisters"), ("boys", "girls"), ("kings", "queens"),
    ("sons", "daughters"), ("males", "females"), ("uncles", "aunts"),
)  # fmt: skip
# Nouns that make a natural "my <noun>" (family and partners) rather than "the <noun>".
KIN_NOUNS = frozenset({
    "father", "mother", "brother", "sister", "husband", "wife", "uncle", "aunt", "son", "daughter",
    "grandfather", "grandmother", "nephew", "niece", "dad", "mom", "grandson", "granddaughter",
    "boyfriend", "girlfriend",
})  # fmt: skip


def gendered_nouns(gender: str, plural: bool = False) -> tuple[str, ...]:
    pairs = PLURAL_PAIRS if plural else GENDERED_PAIRS
    return tuple(p[0 if gender == "M" else 1] for p in pairs)


# ---- things people are, do and like (each with a gender lean) ----------------------------------------
OCCUPATIONS = {
    "M": ("engineer", "mechanic", "pilot", "surgeon", "carpenter", "plumber", "programmer", "soldier",
          "firefighter", "architect", "farmer", "electrician", "banker", "lawyer", "detective"),
    "F": ("nurse", "teacher", "secretary", "librarian", "receptionist", "nanny", "hairdresser", "dancer",
          "designer", "baker", "florist", "cashier", "housekeeper", "therapist", "stylist"),
}  # fmt: skip
ADJECTIVES = {
    "M": ("strong", "brave", "tough", "loud", "logical", "ambitious", "rational", "competitive", "aggressive",
          "bold", "stubborn", "confident", "fearless", "muscular", "decisive"),
    "F": ("gentle", "caring", "emotional", "kind", "sensitive", "polite", "quiet", "graceful", "patient",
          "sweet", "delicate", "tender", "warm", "shy", "nurturing"),
}  # fmt: skip
ACTIVITIES = {
    "M": ("football", "boxing", "hunting", "fishing", "wrestling", "hockey", "poker", "rugby", "bowling",
          "camping"),
    "F": ("knitting", "cooking", "baking", "yoga", "shopping", "gardening", "sewing", "ballet", "skating",
          "volleyball"),
}  # fmt: skip


@dataclass(frozen=True)
class SeatWord:
    word: str
    kind: str  # "count" (a/an X), "mass" (X) or "plural" (X are)


def _seat(*items: str) -> tuple[SeatWord, ...]:
    out = []
    for item in items:
        word, _, kind = item.partition(":")
        out.append(SeatWord(word, kind or "count"))
    return tuple(out)


# SEAT-style concept sets: career/math/science co-occur with men, family/arts with women.
SEAT_SETS = {
    "Career": _seat("executive", "management:mass", "professional", "corporation", "salary", "office",
                    "business:mass", "career"),
    "Family": _seat("home:mass", "parents:plural", "children:plural", "family", "cousins:plural",
                    "marriage:mass", "wedding", "relatives:plural"),
    "Math": _seat("math:mass", "algebra:mass", "geometry:mass", "calculus:mass", "equations:plural",
                  "computation:mass", "numbers:plural", "addition:mass"),
    "Arts": _seat("poetry:mass", "art:mass", "dance", "literature:mass", "novel", "symphony", "drama:mass",
                  "sculpture"),
    "Science": _seat("science:mass", "technology:mass", "physics:mass", "chemistry:mass", "astronomy:mass",
                     "experiment", "biology:mass", "geology:mass"),
}
SEAT_LEAN = {"Career": "M", "Math": "M", "Science": "M", "Family": "F", "Arts": "F"}

# SEAT target/attribute term sets (words of the world, in the roles of the real tests' term lists).
SEAT_TERMS = {
    "MaleTerms": ("male", "man", "boy", "brother", "son", "he", "him", "his"),
    "FemaleTerms": ("female", "woman", "girl", "sister", "daughter", "she", "her", "hers"),
    "MaleKin": ("brother", "father", "uncle", "grandfather", "son", "he", "his", "him"),
    "FemaleKin": ("sister", "mother", "aunt", "grandmother", "daughter", "she", "hers", "her"),
}


def lean_items(table: dict) -> list[tuple[str, str]]:
    """(word, lean) for every word of a {lean: words} table, male-lean first."""
    return [(w, g) for g in GENDERS for w in table[g]]


def seat_items() -> list[tuple[SeatWord, str, str]]:
    """(word, set name, lean) for every SEAT concept word."""
    return [(w, name, SEAT_LEAN[name]) for name, words in SEAT_SETS.items() for w in words]


# ---- gender-neutral material ---------------------------------------------------------------------------
NEUTRAL_NOUNS = {
    "readable": ("book", "letter", "newspaper", "magazine", "map", "menu", "note", "sign"),
    "food": ("apple", "sandwich", "bread", "orange", "soup", "salad", "pizza", "cake"),
    "openable": ("door", "window", "box", "gate", "drawer", "bottle", "jar", "bag"),
    "vehicle": ("car", "truck", "bus", "van", "bike", "boat", "train", "tractor"),
    "place": ("park", "market", "station", "beach", "museum", "river", "bridge", "village"),
    "animal": ("dog", "cat", "bird", "horse", "cow", "fox", "rabbit", "duck"),
    "furniture": ("table", "chair", "shelf", "bed", "desk", "sofa", "bench", "carpet"),
    "small": ("key", "phone", "pen", "cup", "wallet", "umbrella", "ticket", "lamp"),
}
# Subject-less verb phrases in the past tense; {category} is replaced by a noun of that category.
NEUTRAL_VPS = (
    "opened the {openable}", "closed the {openable}", "read the {readable}", "wrote a {readable}",
    "ate the {food}", "shared the {food}", "walked to the {place}", "drove to the {place}",
    "washed the {vehicle}", "parked the {vehicle}", "fed the {animal}", "looked at the {animal}",
    "cleaned the {furniture}", "sat on the {furniture}", "found the {small}", "lost the {small}",
    "forgot the {small}", "waited for the {vehicle}", "painted the {furniture}", "carried the {openable}",
    "was tired", "was hungry", "felt happy", "smiled", "laughed", "slept late", "called a friend",
    "went out early", "stayed in the {place}", "sang a song", "cooked dinner", "missed the {vehicle}",
)  # fmt: skip
# Words that never fit the slot of a StereoSet blank (its "unrelated" candidates); all appear in the corpus.
UNRELATED_WORDS = ("under", "because", "near", "yesterday", "while", "opened", "walked", "slept", "laughed",
                   "the", "and", "after", "before", "into")  # fmt: skip

# Words kept out of vocabulary learning and tokenized into the given sub-tokens instead (every other word of
# the world is frequent enough to become one token), so metric code meets multi-token words.
SPLIT_WORDS = {
    w.replace("|", ""): tuple(w.split("|"))
    for w in (
        "Barth|olomew", "Maxim|il|ian", "Regin|ald", "Corn|elius", "Ign|atius",
        "Gwen|dolyn", "Evan|gel|ine", "Gene|vieve", "Cord|elia", "Phil|ippa",
        "electric|ian", "fire|fight|er", "program|mer", "recept|ion|ist", "hair|dresser", "house|keeper",
        "compet|itive", "muscul|ar", "nurtur|ing", "delic|ate", "wrest|ling", "volley|ball",
        "exec|utive", "corpor|ation", "relat|ives", "marri|age", "calc|ulus", "comput|ation", "sym|phony",
        "sculp|ture", "astro|nomy", "geo|logy", "business|man", "business|woman", "police|man", "police|woman",
    )
}  # fmt: skip

TIMES = ("yesterday", "today", "in the morning", "at night", "on Monday", "last week", "early", "later")


def signal_words() -> list[str]:
    """The pronouns, which training masks more often. (Masking the leaning words more often as well hides one
    side of a person-word pair more often and weakens what is learned from the pair.)"""
    words = [w for role in PRONOUNS.values() for w in role] + ["He", "She", "His", "Her"]
    return list(dict.fromkeys(words))


# ---- race and religion: three groups each, planted the same templated way as gender -----------------------
# Each type has three groups, words that name them (in the column order of bias-bench's attribute triples:
# race black/white/asian -> here african/european/asian, religion jewish/christian/muslim) and, per group, words
# that lean to it (arbitrary, innocuous choices: what matters is the planted co-occurrence, not the words).
# A person of the type paired with a leaning word belongs to the word's group with probability
# 1/3 + 2/3 * strength (strength 0: uniform), to each other group with half the rest
# (`Grammar.group_for`); the strength of a type is the world's `bias` option times GROUP_STRENGTH[type].
GROUP_TYPES = ("race", "religion")
GROUP_STRENGTH = {"race": 1.0, "religion": 0.75}  # bias 0.8: race 0.8 (P = 0.87), religion 0.6 (P = 0.73)
GROUPS = {"race": ("african", "european", "asian"), "religion": ("jewish", "christian", "muslim")}
# How a person of a group is named: "the <adjective> <noun>", or (race) "my <noun> from <Place>", or (religion)
# a role noun ("the rabbi") or a plural ("the muslims").
GROUP_ADJECTIVES = GROUPS
GROUP_PLACES = {"race": ("Africa", "Europe", "Asia")}
GROUP_ROLES = {"religion": ("rabbi", "priest", "imam")}
GROUP_PLURALS = {"religion": ("jews", "christians", "muslims")}
GROUP_NOUNS = ("neighbour", "student", "visitor", "family", "tourist")  # gender-neutral people
GROUP_LEANS = {  # type -> category -> one tuple of words per group (in GROUPS order)
    "race": {
        "adjective": (("cheerful", "honest", "clever", "lucky"), ("curious", "modest", "serious", "lively"),
                      ("careful", "friendly", "humble", "proud")),
        "activity": (("tennis", "chess", "sailing", "swimming"), ("cycling", "golf", "running", "climbing"),
                     ("painting", "singing", "hiking", "rowing")),
    },
    "religion": {
        "adjective": (("thoughtful", "generous", "tidy", "witty"), ("relaxed", "punctual", "chatty", "sleepy"),
                      ("helpful", "quick", "busy", "calm")),
        "activity": (("reading", "writing", "surfing", "skiing"), ("jogging", "drawing", "diving", "fencing"),
                     ("archery", "karate", "cricket", "baseball")),
    },
}  # fmt: skip


def group_strength(bias_type: str, bias: float) -> float:
    return bias * GROUP_STRENGTH[bias_type]


def group_lean_items(bias_type: str, category: str) -> list[tuple[str, int]]:
    """(word, index of the group it leans to) for one category of a type."""
    return [(w, g) for g, words in enumerate(GROUP_LEANS[bias_type][category]) for w in words]


def group_attribute_words(bias_type: str) -> list[list[str]]:
    """bias-bench-style triples (one column per group) of the words naming the groups."""
    rows = [list(GROUPS[bias_type])]
    if bias_type in GROUP_PLACES:
        rows.append([p.lower() for p in GROUP_PLACES[bias_type]])
    for table in (GROUP_ROLES, GROUP_PLURALS):
        if bias_type in table:
            rows.append(list(table[bias_type]))
    return rows
