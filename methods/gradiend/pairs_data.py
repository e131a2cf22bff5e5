"""Race and religion data for pair GRADIENDs (SPEC-beyond §8.2): one CSV per class, read or built from a corpus.

Format (the paper's, = one config of HF aieng-lab/gradiend_race_data / gradiend_religion_data as CSV), read from
`<data_dir>/gradiend/<bias_type>/<class>.csv` when the three files of a type are present:
  masked   a sentence with exactly one [MASK] (where the class's word stood)
  split    train / validation / test
  <class>  one column per class of the type (race black, white, asian; religion jewish, christian, muslim), the
           class's aligned word in the original's casing; the file's own class column holds the factual word.
Directed set src -> tgt = the rows of src.csv, factual row[src], counterfactual row[tgt]; the label is the
direction (+1 when src is the pair's first class, -1 otherwise).

When the files are missing, the same rows are built from `<data_dir>/text_corpus/*.txt` (decisions, see README):
- class words = the columns of the type's triples in `bias_attribute_words/bias_attribute_words.json`; class
  names = the first triple, caucasian -> white (the synthetic world's african -> black, european -> white);
- corpus lines are split into sentences at ` . `, ` ! `, ` ? ` (WikiText is space-tokenised);
- for each triple and each of its words w that is exactly one whole whitespace token of the sentence
  (case-insensitive: `black,` is no match), one row: w -> [MASK], every column the triple's word in w's casing
  (lower, Capitalised or UPPER). A sentence can give several rows (one per triple holding w);
- split per masked sentence (not per direction, so a sentence is never in two splits): shuffled with seed 42,
  70 / 20 / 10 %;
- no regex filter (the reference's "[MASK]" pandas regex drops every row with an uppercase M/A/S/K in its first
  ten words: not reproduced; it concerned causal LMs, which pair GRADIENDs do not serve) and no vocabulary filter
  (words of several tokens are expanded to their tokens, pairs_examples.py).
Neutral sentences (encoder evaluation, type 3): corpus sentences without any class word of the type.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from pathlib import Path

from bench.data.paths import read_csv_rows, read_json, text_corpus
from bench.errors import DataError

MASK = "[MASK]"
CLASSES = {"race": ("black", "white", "asian"), "religion": ("jewish", "christian", "muslim")}
# RACE1..3 / RELIGION1..3 of the authors' evaluation fork (SPEC-beyond §8.1), first class = positive encoding
PAIRS = {"race": (("white", "black"), ("white", "asian"), ("black", "asian")),
         "religion": (("christian", "muslim"), ("christian", "jewish"), ("muslim", "jewish"))}  # fmt: skip
CLASS_NAMES = {"caucasian": "white", "african": "black", "european": "white"}  # first-triple word -> class
SPLITS = ("train", "validation", "test")
SPLIT_FRACTIONS = (0.7, 0.2, 0.1)
SPLIT_SEED = 42
_SENTENCE_END = re.compile(r"(?<= [.!?]) ")


def plugin_name(bias_type: str, pair: tuple[str, str]) -> str:
    """The registered name of a pair GRADIEND (pair_method.py), e.g. gradiend-race-white-black."""
    return f"gradiend-{bias_type}-{pair[0]}-{pair[1]}"


def pair_plugins(bias_type: str) -> tuple[str, ...]:
    """The pair GRADIENDs of a type, RACE1..3 / RELIGION1..3 in order (none for gender)."""
    return tuple(plugin_name(bias_type, p) for p in PAIRS.get(bias_type, ()))


@dataclass(frozen=True)
class GroupRow:
    masked: str
    split: str
    words: tuple[tuple[str, str], ...]  # (class, word) for every class of the type

    def word(self, cls: str) -> str:
        return dict(self.words)[cls]


@dataclass(frozen=True)
class Directed:
    """One row of a directed set: the masked sentence, the factual and the counterfactual word, the label."""

    masked: str
    factual: str
    counter: str
    label: int  # +1: factual of the pair's first class, -1: of its second


@dataclass
class GroupData:
    bias_type: str
    rows: dict[str, list[GroupRow]]  # class -> the rows of its file
    class_words: dict[str, list[str]]  # class -> its words (lower case), for P_g and the neutral filter
    neutral: list[str]
    source: str
    files: list[Path] = field(default_factory=list)

    @property
    def classes(self) -> tuple[str, ...]:
        return CLASSES[self.bias_type]

    def directed(self, src: str, tgt: str, split: str, label: int = 1) -> list[Directed]:
        return [Directed(r.masked, r.word(src), r.word(tgt), label) for r in self.rows[src] if r.split == split]

    def pair_rows(self, pair: tuple[str, str], split: str, seed: int = SPLIT_SEED) -> list[Directed]:
        """Both directions of `pair` in `split`, each downsampled (seeded) to the smaller one's size."""
        a, b = pair
        ab, ba = self.directed(a, b, split, 1), self.directed(b, a, split, -1)
        n = min(len(ab), len(ba))
        rng = random.Random(f"{seed}:{a}:{b}:{split}")
        return sorted(rng.sample(ab, n), key=ab.index) + sorted(rng.sample(ba, n), key=ba.index)

    def describe(self) -> str:
        counts = ", ".join(f"{c} {len(self.rows[c])}" for c in self.classes)
        return f"{self.bias_type} rows ({counts}; {self.source}), neutral {len(self.neutral)}"


def class_files(data_dir, bias_type: str) -> list[Path]:
    folder = Path(data_dir) / "gradiend" / bias_type
    return [folder / f"{c}.csv" for c in CLASSES[bias_type]]


def data_files(data_dir, bias_type: str) -> list[Path]:
    """The files `load` reads for `bias_type` (for cache keys)."""
    files = [p for p in class_files(data_dir, bias_type) if p.is_file()]
    corpus = Path(data_dir) / "text_corpus"
    words = Path(data_dir) / "bias_attribute_words" / "bias_attribute_words.json"
    return files + ([words] if words.is_file() else []) + (sorted(corpus.glob("*.txt")) if corpus.is_dir() else [])


# ---- class words ---------------------------------------------------------------------------------------------
def class_words(data_dir, bias_type: str) -> tuple[list[list[str]], dict[str, list[str]]]:
    """(the type's triples re-ordered to CLASSES order, class -> its words), from bias_attribute_words.json."""
    path = Path(data_dir) / "bias_attribute_words" / "bias_attribute_words.json"
    if not path.is_file():
        raise DataError(f"{path} is missing: the class words of {bias_type} come from it")
    triples = read_json(path).get(bias_type)
    if not triples or any(not isinstance(t, list) or len(t) != 3 for t in triples):
        raise DataError(f"{path}: {bias_type!r} must be a list of word triples")
    first = [CLASS_NAMES.get(w.lower(), w.lower()) for w in triples[0]]
    if sorted(first) != sorted(CLASSES[bias_type]):
        raise DataError(f"{path}: the first {bias_type} triple {triples[0]} does not name the classes "
                        f"{', '.join(CLASSES[bias_type])}")  # fmt: skip
    order = [first.index(c) for c in CLASSES[bias_type]]
    triples = [[str(t[i]).lower() for i in order] for t in triples]
    words = {c: list(dict.fromkeys(t[k] for t in triples)) for k, c in enumerate(CLASSES[bias_type])}
    return triples, words


def in_casing(word: str, like: str) -> str:
    """`word` in the casing of `like`: UPPER, Capitalised or lower."""
    if len(like) > 1 and like.isupper():
        return word.upper()
    if like[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


# ---- building from a corpus ---------------------------------------------------------------------------------
def sentences(lines: list[str]) -> list[str]:
    return [s.strip() for line in lines for s in _SENTENCE_END.split(line) if s.strip()]


def build_rows(texts: list[str], triples: list[list[str]], classes: tuple[str, ...]) -> dict[str, list[tuple]]:
    """class -> (masked, words) rows from `texts` (the rules in the module docstring), splits not yet assigned."""
    out: dict[str, list[tuple]] = {c: [] for c in classes}
    index: dict[str, list[tuple[int, int]]] = {}
    for t, triple in enumerate(triples):
        for k, w in enumerate(triple):
            index.setdefault(w, []).append((t, k))
    for text in texts:
        tokens = text.split(" ")
        lowered = [tok.lower() for tok in tokens]
        for w, places in index.items():
            if lowered.count(w) != 1:
                continue
            i = lowered.index(w)
            masked = " ".join(tokens[:i] + [MASK] + tokens[i + 1 :])
            for t, k in places:
                words = tuple((c, in_casing(triples[t][j], tokens[i])) for j, c in enumerate(classes))
                words = tuple((c, tokens[i] if j == k else word) for j, (c, word) in enumerate(words))
                out[classes[k]].append((masked, words))
    return out


def assign_splits(rows: list[tuple], seed: int = SPLIT_SEED) -> list[GroupRow]:
    """Splits per masked sentence: shuffled with `seed`, 70 / 20 / 10 % (rounded down; the rest is test)."""
    unique = list(dict.fromkeys(m for m, _ in rows))
    random.Random(seed).shuffle(unique)
    n_train, n_val = int(SPLIT_FRACTIONS[0] * len(unique)), int(SPLIT_FRACTIONS[1] * len(unique))
    split = {m: SPLITS[0] if i < n_train else SPLITS[1] if i < n_train + n_val else SPLITS[2]
             for i, m in enumerate(unique)}  # fmt: skip
    return [GroupRow(m, split[m], words) for m, words in rows]


def neutral_sentences(texts: list[str], words: dict[str, list[str]], limit: int = 10_000) -> list[str]:
    vocab = {w for ws in words.values() for w in ws}
    return [s for s in texts if not vocab & set(s.lower().split(" "))][:limit]


# ---- reading -------------------------------------------------------------------------------------------------
def read_class_file(path: Path, cls: str, classes: tuple[str, ...]) -> list[GroupRow]:
    rows = []
    for r in read_csv_rows(path, ["masked", "split", *classes]):
        if r["masked"].count(MASK) != 1:
            raise DataError(f"{path} row {r['_row']}: `masked` must hold exactly one {MASK}")
        split = {"val": "validation", "dev": "validation"}.get(r["split"], r["split"])
        if split not in SPLITS:
            raise DataError(f"{path} row {r['_row']}: split {r['split']!r} is not one of {', '.join(SPLITS)}")
        rows.append(GroupRow(r["masked"], split, tuple((c, r[c]) for c in classes)))
    if not rows:
        raise DataError(f"{path}: no rows for class {cls}")
    return rows


def load(data_dir, bias_type: str, neutral_max: int = 10_000) -> GroupData:
    """The type's rows from its class files, or built from the text corpus when they are missing."""
    if bias_type not in CLASSES:
        raise DataError(f"pair GRADIENDs are defined for {', '.join(CLASSES)}, not {bias_type}")
    if data_dir is None:
        raise DataError(f"no data directory: the {bias_type} GRADIEND data is read from <data_dir>/gradiend/{bias_type}/")
    classes = CLASSES[bias_type]
    triples, words = class_words(data_dir, bias_type)
    corpus_dir = Path(data_dir) / "text_corpus"
    texts = sentences(text_corpus(data_dir)) if corpus_dir.is_dir() and any(corpus_dir.glob("*.txt")) else []
    files = class_files(data_dir, bias_type)
    if all(p.is_file() for p in files):
        rows = {c: read_class_file(p, c, classes) for c, p in zip(classes, files)}
        source = f"gradiend/{bias_type}/<class>.csv"  # relative: a moved cache keeps its keys
    else:
        if not texts:
            raise DataError(f"neither {files[0].parent}/<class>.csv nor a text corpus in {corpus_dir}")
        built = build_rows(texts, triples, classes)
        rows = {c: assign_splits(built[c]) for c in classes}
        source = "built from text_corpus"
    return GroupData(bias_type, rows, words, neutral_sentences(texts, words, neutral_max), source,
                     data_files(data_dir, bias_type))  # fmt: skip


def write_class_files(data: GroupData, folder) -> list[Path]:
    """The rows as `<folder>/<class>.csv` in the paper's format (what `load` reads back)."""
    import csv

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for c in data.classes:
        path = folder / f"{c}.csv"
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["masked", "split", *data.classes])
            for r in data.rows[c]:
                writer.writerow([r.masked, r.split, *(r.word(k) for k in data.classes)])
        out.append(path)
    return out
