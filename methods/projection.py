"""Removing a linear subspace from hidden states: the representation transform of INLP and SentenceDebias.

Both methods end in an orthogonal projection P = I - U Uᵀ, U an orthonormal basis (d, k) of the removed
subspace. Applied as h - (h U) Uᵀ it costs 2·d·k per token instead of d² and is exactly P·h.

LEACE ends in an affine eraser h -> h - L R (h - b) (an oblique projection of rank k below the identity, kept
as its d×k factors, and the fitting data's mean b): `AffineErasure`, applied by the same hook.
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

    def affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(A, c) in float64 with forward(h) == h A + c: A = I - U Uᵀ, c = 0 (what `bench export` folds)."""
        u = self.basis.to(torch.float64)
        return torch.eye(u.shape[0], dtype=torch.float64) - u @ u.T, torch.zeros(u.shape[0], dtype=torch.float64)

    def extra_repr(self) -> str:
        return f"d={self.basis.shape[0]}, removed={self.rank}"


class AffineErasure(nn.Module):
    """h -> h - ((h - b) Rᵀ) Lᵀ for every token's hidden state: concept_erasure.LeaceEraser's map, with its
    `proj_left` L (d, k), `proj_right` R (k, d) and `bias` b (d,) (None: no centring). The factors are kept in
    the dtype given (the LEACE artifact stores float64) and cast to the hidden states' dtype when applied."""

    def __init__(self, proj_left, proj_right, bias=None):
        super().__init__()
        left, right = torch.as_tensor(proj_left), torch.as_tensor(proj_right)
        if left.ndim != 2 or right.ndim != 2 or left.shape[1] != right.shape[0] or left.shape[0] != right.shape[1]:
            raise BenchError(f"an eraser needs L (d, k) and R (k, d), got {tuple(left.shape)} and {tuple(right.shape)}")
        if left.shape[1] == 0 or not bool(torch.any(left != 0) and torch.any(right != 0)):
            raise BenchError("nothing to erase: the eraser is the identity")
        self.register_buffer("proj_left", left.contiguous())
        self.register_buffer("proj_right", right.contiguous())
        bias = None if bias is None else torch.as_tensor(bias).reshape(-1).to(left.dtype)
        if bias is not None and bias.shape[0] != left.shape[0]:
            raise BenchError(f"the eraser's bias has {bias.shape[0]} entries, its hidden size is {left.shape[0]}")
        self.register_buffer("bias", bias)

    @property
    def rank(self) -> int:
        return int(self.proj_left.shape[1])

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if h.shape[-1] != self.proj_left.shape[0]:
            raise BenchError(f"hidden size {h.shape[-1]} does not match the eraser's {self.proj_left.shape[0]}")
        left = self.proj_left.to(device=h.device, dtype=h.dtype)
        right = self.proj_right.to(device=h.device, dtype=h.dtype)
        delta = h if self.bias is None else h - self.bias.to(device=h.device, dtype=h.dtype)
        return h - (delta @ right.T) @ left.T

    def affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(A, c) in float64 with forward(h) == h A + c: A = I - Rᵀ Lᵀ, c = b Rᵀ Lᵀ (0 without centring)."""
        left, right = self.proj_left.to(torch.float64), self.proj_right.to(torch.float64)
        erase = right.T @ left.T
        offset = torch.zeros(left.shape[0], dtype=torch.float64) if self.bias is None else self.bias.to(torch.float64) @ erase
        return torch.eye(left.shape[0], dtype=torch.float64) - erase, offset

    def extra_repr(self) -> str:
        return f"d={self.proj_left.shape[0]}, k={self.rank}, affine={self.bias is not None}"
