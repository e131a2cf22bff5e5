"""Small hand-made GRADIEND data (GENTER/GENEUTRAL/GENTYPES/NAMExact/NAMExtend in the real file formats) and
a tiny random BERT with the real bert-base-uncased tokenizer, for the fast GRADIEND tests."""
from __future__ import annotations

import csv
from pathlib import Path

from tests.tokenizers_fixture import load_bert_tokenizer, tiny_bert

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

TEMPLATES = [
    "[NAME] went home because [PRONOUN] was tired.",
    "[NAME] said that [PRONOUN] would come back tomorrow.",
    "When [NAME] arrived, [PRONOUN] smiled at everyone.",
    "[NAME] opened the door. [PRONOUN] looked outside.",
    "After dinner [NAME] read a book and [PRONOUN] fell asleep.",
    "[NAME] called the office because [PRONOUN] needed help.",
    "[NAME] bought a new car, and [PRONOUN] drove it to the beach.",
    "Yesterday [NAME] told me [PRONOUN] had found the keys.",
    "[NAME] laughed when [PRONOUN] saw the dog.",
    "[NAME] knew [PRONOUN] was late. [PRONOUN] ran to the station.",
    "Because [NAME] was hungry, [PRONOUN] cooked some soup.",
    "[NAME] waited until [PRONOUN] heard the bell.",
]
NEUTRAL = [
    "the weather was cold and the streets were empty .",
    "a small boat crossed the river in the morning .",
    "the museum opens at nine on most days .",
    "we found a quiet table near the window .",
    "the train was late again this week .",
    "fresh bread is sold at the market every day .",
    "the old bridge was closed for repairs .",
    "it rained all night in the village .",
]
GENTYPES = [
    "My friend, [NAME], excels in the field of mechanical engineering.",
    "[NAME] is a very caring nurse.",
    "The new pilot, [NAME], landed the plane safely.",
    "[NAME] loves knitting in the evening.",
]
NAMES = {
    "train": {"M": ["John", "Paul", "Mike", "Kevin", "Steve", "Bartholomew"], "F": ["Mary", "Lisa", "Anna", "Emma", "Kate", "Gwendolyn"]},
    "validation": {"M": ["James", "Peter"], "F": ["Sarah", "Laura"]},
    "test": {"M": ["David", "Mark"], "F": ["Alice", "Julia"]},
}  # fmt: skip


def write_data_dir(folder: Path, *, published: bool = True) -> Path:
    """A data directory with gradiend/*.csv (and, with published=False, only names + corpus)."""
    g = Path(folder) / "gradiend"
    g.mkdir(parents=True, exist_ok=True)
    with open(g / "namexact.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "gender", "count", "probability", "split"])
        for split, by_gender in NAMES.items():
            for gender, names in by_gender.items():
                for n in names:
                    w.writerow([n, gender, 50000, 0.0001, split])
    with open(g / "namextend.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "gender", "count", "probability", "gender_agreement", "prob_F", "prob_M", "primary_gender", "genders", "split"])
        for split, by_gender in NAMES.items():
            for gender, names in by_gender.items():
                for n in names:
                    pf = 0.95 if gender == "F" else 0.05
                    w.writerow([n, gender, 50000, 0.0001, 0.95, pf, 1 - pf, gender, gender, "train"])
        w.writerow(["Taylor", "F", 3000, 0.00001, 0.6, 0.6, 0.4, "F", "B", "train"])
    if published:
        splits = ["train"] * 8 + ["val"] * 2 + ["test"] * 2
        with open(g / "genter.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["index", "text", "masked", "label", "name", "pronoun", "pronoun_count", "split"])
            for i, (t, s) in enumerate(zip(TEMPLATES, splits)):
                gender = "M" if i % 2 == 0 else "F"
                name, pron = ("John", "he") if gender == "M" else ("Mary", "she")
                w.writerow([i, t.replace("[NAME]", name).replace("[PRONOUN]", pron), t, gender, name, pron, t.count("[PRONOUN]"), s])
        with open(g / "geneutral.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["index", "text"])
            for i, t in enumerate(NEUTRAL):
                w.writerow([i, t])
        with open(g / "gentypes.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["text"])
            for t in GENTYPES:
                w.writerow([t])
    return Path(folder)


def tiny_subject(hidden: int = 32, layers: int = 2, seed: int = 0, name: str = "tiny"):
    from bench.models.subject import Subject

    tok = load_bert_tokenizer(SHARED_DATA)
    return Subject(model=tiny_bert(tok, hidden=hidden, layers=layers, seed=seed), tokenizer=tok, name=name,
                   source=f"test:tiny-bert:{hidden}:{layers}:{seed}")  # fmt: skip


def reference_adamw_step(n: int, x, t, flipped: bool):
    """The straightforward GRADIEND step in float64: nn.Linear encoder/decoder initialised as
    Gradiend.initialised(n, 0), autograd MSE, one torch.optim.AdamW step (lr 1e-3, eps 1e-8, weight decay 1e-2);
    returns the flat parameters in Gradiend's layout, with the training-time sign flip applied if it fired."""
    import torch
    from torch import nn

    from methods.gradiend.model import Gradiend

    init = Gradiend.initialised(n, 0, dtype=torch.float64)
    enc, dec = nn.Linear(n, 1).double(), nn.Linear(1, n).double()
    with torch.no_grad():
        enc.weight.copy_(init.W_e[None]), enc.bias.copy_(init.b_e), dec.weight.copy_(init.W_d[:, None]), dec.bias.copy_(init.b_d)
    opt = torch.optim.AdamW([enc.weight, dec.weight, dec.bias, enc.bias], lr=1e-3, eps=1e-8, weight_decay=1e-2)
    nn.functional.mse_loss(dec(torch.tanh(enc(x))), t).backward()
    opt.step()
    sign = -1.0 if flipped else 1.0
    return torch.cat([sign * enc.weight.detach()[0], sign * dec.weight.detach()[:, 0], dec.bias.detach(), sign * enc.bias.detach()])
