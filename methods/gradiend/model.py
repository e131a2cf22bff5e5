"""The GRADIEND autoencoder (SPEC §1.4, §1.5, decisions §0.1 and §0.3).

    encoder  h = tanh(W_e . x + b_e)          W_e in R^n, b_e in R
    decoder  dec(h) = h * W_d + b_d           W_d, b_d in R^n (linear, SPEC §0.1)
    loss     mean((dec(enc(x)) - t)^2)        over the n elements

All 3n + 1 numbers live in ONE flat vector laid out [W_e | W_d | b_d | b_e]; the four parameters AdamW sees
are views of it. A step is a handful of vector operations on length-n views (the gradients in closed form,
no autograd graph over n-vectors) and one AdamW step (PyTorch's fused kernel where available: one read of
p, g, m, v and one write of p, m, v). In training the gradients of W_e and b_d are written over the
gradient buffers x and t they came from, so the step needs no n-sized buffer beyond W_d's gradient.
`bytes_per_step` counts the memory traffic of that sequence.

Initialisation (what the paper's code does): W_e, b_e ~ U(-1/sqrt(n), 1/sqrt(n)) (nn.Linear(n, 1)'s
default), x_max = max(W_e), W_d, b_d ~ U(-x_max, x_max); drawn from a generator seeded with the run seed.

Sign normalisation (`flip_`) negates W_e, b_e and W_d in place and negates AdamW's first moments of the
same entries (second moments are sign-invariant): an exact reparametrisation, so training continues as the
mirror image of what it would have done.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from bench.errors import BenchError

WEIGHTS_FILE = "gradiend.safetensors"
CONFIG_FILE = "config.json"


class Gradiend:
    def __init__(self, n: int, *, device=None, dtype=torch.float32):
        self.n = int(n)
        self.flat = torch.zeros(3 * self.n + 1, device=device, dtype=dtype)
        n, f = self.n, self.flat
        # four parameters that are views of the one flat vector (AdamW updates them in place)
        self.params = [torch.nn.Parameter(v) for v in (f[:n], f[n : 2 * n], f[2 * n : 3 * n], f[3 * n :])]
        self.W_e, self.W_d, self.b_d, self.b_e = (p.data for p in self.params)
        self.gW_d = torch.zeros(n, device=device, dtype=dtype)
        self.gb_e = torch.zeros(1, device=device, dtype=dtype)
        self._gW_e = self._gb_d = None  # own buffers, only when the inputs may not be reused

    @property
    def gW_e(self) -> torch.Tensor:
        return self.params[0].grad

    @property
    def gb_d(self) -> torch.Tensor:
        return self.params[2].grad

    # ---- construction ------------------------------------------------------------------------------------
    @classmethod
    def initialised(cls, n: int, seed: int, *, device=None, dtype=torch.float32) -> "Gradiend":
        """The paper's initialisation, drawn on the CPU from a generator seeded with `seed` (in chunks, so the
        same numbers on every device and no n-sized temporary)."""
        model = cls(n, device=device, dtype=dtype)
        gen = torch.Generator().manual_seed(int(seed))
        bound = 1.0 / math.sqrt(n)
        _uniform_(model.W_e, -bound, bound, gen)
        _uniform_(model.b_e, -bound, bound, gen)
        x_max = float(model.W_e.max())
        _uniform_(model.W_d, -x_max, x_max, gen)
        _uniform_(model.b_d, -x_max, x_max, gen)
        return model

    def optimizer(self, lr=1e-5, weight_decay=1e-2, eps=1e-8, betas=(0.9, 0.999), fused: bool | None = None):
        """AdamW over the four parameter views (fused kernel where PyTorch has one: one pass over p, g, m, v)."""
        if fused is None:
            fused = self.flat.device.type in ("cuda", "cpu") and self.flat.dtype in (torch.float32, torch.float16, torch.bfloat16)
        return torch.optim.AdamW(self.params, lr=lr, weight_decay=weight_decay, eps=eps, betas=tuple(betas), fused=fused)

    # ---- the model ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """h = tanh(W_e . x + b_e) as a 0-dim tensor."""
        return torch.tanh(torch.dot(self.W_e, x) + self.b_e[0])

    @torch.no_grad()
    def encode_dots(self, dots: torch.Tensor) -> torch.Tensor:
        """h from precomputed W_e . x values (e.g. directional derivatives of per-example losses)."""
        return torch.tanh(dots + self.b_e[0])

    @torch.no_grad()
    def decode(self, h, out: torch.Tensor | None = None) -> torch.Tensor:
        """dec(h) = h * W_d + b_d (written into `out` when given)."""
        h = float(h)
        if out is None:
            return torch.add(self.b_d, self.W_d, alpha=h)
        return torch.add(self.b_d, self.W_d, alpha=h, out=out)

    @torch.no_grad()
    def loss_and_grad(self, x: torch.Tensor, t: torch.Tensor, *, reuse_inputs: bool = False) -> torch.Tensor:
        """MSE loss of one (x, t) pair; sets the exact gradients as the parameters' `.grad`. Returns the
        0-dim loss (no host synchronisation).

        With `reuse_inputs` the gradients of W_e and b_d are written over x and t (which are not needed
        afterwards in training): 2n fewer numbers in memory, no extra traffic."""
        n = self.n
        if reuse_inputs:
            g_we, r = x, t
        else:
            if self._gW_e is None:
                self._gW_e, self._gb_d = torch.empty_like(self.W_e), torch.empty_like(self.b_d)
            g_we, r = self._gW_e, self._gb_d
        h = torch.tanh(torch.dot(self.W_e, x) + self.b_e[0])
        torch.sub(self.b_d, t, out=r)
        r.addcmul_(self.W_d, h)  # r = dec(h) - t
        loss = torch.dot(r, r) / n
        r.mul_(2.0 / n)  # dL/db_d
        dz = torch.dot(self.W_d, r) * (1 - h * h)  # dL/dh * tanh'(z)
        torch.mul(r, h, out=self.gW_d)
        torch.mul(x, dz, out=g_we)
        self.gb_e.copy_(dz.reshape(1))
        for p, g in zip(self.params, (g_we, self.gW_d, r, self.gb_e)):
            p.grad = g
        return loss

    @torch.no_grad()
    def flip_(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Encoder sign flip in place (W_e, b_e, W_d negated; b_d unchanged), with Adam's first moments."""
        for i in (0, 1, 3):  # W_e, W_d, b_e
            self.params[i].data.neg_()
            state = optimizer.state.get(self.params[i]) if optimizer is not None else None
            if state and "exp_avg" in state:
                state["exp_avg"].neg_()

    def copy(self) -> "Gradiend":
        return self.to(self.flat.device)

    def to(self, device) -> "Gradiend":
        other = Gradiend(self.n, device=device, dtype=self.flat.dtype)
        other.flat.copy_(self.flat)
        return other

    # ---- files ---------------------------------------------------------------------------------------
    def save(self, folder, config: dict | None = None) -> None:
        """`gradiend.safetensors` (the flat vector) + `config.json` (n, layout and whatever `config` adds)."""
        from bench.serialize import save_tensor_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_tensor_file({"params": self.flat.detach().contiguous().cpu()}, folder / WEIGHTS_FILE)
        meta = {"n": self.n, "layout": ["W_e", "W_d", "b_d", "b_e"], "dtype": str(self.flat.dtype).replace("torch.", "")}
        meta.update(config or {})
        (folder / CONFIG_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")

    @classmethod
    def load(cls, folder, device=None) -> tuple["Gradiend", dict]:
        from safetensors.torch import load_file

        folder = Path(folder)
        if not (folder / WEIGHTS_FILE).is_file() or not (folder / CONFIG_FILE).is_file():
            raise BenchError(f"no GRADIEND in {folder} (expected {WEIGHTS_FILE} and {CONFIG_FILE})")
        config = json.loads((folder / CONFIG_FILE).read_text())
        flat = load_file(str(folder / WEIGHTS_FILE))["params"]
        if flat.numel() != 3 * config["n"] + 1:
            raise BenchError(f"{folder / WEIGHTS_FILE}: {flat.numel()} numbers, expected 3n+1 with n={config['n']}")
        model = cls(config["n"], device=device, dtype=flat.dtype)
        model.flat.copy_(flat)
        return model, config


def _uniform_(view: torch.Tensor, low: float, high: float, gen: torch.Generator, chunk: int = 1 << 22) -> None:
    for start in range(0, view.numel(), chunk):
        part = view[start : start + chunk]
        part.copy_(torch.empty(part.numel(), dtype=view.dtype).uniform_(low, high, generator=gen))


def bytes_per_step(n: int, dtype_bytes: int = 4, fused_adamw: bool = True) -> int:
    """Memory traffic of one GRADIEND step over length-n vectors (reads + writes, excluding the base model):

        zero x and t buffers                      2 writes        (autograd then accumulates into them:
        accumulate g+ and g+ - g- (+=)            4 reads 2 writes  counted here as well)
        h: dot(W_e, x)                            2 reads
        r = b_d - t; r += h W_d                   4 reads 2 writes
        loss = dot(r, r); r *= 2/n                2 reads 1 write
        dot(W_d, r)                               2 reads
        gW_d = h r; gW_e = dz x                   2 reads 2 writes
        AdamW over 3n (fused: p, g, m, v -> p, m, v)   3 x (4 reads 3 writes)
    i.e. 25 + 21 = 46 element accesses per parameter of the base model (x 4 bytes in fp32: 184 bytes).
    PyTorch's unfused (foreach) AdamW makes about 21 accesses per element of 3n instead of 7 (63 per n).
    """
    per_element = 2 + 6 + 2 + 6 + 3 + 2 + 4 + (21 if fused_adamw else 63)
    return per_element * n * dtype_bytes
