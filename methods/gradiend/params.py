"""The parameter set GRADIEND reads and writes (SPEC §1.1, decision §0.2).

Every trainable tensor of the `*ForMaskedLM` model in `named_parameters()` order (tied weights once), except
those whose name contains an excluded substring. Default = the G2 rule (prediction head `cls.predictions`,
RoBERTa `lm_head`, any `pooler`) plus DistilBERT's head (`vocab_transform`, `vocab_layer_norm`,
`vocab_projector`): the paper's code keeps DistilBERT's head by accident (its names match no exclusion
string); the paper's intent is "the core model without the prediction head", which is what we do.
Embeddings are included; the word embedding is tied to the output projection, so its gradient also carries
the output-softmax contribution.

Causal LMs (SPEC-beyond §9.1): the same rule is the reference's "all parameters minus names containing `lm_head`":
GPT-2's and Llama-3.2's LM head is tied to `wte` / `embed_tokens` and listed once as that embedding, so the output
projection is included (n = 124,439,808 for gpt2, 3,212,749,824 for Llama-3.2-3B).

`layers` restricts the set to some transformer blocks (a memory option for large models, SPEC-beyond §9.1: the
reference trains a layer subset of Llama-3.2-3B-Instruct in one of its configurations): the tensors of blocks
`<...>.h.<i>.` (GPT-2), `<...>.layers.<i>.` (Llama), `<...>.layer.<i>.` (BERT/DistilBERT) with i in `layers`
(negative i counts from the last block); embeddings and final norms belong to no block and are left out.

A `ParamSet` maps the selected tensors onto one flat vector of n numbers (offsets in selection order), so
gradients, GRADIEND vectors and weight edits are plain length-n tensors.
"""
from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from torch import nn

from bench.errors import BenchError

DEFAULT_EXCLUDE: tuple[str, ...] = (
    "cls.predictions", "lm_head", "pooler", "vocab_transform", "vocab_layer_norm", "vocab_projector",
)  # fmt: skip
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}


def gradiend_dtype(name: str | None, params: "ParamSet") -> torch.dtype:
    """The dtype of the GRADIEND, its optimiser state and its inputs: `name` (DTYPES), or the model's (None)."""
    if name is None:
        return params.dtype
    if name not in DTYPES:
        raise BenchError(f"GRADIEND dtype {name!r} is not one of {', '.join(DTYPES)}")
    return DTYPES[name]


BLOCK = re.compile(r"\.(?:h|layers|layer)\.(\d+)\.")


def block_of(name: str) -> int | None:
    """The index of the transformer block a parameter belongs to, or None (embeddings, final norm)."""
    match = BLOCK.search(name)
    return int(match.group(1)) if match else None


def _keep_layers(named: list[tuple[str, nn.Parameter]], layers: Sequence[int] | None) -> list[tuple[str, nn.Parameter]]:
    if layers is None:
        return named
    blocks = [b for b in (block_of(name) for name, _ in named) if b is not None]
    if not blocks:
        raise BenchError("GRADIEND: layers= was given, but no parameter belongs to a numbered transformer block")
    count = max(blocks) + 1
    if any(not -count <= int(i) < count for i in layers):
        raise BenchError(f"GRADIEND: layers={list(layers)} outside the model's {count} blocks")
    wanted = {int(i) % count for i in layers}
    return [(name, p) for name, p in named if block_of(name) in wanted]


@dataclass
class ParamSet:
    names: list[str]
    params: list[nn.Parameter]
    offsets: list[int]  # start of each tensor in the flat vector; offsets[-1] + numel = n
    n: int

    @classmethod
    def select(cls, model: nn.Module, exclude: Sequence[str] = DEFAULT_EXCLUDE,
               layers: Sequence[int] | None = None) -> "ParamSet":  # fmt: skip
        names, params, offsets, n = [], [], [], 0
        kept = [(name, p) for name, p in model.named_parameters() if not any(s in name for s in exclude)]
        for name, p in _keep_layers(kept, layers):
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
