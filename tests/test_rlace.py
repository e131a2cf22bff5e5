"""RLACE: the Fantope projection, the adversarial game on planted data, the plugin, and the synthetic world."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bench.api import Context
from bench.errors import DataError
from methods.bias_sentences import read_bios
from methods.rlace import (RLACE, fantope_projection, fantope_shift, game_gradients, probe, rlace,
                           top_eigenvectors)  # fmt: skip
from tests.tokenizers_fixture import bert_subject, bert_tokenizer  # noqa: F401

EPS64 = np.finfo(np.float64).eps


# ---- the Fantope projection ------------------------------------------------------------------------------------
def reference_fantope(a: np.ndarray, k: int) -> np.ndarray:
    """Written out: numpy's eigendecomposition, then a plain scalar bisection on the shift θ until the bracket
    stops shrinking (the authors' code does 25 halvings; run to the end here)."""
    lam, u = np.linalg.eigh((a + a.T) / 2)
    lo, hi = lam.min() - 1.0, lam.max()  # sum clip(lam - lo, 0, 1) = d >= k, at hi it is 0 <= k
    for _ in range(2000):
        mid = (lo + hi) / 2
        if mid in (lo, hi):
            break
        if np.clip(lam - mid, 0, 1).sum() > k:
            lo = mid
        else:
            hi = mid
    gamma = np.clip(lam - (lo + hi) / 2, 0, 1)
    return (u * gamma) @ u.T


def random_symmetric(d, seed, scale):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(d, d)) * scale
    return (a + a.T) / 2


@pytest.mark.parametrize("seed,k,scale", [(0, 1, 0.1), (1, 1, 1.0), (2, 3, 0.3), (3, 3, 5.0), (4, 7, 1.0)])
def test_fantope_projection_matches_a_plain_bisection_and_lies_in_the_fantope(seed, k, scale):
    d = 12
    a = random_symmetric(d, seed, scale)
    got = fantope_projection(torch.tensor(a), k).numpy()
    ref = reference_fantope(a, k)
    # Both are exact up to float64 rounding: the eigensolvers' backward error is ~d * eps * ||A||_2 per entry of
    # the reconstructed matrix, θ is exact to a few ulps of max(|θ|, 1), and clip is 1-Lipschitz. 100x margin.
    tol = 100 * d * EPS64 * max(1.0, np.linalg.norm(a, 2))
    np.testing.assert_allclose(got, ref, atol=tol, rtol=0)
    np.testing.assert_allclose(got, got.T, atol=tol, rtol=0)
    ev = np.linalg.eigvalsh(got)
    assert ev.min() >= -tol and ev.max() <= 1 + tol
    assert abs(np.trace(got) - k) <= tol
    # θ from the breakpoint search: sum clip(λ - θ, 0, 1) = k to rounding
    lam = np.linalg.eigvalsh(a)
    assert abs(np.clip(lam - fantope_shift(lam, k), 0, 1).sum() - k) <= tol
    # it is the nearest point of F_k: no random member of F_k (convex combinations of rank-k projections) is closer
    rng = np.random.default_rng(seed + 100)
    dist = np.linalg.norm(a - got)
    for _ in range(200):
        q = 0
        weights = rng.dirichlet(np.ones(3))
        for wgt in weights:
            basis, _ = np.linalg.qr(rng.normal(size=(d, k)))
            q = q + wgt * basis @ basis.T
        assert dist <= np.linalg.norm(a - q) + tol
    # a point of F_k is its own projection (here: the projection itself)
    np.testing.assert_allclose(fantope_projection(torch.tensor(got), k).numpy(), got, atol=tol, rtol=0)


@pytest.mark.parametrize("k", [1, 3])
def test_rounding_to_the_top_k_eigenvectors_gives_an_idempotent_rank_k_projection(k):
    d = 12
    relaxed = fantope_projection(torch.tensor(random_symmetric(d, 7, 1.0)), k).numpy()
    u = top_eigenvectors(relaxed, k)
    q = u @ u.T
    tol = 100 * d * EPS64  # orthonormal columns from eigh: U^T U = I to ~d eps
    np.testing.assert_allclose(u.T @ u, np.eye(k), atol=tol, rtol=0)
    np.testing.assert_allclose(q @ q, q, atol=tol, rtol=0)
    assert abs(np.trace(q) - k) <= tol
    lam, vecs = np.linalg.eigh(relaxed)
    top = vecs[:, -k:]
    np.testing.assert_allclose(q, top @ top.T, atol=tol, rtol=0)  # the span of the k largest eigenvalues
    # deterministic sign: each column's largest-magnitude entry is positive
    assert all(u[np.argmax(np.abs(u[:, j])), j] > 0 for j in range(k))


def test_fantope_shift_rejects_impossible_ranks():
    with pytest.raises(ValueError):
        fantope_shift(np.zeros(4), 4)
    with pytest.raises(ValueError):
        fantope_shift(np.zeros(4), 0)


def test_written_out_gradients_equal_autograd():
    """game_gradients replaces autograd in the loop; float64, the same operations up to order: 1e-12 is ~1e4 eps."""
    rng = np.random.default_rng(0)
    d, n = 9, 32
    x = torch.tensor(rng.normal(size=(n, d)))
    y = torch.tensor(rng.integers(0, 2, size=n).astype(np.float64))
    p = torch.tensor(rng.normal(size=(d, d)), requires_grad=True)  # not symmetric: the loss symmetrises it
    w = torch.tensor(rng.normal(size=(d, 1)), requires_grad=True)
    b = torch.tensor(rng.normal(size=1), requires_grad=True)
    s = (p + p.T) / 2
    z = (x @ (torch.eye(d, dtype=torch.float64) - s) @ w).squeeze(1) + b
    loss = torch.nn.functional.binary_cross_entropy_with_logits(z, y)
    loss.backward()
    got_loss, gp, gw, gb = game_gradients(x, y, p.detach(), w.detach(), b.detach())
    torch.testing.assert_close(got_loss, loss.detach(), atol=1e-12, rtol=0)
    for got, ref in ((gp, p.grad), (gw, w.grad), (gb, b.grad)):
        torch.testing.assert_close(got, ref, atol=1e-12, rtol=0)


# ---- the game on planted data ------------------------------------------------------------------------------------
def planted(seed, n=3400, d=16, shift=2.0):
    """One concept direction v: x = anisotropic correlated noise (scales e^U(-0.5, 1), a random rotation)
    + (2y - 1) * shift * v; 1,400 training and 2,000 held-out points."""
    rng = np.random.default_rng(seed)
    v = rng.normal(size=d)
    v /= np.linalg.norm(v)
    scales = np.exp(rng.uniform(-0.5, 1.0, size=d))
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    y = rng.integers(0, 2, size=n)
    x = (rng.normal(size=(n, d)) * scales) @ q.T + np.outer(2 * y - 1, v) * shift
    return x[:1400], y[:1400], x[1400:], y[1400:], v


@pytest.mark.parametrize("seed", range(5))
def test_rank_one_rlace_finds_the_planted_direction_and_the_probe_falls_to_chance(seed):
    """Paper hyperparameters (lr 0.005, batch 256, epsilon 0.002), at most 3,000 iterations.

    Measured over seeds 0-4: every run stops early (iterations 1,401-1,801) with the probe's training loss within
    epsilon of ln 2; |cos(u, v)| 0.9896-0.9992 (bound 0.98); held-out probe accuracy 0.952-0.983 before and
    0.482-0.539 after erasure on 2,000 test points (bound 0.56: the standard error at 0.5 is 0.011, and the
    remaining sin(angle) * shift of the concept explains the measured excess over 0.5)."""
    xt, yt, xh, yh, v = planted(seed)
    res = rlace(xt, yt, rank=1, n_iterations=3000, evaluate_every=100, seed=seed)
    assert res.stopped_early and res.chance_loss - res.best_loss <= 0.002
    assert abs(res.chance_loss - np.log(2)) < 0.01  # near-balanced labels
    u = res.basis
    assert u.shape == (16, 1) and abs(np.linalg.norm(u) - 1) < 1e-12
    assert abs(float(u[:, 0] @ v)) > 0.98
    erase = lambda z: z - (z @ u) @ u.T  # noqa: E731
    assert probe(xt, yt).score(xh, yh) > 0.9
    assert probe(erase(xt), yt).score(erase(xh), yh) < 0.56
    # the kept relaxed P is in F_1 and rounds to the stored basis
    ev = np.linalg.eigvalsh(res.relaxed)
    assert ev.min() >= -1e-12 and ev.max() <= 1 + 1e-12 and abs(ev.sum() - 1) < 1e-12
    np.testing.assert_array_equal(top_eigenvectors(res.relaxed, 1), u)


def test_rlace_is_deterministic_for_a_seed():
    xt, yt, _, _, _ = planted(0)
    kw = dict(rank=1, n_iterations=400, evaluate_every=100)
    a, b = rlace(xt, yt, seed=3, **kw), rlace(xt, yt, seed=3, **kw)
    np.testing.assert_array_equal(a.relaxed, b.relaxed)
    np.testing.assert_array_equal(a.basis, b.basis)
    assert a.history == b.history
    c = rlace(xt, yt, seed=4, **kw)
    assert not np.array_equal(a.relaxed, c.relaxed)


def test_rlace_rejects_labels_that_are_not_0_to_k_minus_1():
    x = np.random.default_rng(0).normal(size=(30, 4))
    rlace(x, np.arange(30) % 3, n_iterations=2)  # three classes: the multi-class game (race, religion)
    with pytest.raises(ValueError):
        rlace(x, np.arange(30) % 3 + 1, n_iterations=2)
    with pytest.raises(ValueError):
        rlace(x, np.zeros(30, dtype=int), n_iterations=2)


# ---- Bias-in-Bios files and the plugin --------------------------------------------------------------------------
def write_bios(path, n=60):
    rows = [{"text": f"{p} works as a {job} in the city and {q} likes it .", "gender": g}
            for i in range(n)
            for p, q, g in [("He", "he", "M") if i % 2 == 0 else ("She", "she", "F")]
            for job in [["nurse", "doctor", "teacher", "pilot", "baker"][i % 5]]]  # fmt: skip
    if path.suffix == ".csv":
        import csv

        with open(path, "w", newline="", encoding="utf-8") as f:
            wr = csv.DictWriter(f, fieldnames=["text", "gender"])
            wr.writeheader()
            wr.writerows(rows)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return rows


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_load_bios_reads_jsonl_and_csv(tmp_path, suffix):
    path = tmp_path / f"bios{suffix}"
    rows = write_bios(path)
    texts, labels = read_bios(path)
    assert texts == [r["text"] for r in rows]
    assert labels.tolist() == [1 if r["gender"] == "M" else 0 for r in rows]
    assert len(read_bios(path, 7)[0]) == 7


def test_load_bios_errors(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "x", "gender": "X"}) + "\n")
    with pytest.raises(DataError, match="gender"):
        read_bios(bad)
    bad.write_text(json.dumps({"bio": "x"}) + "\n")
    with pytest.raises(DataError, match="text"):
        read_bios(bad)
    with pytest.raises(DataError, match="jsonl"):
        read_bios(tmp_path / "bios.txt")


def test_plugin_fits_on_a_bios_file_and_removes_the_basis_from_hidden_states(bert_subject, tmp_path):
    bios = tmp_path / "bios.jsonl"
    write_bios(bios)
    ctx = Context(data_dir=tmp_path, cache_dir=tmp_path / "cache", progress=False)
    method = RLACE(n_iterations=50, evaluate_every=25, bios_file="bios.jsonl")
    assert method.data_files(ctx) == [bios]
    art = method.fit(bert_subject, ctx)
    d = bert_subject.model.config.hidden_size
    assert art["basis"].shape == (d, 1) and art["basis"].dtype == torch.float32
    assert abs(float(art["basis"].double().norm()) - 1) < 1e-6  # float32 rounding of a unit vector
    assert art["counts"] == {"male": 30, "female": 30, "source": "bios"}
    assert art["resolved"] == {"n_iterations": 50, "evaluate_every": 25}
    assert art["iterations"] <= 50 and len(art["history"]) >= 1
    debiased = method.apply(bert_subject, art)
    assert bert_subject.transforms == () and len(debiased.transforms) == 1
    assert not debiased.same_as(bert_subject)
    # the debiased embeddings have no component along the basis up to float32 rounding: per token (h u) and
    # h - (h u) u^T are d-term float32 sums, off by <= ~d * 2^-24 * max|h|; the mean keeps that; 1e-5 d is ~170x it
    from bench.models.embeddings import sentence_embeddings

    emb = sentence_embeddings(debiased, ["She is a nurse .", "He is a pilot ."]).double()
    assert float((emb @ art["basis"].double()).abs().max()) < 1e-5 * float(emb.abs().max()) * d


def test_defaults_follow_the_paper_and_the_synthetic_world(bert_subject):
    m = RLACE()
    # rank None: 1 for a binary concept (gender, the paper's rank), k - 1 for k groups (race, religion)
    assert (m.rank, m.batch_size, m.epsilon, m.lr_p, m.wd_p, m.lr_predictor, m.wd_predictor, m.momentum) == (
        None, 256, 0.002, 0.005, 1e-4, 0.005, 1e-5, 0.9)
    assert m.resolved(bert_subject) == {"n_iterations": 60_000, "evaluate_every": 1_000}

    class Synthetic:
        meta = {"synthetic": True}

    assert m.resolved(Synthetic()) == {"n_iterations": 6_000, "evaluate_every": 250}
    assert RLACE(n_iterations=10).resolved(Synthetic())["n_iterations"] == 10
    assert RLACE(**m.config()).config() == m.config()


# ---- the synthetic planted-bias world (slow) ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def synthetic_fit(synthetic, tmp_path_factory):
    import time

    ctx = Context(data_dir=synthetic.data_dir, cache_dir=tmp_path_factory.mktemp("cache"), progress=False)
    method = RLACE()
    t0 = time.perf_counter()
    art = method.fit(synthetic, ctx)
    print(f"\nRLACE default fit on synthetic: {time.perf_counter() - t0:.1f}s, {art['iterations']} iterations "
          f"(best {art['best_iteration']}), counts {art['counts']}, probe accuracy {art['test_accuracy_before']:.3f} "
          f"-> {art['probe_test_accuracy']:.3f}, loss {art['best_loss']:.4f} "
          f"(chance {art['chance_loss']:.4f})")  # fmt: skip
    return method, art, ctx


@pytest.mark.slow
def test_rlace_erases_gender_from_synthetic_embeddings(synthetic_fit):
    """Measured (seed 0): held-out probe accuracy 0.988 before, 0.522 after; stopped at iteration 3,251 of 6,000
    with the probe's training loss 0.6913 (chance ln 2 = 0.6931). Bounds: a drop of at least 0.3 and at most
    0.6 after (828 test sentences: standard error 0.017 at 0.5)."""
    _, art, _ = synthetic_fit
    assert art["majority"] == pytest.approx(0.5, abs=0.01)
    assert art["test_accuracy_before"] > 0.9
    assert art["probe_test_accuracy"] < art["test_accuracy_before"] - 0.3
    assert art["probe_test_accuracy"] < 0.6
    assert art["chance_loss"] - art["best_loss"] <= 0.002 and art["stopped_early"]


@pytest.mark.slow
def test_rlace_moves_gender_ss_toward_50_on_the_synthetic_world(synthetic, synthetic_fit):
    """Measured on the pinned world (generator "5"): SS 89.39 [85.88, 92.85] -> 61.36 [55.83, 67.41], change
    -28.03 [-33.74, -22.47]."""
    from tests.test_inlp import gender_ss_moves_toward_50

    method, art, ctx = synthetic_fit
    debiased = method.apply(synthetic, art)
    assert synthetic.transforms == ()
    gender_ss_moves_toward_50(synthetic, debiased, ctx, "RLACE")
