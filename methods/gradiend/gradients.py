"""Gradient features of the base model (SPEC §1.3).

Training: for a batch with factual labels y+ and counterfactual labels y- on the same masked inputs,
    L+ = mean cross-entropy over all masked positions with targets y+, L- likewise with y-,
    x = dL+/dtheta (encoder input), t = d(L+ - L-)/dtheta = g+ - g- (decoder target),
flattened over the parameter set. `GradientPair` gets both with ONE forward and TWO backward passes (backward
of L+ with the graph retained, then of L+ - L-) and lets autograd accumulate straight into two preallocated
flat buffers: every selected parameter's `.grad` is a view of the buffer, so there is no per-tensor copy
and no second set of gradient tensors. Vocabulary logits are computed only at the masked positions (the
loss ignores every other position, so the gradient is the same as Hugging Face's full-sequence loss).
The base model runs in eval mode (no dropout, SPEC §0.1).

Causal LMs (SPEC-beyond §9.1): the same code, with the LM head `bench.models.subject.lm_head(model, "clm")` (the
output embeddings, tied to the input embeddings for GPT-2 and Llama-3.2) and examples whose position is the last
real token of a right-padded input (examples_causal.py): L+ is the next-token cross-entropy of the pronoun there.

Pair GRADIENDs (race, religion; pairs_examples.py): a batch whose counterfactual words have another number of tokens
than its factual ones carries the counterfactual inputs as `batch.twin`; L- then comes from a second forward pass
of those (still two backward passes, the second through both graphs).

Evaluation: the encoder only needs W_e . g_i for each example i (batch-size-1 gradient g_i, SPEC §1.3).
That is the directional derivative of the example's loss along W_e, which one forward-mode (JVP) pass gives
for a whole batch of examples at once, exactly and without ever materialising g_i.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from bench.models.subject import lm_head
from methods.gradiend.examples import MaskedBatch
from methods.gradiend.params import ParamSet


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


def masked_logits(model: nn.Module, batch: MaskedBatch, kind: str = "mlm") -> torch.Tensor:
    """Vocabulary logits at the batch's positions only, shape (m, vocab): of the masked token there (masked LM)
    or of the token after it (causal LM, whose examples put their position at the last real token)."""
    extra = {"use_cache": False} if kind == "clm" else {}  # one pass, no key/value cache
    hidden = model.base_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, **extra)[0]
    return lm_head(model, kind)(hidden[batch.rows, batch.cols])


class GradientPair:
    """x = g+ and t = g+ - g- of a batch, into two buffers allocated once (2n numbers).

    With a `dtype` other than the model's (a bfloat16 GRADIEND of a float32 model, the memory option) the buffers
    are of that dtype and autograd cannot accumulate into them: each tensor's gradient is copied into its view
    (rounded) as soon as the backward pass has finished it, and freed, so besides the two buffers only one tensor's
    gradient in the model's dtype exists at a time."""

    def __init__(self, subject, params: ParamSet, dtype: torch.dtype | None = None):
        self.subject, self.params = subject, params
        self.dtype = params.dtype if dtype is None else dtype
        self.x = torch.empty(params.n, dtype=self.dtype, device=params.device)
        self.t = torch.empty(params.n, dtype=self.dtype, device=params.device)

    def __call__(self, batch: MaskedBatch) -> tuple[torch.Tensor, torch.Tensor]:
        model, params = self.subject.model, self.params
        with eval_mode(model), params.grads_into(model), self.subject.hooks(model), torch.enable_grad():
            logits = masked_logits(model, batch, self.subject.kind)
            loss_pos = F.cross_entropy(logits, batch.labels)
            if batch.twin is None:  # factual and counterfactual share the input: one forward pass
                loss_neg = F.cross_entropy(logits, batch.counter)
            else:  # other inputs (a pair GRADIEND's words of different token counts): a second pass
                loss_neg = F.cross_entropy(masked_logits(model, batch.twin, self.subject.kind), batch.twin.labels)
            with self._into(self.x):
                loss_pos.backward(retain_graph=True)
            with self._into(self.t):
                (loss_pos - loss_neg).backward()
        return self.x, self.t

    @contextlib.contextmanager
    def _into(self, flat: torch.Tensor) -> Iterator[None]:
        """A backward pass inside writes the selected gradients into `flat` (zero where none flows)."""
        flat.zero_()
        if flat.dtype == self.params.dtype:
            self.params.point_grads(flat)
            yield
            return

        def hook(param, view):
            view.copy_(param.grad)
            param.grad = None

        handles = [p.register_post_accumulate_grad_hook(lambda q, v=v: hook(q, v))
                   for p, v in zip(self.params.params, self.params.views(flat))]  # fmt: skip
        try:
            yield
        finally:
            for h in handles:
                h.remove()


class _ExampleLosses(nn.Module):
    """Per-example MLM loss (mean over the example's masked positions), as a module for `functional_call`."""

    def __init__(self, model: nn.Module, kind: str = "mlm"):
        super().__init__()
        self.model, self.kind = model, kind

    def forward(self, batch: MaskedBatch) -> torch.Tensor:
        ce = F.cross_entropy(masked_logits(self.model, batch, self.kind), batch.labels, reduction="none")
        total = torch.zeros(batch.size, dtype=ce.dtype, device=ce.device).index_add_(0, batch.rows, ce)
        return total / torch.bincount(batch.rows, minlength=batch.size).to(ce.dtype)


@contextlib.contextmanager
def eager_attention(model: nn.Module) -> Iterator[None]:
    """Fused attention kernels have no forward-mode derivative; the eager implementation computes the same."""
    config = getattr(model, "config", None)
    impl = getattr(config, "_attn_implementation", None)
    if impl in (None, "eager"):
        yield
        return
    setter = getattr(model, "set_attn_implementation", None)
    if setter is not None:
        setter("eager")
    else:  # older transformers
        config._attn_implementation = "eager"
    try:
        yield
    finally:
        if setter is not None:
            setter(impl)
        else:
            config._attn_implementation = impl


def directional_derivatives(subject, params: ParamSet, direction: torch.Tensor, batch: MaskedBatch) -> torch.Tensor:
    """<dL_i/dtheta, direction> for every example i of the batch (L_i = that example's own loss, i.e. the
    batch-size-1 gradient), by one forward-mode pass. `direction` is a flat length-n vector."""
    from torch.func import functional_call, jvp

    model = subject.model
    wrapper = _ExampleLosses(model, subject.kind)
    keys = ["model." + name for name in params.names]
    primals = {k: p.detach() for k, p in zip(keys, params.params)}
    tangents = dict(zip(keys, params.views(direction.detach().to(params.dtype))))

    def losses(p):
        return functional_call(wrapper, p, (batch,), strict=False, tie_weights=True)

    with eval_mode(model), eager_attention(model), subject.hooks(model), torch.no_grad():
        _, out = jvp(losses, (primals,), (tangents,))
    return out
