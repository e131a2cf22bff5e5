"""Dropout debiasing: further language-model training with raised dropout (Webster et al. 2020; SPEC §2.2, §0.9;
causal LMs: SPEC-beyond §9.3).

The paper's rates depend on the model kind (`PAPER_RATES`; `hidden_dropout` / `attention_dropout` left as None
take them): masked LMs hidden 0.20 and attention 0.15 (Webster et al.), causal LMs 0.15 and 0.15 (bias-bench's
GPT-2 run: `resid_pdrop`, `embd_pdrop` and `attn_pdrop` all 0.15). They are set for every architecture on
- the config fields: BERT/RoBERTa (and other BERT-style configs) `hidden_dropout_prob` /
  `attention_probs_dropout_prob`; DistilBERT `dropout` / `attention_dropout` (the paper's code set the BERT
  names on DistilBERT too, where they do nothing, so its DistilBERT "Dropout" row was plain further training);
  GPT-2 `resid_pdrop` and `embd_pdrop` (hidden) / `attn_pdrop`; Llama `attention_dropout` only: Llama's decoder
  has no residual or embedding dropout at all, so there the hidden rate has nothing to act on and is not applied
  (adding dropout modules would change the architecture) -- Llama's Dropout row raises attention dropout from
  0.0 to 0.15 and nothing else. bias-bench ran Dropout on GPT-2 only;
- the modules already built: changing a config after construction does not change any `nn.Dropout.p` (nor
  Llama's attention, which keeps its rate as a float attribute), so every dropout module gets the rate it would
  have had if the model had been built from the changed config (found by building that model on the meta
  device, which allocates nothing).

Training (train mode, so dropout is active) uses the corpus and recipe of CDA without augmentation
(`methods.mlm_training`, the loop of `bench.models.mlm_training`; corpus caveats in `methods.cda`).

The returned model is in eval mode with the original dropout rates restored on config and modules, so that
fine-tuning it later (GLUE) uses the same dropout as every other row: the debiasing is in the weights.
`keep_raised_dropout=True` keeps the raised rates in the config, as the paper's saved checkpoints did (their
GLUE fine-tuning ran with the raised rates).

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

# model_type -> (hidden dropout field, attention dropout field); None: the architecture has no such dropout
DROPOUT_FIELDS = {
    "bert": ("hidden_dropout_prob", "attention_probs_dropout_prob"),
    "roberta": ("hidden_dropout_prob", "attention_probs_dropout_prob"),
    "xlm-roberta": ("hidden_dropout_prob", "attention_probs_dropout_prob"),
    "camembert": ("hidden_dropout_prob", "attention_probs_dropout_prob"),
    "electra": ("hidden_dropout_prob", "attention_probs_dropout_prob"),
    "distilbert": ("dropout", "attention_dropout"),
    "gpt2": ("resid_pdrop", "attn_pdrop"),
    "llama": (None, "attention_dropout"),
}
# Further config fields that take the hidden rate: GPT-2's embedding dropout.
ALSO_HIDDEN = {"gpt2": ("embd_pdrop",)}
# The paper's (hidden, attention) rates per model kind: Webster et al. (masked), bias-bench's GPT-2 run (causal).
PAPER_RATES = {"mlm": (0.20, 0.15), "clm": (0.15, 0.15)}


def dropout_fields(config) -> tuple[str | None, str]:
    """The config fields holding the hidden and attention dropout rates of this architecture (hidden None: it
    has no hidden dropout)."""
    fields = DROPOUT_FIELDS.get(getattr(config, "model_type", ""))
    if fields is None:
        for candidate in DROPOUT_FIELDS.values():
            if None not in candidate and all(hasattr(config, f) for f in candidate):
                return candidate
        raise BenchError(
            f"dropout: do not know the dropout fields of model type {getattr(config, 'model_type', '?')!r}; "
            f"known: {', '.join(sorted(DROPOUT_FIELDS))}"
        )
    return fields


def dropout_rates(model) -> tuple[float | None, float]:
    hidden, attention = dropout_fields(model.config)
    return (None if hidden is None else getattr(model.config, hidden)), getattr(model.config, attention)


def _module_rates(module: nn.Module) -> dict[str, float]:
    """The dropout rates a built module uses: `nn.Dropout.p`, and float attributes named *dropout* (Llama's
    attention reads its rate from `self.attention_dropout` at every forward pass)."""
    if isinstance(module, nn.Dropout):
        return {"p": module.p}
    return {k: v for k, v in vars(module).items() if "dropout" in k and isinstance(v, float)}


def set_dropout(model: nn.Module, hidden: float | None, attention: float) -> None:
    """Set the hidden/attention dropout rates on `model.config` and on every built dropout (module or rate
    attribute); `hidden` is not applied where the architecture has no hidden dropout (Llama)."""
    hidden_field, attention_field = dropout_fields(model.config)
    fields = {attention_field: attention}
    if hidden_field is not None and hidden is not None:
        fields.update({f: hidden for f in (hidden_field, *ALSO_HIDDEN.get(model.config.model_type, ()))})
    config = copy.deepcopy(model.config)
    for name, value in fields.items():
        setattr(config, name, value)
    with torch.device("meta"):
        reference = type(model)(config)
    rates = {name: _module_rates(m) for name, m in reference.named_modules()}
    for name, module in model.named_modules():
        own = _module_rates(module)
        if own and name not in rates:
            raise BenchError(f"dropout: module {name} of {type(model).__name__} has no counterpart to copy p from")
        for attr in own:
            setattr(module, attr, rates[name][attr])
    for name, value in fields.items():
        setattr(model.config, name, value)


@dataclass(eq=False, repr=False)
class Dropout(MLMTrainingDebiaser):
    """Constructor: the dropout rates (None: the paper's for the model kind, `PAPER_RATES`) and
    `keep_raised_dropout`, then the training options of `MLMTrainingDebiaser` (keyword-only)."""

    label = "Dropout"
    group = 2
    bias_types = None  # type-independent: the same checkpoint serves gender, race and religion runs
    quick = {"max_steps": 20}  # conformance suite: a short fit on the synthetic world
    bounds = {**MLMTrainingDebiaser.bounds, "hidden_dropout": (0.0, 1.0), "attention_dropout": (0.0, 1.0)}

    hidden_dropout: float | None = None
    attention_dropout: float | None = None
    keep_raised_dropout: bool = False

    def __post_init__(self):
        for name, p in (("hidden_dropout", self.hidden_dropout), ("attention_dropout", self.attention_dropout)):
            if p is not None and not 0.0 <= p < 1.0:
                raise BenchError(f"dropout: {name} must be in [0, 1), got {p}")

    def rates(self, kind: str) -> tuple[float, float]:
        """(hidden, attention) for a model of `kind`: the given rates, else the paper's."""
        hidden, attention = PAPER_RATES[kind]
        return (hidden if self.hidden_dropout is None else self.hidden_dropout,
                attention if self.attention_dropout is None else self.attention_dropout)  # fmt: skip

    def training_lines(self, subject, ctx) -> list[str]:
        return self.corpus_lines(ctx)

    @contextlib.contextmanager
    def training_setup(self, model):
        from bench.models.causal import model_kind

        original = dropout_rates(model)
        set_dropout(model, *self.rates(model_kind(model.config)))
        try:
            yield
        finally:
            if not self.keep_raised_dropout:
                set_dropout(model, *original)
