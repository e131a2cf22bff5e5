"""Folding a subject's representation transforms into its LM head, so that a plain checkpoint computes the same
LM outputs (used by `bench export`).

A representation transform maps the last hidden state h (the encoder output of a masked LM, the final-norm output
of a causal LM) to h A + c; a transform that can be folded says so with `affine() -> (A, c)` in float64 (the
projections of INLP, SentenceDebias, RLACE and LEACE do; `bench.models.subject` applies them as a forward hook).
The LM head starts with a linear map y = h Wᵀ + b (BERT `cls.predictions.transform.dense`, RoBERTa
`lm_head.dense`, DistilBERT `vocab_transform`, a causal LM's output embedding), so

    y = (h A + c) Wᵀ + b = h (W Aᵀ)ᵀ + (b + W c)

is the same map with W' = W Aᵀ and b' = b + W c, computed in float64 and rounded once to the model's dtype.
Exact for everything downstream of the head's first linear map (MLM and next-token logits); the hidden states
themselves (SEAT, GLUE's classifier input) are NOT projected by the folded model. A causal LM's output embedding
is tied to its input embedding: it is untied (config.tie_word_embeddings = False) so the input side keeps W.
A non-zero offset c needs a bias, which GPT-2's and Llama's output projection lack: refused with the reason.
"""
from __future__ import annotations

import torch
from torch import nn

from bench.errors import BenchError


def composed_affine(transforms) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, c) of the transforms applied in order: h -> ((h A1 + c1) A2 + c2) ... = h A + c, in float64."""
    a, c = None, None
    for t in transforms:
        if not callable(getattr(t, "affine", None)):
            raise BenchError(f"the representation transform {type(t).__name__} is not an affine map of the hidden "
                             "states, so it cannot be folded into the LM head")  # fmt: skip
        a_t, c_t = (x.detach().to("cpu", torch.float64) for x in t.affine())
        a, c = (a_t, c_t) if a is None else (a @ a_t, c @ a_t + c_t)
    if a is None:
        raise BenchError("nothing to fold: the subject has no representation transform")
    return a, c


def head_input_linear(model: nn.Module, kind: str) -> nn.Linear | nn.Embedding:
    """The first linear map of the LM head, which reads the last hidden state."""
    if kind == "clm":
        return model.get_output_embeddings()
    for path in ("cls.predictions.transform.dense", "lm_head.dense", "vocab_transform"):
        module = model
        for attr in path.split("."):
            module = getattr(module, attr, None)
        if isinstance(module, nn.Linear):
            return module
    raise BenchError(f"cannot find the first linear map of {type(model).__name__}'s LM head to fold a projection into")


def fold_into_head(model: nn.Module, kind: str, transforms) -> nn.Module:
    """Change `model` in place so that its LM outputs equal those of `model` with `transforms` hooked in."""
    a, c = composed_affine(transforms)
    head = head_input_linear(model, kind)
    weight = head.weight.detach().to(torch.float64).cpu()
    if weight.shape[1] != a.shape[0]:
        raise BenchError(f"the projection is {a.shape[0]}-dimensional, the LM head reads {weight.shape[1]}")
    bias = getattr(head, "bias", None)
    offset = weight @ c
    if bias is None and bool(torch.any(offset != 0)):
        raise BenchError(f"the transform adds a constant to the hidden states, which {type(model).__name__}'s LM head "
                         "cannot carry (its output projection has no bias); export the chain without the centring "
                         "(e.g. LEACE with centring off) or use the projection file with bench")  # fmt: skip
    dtype, device = head.weight.dtype, head.weight.device
    new_weight = nn.Parameter((weight @ a.T).to(device=device, dtype=dtype), requires_grad=head.weight.requires_grad)
    if kind == "clm":
        inputs = model.get_input_embeddings()
        if inputs is not None and inputs.weight is head.weight:
            model.config.tie_word_embeddings = False
            if hasattr(model.config, "get_text_config"):
                model.config.get_text_config().tie_word_embeddings = False
    head.weight = new_weight
    if bias is not None:
        head.bias = nn.Parameter((bias.detach().to(torch.float64).cpu() + offset).to(device=device, dtype=dtype),
                                 requires_grad=bias.requires_grad)  # fmt: skip
    return model
