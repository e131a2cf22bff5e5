"""The parameter set GRADIEND reads and writes (SPEC §1.1, decision §0.2).

Every trainable tensor of the `*ForMaskedLM` model in `named_parameters()` order (tied weights once), except
those whose name contains an excluded substring. Default = the G2 rule (prediction head `cls.predictions`,
RoBERTa `lm_head`, any `pooler`) plus DistilBERT's head (`vocab_transform`, `vocab_layer_norm`,
`vocab_projector`): the paper's code keeps DistilBERT's head by accident (its names match no exclusion
string); the paper's intent is "the core model without the prediction head", which is what we do.
Embeddings are included; the word embedding is tied to the output projection, so its gradient also carries
the output-softmax contribution.

A `ParamSet` maps the selected tensors onto one flat vector of n numbers (offsets in selection order), so
gradients, GRADIEND vectors and weight edits are plain length-n tensors.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from torch import nn

from bench.errors import BenchError

DEFAULT_EXCLUDE: tuple[str, ...] = (
    "cls.predictions", "lm_head", "pooler", "vocab_transform", "vocab_layer_norm", "vocab_projector",
)  # fmt: skip


@dataclass
class ParamSet:
    names: list[str]
    params: list[nn.Parameter]
    offsets: list[int]  # start of each tensor in the flat vector; offsets[-1] + numel = n
    n: int

    @classmethod
    def select(cls, model: nn.Module, exclude: Sequence[str] = DEFAULT_EXCLUDE) -> "ParamSet":
        names, params, offsets, n = [], [], [], 0
        for name, p in model.named_parameters():
            if any(s in name for s in exclude):
                continue
            names.append(name)
            params.append(p)
            offsets.append(n)
            n += p.numel()
        if not params:
            raise BenchError(f"GRADIEND: no parameter of {type(model).__name__} is left after excluding {list(exclude)}")
        dtypes = {p.dtype for p in params}
        if len(dtypes) != 1:
            raise BenchError(f"GRADIEND needs one parameter dtype, the model has {sorted(map(str, dtypes))}")
        return cls(names, params, offsets, n)

    @property
    def dtype(self) -> torch.dtype:
        return self.params[0].dtype

    @property
    def device(self) -> torch.device:
        return self.params[0].device

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        return [tuple(p.shape) for p in self.params]

    def signature(self) -> list[list]:
        """[name, shape] per tensor: saved with every GRADIEND so a mismatching model is refused."""
        return [[name, list(p.shape)] for name, p in zip(self.names, self.params)]

    def check_signature(self, signature, what: str = "GRADIEND") -> None:
        mine = self.signature()
        theirs = [[name, list(shape)] for name, shape in signature]
        if mine != theirs:
            diff = next((f"{a} vs {b}" for a, b in zip(mine, theirs) if a != b), f"{len(mine)} vs {len(theirs)} tensors")
            raise BenchError(f"{what} was made for other model parameters than this model's ({diff})")

    def empty(self) -> torch.Tensor:
        return torch.empty(self.n, dtype=self.dtype, device=self.device)

    def views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """Parameter-shaped views of a flat length-n vector (no copies)."""
        if flat.numel() != self.n:
            raise ValueError(f"flat vector has {flat.numel()} elements, the parameter set {self.n}")
        return [flat[o : o + p.numel()].view(p.shape) for o, p in zip(self.offsets, self.params)]

    def flatten(self, out: torch.Tensor | None = None) -> torch.Tensor:
        """The current parameter values as one flat vector (written into `out` when given)."""
        with torch.no_grad():
            parts = [p.detach().reshape(-1) for p in self.params]
            if out is None:
                return torch.cat(parts)
            return torch.cat(parts, out=out)

    @torch.no_grad()
    def write(self, flat: torch.Tensor) -> None:
        """Set the parameters to the values of a flat vector."""
        for p, v in zip(self.params, self.views(flat)):
            p.copy_(v)

    @torch.no_grad()
    def write_sum(self, base: torch.Tensor, delta: torch.Tensor) -> None:
        """Set the parameters to base + delta (both flat), one pass per tensor and no temporary."""
        for p, b, d in zip(self.params, self.views(base), self.views(delta)):
            torch.add(b, d, out=p)

    @contextlib.contextmanager
    def grads_into(self, model: nn.Module) -> Iterator[None]:
        """Within the block only the selected tensors require gradients (the head is still backpropagated
        through, but its weight gradients are not computed); every flag and `.grad` is restored after."""
        selected = {id(p) for p in self.params}
        saved = [(p, p.requires_grad, p.grad) for p in model.parameters()]
        try:
            for p in model.parameters():
                p.requires_grad_(id(p) in selected)
                p.grad = None
            yield
        finally:
            for p, flag, grad in saved:
                p.requires_grad_(flag)
                p.grad = grad

    def point_grads(self, flat: torch.Tensor) -> None:
        """Make every selected `.grad` a view of `flat`: backward then accumulates straight into it."""
        for p, v in zip(self.params, self.views(flat)):
            p.grad = v
