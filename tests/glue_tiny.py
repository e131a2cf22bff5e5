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

    from bench.subject import Subject

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
