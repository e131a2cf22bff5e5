"""Encoder-side evaluation (SPEC §1.6) on a GENTER split (test by default; run selection uses val).

Rows: type 1 = each template filled with the next female and the next male name of the split (all pronouns
masked, factual label); type 2 = those texts with the pronouns written out and one random token masked;
type 3 = the first `neutral_max` GENEUTRAL sentences with one random token masked. h of every row comes from
its batch-size-1 gradient (exact directional derivative, see gradients.py). For a causal LM (SPEC-beyond §9.1) the
rows are next-token examples (examples_causal.py): type 1 cut before the first pronoun with the training target
(` he`/` she`; the reference's encoder analysis uses other tokens than its training), types 2 and 3 cut before one
random token (not the name, not a pronoun), that token the target.

Metrics:
  Acc_GENTER  per template, the fraction of its two rows whose sign (h >= 0 -> F) is right; mean over
              templates; max over the two sign conventions.
  Cor_GENTER  Pearson r(h, F=1/M=0) over type-1 rows.
  Acc_Enc     three classes over all rows (h >= 0.5 -> F=+1, h <= -0.5 -> M=-1, else neutral 0), max over the
              two sign conventions of sklearn's balanced accuracy with y_true = the labels. The paper's code
              passes the arguments swapped (y_true = predictions), which is the macro-average of per-class
              *precision*; that value is reported as well, as `Acc_Enc (paper)`, to compare with its table.
  Cor_Enc     Pearson r(h, label in {+1, -1, 0}) over all rows.
  mean |h|    per row type (type 1 = gender masked, 2 = other token masked, 3 = neutral corpus).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from methods.gradiend import figures
from methods.gradiend.data import GradiendData
from methods.gradiend import example_sets
from methods.gradiend.examples import length_cap
from methods.gradiend.model import Gradiend
from methods.gradiend.params import ParamSet
from methods.gradiend.train import encode_batches, pearson, row_batches

METRIC_ORDER = ("Acc_GENTER", "Cor_GENTER", "Acc_Enc", "Cor_Enc", "Acc_Enc (paper)",
                "mean|h| gender", "mean|h| masked-neutral", "mean|h| neutral")  # fmt: skip
KIND_LABEL = {"F": 1, "M": -1, "masked-neutral": 0, "neutral": 0}


@dataclass
class EncoderReport:
    rows: pd.DataFrame  # text, kind, type, template, h
    metrics: dict[str, float]

    def table(self, fmt: str = "github") -> str:
        from tabulate import tabulate

        return tabulate([[k, self.metrics[k]] for k in METRIC_ORDER if k in self.metrics], headers=["metric", "value"],
                        tablefmt=fmt, floatfmt=".3f")  # fmt: skip


def _three_class(h: np.ndarray) -> np.ndarray:
    return np.where(h >= 0.5, 1, np.where(h <= -0.5, -1, 0))


def encoder_metrics(rows: pd.DataFrame) -> dict[str, float]:
    from sklearn.metrics import balanced_accuracy_score

    h = rows["h"].to_numpy(float)
    kind = rows["kind"].to_numpy()
    gender = rows["type"].to_numpy() == 1
    out: dict[str, float] = {}
    if gender.any():
        g = rows[gender]
        female = (g["kind"] == "F").to_numpy()
        accs = []
        for sign in (1, -1):
            correct = pd.Series(((sign * g["h"].to_numpy()) >= 0) == female, index=g.index)
            accs.append(float(correct.groupby(g["template"]).mean().mean()))
        out["Acc_GENTER"] = max(accs)
        out["Cor_GENTER"] = pearson(g["h"].to_numpy(), female.astype(float))
    labels = np.array([KIND_LABEL[k] for k in kind])
    if len(set(labels)) > 1:
        out["Acc_Enc"] = max(balanced_accuracy_score(labels, _three_class(s * h)) for s in (1, -1))
        with warnings.catch_warnings():  # swapped arguments: predicted classes missing from "y_true" are expected
            warnings.simplefilter("ignore", UserWarning)
            out["Acc_Enc (paper)"] = max(balanced_accuracy_score(_three_class(s * h), labels) for s in (1, -1))
        out["Cor_Enc"] = pearson(h, labels.astype(float))
    for t, name in ((1, "gender"), (2, "masked-neutral"), (3, "neutral")):
        sel = rows["type"].to_numpy() == t
        if sel.any():
            out[f"mean|h| {name}"] = float(np.abs(h[sel]).mean())
    return out


def analyse(subject, gradiend: Gradiend, data: GradiendData, *, split: str = "test", neutral_max: int = 10_000,
            max_length: int = 48, batch_size: int = 32, exclude=None, layers=None, bar=None) -> EncoderReport:  # fmt: skip
    from methods.gradiend.params import DEFAULT_EXCLUDE

    params = ParamSet.select(subject.model, DEFAULT_EXCLUDE if exclude is None else exclude, layers)
    if params.n != gradiend.n:
        raise ValueError(f"the GRADIEND has n={gradiend.n}, the model's parameter set n={params.n}")
    templates, names = data.genter[split], data.names[split]
    max_length = length_cap(subject, max_length)
    rows = example_sets.gender_rows(subject, templates, names, max_length=max_length)
    rows += example_sets.neutral_rows(subject, templates, names, data.geneutral[:neutral_max], max_length=max_length,
                                      neutral_max_length=length_cap(subject, 128))  # fmt: skip
    batches, order = row_batches(rows, subject.tokenizer.pad_token_id, batch_size, subject.device)
    progress = None if bar is None else (lambda it: bar(it, desc=f"encoder analysis ({split})"))
    h = encode_batches(subject, params, gradiend, batches, order, progress)
    frame = pd.DataFrame({"text": [r.text for r in rows], "kind": [r.kind for r in rows], "type": [r.type for r in rows],
                          "template": [r.template for r in rows], "h": h})  # fmt: skip
    return EncoderReport(frame, encoder_metrics(frame))


def plot(rows: pd.DataFrame, path, title: str = "GRADIEND encoder",
         kinds: tuple[str, ...] = ("F", "M", "masked-neutral", "neutral")) -> Path:  # fmt: skip
    """The paper's encoder figure: a histogram of h per row kind and a scatter of h per kind (jittered)."""
    plt = figures.pyplot()
    kinds = [k for k in kinds if (rows["kind"] == k).any()]
    colours = {"masked-neutral": "tab:gray", "neutral": "tab:green"}  # others: red, blue, orange in order
    for k, c in zip([k for k in kinds if k not in colours], ("tab:red", "tab:blue", "tab:orange", "tab:purple")):
        colours[k] = c
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    bins = np.linspace(-1, 1, 41)
    for k in kinds:
        ax1.hist(rows.loc[rows["kind"] == k, "h"], bins=bins, alpha=0.55, label=k, color=colours[k])
    ax1.set_xlabel("encoded value h")
    ax1.set_ylabel("rows")
    ax1.legend()
    rng = np.random.default_rng(0)
    for i, k in enumerate(kinds):
        h = rows.loc[rows["kind"] == k, "h"].to_numpy()
        ax2.scatter(h, i + rng.uniform(-0.25, 0.25, len(h)), s=6, alpha=0.5, color=colours[k])
    ax2.set_yticks(range(len(kinds)), kinds)
    ax2.set_xlabel("encoded value h")
    ax2.set_xlim(-1.05, 1.05)
    return figures.save(fig, title, path, dpi=120)
