"""GRADIEND's datasets (SPEC §5): GENTER, GENEUTRAL, GENTYPES, NAMExact, NAMExtend.

Everything is read from `<data_dir>/gradiend/`:
  namexact.csv   name, gender (M/F), count, probability, split (train/validation/test)   - required
  namextend.csv  name, gender, ..., prob_F, prob_M, ...                                   - required
  genter.csv     index, text, masked, label, name, pronoun, pronoun_count[, split]        - published / synthetic
  geneutral.csv  [index,] text                                                            - published / synthetic
  gentypes.csv   text (a template with [NAME])                                            - published / synthetic
When genter/geneutral/gentypes are missing (the published sets are row indices into BookCorpus), sets of the
same kind are built from the data directory's text corpus (`text_corpus/*.txt`) with the paper's filters,
using `gradiend/gendered_words.json` as the list of gendered words:
  GENTER-style    sentences with exactly one NAMExact name, followed later by one or more he/she that match
                  the name's gender, and no other gendered word or pronoun; the name becomes [NAME] and every
                  he/she [PRONOUN]. Split 87.5 / 2.5 / 10 % (train/val/test) after a shuffle with seed 42.
                  The paper's last filter (bert-base-uncased must predict the right pronoun for the 50 most
                  frequent train names of each gender) needs a trained model: `examples.filter_by_model` applies it
                  with any subject; it is off by default.
  GENEUTRAL-style lower-cased sentences without any gendered word, pronoun or NAMExact name.
  GENTYPES-style  sentences with exactly one NAMExact name and no gendered word or pronoun; the name becomes
                  [NAME]. (The published GENTYPES are written templates about stereotyped traits; corpus
                  sentences are the closest thing a text corpus offers.)
NAMExact names are used by split: GENTER train templates get names of the NAMExact `train` split, val
templates `validation` names, test templates `test` names (SPEC §0.4: no leakage across splits).
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from pathlib import Path

from bench.data.paths import read_csv_rows, read_json, text_corpus
from bench.errors import DataError

NAME, PRONOUN = "[NAME]", "[PRONOUN]"
GENDERS = ("M", "F")
SUBJECT_PRONOUN = {"M": "he", "F": "she"}
ALL_PRONOUNS = frozenset({"he", "she", "him", "his", "her", "hers", "himself", "herself"})
SPLITS = ("train", "val", "test")
NAME_SPLIT = {"train": "train", "val": "validation", "test": "test"}  # GENTER split -> NAMExact's name for it
_SPLIT_ALIASES = {"train": "train", "val": "val", "validation": "val", "dev": "val", "test": "test"}
SPLIT_FRACTIONS = {"val": 0.025, "test": 0.10}  # the rest is train (SPEC §5)


@dataclass(frozen=True)
class Template:
    """One GENTER row: `masked` has one [NAME] and one or more [PRONOUN]."""

    masked: str
    gender: str  # gender of the sentence the template came from (M/F)
    split: str  # train / val / test
    index: str = ""

    @property
    def pronoun_count(self) -> int:
        return self.masked.count(PRONOUN)


@dataclass(frozen=True)
class NameInfo:
    name: str
    gender: str
    prob_F: float
    prob_M: float


@dataclass
class GradiendData:
    genter: dict[str, list[Template]]  # split -> templates
    geneutral: list[str]
    gentypes: list[str]  # templates with [NAME]
    names: dict[str, dict[str, list[str]]]  # GENTER split -> gender -> NAMExact names of the matching split
    namextend: list[NameInfo]
    sources: dict[str, str] = field(default_factory=dict)  # dataset -> where it came from
    files: list[Path] = field(default_factory=list)  # every file read (cache keys)

    def describe(self) -> str:
        sizes = ", ".join(f"{s} {len(self.genter[s])}" for s in SPLITS)
        return (f"GENTER ({sizes}; {self.sources['genter']}), GENEUTRAL {len(self.geneutral)} "
                f"({self.sources['geneutral']}), GENTYPES {len(self.gentypes)} ({self.sources['gentypes']})")  # fmt: skip


# ---- files -------------------------------------------------------------------------------------------
def gradiend_files(data_dir) -> list[Path]:
    """The files `load` would read from `data_dir` (for cache keys), without reading them."""
    folder = Path(data_dir) / "gradiend"
    names = ["namexact.csv", "namextend.csv", "genter.csv", "geneutral.csv", "gentypes.csv", "gendered_words.json"]
    files = [folder / n for n in names if (folder / n).is_file()]
    if not all((folder / n).is_file() for n in ("genter.csv", "geneutral.csv", "gentypes.csv")):
        corpus = Path(data_dir) / "text_corpus"
        files += sorted(corpus.glob("*.txt")) if corpus.is_dir() else []
    return files


def _require(data_dir, name: str) -> Path:
    from bench.data.paths import require_file

    return require_file(data_dir, f"gradiend/{name}", "GRADIEND data file")


def _float(row: dict, col: str, path: Path) -> float:
    try:
        return float(row[col])
    except (TypeError, ValueError):
        raise DataError(f"{path} row {row['_row']}: column {col} is not a number: {row[col]!r}") from None


def _gender(row: dict, col: str, path: Path) -> str:
    g = row[col].strip().upper()
    if g not in GENDERS:
        raise DataError(f"{path} row {row['_row']}: {col} must be M or F, got {row[col]!r}")
    return g


def load_namexact(data_dir) -> dict[str, dict[str, list[str]]]:
    """Split (train/val/test; `validation` and `dev` mean val) -> gender -> names (file order)."""
    path = _require(data_dir, "namexact.csv")
    out: dict[str, dict[str, list[str]]] = {s: {"M": [], "F": []} for s in SPLITS}
    for row in read_csv_rows(path, ["name", "gender", "split"]):
        split = _SPLIT_ALIASES.get(row["split"].strip().lower())
        if split is None:
            raise DataError(f"{path} row {row['_row']}: split must be train, validation or test, got {row['split']!r}")
        out[split][_gender(row, "gender", path)].append(row["name"].strip())
    for split in SPLITS:
        for g in GENDERS:
            if not out[split][g]:
                raise DataError(f"{path}: no {g} names in split {NAME_SPLIT[split]!r}")
    return out


def load_namextend(data_dir) -> list[NameInfo]:
    path = _require(data_dir, "namextend.csv")
    rows = read_csv_rows(path, ["name", "gender", "prob_F", "prob_M"])
    return [NameInfo(r["name"].strip(), _gender(r, "gender", path), _float(r, "prob_F", path), _float(r, "prob_M", path))
            for r in rows]  # fmt: skip


def load_genter_file(path: Path) -> dict[str, list[Template]]:
    rows = read_csv_rows(path, ["masked", "label"])
    templates = []
    for r in rows:
        masked = r["masked"]
        if masked.count(NAME) != 1 or PRONOUN not in masked:
            raise DataError(f"{path} row {r['_row']}: 'masked' needs one {NAME} and at least one {PRONOUN}: {masked!r}")
        split = r.get("split") or ""
        if split and split.strip().lower() not in _SPLIT_ALIASES:
            raise DataError(f"{path} row {r['_row']}: unknown split {split!r} (train, val or test)")
        split = _SPLIT_ALIASES.get(split.strip().lower(), "")
        templates.append(Template(masked, _gender(r, "label", path), split, str(r.get("index") or r["_row"])))
    if all(t.split for t in templates):
        return _by_split(templates)
    if any(t.split for t in templates):
        raise DataError(f"{path}: the split column is empty in some rows")
    return split_templates(templates)


def _by_split(templates: list[Template]) -> dict[str, list[Template]]:
    return {s: [t for t in templates if t.split == s] for s in SPLITS}


def split_templates(templates: list[Template], seed: int = 42) -> dict[str, list[Template]]:
    """87.5 / 2.5 / 10 % train / val / test after a seeded shuffle (SPEC §5); every split gets >= 1 row."""
    order = list(range(len(templates)))
    random.Random(seed).shuffle(order)
    n = len(order)
    n_val = max(1, round(SPLIT_FRACTIONS["val"] * n))
    n_test = max(1, round(SPLIT_FRACTIONS["test"] * n))
    parts = {"val": order[:n_val], "test": order[n_val : n_val + n_test], "train": order[n_val + n_test :]}
    return {s: [Template(templates[i].masked, templates[i].gender, s, templates[i].index) for i in sorted(parts[s])]
            for s in SPLITS}  # fmt: skip


def load_text_column(path: Path) -> list[str]:
    return [r["text"] for r in read_csv_rows(path, ["text"])]


# ---- building GENTER/GENEUTRAL/GENTYPES-style sets from a text corpus -------------------------------------
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=\S)")
_WIKITEXT = ((" @-@ ", "-"), (" @,@ ", ","), (" @.@ ", "."))
_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?")


def corpus_sentences(lines: list[str], max_words: int = 40, min_words: int = 4) -> list[str]:
    out = []
    for line in lines:
        for a, b in _WIKITEXT:
            line = line.replace(a, b)
        for s in _SENTENCE_END.split(line):
            s = s.strip()
            n = len(s.split())
            if min_words <= n <= max_words and "<unk>" not in s:
                out.append(s)
    return out


def gendered_words(data_dir) -> frozenset[str]:
    """Lower-cased single words of gender m or f (gendered_words.json) plus all personal pronouns."""
    path = _require(data_dir, "gendered_words.json")
    table = read_json(path)
    if not isinstance(table, list):
        raise DataError(f"{path}: expected a list of {{word, gender}} records")
    words = set(ALL_PRONOUNS)
    for i, rec in enumerate(table):
        if not isinstance(rec, dict) or "word" not in rec or "gender" not in rec:
            raise DataError(f"{path}: record {i} is malformed: {rec!r}")
        if rec["gender"] in ("m", "f") and "_" not in rec["word"]:
            words.add(rec["word"].lower())
    return frozenset(words)


def build_from_corpus(sentences: list[str], name_gender: dict[str, str], gendered: frozenset[str]):
    """(GENTER templates without split, GENEUTRAL sentences, GENTYPES templates) from plain sentences."""
    lower_names = {n.lower() for n in name_gender}
    genter, neutral, types = [], [], []
    for k, s in enumerate(sentences):
        words = _WORD.findall(s)
        lower = [w.lower() for w in words]
        found = [w for w in words if w in name_gender]
        other_gendered = [w for w in lower if w in gendered and w not in ("he", "she")]
        subject_pronouns = [w for w in lower if w in ("he", "she")]
        if not found and not other_gendered and not subject_pronouns and not any(w in lower_names for w in lower):
            neutral.append(s.lower())
            continue
        if len(found) != 1 or other_gendered or sum(w.lower() == found[0].lower() for w in words) != 1:
            continue
        name = found[0]
        name_at = re.search(rf"\b{re.escape(name)}\b", s)
        if not subject_pronouns:
            types.append(s[: name_at.start()] + NAME + s[name_at.end() :])
            continue
        gender = name_gender[name]
        pronouns = list(re.finditer(r"\b(?:he|she|He|She|HE|SHE)\b", s))
        if any(p.group().lower() != SUBJECT_PRONOUN[gender] for p in pronouns) or pronouns[0].start() < name_at.end():
            continue
        masked = s[: name_at.start()] + NAME + s[name_at.end() :]
        masked = re.sub(rf"\b(?:{SUBJECT_PRONOUN[gender]}|{SUBJECT_PRONOUN[gender].capitalize()})\b", PRONOUN, masked)
        genter.append(Template(masked, gender, "", f"corpus:{k}"))
    return genter, neutral, types


# ---- the bundle ----------------------------------------------------------------------------------------
def load(data_dir, *, max_corpus_lines: int | None = None) -> GradiendData:
    """All GRADIEND data from a data directory (files when present, else built from its text corpus)."""
    if data_dir is None:
        raise DataError("GRADIEND needs a data directory (pass --data-dir or set BENCH_DATA_DIR)")
    folder = Path(data_dir) / "gradiend"
    names = load_namexact(data_dir)
    namextend = load_namextend(data_dir)
    files = [folder / "namexact.csv", folder / "namextend.csv"]
    sources: dict[str, str] = {}
    genter = geneutral = gentypes = None
    if (folder / "genter.csv").is_file():
        genter, sources["genter"] = load_genter_file(folder / "genter.csv"), str(folder / "genter.csv")
        files.append(folder / "genter.csv")
    if (folder / "geneutral.csv").is_file():
        geneutral, sources["geneutral"] = load_text_column(folder / "geneutral.csv"), str(folder / "geneutral.csv")
        files.append(folder / "geneutral.csv")
    if (folder / "gentypes.csv").is_file():
        gentypes, sources["gentypes"] = load_text_column(folder / "gentypes.csv"), str(folder / "gentypes.csv")
        files.append(folder / "gentypes.csv")
        for i, t in enumerate(gentypes):
            if t.count(NAME) != 1:
                raise DataError(f"{folder / 'gentypes.csv'} row {i + 2}: a template needs exactly one {NAME}: {t!r}")
    if genter is None or geneutral is None or gentypes is None:
        try:
            lines = text_corpus(data_dir, max_lines=max_corpus_lines)
        except DataError as e:
            missing = [n for n, v in (("genter", genter), ("geneutral", geneutral), ("gentypes", gentypes)) if v is None]
            raise DataError(
                f"GRADIEND data: {', '.join(f'{folder}/{m}.csv' for m in missing)} not found and no text corpus to "
                f"build them from ({e})"
            ) from None
        name_gender = {n: g for split in names.values() for g in GENDERS for n in split[g]}
        built_t, built_n, built_y = build_from_corpus(corpus_sentences(lines), name_gender, gendered_words(data_dir))
        files += [folder / "gendered_words.json"] + sorted((Path(data_dir) / "text_corpus").glob("*.txt"))
        where = f"built from {Path(data_dir) / 'text_corpus'}"
        if genter is None:
            if len(built_t) < 3:
                raise DataError(f"no genter.csv in {folder} and only {len(built_t)} GENTER-style sentences in the text corpus")
            genter, sources["genter"] = split_templates(built_t), where
        if geneutral is None:
            geneutral, sources["geneutral"] = built_n, where
        if gentypes is None:
            gentypes, sources["gentypes"] = built_y, where
    for what, rows in (("GENEUTRAL", geneutral), ("GENTYPES", gentypes)):
        if not rows:
            raise DataError(f"GRADIEND data: {what} is empty ({sources[what.lower()]})")
    for s in SPLITS:
        if not genter[s]:
            raise DataError(f"GRADIEND data: GENTER has no {s} templates ({sources['genter']})")
    return GradiendData(genter, geneutral, gentypes, names, namextend, sources, sorted(set(files)))
