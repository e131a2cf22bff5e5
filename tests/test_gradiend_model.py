"""The GRADIEND autoencoder: initialisation, the closed-form gradient + AdamW update against a direct autograd
formulation (nn.Linear + torch.optim.AdamW), the in-place sign flip, safetensors round trip."""
from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from methods.gradiend.model import Gradiend, bytes_per_step


def test_initialisation_follows_the_paper():
    n = 4000
    g = Gradiend.initialised(n, seed=0)
    bound = 1 / math.sqrt(n)
    assert g.W_e.abs().max() <= bound and g.b_e.abs().max() <= bound
    x_max = float(g.W_e.max())
    assert g.W_d.abs().max() <= x_max and g.b_d.abs().max() <= x_max
    assert g.W_d.abs().max() > 0.9 * x_max  # spread over the whole interval, not U(-1, 1)
    assert torch.equal(Gradiend.initialised(n, seed=0).flat, g.flat)
    assert not torch.equal(Gradiend.initialised(n, seed=1).flat, g.flat)


class Reference(nn.Module):
    """The straightforward formulation: nn.Linear(n, 1) -> tanh -> nn.Linear(1, n), MSE, autograd."""

    def __init__(self, g: Gradiend):
        super().__init__()
        self.enc, self.dec = nn.Linear(g.n, 1, dtype=g.flat.dtype), nn.Linear(1, g.n, dtype=g.flat.dtype)
        with torch.no_grad():
            self.enc.weight.copy_(g.W_e[None])
            self.enc.bias.copy_(g.b_e)
            self.dec.weight.copy_(g.W_d[:, None])
            self.dec.bias.copy_(g.b_d)

    def forward(self, x):
        return self.dec(torch.tanh(self.enc(x))[None])[0]

    def flip(self, opt):
        with torch.no_grad():
            for p in (self.enc.weight, self.enc.bias, self.dec.weight):
                p.neg_()
                opt.state[p]["exp_avg"].neg_()


@pytest.mark.parametrize("fused", [True, False])
def test_update_equals_autograd_and_adamw(fused):
    """Closed-form gradients + AdamW (fused kernel and the for-each one) equal autograd + torch.optim.AdamW over 12
    steps with a sign flip. Run in float64: this states a mathematical identity, and in float32 a coordinate
    whose gradient is rounding noise gets a +-lr Adam step (m/sqrt(v) normalises the noise to size 1), in a
    direction that depends on the CPU's summation order, so no float32 tolerance on the parameters can hold.

    Tolerances are derived from float64 rounding (EPS = 2.2e-16), not measured: a length-n dot product of terms
    bounded by S is off by at most n * EPS * S (the classic gamma_n bound); elementwise results by a few EPS
    relative. After 12 Adam steps of size <= lr the parameters differ by far less than 1e3 * n * EPS * lr per
    step (measured on AMD EPYC AVX-512, 1 or 3 threads and ATEN_CPU_CAPABILITY=default: <= 1.1e-17 absolute, bound 8e-12)."""
    dtype = torch.float64
    eps = torch.finfo(dtype).eps
    n, gen = 3000, torch.Generator().manual_seed(1)
    g = Gradiend.initialised(n, seed=0, dtype=dtype)
    ref = Reference(g)
    lr = 1e-3
    opt = g.optimizer(lr=lr, weight_decay=1e-2, fused=fused)
    ref_opt = torch.optim.AdamW(ref.parameters(), lr=lr, weight_decay=1e-2, eps=1e-8, fused=fused)
    dot_err = n * eps  # relative (to the sum of |terms|) error bound of a length-n dot product
    for step in range(12):
        x = torch.randn(n, generator=gen, dtype=dtype) * 1e-2
        t = torch.randn(n, generator=gen, dtype=dtype) * 1e-3 + 0.5 * x
        loss = g.loss_and_grad(x, t)
        ref_opt.zero_grad()
        ref_loss = nn.functional.mse_loss(ref(x), t)
        ref_loss.backward()
        # dL/dz is a length-n dot product with cancellation: compare it on the scale of its terms
        dz_scale = float((g.W_d.abs() * g.gb_d.abs()).sum())
        assert torch.allclose(g.gb_e, ref.enc.bias.grad, rtol=0, atol=dot_err * dz_scale)
        assert torch.allclose(g.gW_e, ref.enc.weight.grad[0], rtol=0, atol=dot_err * dz_scale * float(x.abs().max()))
        # elementwise (given h, itself a dot product of n terms): a few EPS relative plus h's error
        h_err = dot_err * float((g.W_e.abs() * x.abs()).sum() + g.b_e.abs())
        assert torch.allclose(g.gW_d, ref.dec.weight.grad[:, 0], rtol=16 * eps, atol=h_err * float(g.gb_d.abs().max()))
        assert torch.allclose(g.gb_d, ref.dec.bias.grad, rtol=16 * eps, atol=h_err * float(g.W_d.abs().max()) * 2 / n)
        assert float(loss) == pytest.approx(float(ref_loss.detach()), rel=dot_err)
        opt.step()
        ref_opt.step()
        if step == 5:
            g.flip_(opt)
            ref.flip(ref_opt)
    atol = 12 * 1e3 * dot_err * lr  # 12 steps, each off by far less than 1e3 * n * EPS * lr
    for mine, theirs in ((g.W_e, ref.enc.weight[0]), (g.W_d, ref.dec.weight[:, 0]), (g.b_d, ref.dec.bias), (g.b_e, ref.enc.bias)):
        assert torch.allclose(mine, theirs.detach(), rtol=0, atol=atol)


def test_flip_is_an_exact_reparametrisation():
    """Training after a flip is the exact mirror image of training without it."""
    n, gen = 500, torch.Generator().manual_seed(2)
    data = [(torch.randn(n, generator=gen) * 1e-2, torch.randn(n, generator=gen) * 1e-3) for _ in range(10)]
    a, b = Gradiend.initialised(n, seed=3), Gradiend.initialised(n, seed=3)
    opt_a, opt_b = a.optimizer(lr=1e-3), b.optimizer(lr=1e-3)
    for i, (x, t) in enumerate(data):
        for g, opt in ((a, opt_a), (b, opt_b)):
            g.loss_and_grad(x, t)
            opt.step()
        if i == 4:
            a.flip_(opt_a)
    assert torch.equal(a.W_e, -b.W_e) and torch.equal(a.b_e, -b.b_e) and torch.equal(a.W_d, -b.W_d)
    assert torch.equal(a.b_d, b.b_d)
    x = data[0][0]
    assert torch.equal(a.encode(x), -b.encode(x))
    assert torch.equal(a.decode(a.encode(x)), b.decode(b.encode(x)))


def test_save_and_load_round_trip(tmp_path):
    g = Gradiend.initialised(100, seed=0)
    g.save(tmp_path / "g", {"note": "x"})
    h, config = Gradiend.load(tmp_path / "g")
    assert torch.equal(h.flat, g.flat) and config["n"] == 100 and config["note"] == "x"
    assert json.loads((tmp_path / "g" / "config.json").read_text())["layout"] == ["W_e", "W_d", "b_d", "b_e"]
    from safetensors.torch import load_file

    assert set(load_file(str(tmp_path / "g" / "gradiend.safetensors"))) == {"params"}


def test_decode_and_encode_match_formulas():
    # float64: torch.dot vs matmul and a fused add vs multiply-then-add round differently; in float64 that is
    # <= 50 * 2^-53 relative to the terms, ~1e8 below the default rtol 1e-5 / atol 1e-8
    g = Gradiend.initialised(50, seed=0, dtype=torch.float64)
    x = torch.randn(50, dtype=torch.float64)
    assert torch.allclose(g.encode(x), torch.tanh(g.W_e @ x + g.b_e[0]))
    assert torch.allclose(g.decode(0.3), 0.3 * g.W_d + g.b_d)
    out = torch.empty(50, dtype=torch.float64)
    assert g.decode(-2.0, out=out).data_ptr() == out.data_ptr()


def test_bytes_per_step_count():
    assert bytes_per_step(1000) == 46 * 1000 * 4
    assert bytes_per_step(1000, fused_adamw=False) > bytes_per_step(1000)


def test_reusing_the_input_buffers_gives_the_same_step():
    n, gen = 300, torch.Generator().manual_seed(4)
    a, b = Gradiend.initialised(n, seed=0), Gradiend.initialised(n, seed=0)
    opt_a, opt_b = a.optimizer(lr=1e-3), b.optimizer(lr=1e-3)
    for _ in range(3):
        x, t = torch.randn(n, generator=gen), torch.randn(n, generator=gen)
        la = a.loss_and_grad(x.clone(), t.clone())
        xb, tb = x.clone(), t.clone()
        lb = b.loss_and_grad(xb, tb, reuse_inputs=True)
        assert b.gW_e.data_ptr() == xb.data_ptr() and b.gb_d.data_ptr() == tb.data_ptr()
        assert torch.equal(la, lb) and torch.equal(a.gW_e, b.gW_e) and torch.equal(a.gb_d, b.gb_d)
        opt_a.step()
        opt_b.step()
    assert torch.equal(a.flat, b.flat)
