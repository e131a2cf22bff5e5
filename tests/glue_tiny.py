"""Tiny models, word-level vocabularies and small classic-layout GLUE folders for the GLUE/fine-tuning tests."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
POSITIVE = ["good", "great", "happy", "nice", "fine", "bright"]
NEGATIVE = ["bad", "awful", "sad", "poor", "ugly", "dark"]
FILLER = ["the", "a", "movie", "was", "it", "is", "very", "quite", "and", "plot", "story", "film", "of", "this"]
WORDS = POSITIVE + NEGATIVE + FILLER


def write_tiny_bert(folder: Path, hidden: int = 32, layers: int = 2, model_type: str = "bert") -> Path:
    """A config.json + vocab.txt folder: loadable as `random:<folder>` and by AutoTokenizer."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(SPECIAL + WORDS) + "\n")
    config = {
        "model_type": model_type, "architectures": ["BertForMaskedLM"], "vocab_size": len(SPECIAL) + len(WORDS),
        "hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": 2, "intermediate_size": 2 * hidden,
        "max_position_embeddings": 64, "type_vocab_size": 2, "pad_token_id": 0,
    }  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True, "model_max_length": 64,
                                                              "tokenizer_class": "BertTokenizer"}))  # fmt: skip
    return folder


def tiny_subject(folder: Path, seed: int = 0, name: str = "tiny"):
    import torch
    from transformers import AutoConfig, AutoModelForMaskedLM, AutoTokenizer

    from bench.models.subject import Subject

    torch.manual_seed(seed)
    model = AutoModelForMaskedLM.from_config(AutoConfig.from_pretrained(folder)).eval()
    return Subject(model=model, tokenizer=AutoTokenizer.from_pretrained(folder), name=name, source=f"tiny:{folder}:{seed}")


def sentiment(n: int, seed: int, length: int = 6) -> tuple[list[str], np.ndarray]:
    """Separable task: the label says whether the one sentiment word in a sentence of filler is positive."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=n)
    texts = []
    for y in labels:
        words = list(rng.choice(FILLER, length - 1))
        words.insert(int(rng.integers(0, length)), str(rng.choice(POSITIVE if y else NEGATIVE)))
        texts.append(" ".join(words))
    return texts, labels


def write_glue(root: Path, n_train: int = 64, n_dev: int = 40, seed: int = 0) -> Path:
    """<root>/glue with SST-2, STS-B, MNLI (matched/mismatched), CoLA (no header) and RTE in the classic layout."""
    rng = np.random.default_rng(seed)
    glue = root / "glue"

    def write(task, name, header, rows):
        (glue / task).mkdir(parents=True, exist_ok=True)
        lines = (["\t".join(header)] if header else []) + ["\t".join(map(str, r)) for r in rows]
        (glue / task / name).write_text("\n".join(lines) + "\n", encoding="utf-8")

    for split, n in (("train", n_train), ("dev", n_dev)):
        texts, labels = sentiment(n, seed + (split == "dev"))
        write("SST-2", f"{split}.tsv", ["sentence", "label"], zip(texts, labels))
        write("CoLA", f"{split}.tsv", None, [("src", y, "" if y else "*", t) for t, y in zip(texts, labels)])
        other, _ = sentiment(n, seed + 7)
        write("STS-B", f"{split}.tsv", ["index", "genre", "sentence1", "sentence2", "score"],
              [(i, "g", a, b, f"{rng.uniform(0, 5):.3f}") for i, (a, b) in enumerate(zip(texts, other))])  # fmt: skip
        write("RTE", f"{split}.tsv", ["index", "sentence1", "sentence2", "label"],
              [(i, a, b, "entailment" if y else "not_entailment") for i, (a, b, y) in enumerate(zip(texts, other, labels))])  # fmt: skip
    mnli_header = ["index", "sentence1", "sentence2", "label1", "gold_label"]
    classes = ["entailment", "neutral", "contradiction"]
    for name, n in (("train.tsv", n_train), ("dev_matched.tsv", n_dev), ("dev_mismatched.tsv", n_dev // 2)):
        a, _ = sentiment(n, seed + len(name))
        b, _ = sentiment(n, seed + len(name) + 1)
        ys = rng.integers(0, 3, size=n)
        write("MNLI", name, mnli_header, [(i, s, t, classes[y], classes[y]) for i, (s, t, y) in enumerate(zip(a, b, ys))])
    return root


# ---- SuperGLUE-shaped tasks in the release layout (<root>/superglue/<Task>/{train,val}.jsonl) -------------------
SUPERGLUE_FOLDERS = ("BoolQ", "CB", "COPA", "MultiRC", "RTE", "WiC", "WSC")


def _filler(rng, n: int) -> str:
    return " ".join(rng.choice(FILLER, n))


def _with(rng, word: str | None, n: int = 4) -> str:
    words = list(rng.choice(FILLER, n))
    if word is not None:
        words.insert(int(rng.integers(0, n + 1)), word)
    return " ".join(words)


def superglue_records(task: str, n: int, seed: int) -> list[dict]:
    """`n` records of `task` in the release format (MultiRC: `n` answers in paragraphs of 2 questions x 2-3
    answers), separable by one rule: the label says which sentiment word the deciding segment holds (binary:
    positive or negative; CB: one of three word groups). Classes are balanced (a seeded permutation of
    0, 1, 0, 1, ...), so a constant predictor scores exactly chance."""
    rng = np.random.default_rng(seed)
    pos = lambda: str(rng.choice(POSITIVE))  # noqa: E731
    neg = lambda: str(rng.choice(NEGATIVE))  # noqa: E731
    out: list[dict] = []
    if task == "MultiRC":
        ys = iter(rng.permutation(np.arange(n) % 2).tolist())
        answers_left, q_idx, a_idx = n, 0, 0
        while answers_left > 0:
            questions = []
            for _ in range(2):
                k = min(answers_left, int(rng.integers(2, 4)))
                if k <= 0:
                    break
                answers = []
                for _ in range(k):
                    y = next(ys)
                    answers.append({"text": _with(rng, pos() if y else neg(), 2), "idx": a_idx, "label": y})
                    a_idx += 1
                answers_left -= k
                questions.append({"question": _filler(rng, 3), "answers": answers, "idx": q_idx})
                q_idx += 1
            out.append({"idx": len(out), "version": 1.1, "passage": {"text": _filler(rng, 4), "questions": questions}})
        return out
    classes = 3 if task == "CB" else 2
    ys = rng.permutation(np.arange(n) % classes).tolist()
    cb_words = (POSITIVE[:4], NEGATIVE[:4], POSITIVE[4:] + NEGATIVE[4:])
    for i, y in enumerate(ys):
        if task == "BoolQ":
            out.append({"question": _with(rng, pos() if y else neg()), "passage": _filler(rng, 4), "idx": i, "label": bool(y)})
        elif task == "CB":
            out.append({"premise": _filler(rng, 4), "hypothesis": _with(rng, str(rng.choice(cb_words[y])), 1), "idx": i,
                        "label": ("entailment", "contradiction", "neutral")[y]})  # fmt: skip
        elif task == "COPA":
            right, wrong = _with(rng, pos(), 3), _with(rng, neg(), 3)
            choices = (wrong, right) if y else (right, wrong)
            out.append({"premise": _filler(rng, 4), "choice1": choices[0], "choice2": choices[1],
                        "question": ("cause", "effect")[int(rng.integers(0, 2))], "idx": i, "label": y})  # fmt: skip
        elif task == "RTE":
            out.append({"premise": _filler(rng, 4), "hypothesis": _with(rng, pos() if y else neg()), "idx": i,
                        "label": "not_entailment" if y else "entailment"})  # fmt: skip
        elif task == "WiC":
            word = pos() if y else neg()
            s1, s2 = _with(rng, word), _with(rng, word)
            out.append({"word": word, "sentence1": s1, "sentence2": s2, "idx": i, "label": bool(y),
                        "start1": s1.index(word), "end1": s1.index(word) + len(word),
                        "start2": s2.index(word), "end2": s2.index(word) + len(word), "version": 1.1})  # fmt: skip
        elif task == "WSC":
            word = pos() if y else neg()
            words = [str(w) for w in rng.choice(FILLER[5:], 4)] + ["it"]  # "it" is the pronoun (span2)
            words.insert(1, word)
            out.append({"text": " ".join(words), "target": {"span1_index": 1, "span1_text": word,
                        "span2_index": len(words) - 1, "span2_text": "it"}, "idx": i, "label": bool(y)})  # fmt: skip
        else:
            raise ValueError(task)
    return out


def write_superglue(root: Path, n_train: int = 192, n_val: int = 96, seed: int = 0, shuffle_train: bool = False,
                    tasks=SUPERGLUE_FOLDERS) -> Path:  # fmt: skip
    """<root>/superglue/<Task>/{train,val}.jsonl for the given tasks. shuffle_train: training labels permuted
    (seeded), so nothing can be learned."""
    for t, task in enumerate(tasks):
        folder = root / "superglue" / task
        folder.mkdir(parents=True, exist_ok=True)
        for split, n, s in (("train", n_train, seed + 100 * t), ("val", n_val, seed + 100 * t + 1)):
            records = superglue_records(task, n, s)
            if shuffle_train and split == "train":
                _shuffle_labels(task, records, np.random.default_rng(seed + 7))
            (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return root


def _shuffle_labels(task: str, records: list[dict], rng) -> None:
    """Replace the labels by noise with exactly no association with the true ones in this sample: within each
    true class the new label is the true one shifted by a balanced random offset (mod K). (A plain permutation
    keeps a chance correlation of order 1/sqrt(n) with the deciding word, which the model picks up and applies
    consistently to the validation set, far from chance in either direction.)"""
    if task == "MultiRC":
        items = [a for r in records for q in r["passage"]["questions"] for a in q["answers"]]
        get, names = (lambda a: a["label"]), (0, 1)
    else:
        items = records
        names = {"CB": ("entailment", "contradiction", "neutral"), "RTE": ("entailment", "not_entailment")}.get(
            task, (False, True) if task in ("BoolQ", "WiC", "WSC") else (0, 1))  # fmt: skip
        get = lambda r: names.index(r["label"])  # noqa: E731
    k = len(names)
    y = np.array([get(r) for r in items])
    new = y.copy()
    for c in range(k):
        idx = np.flatnonzero(y == c)
        new[idx] = (c + rng.permutation(np.arange(len(idx)) % k)) % k
    for r, v in zip(items, new):
        r["label"] = int(v) if task in ("MultiRC", "COPA") else names[int(v)]
