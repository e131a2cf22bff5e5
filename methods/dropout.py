"""Dropout debiasing: further MLM training with raised dropout (Webster et al. 2020; SPEC §2.2, §0.9).

Hidden dropout 0.20 and attention dropout 0.15 are set for every architecture on
- the config fields: BERT/RoBERTa (and other BERT-style configs) `hidden_dropout_prob` /
  `attention_probs_dropout_prob`; DistilBERT `dropout` / `attention_dropout` (the paper's code set the BERT
  names on DistilBERT too, where they do nothing, so its DistilBERT "Dropout" row was plain further training);
- the modules already built: changing a config after construction does not change any `nn.Dropout.p`, so every
  dropout module gets the rate it would have had if the model had been built from the changed config (found by
  building that model on the meta device, which allocates nothing).

Training (train mode, so dropout is active) uses the corpus and recipe of CDA without augmentation
(`methods.mlm_training`, the loop of `bench.models.mlm_training`; corpus caveats in `methods.cda`).

The returned model is in eval mode with the original dropout rates restored on config and modules, so that
fine-tuning it later (GLUE) uses the same dropout as every other row: the debiasing is in the weights.
`keep_raised_dropout=True` keeps 0.20/0.15 in the config, as the paper's saved checkpoints did (their GLUE
fine-tuning ran with the raised rates).

Bias types: none of this depends on a bias type, and bias-bench evaluates its one Dropout checkpoint for gender,
race and religion alike (SPEC-beyond §8.6, "shared Dropout checkpoint"), so the method declares
`bias_types = None` (it serves every type).
"""
from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass

import torch
from torch import nn

from bench.errors import BenchError
from methods.mlm_training import MLMTrainingDebiaser

# model_type -> (hidden dropout field, attention dropout field)
DROPOUT_FIELDS = {
    "bert": ("hidden_dropout_prob", "attention_probs_dropout_prob"),
    "roberta": ("hidden_dropout_prob", "attention_probs_dropout_prob"),
    "xlm-roberta": ("hidden_dropout_prob", "attention_probs_dropout_prob"),
    "camembert": ("hidden_dropout_prob", "attention_probs_dropout_prob"),
    "electra": ("hidden_dropout_prob", "attention_probs_dropout_prob"),
    "distilbert": ("dropout", "attention_dropout"),
}


def dropout_fields(config) -> tuple[str, str]:
    """The config fields holding the hidden and attention dropout rates of this architecture."""
    fields = DROPOUT_FIELDS.get(getattr(config, "model_type", ""))
    if fields is None:
        for candidate in DROPOUT_FIELDS.values():
            if all(hasattr(config, f) for f in candidate):
                return candidate
        raise BenchError(
            f"dropout: do not know the dropout fields of model type {getattr(config, 'model_type', '?')!r}; "
            f"known: {', '.join(sorted(DROPOUT_FIELDS))}"
        )
    return fields


def dropout_rates(model) -> tuple[float, float]:
    hidden, attention = dropout_fields(model.config)
    return getattr(model.config, hidden), getattr(model.config, attention)


def set_dropout(model: nn.Module, hidden: float, attention: float) -> None:
    """Set the hidden/attention dropout rates on `model.config` and on every built `nn.Dropout` module."""
    hidden_field, attention_field = dropout_fields(model.config)
    config = copy.deepcopy(model.config)
    setattr(config, hidden_field, hidden)
    setattr(config, attention_field, attention)
    with torch.device("meta"):
        reference = type(model)(config)
    rates = {name: m.p for name, m in reference.named_modules() if isinstance(m, nn.Dropout)}
    for name, module in model.named_modules():
        if isinstance(module, nn.Dropout):
            if name not in rates:
                raise BenchError(f"dropout: module {name} of {type(model).__name__} has no counterpart to copy p from")
            module.p = rates[name]
    setattr(model.config, hidden_field, hidden)
    setattr(model.config, attention_field, attention)


@dataclass(eq=False, repr=False)
class Dropout(MLMTrainingDebiaser):
    """Constructor: the dropout rates and `keep_raised_dropout`, then the training options of
    `MLMTrainingDebiaser` (keyword-only)."""

    label = "Dropout"
    group = 2
    bias_types = None  # type-independent: the same checkpoint serves gender, race and religion runs
    quick = {"max_steps": 20}  # conformance suite: a short fit on the synthetic world
    bounds = {**MLMTrainingDebiaser.bounds, "hidden_dropout": (0.0, 1.0), "attention_dropout": (0.0, 1.0)}

    hidden_dropout: float = 0.20
    attention_dropout: float = 0.15
    keep_raised_dropout: bool = False

    def __post_init__(self):
        for name, p in (("hidden_dropout", self.hidden_dropout), ("attention_dropout", self.attention_dropout)):
            if not 0.0 <= p < 1.0:
                raise BenchError(f"dropout: {name} must be in [0, 1), got {p}")

    def training_lines(self, subject, ctx) -> list[str]:
        return self.corpus_lines(ctx)

    @contextlib.contextmanager
    def training_setup(self, model):
        original = dropout_rates(model)
        set_dropout(model, self.hidden_dropout, self.attention_dropout)
        try:
            yield
        finally:
            if not self.keep_raised_dropout:
                set_dropout(model, *original)
