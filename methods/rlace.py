"""RLACE: relaxed linear adversarial concept erasure (Ravfogel et al. 2022) as a representation debiaser (SPEC §2.6).

No maintained package exists; this is written from the paper (and follows the authors' released algorithm).

The game: an orthogonal projection P of rank k (the subspace removed) and a linear predictor (w, b) play
min_{w,b} max_P  BCE(sigmoid(X (I - P) w + b), y). The rank-k projections are relaxed to the Fantope
F_k = {P symmetric, 0 <= P <= I, tr P = k}, their convex hull:
- P is a (d, d) matrix, initialised as 0.1 * N(0, 1) entries, used in the loss symmetrised, (P + Pᵀ)/2;
- every outer iteration: one SGD step of P on a minibatch that *raises* the predictor's loss (SGD on the
  negated loss; lr 0.005, weight decay 1e-4), then P <- Fantope projection of (P + Pᵀ)/2 (below); then one SGD
  step of the predictor on another minibatch that lowers it (lr 0.005, weight decay 1e-5, momentum 0.9);
- the Fantope projection (the Frobenius-nearest point of F_k): eigendecompose P = U diag(λ) Uᵀ, find the shift
  θ with Σ clip(λ_i - θ, 0, 1) = k, return U diag(clip(λ - θ, 0, 1)) Uᵀ. Σ clip(λ_i - θ, 0, 1) is a
  non-increasing piecewise-linear function of θ with breakpoints λ_i and λ_i - 1; θ is found by bisection
  (a binary search over the sorted breakpoints) and then exactly, by linear interpolation on the bracketing
  segment, so tr = k to float64 rounding (the authors' code stops a plain bisection after 25 halvings);
- rounding to a projection: the top-k eigenvectors U_k of the relaxed P span the removed subspace; the debiased
  representation is h (I - U_k U_kᵀ), applied with methods.projection.SubspaceRemoval exactly like INLP (every
  token's last hidden state), so RLACE combines with every other method (`cda+rlace`, `gradiend-bpi+rlace`).
- evaluation every `evaluate_every` iterations (and at the last one): the current P is rounded, a fresh
  L2-regularised logistic-regression probe (sklearn, lbfgs; C = 1 / (1e-4 n), the L2 strength of the authors'
  SGDClassifier(alpha=1e-4) probe) is fitted on the projected training data and its training log-loss read.
  The rounded P with the highest probe loss is kept (the loss closest to chance: a logistic probe with an
  intercept never does worse than the label entropy H(y) on its own training data). Stopping: once
  H(y) - best probe loss <= epsilon (0.002), or after `n_iterations` (60,000). The authors' code stops on the
  probe's *accuracy* within epsilon of the majority rate (the loss criterion is the alternative left commented
  in it); the loss is used here because it is what RLACE maximises and what selects P.

Fitting data (documented decisions):
- default: the gendered sentences INLP uses (methods.bias_sentences.gendered_sentences: balanced male and female
  classes, randomly truncated after the attribute word) and their mean-pooled last hidden states
  (bench.models.embeddings.sentence_embeddings), the representation SubspaceRemoval edits. RLACE's concept in the
  paper's fork is binary (female vs. not, on Bias-in-Bios), so the label is male (1) vs. female (0) and the
  **neutral sentences are not used** (a 3-class problem is not what a rank-1 binary RLACE erases; neutral
  text carries no gender to remove). Split 70/30 (stratified, random_state 0): RLACE fits on the 70 %, the 30 %
  gives the held-out probe accuracies stored in the artifact.
- `bios_file` (optional; Bias-in-Bios, **not shipped** with bench or the shared data): a JSONL file (one
  object per line) or a CSV file (header row) with at least the columns `text` and `gender`, gender "M" or "F"
  (the format the LEACE plugin reads too). Absolute path, or relative to the data directory. The first
  `max_bios` (100,000, as in the paper) rows are used. The paper's fork embeds bios with `pooler_output` /
  [CLS]; here they are mean-pooled last hidden states like every other representation method in bench, because
  that is where the projection is applied.
- causal LMs (GPT-2, Llama; SPEC-beyond §9.3): the same mean-pooled state (after the final norm, the LM head's
  input; the projection then acts on every token before the head). The fork takes the last position of a
  right-padded batch, a pad for every sentence but the longest (a bug, not reproduced).

Race and religion (the run's `ctx.bias_type`; beyond the fork, whose RLACE is gender only): the concept is the
group, multi-class: the corpus sentences with attribute words of exactly one group (`concept_examples`, classes
balanced, labels 0..k-1), and the game's predictor is a k-way softmax regression (cross-entropy; the RLACE
paper's multi-class form): L = mean CE(softmax(X (I - S) W + b), y), W (d, k), with the gradients written out
as for the binary case (`game_gradients`). `rank` None (default) removes 1 direction for a binary concept and
k - 1 for k classes (what k class means span); chance = the label entropy as before.

The computation runs in float64 on the CPU, seeded by ctx.seed (P and predictor initialisation, minibatch
order): the same seed, data and machine give the same P. Paper defaults apply on real models; on the synthetic
world (`subject.meta["synthetic"]`) the parameters left at None take SYNTHETIC_DEFAULTS (fewer iterations, more
frequent evaluation, so that a fit takes seconds on one core); explicit arguments always win. Measured on one shared
core: the synthetic world (d = 96, 1,382 sentences per class) stops after 3,251 of 6,000 iterations, ~10 s in all;
on a d = 768 model every iteration costs one 768 x 768 float64 eigendecomposition (~0.1 s), so the paper's
60,000 iterations are on the order of two hours on one core unless the epsilon criterion stops them earlier.
"""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

from bench.api import Debiaser
from bench.models.batching import optional_int
from bench.errors import DataError
from methods.bias_sentences import concept_data_files, concept_examples
from methods.projection import SubspaceRemoval

PAPER_DEFAULTS = {"n_iterations": 60_000, "evaluate_every": 1_000}
SYNTHETIC_DEFAULTS = {"n_iterations": 6_000, "evaluate_every": 250}
PROBE_ALPHA = 1e-4  # L2 strength of the authors' evaluation probe (SGDClassifier alpha)


# ---- the Fantope projection -------------------------------------------------------------------------------
def fantope_shift(eigenvalues: np.ndarray, k: float) -> float:
    """θ with Σ_i clip(λ_i - θ, 0, 1) = k (0 < k < d), exact up to float64 rounding.

    g(θ) = Σ clip(λ_i - θ, 0, 1) is continuous, non-increasing and linear between consecutive breakpoints
    {λ_i} ∪ {λ_i - 1}; bisection over the sorted breakpoints finds the segment with g = k, on which θ is solved
    for exactly (linear interpolation of g between the segment's ends).
    """
    lam = np.asarray(eigenvalues, dtype=np.float64)
    d = lam.size
    if not 0 < k < d:
        raise ValueError(f"the Fantope F_k needs 0 < k < d; got k={k}, d={d}")
    points = np.unique(np.concatenate([lam, lam - 1.0]))  # sorted ascending; g(points[0]) = d, g(points[-1]) = 0

    def g(theta):
        return float(np.clip(lam - theta, 0.0, 1.0).sum())

    lo, hi = 0, len(points) - 1  # invariant: g(points[lo]) >= k >= g(points[hi])
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if g(points[mid]) >= k:
            lo = mid
        else:
            hi = mid
    a, b = points[lo], points[hi]
    ga, gb = g(a), g(b)
    if ga == gb:  # flat segment (cannot hold k strictly inside; only at an end)
        return float(a)
    return float(a + (ga - k) * (b - a) / (ga - gb))


def fantope_projection(matrix: torch.Tensor, k: int) -> torch.Tensor:
    """The Frobenius-nearest point of F_k = {0 ⪯ P ⪯ I, tr P = k} to the symmetric part of `matrix`."""
    sym = (matrix + matrix.T) / 2
    lam, u = torch.linalg.eigh(sym)
    theta = fantope_shift(lam.numpy() if lam.device.type == "cpu" else lam.cpu().numpy(), k)
    gamma = (lam - theta).clamp(0.0, 1.0)
    out = (u * gamma) @ u.T
    return (out + out.T) / 2


def top_eigenvectors(matrix: np.ndarray | torch.Tensor, k: int) -> np.ndarray:
    """(d, k) orthonormal eigenvectors of the k largest eigenvalues of the symmetric part (largest first); each
    column's sign is fixed so that its largest-magnitude entry is positive (a deterministic representative)."""
    m = torch.as_tensor(matrix, dtype=torch.float64)
    _, u = torch.linalg.eigh((m + m.T) / 2)
    top = u[:, -k:].flip(1).numpy().copy()
    for j in range(k):
        if top[np.argmax(np.abs(top[:, j])), j] < 0:
            top[:, j] = -top[:, j]
    return top


# ---- the adversarial game ---------------------------------------------------------------------------------
@dataclass
class RlaceResult:
    basis: np.ndarray  # (d, k) orthonormal: the removed subspace (top-k eigenvectors of the best relaxed P)
    relaxed: np.ndarray  # (d, d) the relaxed P (in F_k) the basis was rounded from
    chance_loss: float  # label entropy H(y) of the training labels (nats)
    best_loss: float  # probe training loss on X (I - U Uᵀ) at the kept P
    best_iteration: int
    iterations: int  # outer iterations run
    stopped_early: bool
    history: list = field(default_factory=list)  # [iteration, probe loss, probe accuracy] per evaluation


def label_entropy(y: np.ndarray) -> float:
    p = np.bincount(np.asarray(y, dtype=np.int64)) / len(y)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def probe(x: np.ndarray, y: np.ndarray):
    """The evaluation probe: L2-regularised logistic regression (lbfgs, deterministic), C = 1 / (alpha n)."""
    from sklearn.linear_model import LogisticRegression

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return LogisticRegression(C=1.0 / (PROBE_ALPHA * len(y)), tol=1e-8, max_iter=2_000).fit(x, y)


def probe_loss(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(log-loss, accuracy) of a fresh probe on its own training data."""
    from sklearn.metrics import log_loss

    clf = probe(x, y)
    return float(log_loss(y, clf.predict_proba(x), labels=clf.classes_)), float(clf.score(x, y))


def game_gradients(xb: torch.Tensor, yb: torch.Tensor, p: torch.Tensor, w: torch.Tensor, b: torch.Tensor):
    """The minibatch loss L = mean BCE(sigmoid(X (I - S) w + b), y), S = (P + Pᵀ)/2, and its gradients
    (dL/dP, dL/dw, dL/db), written out (what autograd gives, without its overhead; checked in tests/test_rlace.py).

    With r = (sigmoid(z) - y) / B and g = Xᵀ r: dL/dw = (I - S)ᵀ g, dL/db = Σ r, dL/dS = -g wᵀ, so
    dL/dP = -(g wᵀ + w gᵀ) / 2.
    """
    s = (p + p.T) / 2
    wv = w[:, 0]
    z = xb @ wv - xb @ (s @ wv) + b
    loss = torch.nn.functional.binary_cross_entropy_with_logits(z, yb)
    r = (torch.sigmoid(z) - yb) / len(yb)
    g = xb.T @ r
    gw = (g - s.T @ g)[:, None]
    gp = -(torch.outer(g, wv) + torch.outer(wv, g)) / 2
    return loss, gp, gw, r.sum().reshape(1)


def game_gradients_multi(xb: torch.Tensor, yb: torch.Tensor, p: torch.Tensor, w: torch.Tensor, b: torch.Tensor):
    """`game_gradients` for k classes: L = mean CE(softmax(X (I - S) W + b), y), W (d, k), b (k,), y integer.

    With R = (softmax(Z) - onehot(y)) / B and G = Xᵀ R (d, k): dL/dW = (I - S)ᵀ G, dL/db = Σ_rows R,
    dL/dS = -G Wᵀ, so dL/dP = -(G Wᵀ + W Gᵀ) / 2."""
    s = (p + p.T) / 2
    z = xb @ w - xb @ (s @ w) + b
    loss = torch.nn.functional.cross_entropy(z, yb)
    r = torch.softmax(z, dim=1)
    r[torch.arange(len(yb)), yb] -= 1.0
    r /= len(yb)
    g = xb.T @ r
    gw = g - s.T @ g
    gp = -(g @ w.T + w @ g.T) / 2
    return loss, gp, gw, r.sum(dim=0)


class _Minibatches:
    """Rows of (x, y) in the order of a seeded permutation, a new permutation whenever the current one cannot
    fill a whole batch."""

    def __init__(self, xt: torch.Tensor, yt: torch.Tensor, batch_size: int, rng: np.random.Generator):
        self.xt, self.yt, self.rng = xt, yt, rng
        self.n = len(xt)
        self.size = min(batch_size, self.n)
        self.order, self.pos = rng.permutation(self.n), 0

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.pos + self.size > self.n:
            self.order, self.pos = self.rng.permutation(self.n), 0
        idx = torch.from_numpy(self.order[self.pos : self.pos + self.size])
        self.pos += self.size
        return self.xt[idx], self.yt[idx]


def _checked_labels(y: np.ndarray, rank: int, d: int) -> int:
    """The number of classes k of labels 0..k-1 (each present, k >= 2); raises ValueError otherwise."""
    classes = np.unique(y)
    if len(classes) < 2 or not np.array_equal(classes, np.arange(len(classes))):
        raise ValueError(f"RLACE labels must be 0..k-1 (k >= 2), each present; got {classes}")
    if not 0 < rank < d:
        raise ValueError(f"rank must be in [1, {d - 1}], got {rank}")
    return len(classes)


def _initial_players(d: int, out: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(P, W, b) at the start of the game: P ~ 0.1 N(0, 1), the predictor as nn.Linear initialises it, from the
    seeded generator; their gradient buffers are zeros (the game writes them)."""
    p = 0.1 * torch.randn(d, d, generator=gen, dtype=torch.float64)
    bound = 1.0 / math.sqrt(d)  # nn.Linear's default initialisation, from the seeded generator
    w = (torch.rand(d, out, generator=gen, dtype=torch.float64) * 2 - 1) * bound
    b = (torch.rand(out, generator=gen, dtype=torch.float64) * 2 - 1) * bound
    p.grad, w.grad, b.grad = torch.zeros_like(p), torch.zeros_like(w), torch.zeros_like(b)
    return p, w, b


def rlace(
    x: np.ndarray, y: np.ndarray, rank: int = 1, n_iterations: int = 60_000, batch_size: int = 256,
    epsilon: float = 0.002, evaluate_every: int = 1_000, lr_p: float = 0.005, wd_p: float = 1e-4,
    lr_predictor: float = 0.005, wd_predictor: float = 1e-5, momentum: float = 0.9, seed: int = 0, bar=None,
) -> RlaceResult:  # fmt: skip
    """Rank-`rank` RLACE on (x, y), y binary in {0, 1} (sigmoid predictor) or in {0, ..., k-1} with k > 2
    (softmax predictor, `game_gradients_multi`); float64, deterministic for a seed."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y).astype(np.int64)
    k = _checked_labels(y, rank, x.shape[1])
    multi = k > 2
    gen = torch.Generator().manual_seed(int(seed))
    rng = np.random.default_rng(int(seed))
    yt = torch.from_numpy(y) if multi else torch.from_numpy(y.astype(np.float64))
    grads = game_gradients_multi if multi else game_gradients
    p, w, b = _initial_players(x.shape[1], k if multi else 1, gen)
    opt_p = torch.optim.SGD([p], lr=lr_p, weight_decay=wd_p)
    opt_w = torch.optim.SGD([w, b], lr=lr_predictor, weight_decay=wd_predictor, momentum=momentum)
    batches = _Minibatches(torch.from_numpy(x), yt, batch_size, rng)

    chance = label_entropy(y)
    best = None  # (loss, iteration, basis, relaxed)
    history = []
    stopped = False
    steps = range(n_iterations) if bar is None else bar(range(n_iterations), desc="RLACE", unit="it")
    i = -1
    for i in steps:
        # P: one SGD step on the negated loss (up the predictor's loss), then back onto the Fantope
        _, gp, _, _ = grads(*batches.next(), p, w, b)
        p.grad.copy_(-gp)
        opt_p.step()
        p.copy_(fantope_projection(p, rank))
        # predictor: one SGD step down its loss on X (I - P)
        _, _, gw, gb = grads(*batches.next(), p, w, b)
        w.grad.copy_(gw)
        b.grad.copy_(gb)
        opt_w.step()

        if i % evaluate_every == 0 or i == n_iterations - 1:
            relaxed = p.numpy().copy()
            basis = top_eigenvectors(relaxed, rank)
            lv, acc = probe_loss(x - (x @ basis) @ basis.T, y)
            history.append([i, lv, acc])
            if best is None or lv > best[0]:
                best = (lv, i, basis, relaxed)
            if chance - best[0] <= epsilon:
                stopped = i < n_iterations - 1
                break
    if best is None:
        raise ValueError("RLACE needs n_iterations >= 1")
    return RlaceResult(basis=best[2], relaxed=best[3], chance_loss=chance, best_loss=best[0], best_iteration=best[1],
                       iterations=i + 1, stopped_early=stopped, history=history)  # fmt: skip


# ---- the plugin ------------------------------------------------------------------------------------------------
class RLACE(Debiaser):
    label = "RLACE"
    group = 2
    changes = "representation"
    quick = {"n_iterations": 300, "evaluate_every": 100, "per_class": 150}
    bias_types = frozenset({"gender", "race", "religion"})
    model_kinds = frozenset({"mlm", "clm"})
    bounds = {"rank": (1, None), "n_iterations": (1, None), "batch_size": (1, None), "epsilon": (0.0, None),
              "evaluate_every": (1, None), "lr_p": (0.0, None), "wd_p": (0.0, None), "lr_predictor": (0.0, None),
              "wd_predictor": (0.0, None), "momentum": (0.0, 1.0), "per_class": (1, None), "min_tokens": (0, None),
              "max_bios": (1, None), "embed_batch_size": (1, None), "max_length": (1, None)}  # fmt: skip

    def __init__(
        self, rank: int | None = None, n_iterations: int | None = None, batch_size: int = 256, epsilon: float = 0.002,
        evaluate_every: int | None = None, lr_p: float = 0.005, wd_p: float = 1e-4, lr_predictor: float = 0.005,
        wd_predictor: float = 1e-5, momentum: float = 0.9, per_class: int = 10_000, min_tokens: int = 5,
        corpus: str | None = None, bios_file: str | None = None, max_bios: int = 100_000,
        embed_batch_size: int | None = None, max_length: int | None = None,
    ):  # fmt: skip
        self.rank = rank
        self.n_iterations = n_iterations
        self.batch_size = batch_size
        self.epsilon = epsilon
        self.evaluate_every = evaluate_every
        self.lr_p = lr_p
        self.wd_p = wd_p
        self.lr_predictor = lr_predictor
        self.wd_predictor = wd_predictor
        self.momentum = momentum
        self.per_class = per_class
        self.min_tokens = min_tokens
        self.corpus = corpus
        self.bios_file = bios_file
        self.max_bios = max_bios
        self.embed_batch_size = optional_int(embed_batch_size)
        self.max_length = max_length

    def resolved(self, subject) -> dict:
        """Constructor values with None replaced by the paper's defaults (or the synthetic world's)."""
        defaults = SYNTHETIC_DEFAULTS if subject.meta.get("synthetic") else PAPER_DEFAULTS
        return {k: (defaults[k] if getattr(self, k) is None else getattr(self, k)) for k in defaults}

    def data_files(self, ctx) -> list:
        return concept_data_files(ctx, self.bios_file, self.corpus)

    def texts_and_labels(self, ctx, per_class: int) -> tuple[list[str], np.ndarray, dict]:
        """Male and female examples (race / religion: one class per group), neutral sentences not used (module
        docstring), and their counts."""
        texts, labels, counts = concept_examples(ctx, "RLACE", bios_file=self.bios_file, max_bios=self.max_bios,
                                                 corpus=self.corpus, per_class=per_class, min_tokens=self.min_tokens)
        return texts, labels, {**counts, "source": "bios" if self.bios_file is not None else "corpus"}

    def fit(self, subject, ctx):
        from sklearn.model_selection import train_test_split

        from bench.models.embeddings import sentence_embeddings

        t0 = time.perf_counter()
        r = self.resolved(subject)
        texts, labels, counts = self.texts_and_labels(ctx, self.per_class)
        x = sentence_embeddings(subject, texts, batch_size=self.embed_batch_size, max_length=self.max_length, ctx=ctx)
        x = x.numpy().astype(np.float64)
        t_embed = time.perf_counter() - t0
        n_classes = len(np.unique(labels))
        rank = self.rank if self.rank is not None else max(1, n_classes - 1)
        if not 0 < rank < x.shape[1]:
            raise DataError(f"RLACE rank {rank} must be below the hidden size {x.shape[1]}")
        x_train, x_test, y_train, y_test = train_test_split(x, labels, test_size=0.3, random_state=0, stratify=labels)
        res = rlace(x_train, y_train, rank=rank, n_iterations=int(r["n_iterations"]), batch_size=self.batch_size,
                    epsilon=self.epsilon, evaluate_every=int(r["evaluate_every"]), lr_p=self.lr_p, wd_p=self.wd_p,
                    lr_predictor=self.lr_predictor, wd_predictor=self.wd_predictor, momentum=self.momentum,
                    seed=ctx.seed, bar=ctx.bar)  # fmt: skip
        u = res.basis
        erase = lambda z: z - (z @ u) @ u.T  # noqa: E731
        after = probe(erase(x_train), y_train)
        before = probe(x_train, y_train)
        return {
            "basis": torch.tensor(u, dtype=torch.float32),
            "relaxed": torch.tensor(res.relaxed, dtype=torch.float32),
            "probe_test_accuracy": float(after.score(erase(x_test), y_test)),
            "test_accuracy_before": float(before.score(x_test, y_test)),
            "majority": float(np.bincount(y_test).max() / len(y_test)),
            "chance_loss": res.chance_loss,
            "best_loss": res.best_loss,
            "best_iteration": res.best_iteration,
            "iterations": res.iterations,
            "stopped_early": res.stopped_early,
            "history": res.history,
            "counts": counts,
            "rank": int(u.shape[1]),
            "hidden_size": int(x.shape[1]),
            "resolved": {k: int(v) for k, v in r.items()},
            "embed_seconds": t_embed,
            "fit_seconds": time.perf_counter() - t0,
        }

    def apply(self, subject, artifact):
        return subject.with_transform(SubspaceRemoval(artifact["basis"]))
