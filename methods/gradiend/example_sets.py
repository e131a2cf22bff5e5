"""The examples of a subject's model kind: masked (`examples.py`, SPEC §1.2-§1.7) for a masked LM, next-token
(`examples_causal.py`, SPEC-beyond §9.1) for a causal LM. Both come as `MaskedExample`s, so the trainer, the
gradients and the evaluators take either without knowing which."""
from __future__ import annotations

from methods.gradiend import examples as masked
from methods.gradiend import examples_causal as causal
from methods.gradiend.data import Template


def is_causal(subject) -> bool:
    return getattr(subject, "kind", "mlm") == "clm"


def train_batches(subject, templates: list[Template], names: dict[str, list[str]], *, batch_size: int,
                  max_length: int) -> masked.TrainBatches:  # fmt: skip
    if is_causal(subject):
        return causal.CausalTrainBatches(templates, names, subject.tokenizer, batch_size=batch_size, max_length=max_length)
    return masked.TrainBatches(templates, names, subject.tokenizer, roberta=subject.is_roberta_style,
                               batch_size=batch_size, max_length=max_length)  # fmt: skip


def gender_rows(subject, templates: list[Template], names: dict[str, list[str]], *, max_length: int):
    if is_causal(subject):
        return causal.gender_rows(templates, names, subject.tokenizer, max_length=max_length)
    return masked.gender_rows(templates, names, subject.tokenizer, roberta=subject.is_roberta_style, max_length=max_length)


def neutral_rows(subject, templates: list[Template], names: dict[str, list[str]], neutral: list[str], *,
                 max_length: int, neutral_max_length: int):  # fmt: skip
    if is_causal(subject):
        return causal.neutral_rows(templates, names, neutral, subject.tokenizer, max_length=max_length,
                                   neutral_max_length=neutral_max_length)  # fmt: skip
    return masked.neutral_rows(templates, names, neutral, subject.tokenizer, roberta=subject.is_roberta_style,
                               max_length=max_length, neutral_max_length=neutral_max_length)  # fmt: skip


def lms_items(subject, sentences: list[str], *, seed: int, max_length: int) -> list[masked.MaskedExample]:
    """LMS_Dec items: masked tokens to predict (masked LM) or every next token of the text (causal LM)."""
    if is_causal(subject):
        return causal.lms_examples(sentences, subject.tokenizer, max_length=max_length)
    return masked.lms_examples(sentences, subject.tokenizer, seed=seed, max_length=max_length)


def gentypes_items(subject, templates: list[str], *, max_length: int, prompt: str = "person") -> list[masked.MaskedExample]:
    """GENTYPES items: the [NAME] slot masked (masked LM) or the text a name follows (causal LM; `prompt` style)."""
    if is_causal(subject):
        return causal.gentypes_examples(templates, subject.tokenizer, max_length=max_length, style=prompt)
    return masked.gentypes_examples(templates, subject.tokenizer, max_length=max_length)
