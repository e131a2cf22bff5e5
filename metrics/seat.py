"""SEAT, the Sentence Encoder Association Test (May et al. 2019), as used by bias-bench and GRADIEND (SPEC §3.2).

Each test has target sets X, Y and attribute sets A, B of template sentences. A sentence is encoded alone
(`bench.models.embeddings.sentence_embeddings`: mean over all token positions, special tokens included, of the last
hidden state with the subject's transforms) and L2-normalised. With cos the cosine similarity,

    s(w, A, B) = mean_{a in A} cos(w, a) - mean_{b in B} cos(w, b)
    d          = [mean_{x in X} s(x) - mean_{y in Y} s(y)] / SD_{w in X u Y} s(w)      (sample SD, ddof = 1)

Causal LMs (SPEC-beyond §9.2) are encoded the same way: the last hidden state is the base model's output after
its final norm (GPT-2 `ln_f`, Llama `norm`; `Subject.hidden_states`), averaged over all tokens the tokenizer
gives the sentence: GPT-2 adds none, Llama-style tokenizers add BOS, which is included as bias-bench includes it.
Padding (pad = eos) sits right of the real tokens of a pass, so a causal model's real positions never see it.

Reported "seat" is the mean of |d| over the tests of the run's bias type (smaller is better); "d:<test>" is each test's
signed d. Both are point estimates on all sentences with a bootstrap CI computed by `bench.stats`:

- bootstrap="sentences" (default, SPEC §0.7): the sentences of X, Y, A and B of every test are resampled
  independently (4 strata per test, 24 for the six tests).
- bootstrap="dimensions" (the paper's fork, for reproducing its tables): the embedding dimensions 0..d-1 are
  drawn with replacement and applied to every vector (one stratum of size d); cosines are recomputed on the
  resampled coordinates, as the original code's `cossim` does.

The one-sided permutation p-value of each test (in `Scores.extras` as "p:<test>") follows sent-bias /
bias-bench `weat.p_val_permutation_test`: the statistic is sum_{x in X_i} s(x) over partitions (X_i, Y_i) of
X u Y with |X_i| = |X|; a partition counts as a success when its statistic is >= the observed one (ties count,
conservative; "equal" means within 1e-12 relative, so that summation order cannot break a tie). When the
number of partitions C(|X u Y|, |X|) is at most `n_permutations`, all of them are enumerated (the observed one
included); otherwise n_permutations - 1 random partitions are drawn and one success is added ("hallucinated"),
p = (1 + successes) / n_permutations. The original requires |X| = |Y|; unequal sizes work here (the statistic
is monotone in the difference of means either way). As in the original, which stores encodings in a dict keyed
by sentence, a sentence repeated within one set counts once.

Bias types: `TESTS` is the one place that lists each type's tests, bias-bench's lists (SPEC §3.2, SPEC-beyond
§8.6): gender sent-weat6, 6b, 7, 7b, 8, 8b; race sent-angry_black_woman_stereotype(_b), sent-weat3, 3b, 4, 5,
5b; religion sent-religion1, 1b, 2, 2b. Option `tests` (None: the run's `ctx.bias_type` list) names others.
"""
from __future__ import annotations

import functools
import itertools
import math
import zlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from bench.api import EMBED, Column, Context, Estimate, Metric, Scores, statistic
from bench.models.batching import optional_int
from bench.data.paths import read_json, require_file
from bench.errors import BenchError, DataError

TESTS = {
    "gender": ("sent-weat6", "sent-weat6b", "sent-weat7", "sent-weat7b", "sent-weat8", "sent-weat8b"),
    "race": ("sent-angry_black_woman_stereotype", "sent-angry_black_woman_stereotype_b", "sent-weat3", "sent-weat3b",
             "sent-weat4", "sent-weat5", "sent-weat5b"),
    "religion": ("sent-religion1", "sent-religion1b", "sent-religion2", "sent-religion2b"),
}
GENDER_TESTS = TESTS["gender"]
SETS = ("targ1", "targ2", "attr1", "attr2")  # X, Y, A, B
BOOTSTRAP_UNITS = ("sentences", "dimensions")
_CHUNK = 8192  # permutations per vectorised chunk


# ---- data ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SeatTest:
    name: str
    categories: tuple[str, str, str, str]  # of X, Y, A, B
    sentences: tuple[tuple[str, ...], ...]  # X, Y, A, B (distinct sentences, file order)


def test_file(name: str) -> str:
    return f"seat/{name}.jsonl"


def load_test(data_dir, name: str) -> SeatTest:
    """Read <data>/seat/<name>.jsonl: one JSON object with targ1, targ2, attr1, attr2 (category + examples)."""
    path = require_file(data_dir, test_file(name), "SEAT test")
    obj = read_json(path)
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected one JSON object with {', '.join(SETS)}, got {type(obj).__name__}")
    categories, sentences = [], []
    for key in SETS:
        entry = obj.get(key)
        if not isinstance(entry, dict) or "examples" not in entry:
            raise DataError(f"{path}: missing or malformed {key!r} (expected an object with category and examples)")
        examples = entry["examples"]
        if not isinstance(examples, list) or not examples:
            raise DataError(f"{path}: {key}.examples must be a non-empty list of sentences")
        bad = [i for i, s in enumerate(examples) if not isinstance(s, str) or not s.strip()]
        if bad:
            raise DataError(f"{path}: {key}.examples[{bad[0]}] is not a non-empty string: {examples[bad[0]]!r}")
        categories.append(str(entry.get("category", key)))
        sentences.append(tuple(dict.fromkeys(examples)))
    return SeatTest(name, tuple(categories), tuple(sentences))


# ---- the statistics ------------------------------------------------------------------------------------
def unit_rows(emb) -> np.ndarray:
    emb = np.asarray(emb, dtype=np.float64)
    return emb / np.linalg.norm(emb, axis=1, keepdims=True)


def association(w: np.ndarray, A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """s(w, A, B) for every row of w; all arguments L2-normalised row-wise."""
    return (w @ A.T).mean(axis=1) - (w @ B.T).mean(axis=1)


def effect_size_from_associations(sx: np.ndarray, sy: np.ndarray) -> np.ndarray:
    """d along the last axis: (mean sx - mean sy) / SD(sx u sy, ddof=1)."""
    both = np.concatenate([sx, sy], axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (sx.mean(axis=-1) - sy.mean(axis=-1)) / both.std(axis=-1, ddof=1)


def effect_size(X, Y, A, B) -> float:
    """SEAT effect size d of normalised embeddings."""
    return float(effect_size_from_associations(association(X, A, B), association(Y, A, B)))


def _counts(idx: np.ndarray, n: int) -> np.ndarray:
    """(R, k) resampled indices in [0, n) -> (R, n) multiplicities."""
    R = idx.shape[0]
    flat = (idx + n * np.arange(R)[:, None]).ravel()
    return np.bincount(flat, minlength=R * n).reshape(R, n).astype(np.float64)


def _aggregate(ds: np.ndarray, how: str) -> np.ndarray:
    """(R, tests) -> (R,)."""
    if how == "mean_abs":
        return np.abs(ds).mean(axis=1)
    if how == "signed":
        return ds[:, 0]
    raise ValueError(how)


def _sentences_shapes(strata, cosines, how: str = "mean_abs") -> None:
    if len(strata) != 4 * len(cosines) or how not in ("mean_abs", "signed"):
        raise ValueError("four strata (X, Y, A, B) per test expected")
    for t, (XA, XB, YA, YB) in enumerate(cosines):
        nx, ny, na, nb = strata[4 * t : 4 * t + 4]
        if (XA.shape, XB.shape, YA.shape, YB.shape) != ((nx, na), (nx, nb), (ny, na), (ny, nb)):
            raise ValueError(f"test {t}: cosine matrices do not match the sizes of X, Y, A, B {(nx, ny, na, nb)}")
        if any(np.abs(M).max(initial=0.0) > 1.0 + 1e-6 for M in (XA, XB, YA, YB)):
            raise ValueError(f"test {t}: cosines outside [-1, 1]")


def _dimensions_shapes(strata, embeddings, how: str = "mean_abs") -> None:
    if len(strata) != 1 or how not in ("mean_abs", "signed"):
        raise ValueError("one stratum (the embedding dimensions) expected")
    if not all(S.ndim == 2 and S.shape[1] == strata[0] for sets in embeddings for S in sets):
        raise ValueError(f"embeddings must have {strata[0]} dimensions")


@statistic(check=_sentences_shapes)
def sentences_statistic(indices: Sequence[np.ndarray], cosines, how: str = "mean_abs") -> np.ndarray:
    """Effect sizes with the sentences of X, Y, A, B resampled.

    cosines: per test (XA, XB, YA, YB) cosine matrices; indices: per test the (R, n) index arrays of X, Y, A, B.
    """
    ds = []
    for t, (XA, XB, YA, YB) in enumerate(cosines):
        ix, iy, ia, ib = indices[4 * t : 4 * t + 4]
        wa = _counts(ia, XA.shape[1]) / ia.shape[1]  # weights of A's sentences in the resample
        wb = _counts(ib, XB.shape[1]) / ib.shape[1]
        sx = np.take_along_axis(wa @ XA.T - wb @ XB.T, ix, axis=1)  # (R, |X|): s of the resampled x's
        sy = np.take_along_axis(wa @ YA.T - wb @ YB.T, iy, axis=1)
        ds.append(effect_size_from_associations(sx, sy))
    return _aggregate(np.stack(ds, axis=1), how)


@statistic(check=_dimensions_shapes)
def dimensions_statistic(indices: Sequence[np.ndarray], embeddings, how: str = "mean_abs") -> np.ndarray:
    """Effect sizes with the embedding dimensions resampled (one (R, d) index array).

    With w_k the multiplicity of dimension k, cos_w(u, v) = sum_k w_k u_k v_k / (|u|_w |v|_w), so
    mean_a cos_w(x, a) = sum_k w_k x_k abar_k / |x|_w with abar = mean_a a / |a|_w: no (|X|, |A|) matrix per resample.
    """
    (idx,) = indices
    ds = []
    for X, Y, A, B in embeddings:
        w = _counts(idx, X.shape[1])  # (R, d)

        def centroid(S):
            norms = np.sqrt(w @ (S * S).T)  # (R, |S|)
            return (1.0 / norms) @ S / S.shape[0]  # (R, d)

        direction = w * (centroid(A) - centroid(B))

        def assoc(T):
            return (direction @ T.T) / np.sqrt(w @ (T * T).T)  # (R, |T|)

        ds.append(effect_size_from_associations(assoc(X), assoc(Y)))
    return _aggregate(np.stack(ds, axis=1), how)


# ---- permutation test ----------------------------------------------------------------------------------
def permutation_p_value(s_xy: np.ndarray, n_x: int, n_permutations: int, rng: np.random.Generator):
    """One-sided p-value that a random partition of X u Y has sum_{X_i} s >= the observed sum_X s.

    s_xy lists s(w) for X then Y. Returns (p, exact).
    """
    n = len(s_xy)
    observed = s_xy[:n_x].sum()
    threshold = observed - 1e-12 * max(1.0, float(np.abs(s_xy).sum()))
    n_partitions = math.comb(n, n_x)
    if n_partitions <= n_permutations:
        successes = 0
        combos = itertools.combinations(range(n), n_x)
        while True:
            chunk = np.fromiter(itertools.islice(combos, _CHUNK), dtype=np.dtype((np.intp, n_x)))
            if len(chunk) == 0:
                break
            successes += int((s_xy[chunk].sum(axis=1) >= threshold).sum())
        return successes / n_partitions, True
    successes, remaining = 1, n_permutations - 1  # the "hallucinated" success of the original
    while remaining > 0:
        size = min(_CHUNK, remaining)
        # X_i = the n_x smallest of n uniform keys: a uniform random subset (ties have probability ~0)
        keys = rng.random((size, n))
        in_x = keys <= np.partition(keys, n_x - 1, axis=1)[:, n_x - 1 : n_x]
        successes += int((in_x @ s_xy >= threshold).sum())
        remaining -= size
    return successes / n_permutations, False


def _rng_for(seed: int, test: str) -> np.random.Generator:
    return np.random.default_rng([int(seed), zlib.crc32(test.encode())])


# ---- the metric ----------------------------------------------------------------------------------------
class SEAT(Metric):
    """Mean |effect size| over the SEAT tests of the run's bias type (goal 0), per-test signed d, p-values."""

    requires = EMBED
    bias_types = frozenset(TESTS)
    columns = (Column("SEAT", "seat", "0", 20),)
    quick = {"n_permutations": 1000}
    bounds = {"n_permutations": (1, None), "batch_size": (1, None), "batch_tokens": (1, None)}

    def __init__(
        self,
        tests: Sequence[str] | None = None,
        n_permutations: int = 100_000,
        bootstrap: str = "sentences",
        batch_size: int | None = None,
        batch_tokens: int | None = None,
    ):
        if isinstance(tests, str):
            tests = (tests,)
        self.tests = None if tests is None else tuple(tests)
        if self.tests is not None and not self.tests:
            raise BenchError("seat: `tests` must name at least one SEAT test")
        if bootstrap not in BOOTSTRAP_UNITS:
            raise BenchError(f"seat: bootstrap must be one of {', '.join(BOOTSTRAP_UNITS)}, got {bootstrap!r}")
        if int(n_permutations) < 1:
            raise BenchError(f"seat: n_permutations must be >= 1, got {n_permutations!r}")
        self.n_permutations = int(n_permutations)
        self.bootstrap = bootstrap
        self.batch_size, self.batch_tokens = optional_int(batch_size), optional_int(batch_tokens)

    def test_names(self, ctx: Context) -> tuple[str, ...]:
        """The tests scored: the option when given, else the run's bias type's list (TESTS)."""
        return self.tests if self.tests is not None else TESTS[ctx.bias_type]

    def data_files(self, ctx: Context) -> list:
        return [require_file(ctx.data_dir, test_file(t), "SEAT test") for t in self.test_names(ctx)]

    def score(self, subject, ctx: Context) -> Scores:
        from bench.models.embeddings import sentence_embeddings

        tests = [load_test(ctx.data_dir, name) for name in self.test_names(ctx)]
        texts = list(dict.fromkeys(s for t in tests for group in t.sentences for s in group))
        emb = unit_rows(sentence_embeddings(subject, texts, batch_size=self.batch_size,
                                             batch_tokens=self.batch_tokens, ctx=ctx).numpy())
        row = {s: i for i, s in enumerate(texts)}
        sets = [tuple(emb[[row[s] for s in group]] for group in t.sentences) for t in tests]

        rows, extras, ds = [], {}, []
        for t, (X, Y, A, B) in zip(tests, sets):
            sx, sy = association(X, A, B), association(Y, A, B)
            d = float(effect_size_from_associations(sx, sy))
            p, exact = permutation_p_value(
                np.concatenate([sx, sy]), len(sx), self.n_permutations, _rng_for(ctx.seed, t.name)
            )
            extras[f"p:{t.name}"] = p
            ds.append(d)
            rows.append(dict(
                test=t.name, effect_size=d, p_value=p, p_exact=exact,
                **{f"n_{k}": len(S) for k, S in zip("XYAB", (X, Y, A, B))},
                **{f"category_{k}": c for k, c in zip("XYAB", t.categories)},
            ))  # fmt: skip

        estimates = {"seat": self._estimate(sets, "mean_abs")}
        for t, s in zip(tests, sets):
            estimates[f"d:{t.name}"] = self._estimate([s], "signed")
        import pandas as pd

        return Scores(metric=self.name or "seat", estimates=estimates, items=pd.DataFrame(rows), extras=extras)

    def _estimate(self, sets, how: str) -> Estimate:
        if self.bootstrap == "dimensions":
            return Estimate(
                strata=(sets[0][0].shape[1],),
                statistic=functools.partial(dimensions_statistic, embeddings=tuple(sets), how=how),
            )
        cosines = tuple((X @ A.T, X @ B.T, Y @ A.T, Y @ B.T) for X, Y, A, B in sets)
        strata = tuple(len(S) for s in sets for S in s)
        return Estimate(strata=strata, statistic=functools.partial(sentences_statistic, cosines=cosines, how=how))
