"""Removing a linear subspace from hidden states: the representation transform of INLP and SentenceDebias.

Both methods end in an orthogonal projection P = I - U Uᵀ, U an orthonormal basis (d, k) of the removed
subspace. Applied as h - (h U) Uᵀ it costs 2·d·k per token instead of d² and is exactly P·h.
"""
from __future__ import annotations

import numpy as np
import scipy.linalg
import torch
from torch import nn

from bench.errors import BenchError


def orthonormal_basis(vectors: np.ndarray) -> np.ndarray:
    """Orthonormal basis (d, k) of the span of the rows of `vectors` (n, d); k = numerical rank."""
    vectors = np.asarray(vectors, dtype=np.float64)
    if vectors.size == 0 or np.allclose(vectors, 0):
        return np.zeros((vectors.shape[-1], 0))
    return scipy.linalg.orth(vectors.T)


def nullspace_projection(basis: np.ndarray) -> np.ndarray:
    """P = I - U Uᵀ: the orthogonal projection onto the complement of span(U)."""
    basis = np.asarray(basis, dtype=np.float64)
    return np.eye(basis.shape[0]) - basis @ basis.T


class SubspaceRemoval(nn.Module):
    """h -> h - (h U) Uᵀ for every token's hidden state; U (d, k) has orthonormal columns."""

    def __init__(self, basis: torch.Tensor | np.ndarray):
        super().__init__()
        basis = torch.as_tensor(np.asarray(basis, dtype=np.float32) if isinstance(basis, np.ndarray) else basis)
        if basis.ndim != 2 or basis.shape[1] == 0:
            raise BenchError(f"nothing to remove: the subspace basis has shape {tuple(basis.shape)}")
        self.register_buffer("basis", basis.to(torch.float32).contiguous())

    @property
    def rank(self) -> int:
        return int(self.basis.shape[1])

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if h.shape[-1] != self.basis.shape[0]:
            raise BenchError(f"hidden size {h.shape[-1]} does not match the projection's {self.basis.shape[0]}")
        u = self.basis.to(device=h.device, dtype=h.dtype)
        return h - (h @ u) @ u.T

    def extra_repr(self) -> str:
        return f"d={self.basis.shape[0]}, removed={self.rank}"
