"""SEAT: effect sizes, permutation p-values and bootstraps against straightforward reference computations."""
from __future__ import annotations

import copy
import itertools
import json
import math
import statistics

import numpy as np
import pytest
import torch

from bench.api import Context
from bench.errors import BenchError, DataError
from bench.registry import METRICS
from bench.stats import StatsConfig, bootstrap_indices, interval
from stored_scores import assert_identical, round_trip
from metrics.seat import (
    GENDER_TESTS,
    SEAT,
    dimensions_statistic,
    effect_size,
    load_test,
    permutation_p_value,
    sentences_statistic,
    unit_rows,
)
from tests.tokenizers_fixture import (  # noqa: F401  (fixtures)
    RemoveDirection,
    bert_subject,
    bert_tokenizer,
    roberta_subject,
    roberta_tokenizer,
    single_thread,
)

pytestmark = pytest.mark.usefixtures("single_thread")


# ---- straightforward references --------------------------------------------------------------------------
def ref_cos(u, v) -> float:
    return float(np.dot(u, v) / math.sqrt(np.dot(u, u) * np.dot(v, v)))


def ref_effect_size(X, Y, A, B) -> float:
    def s(w):
        return statistics.mean(ref_cos(w, a) for a in A) - statistics.mean(ref_cos(w, b) for b in B)

    sx, sy = [s(x) for x in X], [s(y) for y in Y]
    return (statistics.mean(sx) - statistics.mean(sy)) / statistics.stdev(sx + sy)


def ref_exact_p(X, Y, A, B) -> float:
    """sent-bias's exact test: fraction of equal-size partitions whose sum of s over X_i is >= the observed."""
    def s(w):
        return statistics.mean(ref_cos(w, a) for a in A) - statistics.mean(ref_cos(w, b) for b in B)

    sxy = [s(w) for w in list(X) + list(Y)]
    observed = sum(sxy[: len(X)])
    hits = total = 0
    for combo in itertools.combinations(range(len(sxy)), len(X)):
        hits += sum(sxy[i] for i in combo) >= observed - 1e-12
        total += 1
    return hits / total


def ref_hidden(model, tokenizer, sentence: str, transform=None) -> np.ndarray:
    with torch.no_grad():
        ids = tokenizer(sentence, return_tensors="pt")["input_ids"]
        h = model.base_model(ids).last_hidden_state[0]
        return (h if transform is None else transform(h)).double().numpy()


def ref_embed(model, tokenizer, sentence: str) -> np.ndarray:
    return ref_hidden(model, tokenizer, sentence).mean(axis=0)


# Equality with the reference is checked on float64 copies of the tiny models (the reference is then exact to
# ~1e-13), but bench.models.embeddings returns float32 embeddings by design: it casts each hidden state to float32
# (error <= u*H, u = 2^-24, H = the sentence's max |h|), sums its L rows in float32 (<= (L-1)*u*L*H, any order)
# and divides by L, so each coordinate of a sentence's embedding is off by <= delta = (L + 2) * u * H.
# d_tolerance propagates these bounds through d to first order with d's exact gradient (autograd, float64):
# |d' - d| <= sum_ij |dd/de_ij| * delta_i, doubled to cover the second-order terms (relative size ~1e-5).
# ~5e-4 here (observed differences ~1e-7); a wrong d (padding in the mean, a wrong sign, a wrong SD) is off by far more.
U32 = 2.0**-24


def wide(subject):
    return subject.with_model(copy.deepcopy(subject.model).double())


def d_tolerance(hidden: dict, sets) -> float:
    tensors = [torch.tensor(np.stack([hidden[t].mean(axis=0) for t in ts]), requires_grad=True) for ts in sets]
    X, Y, A, B = (t / t.norm(dim=1, keepdim=True) for t in tensors)

    def s(w):
        return (w @ A.T).mean(1) - (w @ B.T).mean(1)

    sx, sy = s(X), s(Y)
    d = (sx.mean() - sy.mean()) / torch.cat([sx, sy]).std()
    d.backward()
    bound = 0.0
    for t, ts in zip(tensors, sets):
        delta = torch.tensor([(len(hidden[x]) + 2) * U32 * float(np.abs(hidden[x]).max()) for x in ts])
        bound += float((t.grad.abs().sum(dim=1) * delta).sum())
    return 2 * bound + 1e-12


def ref_seat(subject, data_dir, tests=GENDER_TESTS, transform=None):
    """One sentence per forward pass (each distinct sentence once); python-loop effect sizes; {test: d} and
    {test: tolerance on d} (d_tolerance)."""
    out, tol, cache = {}, {}, {}

    def embed(sentence):
        if sentence not in cache:
            cache[sentence] = ref_hidden(subject.model, subject.tokenizer, sentence, transform)
        return cache[sentence].mean(axis=0)

    for name in tests:
        obj = json.loads((data_dir / "seat" / f"{name}.jsonl").read_text())
        X, Y, A, B = ([embed(s) for s in obj[k]["examples"]] for k in ("targ1", "targ2", "attr1", "attr2"))
        out[name] = ref_effect_size(X, Y, A, B)
        tol[name] = d_tolerance(cache, [obj[k]["examples"] for k in ("targ1", "targ2", "attr1", "attr2")])
    return out, tol


def planted(n_x, n_y, n_a, n_b, strength, dim=8, seed=0):
    """Unit vectors: X and A lean along +e0, Y and B along -e0 (strength 0: no association)."""
    rng = np.random.default_rng(seed)
    e = np.zeros(dim)
    e[0] = strength

    def make(n, sign):
        return unit_rows(rng.normal(size=(n, dim)) + sign * e)

    return make(n_x, 1), make(n_y, -1), make(n_a, 1), make(n_b, -1)


def ctx_for(data_dir, tmp_path, seed=0):
    return Context(data_dir=data_dir, cache_dir=tmp_path, seed=seed, progress=False)


# ---- (a) the metric on the real SEAT files equals the reference ------------------------------------------
@pytest.mark.parametrize("which", ["bert_subject", "roberta_subject"])
def test_seat_equals_reference_on_real_tests(which, request, data_dir, tmp_path):
    subject = wide(request.getfixturevalue(which))
    scores = SEAT(n_permutations=2000).score(subject, ctx_for(data_dir, tmp_path))
    ref, tol = ref_seat(subject, data_dir)
    for name in GENDER_TESTS:
        assert scores.estimates[f"d:{name}"].point() == pytest.approx(ref[name], abs=tol[name])
        p = scores.extras[f"p:{name}"]
        assert 1 / 2000 <= p <= 1
    want = statistics.mean(abs(d) for d in ref.values())
    assert scores.estimates["seat"].point() == pytest.approx(want, abs=statistics.mean(tol.values()))
    items = scores.items.set_index("test")
    assert items.loc["sent-weat6", "n_X"] == 64 and items.loc["sent-weat6", "category_A"] == "Career"
    assert not items["p_exact"].any()  # C(128, 64) partitions: always sampled
    assert len(scores.estimates["seat"].strata) == 4 * len(GENDER_TESTS)


def test_registered_and_columns():
    assert METRICS.get("seat") is SEAT
    assert SEAT.columns[0].submetric == "seat" and SEAT.columns[0].goal == "0"
    assert SEAT.requires == "embed"


# ---- (b) effect size and p-value on constructed embeddings ------------------------------------------------
def test_effect_size_matches_reference_and_planted_direction():
    X, Y, A, B = planted(12, 10, 9, 11, strength=3.0)
    d = effect_size(X, Y, A, B)
    assert d == pytest.approx(ref_effect_size(X, Y, A, B), abs=1e-12)
    assert d > 1.5  # strongly planted association
    assert effect_size(Y, X, A, B) == pytest.approx(-d, abs=1e-12)  # antisymmetric in the targets
    assert effect_size(X, Y, B, A) == pytest.approx(-d, abs=1e-12)  # and in the attributes

    # shuffled: the same pool of target vectors split at random carries no association
    Xs, Ys, As, Bs = planted(200, 200, 50, 50, strength=0.0, seed=1)
    pool = np.concatenate([X, Y, Xs, Ys])
    perm = np.random.default_rng(2).permutation(len(pool))
    half = len(pool) // 2
    d_shuffled = effect_size(pool[perm[:half]], pool[perm[half:]], A, B)
    assert abs(d_shuffled) < 0.3
    assert abs(effect_size(Xs, Ys, As, Bs)) < 0.3


def test_exact_p_value_matches_enumeration():
    for strength, seed in ((3.0, 0), (0.3, 1), (0.0, 2)):
        X, Y, A, B = planted(5, 5, 4, 6, strength=strength, seed=seed)
        s = np.concatenate([X, Y]) @ A.T
        sxy = s.mean(axis=1) - (np.concatenate([X, Y]) @ B.T).mean(axis=1)
        p, exact = permutation_p_value(sxy, 5, n_permutations=1000, rng=np.random.default_rng(0))
        assert exact
        assert p == pytest.approx(ref_exact_p(X, Y, A, B), abs=1e-12)
    # strongly planted: only the observed partition reaches the observed statistic
    X, Y, A, B = planted(5, 5, 4, 6, strength=5.0)
    sxy = np.concatenate([X, Y]) @ A.T
    sxy = sxy.mean(axis=1) - (np.concatenate([X, Y]) @ B.T).mean(axis=1)
    assert permutation_p_value(sxy, 5, 1000, np.random.default_rng(0)) == (1 / math.comb(10, 5), True)


def test_sampled_p_value_agrees_with_exact_and_adds_one_success():
    X, Y, A, B = planted(7, 7, 6, 6, strength=0.35, seed=3)
    XY = np.concatenate([X, Y])
    sxy = (XY @ A.T).mean(axis=1) - (XY @ B.T).mean(axis=1)
    p_exact, exact = permutation_p_value(sxy, 7, n_permutations=math.comb(14, 7), rng=np.random.default_rng(0))
    assert exact and 0.02 < p_exact < 0.98
    n = math.comb(14, 7) - 1  # one fewer than the number of partitions: the sampled path
    p_sampled, exact = permutation_p_value(sxy, 7, n_permutations=n, rng=np.random.default_rng(0))
    assert not exact
    assert abs(p_sampled - p_exact) < 4 * math.sqrt(p_exact * (1 - p_exact) / n) + 1 / n
    # seeded: same rng seed, same p
    assert permutation_p_value(sxy, 7, n, np.random.default_rng(0))[0] == p_sampled
    # nothing beats a strongly planted statistic: p is exactly the hallucinated 1 / n_permutations
    X, Y, A, B = planted(20, 20, 10, 10, strength=5.0)
    XY = np.concatenate([X, Y])
    sxy = (XY @ A.T).mean(axis=1) - (XY @ B.T).mean(axis=1)
    assert permutation_p_value(sxy, 20, 1000, np.random.default_rng(0)) == (1 / 1000, False)


# ---- (c) bootstraps -------------------------------------------------------------------------------------
def test_sentence_bootstrap_equals_explicit_resampling():
    tests = [planted(6, 5, 4, 7, strength=1.0, seed=4), planted(3, 8, 5, 5, strength=0.5, seed=5)]
    cosines = tuple((X @ A.T, X @ B.T, Y @ A.T, Y @ B.T) for X, Y, A, B in tests)
    strata = tuple(len(S) for t in tests for S in t)
    idx = bootstrap_indices(strata, resamples=7, seed=11)
    got_abs = sentences_statistic(idx, cosines, how="mean_abs")
    got_signed = sentences_statistic(idx[:4], cosines[:1], how="signed")
    for r in range(7):
        ds = [ref_effect_size(*(S[idx[4 * t + k][r]] for k, S in enumerate(sets))) for t, sets in enumerate(tests)]
        assert got_abs[r] == pytest.approx(statistics.mean(abs(d) for d in ds), abs=1e-10)
        assert got_signed[r] == pytest.approx(ds[0], abs=1e-10)


def test_dimension_bootstrap_equals_explicit_resampling():
    tests = [planted(6, 5, 4, 7, strength=1.0, seed=6, dim=10), planted(3, 8, 5, 5, strength=0.5, seed=7, dim=10)]
    (idx,) = bootstrap_indices((10,), resamples=5, seed=3)
    got = dimensions_statistic([idx], tuple(tests), how="mean_abs")
    for r in range(5):
        ds = [ref_effect_size(*(S[:, idx[r]] for S in sets)) for sets in tests]  # cos recomputed on chosen dims
        assert got[r] == pytest.approx(statistics.mean(abs(d) for d in ds), abs=1e-10)
    identity = dimensions_statistic([np.arange(10)[None]], tuple(tests), how="signed")
    assert identity[0] == pytest.approx(ref_effect_size(*tests[0]), abs=1e-12)


@pytest.mark.parametrize("unit", ["sentences", "dimensions"])
def test_bootstrap_ci_contains_point_and_scores_round_trip(unit, bert_subject, data_dir, tmp_path):
    bert_subject = wide(bert_subject)
    tests = ("sent-weat6", "sent-weat8b")
    scores = SEAT(tests=tests, n_permutations=500, bootstrap=unit).score(bert_subject, ctx_for(data_dir, tmp_path))
    hidden = bert_subject.model.config.hidden_size
    est = scores.estimates["seat"]
    assert est.strata == ((hidden,) if unit == "dimensions" else (64, 64, 101, 112, 56, 56, 64, 64))
    iv = interval(est, StatsConfig(resamples=300, seed=0))
    assert iv.low <= iv.value <= iv.high and iv.high > iv.low
    ref, tol = ref_seat(bert_subject, data_dir, tests)
    assert iv.value == pytest.approx(statistics.mean(abs(d) for d in ref.values()), abs=statistics.mean(tol.values()))
    for name in tests:
        ivt = interval(scores.estimates[f"d:{name}"], StatsConfig(resamples=300, seed=0))
        assert ivt.low <= ivt.value <= ivt.high
    again = round_trip(scores, tmp_path / "stored")  # the runner caches Scores as data, never a pickle
    assert_identical(scores, again)


# ---- (d) representation transforms are respected --------------------------------------------------------
def test_projection_transform_changes_seat(bert_subject, data_dir, tmp_path):
    bert_subject = wide(bert_subject)
    tests = ("sent-weat6b",)
    metric = SEAT(tests=tests, n_permutations=200)
    base = metric.score(bert_subject, ctx_for(data_dir, tmp_path))
    torch.manual_seed(0)
    # project out the direction separating the mean male-term and female-term embeddings
    obj = json.loads((data_dir / "seat" / "sent-weat6b.jsonl").read_text())
    m = np.mean([ref_embed(bert_subject.model, bert_subject.tokenizer, s) for s in obj["targ1"]["examples"]], 0)
    f = np.mean([ref_embed(bert_subject.model, bert_subject.tokenizer, s) for s in obj["targ2"]["examples"]], 0)
    proj = RemoveDirection(torch.tensor(m - f, dtype=torch.float64))
    debiased = metric.score(bert_subject.with_transform(proj), ctx_for(data_dir, tmp_path))
    d_base, d_debiased = base.estimates["d:sent-weat6b"].point(), debiased.estimates["d:sent-weat6b"].point()
    assert abs(d_debiased - d_base) > 1e-3
    # reference for the debiased subject: project every hidden state, then mean
    ref, tol = ref_seat(bert_subject, data_dir, tests, transform=proj)
    assert d_debiased == pytest.approx(ref["sent-weat6b"], abs=tol["sent-weat6b"])


# ---- errors ---------------------------------------------------------------------------------------------
def test_missing_and_malformed_files_name_the_file(tmp_path):
    seat = tmp_path / "seat"
    seat.mkdir()
    with pytest.raises(DataError, match="sent-weat6.jsonl"):
        load_test(tmp_path, "sent-weat6")
    good = {k: {"category": k, "examples": ["a b.", "c d."]} for k in ("targ1", "targ2", "attr1", "attr2")}
    cases = {
        "notjson": "{not json",
        "twolines": json.dumps(good) + "\n" + json.dumps(good),
        "noattr2": json.dumps({k: v for k, v in good.items() if k != "attr2"}),
        "empty": json.dumps(dict(good, attr1={"category": "A", "examples": []})),
        "nonstring": json.dumps(dict(good, targ1={"category": "X", "examples": ["ok.", 3]})),
        "list": json.dumps([good]),
    }
    for name, text in cases.items():
        (seat / f"{name}.jsonl").write_text(text)
        with pytest.raises(DataError, match=f"{name}.jsonl"):
            load_test(tmp_path, name)
    (seat / "good.jsonl").write_text(json.dumps(good))
    assert load_test(tmp_path, "good").sentences[0] == ("a b.", "c d.")
    with pytest.raises(DataError, match="sent-weat6.jsonl"):
        SEAT().data_files(ctx_for(tmp_path, tmp_path))


def test_bad_options():
    with pytest.raises(BenchError, match="bootstrap"):
        SEAT(bootstrap="words")
    with pytest.raises(BenchError, match="n_permutations"):
        SEAT(n_permutations=0)
    assert SEAT(tests="sent-weat6").tests == ("sent-weat6",)
    assert SEAT().config() == {"tests": None, "n_permutations": 100_000, "bootstrap": "sentences",
                               "batch_size": None, "batch_tokens": None}  # fmt: skip
    # no `tests`: the run's bias type's list
    ctx = Context(data_dir=None, cache_dir=None, progress=False)
    assert SEAT().test_names(ctx) == GENDER_TESTS
    ctx.bias_type = "religion"
    assert SEAT().test_names(ctx) == ("sent-religion1", "sent-religion1b", "sent-religion2", "sent-religion2b")
    assert SEAT(tests="sent-weat6").test_names(ctx) == ("sent-weat6",)


# ---- (e) the synthetic planted-bias world -----------------------------------------------------------------
@pytest.mark.slow
def test_planted_bias_gives_large_seat_random_weights_small(synthetic, synthetic_random, tmp_path):
    """Pinned world (generator "5", weights 49c030ec59199db7, identical on every machine; 1,000 resamples):
    trained 1.581 [1.441, 1.654], random-weight control 0.322 [0.165, 0.502] (numpy-drawn, also identical
    everywhere), paired difference 1.259 [1.032, 1.426], per-test d 1.25-1.74 with p <= 1e-4. Thresholds (value
    > 0.75, paired low > 0.25, d > 0.5, p < 0.01) were set on generator "4" (1.064, paired low 0.468, d >= 0.95)
    and leave >= 0.2 each, far above float32 inference noise (~1e-6).
    The control is not 0: SEAT's word sets have 8-16 words, so sampling noise alone gives |d| ~ 0.2-0.5. The
    claim is "clearly above": the intervals do not overlap, the paired difference's CI lies above 0 by a margin
    and the planted model's value is more than twice the control's. (Generator "2" gave 0.299 vs 0.343 - no SEAT signal - and fails here.)"""
    from bench.stats import compare

    metric = SEAT(n_permutations=10_000)
    trained = metric.score(synthetic, ctx_for(synthetic.data_dir, tmp_path))
    random = metric.score(synthetic_random, ctx_for(synthetic_random.data_dir, tmp_path))
    cfg = StatsConfig(resamples=1000, seed=0)
    iv_t, iv_r = interval(trained.estimates["seat"], cfg), interval(random.estimates["seat"], cfg)
    print(f"\nSEAT synthetic {iv_t}\nSEAT synthetic random {iv_r}")
    assert iv_t.low > iv_r.high  # the unpaired intervals do not overlap
    assert iv_t.value > 0.75 and iv_t.value > 2 * iv_r.value
    cmp = compare(trained.estimates["seat"], random.estimates["seat"], cfg)  # same sentences, same resamples
    assert cmp.significant and cmp.low > 0.25
    for name in GENDER_TESTS:  # the planted direction: male ~ career/math/science in every test
        assert trained.estimates[f"d:{name}"].point() > 0.5
        assert trained.extras[f"p:{name}"] < 0.01
