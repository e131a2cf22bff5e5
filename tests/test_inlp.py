"""INLP: the null-space projection, the sentence classes, and the transform on a model."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import scipy.linalg
import torch
from sklearn.svm import LinearSVC

from bench.api import Context
from bench.models.embeddings import sentence_embeddings
from bench.models.subject import mlm_head
from methods.bias_sentences import corpus_sentences, gendered_sentences, load_swapper, split_sentences
from methods.inlp import INLP, effective_iterations, iterative_nullspace_projection
from tests.tokenizers_fixture import bert_subject, bert_tokenizer  # noqa: F401


def planted_data(n_per_class=150, d=24, seed=0):
    """Three classes whose means differ along several random directions (more than one classifier's worth)."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(3, d)) * 1.5
    x = np.concatenate([rng.normal(size=(n_per_class, d)) + means[c] for c in range(3)])
    y = np.repeat([1, 0, -1], n_per_class)
    perm = rng.permutation(len(y))
    x, y = x[perm], y[perm]
    cut = int(0.7 * len(y))
    return x[:cut], y[:cut], x[cut:], y[cut:]


def reference_inlp(x_train, y_train, x_dev, y_dev, n_iterations):
    """Ravfogel et al.'s algorithm written out: rowspace projections summed, Ben-Israel's formula each step."""
    d = x_train.shape[1]

    def rowspace(w):
        basis = scipy.linalg.orth(w.T)
        return basis @ basis.T

    def intersection_of_nullspaces(projections):
        q = np.sum(projections, axis=0)
        vals, vecs = np.linalg.eigh(q)
        keep = vecs[:, vals > 1e-8 * max(1.0, vals.max())]
        return np.eye(d) - keep @ keep.T

    projections, accs, weights = [], [], []
    xt, xd = x_train, x_dev
    for _ in range(n_iterations):
        # bias-bench's classifier, solved to the same tolerance as bench's (INLP docstring: tol 1e-8, not 1e-4)
        clf = LinearSVC(fit_intercept=False, dual=False, random_state=0, tol=1e-8, max_iter=10_000).fit(xt, y_train)
        accs.append(clf.score(xd, y_dev))
        weights.append(clf.coef_)
        projections.append(rowspace(clf.coef_))
        p = intersection_of_nullspaces(projections)
        xt, xd = (p @ x_train.T).T, (p @ x_dev.T).T
    return intersection_of_nullspaces(projections), accs, weights


def test_projection_is_idempotent_symmetric_and_removes_every_classifier_direction():
    xt, yt, xd, yd = planted_data()
    res = iterative_nullspace_projection(xt, yt, xd, yd, n_iterations=5)
    p = res.projection
    assert np.allclose(p @ p, p, atol=1e-10) and np.allclose(p, p.T, atol=1e-12)
    assert len(res.weights) == 5 and res.basis.shape == (24, 15)  # 3 one-vs-rest directions per iteration
    for w in res.weights:
        assert np.abs(p @ w.T).max() < 1e-8
    # equal to the straightforward Ben-Israel computation, classifier by classifier
    ref_p, ref_accs, ref_w = reference_inlp(xt, yt, xd, yd, 5)
    np.testing.assert_allclose(p, ref_p, atol=1e-6)
    np.testing.assert_allclose(res.dev_accuracy, ref_accs, atol=1e-12)
    for a, b in zip(res.weights, ref_w):
        np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("seed", range(5))
def test_projection_is_stable_under_float32_rounding_of_the_embeddings(seed):
    """Embeddings come from float32 forward passes whose last bits follow the CPU; INLP solves its SVMs to tol
    1e-8, so such a perturbation (relative 2^-24 per entry) moves P by at most 7.9e-7 over seeds 0-4 (measured;
    at sklearn's default tol 1e-4 up to 7.4e-6 here and 1.6e-2 on the synthetic world's embeddings). The bound
    1e-5 leaves a 12x margin."""
    xt, yt, xd, yd = planted_data()
    rng = np.random.default_rng(seed)
    nudge = lambda x: x * (1 + rng.standard_normal(x.shape) * 2**-24)  # noqa: E731
    a = iterative_nullspace_projection(xt, yt, xd, yd, n_iterations=5).projection
    b = iterative_nullspace_projection(nudge(xt), yt, nudge(xd), yd, n_iterations=5).projection
    assert np.abs(a - b).max() < 1e-5


def test_accuracy_drops_to_chance_once_the_class_information_is_removed():
    xt, yt, xd, yd = planted_data(d=24, seed=0)
    res = iterative_nullspace_projection(xt, yt, xd, yd, n_iterations=6)
    acc = res.dev_accuracy
    assert acc[0] > 0.95
    assert acc[-1] < 1 / 3 + 0.1 and acc[-1] < acc[1] < acc[0]
    # a fresh classifier on the projected data (18 of 24 dimensions left) reads little more than chance
    p = res.projection
    probe = LinearSVC(fit_intercept=False, dual=False, random_state=0).fit(xt @ p, yt)
    assert probe.score(xd @ p, yd) < 1 / 3 + 0.1


def test_min_accuracy_skips_weak_classifiers():
    xt, yt, xd, yd = planted_data(d=12, seed=1)
    res = iterative_nullspace_projection(xt, yt, xd, yd, n_iterations=4, min_accuracy=0.6)
    assert len(res.dev_accuracy) == 4
    assert len(res.weights) == sum(a >= 0.6 for a in res.dev_accuracy)


def test_iteration_cap_keeps_the_papers_setting_on_real_models():
    assert effective_iterations(80, 768, 3, 240 / 768) == 80
    assert effective_iterations(80, 1024, 3, 240 / 768) == 80
    assert effective_iterations(80, 64, 3, 240 / 768) == 6
    assert effective_iterations(80, 8, 3, 240 / 768) == 1
    assert effective_iterations(80, 64, 3, None) == 80


# ---- sentence classes ---------------------------------------------------------------------------------------
def test_sentence_splitting_and_wikitext_cleanup():
    text = 'He went home . <unk> starred in it . " She " said so ! H. americanus is 3 @.@ 5 cm long @-@ ish .'
    assert split_sentences(text) == [
        "He went home .", "<unk> starred in it .", '" She " said so !', "H. americanus is 3.5 cm long-ish .",
    ]  # fmt: skip


def test_gendered_sentences_classes_and_truncation(data_dir):
    swapper = load_swapper(data_dir)
    sentences = [
        "Yesterday he walked to the old market in town .",
        "Her sister , the doctor , went to London by train .",
        "The committee met on Tuesday to discuss the budget plan .",
        "He told her that the weather would improve soon .",  # both genders: skipped
        "The king 's men , armed with swords , held the gate .",
        "Rain fell on the hills all night long and into the morning .",
        "Short one .",  # < 5 tokens: skipped
    ] * 3  # fmt: skip
    found = gendered_sentences(sentences, swapper, per_class=100, seed=0, balance=False)
    assert found.counts() == {"male": 6, "female": 3, "neutral": 6}
    for s in found.male:
        assert s.startswith(("Yesterday he", "The king"))
    for s in found.female:
        assert s.startswith("Her") and len(s.split()) >= 1
    for s in found.neutral:
        assert len(s.split()) >= 4 and not swapper.matches(s)
    # truncation keeps the attribute word and cuts at a whitespace token boundary
    for s in found.male + found.female:
        assert swapper.matches(s)
    balanced = gendered_sentences(sentences, swapper, per_class=100, seed=0)
    assert balanced.counts() == {"male": 3, "female": 3, "neutral": 3}
    assert gendered_sentences(sentences, swapper, per_class=2, seed=0).counts() == {"male": 2, "female": 2, "neutral": 2}
    # deterministic in the seed
    assert gendered_sentences(sentences, swapper, 100, seed=0).male == found.male[:3]


def test_wikitext_gives_enough_sentences_per_class(data_dir):
    from bench.data.paths import text_corpus

    found = gendered_sentences(corpus_sentences(text_corpus(data_dir)), load_swapper(data_dir), per_class=10000)
    counts = found.counts()
    assert counts["male"] == counts["female"] == counts["neutral"] > 300


# ---- on a (tiny, random) model --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fitted(bert_subject, data_dir, tmp_path_factory):
    ctx = Context(data_dir=data_dir, cache_dir=tmp_path_factory.mktemp("cache"), progress=False)
    method = INLP(n_iterations=4, per_class=80)
    return method, method.fit(bert_subject, ctx)


def test_fit_artifact(fitted, bert_subject):
    method, art = fitted
    d = bert_subject.model.config.hidden_size
    p = art["projection"]
    assert p.shape == (d, d) and p.dtype == torch.float32
    # The artifact holds float64 results rounded to float32 (each entry by <= u = 2^-24 relative); the checks
    # run in float64 on those stored values. For P = P64 + E with |E_ij| <= u|P_ij| and rows of |P| of norm
    # <= 1: |(P^2 - P)_ij| <= |P E| + |E P| + |E| + |E|^2 <= 3u + u^2, and P64's own float64 error ~1e-13.
    u = 2.0**-24
    p64 = p.double()
    torch.testing.assert_close(p64 @ p64, p64, atol=4 * u, rtol=0)
    torch.testing.assert_close(p64, p64.T, atol=2 * u, rtol=0)  # P64 symmetric to ~1e-16, then rounded
    assert art["n_iterations"] == min(method.n_iterations, effective_iterations(80, d, 3, 240 / 768))
    assert art["classifiers"].shape == (art["n_iterations"], 3, d)
    for w in art["classifiers"]:
        # P64 w64 = 0 up to float64 rounding; rounding P and w adds <= u |P| |w| + u |w| <= 2u |w| per row
        w64 = w.double()
        assert float((p64 @ w64.T).abs().max()) <= 4 * u * float(w64.norm(dim=1).max()) + 1e-10
    assert art["rank"] == art["basis"].shape[1] == 3 * art["n_iterations"]
    assert len(art["dev_accuracy"]) == art["n_iterations"]
    assert art["counts"]["male"] == art["counts"]["female"] == art["counts"]["neutral"] == method.per_class
    # B rounded to float32 (rows of norm <= 1): B B^T off by <= 2u + u^2, P by <= u
    b64 = art["basis"].double()
    torch.testing.assert_close(torch.eye(d, dtype=torch.float64) - b64 @ b64.T, p64, atol=4 * u, rtol=0)


def test_apply_projects_hidden_states_everywhere_without_touching_the_input(fitted, bert_subject):
    """On a float64 copy of the model (the artifact was fitted on the float32 one); the transform is
    h -> h - (h B) B^T with the stored float32 basis B, exact in float64 up to ~1e-15."""
    method, art = fitted
    bert_subject = bert_subject.with_model(copy.deepcopy(bert_subject.model).double())
    before = {k: v.clone() for k, v in bert_subject.model.state_dict().items()}
    debiased = method.apply(bert_subject, art)
    assert bert_subject.transforms == () and len(debiased.transforms) == 1
    assert not debiased.same_as(bert_subject)
    assert all(torch.equal(v, bert_subject.model.state_dict()[k]) for k, v in before.items())
    b = art["basis"].double()

    def project(h):
        return h - (h @ b) @ b.T

    torch.testing.assert_close(project(torch.eye(len(b), dtype=torch.float64)), art["projection"].double(),
                               atol=4 * 2.0**-24, rtol=0)  # the P of the artifact (see test_fit_artifact)
    sentences = ["The nurse said that she was tired .", "He is a doctor .", "A long day at the office ended ."]
    # SEAT / sentence embeddings: the mean of projected states is the projected mean. sentence_embeddings
    # returns float32 by design: each coordinate is within delta = (L + 2) * 2^-24 * H of the float64 mean
    # (cast of each state, float32 sum of L rows, division; H = max |h|, also bounding |P h| up to sqrt(D)).
    enc = bert_subject.tokenizer(sentences, padding=True, return_tensors="pt")
    with torch.inference_mode():
        states = bert_subject.model.base_model(**enc).last_hidden_state[enc["attention_mask"].bool()]
    D = len(b)
    L, H = int(enc["attention_mask"].sum(1).max()), float(states.abs().max()) * math.sqrt(D)
    delta = (L + 2) * 2.0**-24 * H
    base_emb = sentence_embeddings(bert_subject, sentences).double()
    # base's error maps through P = I - B B^T (row sums of |P| <= 1 + sqrt(D) * max row norm of B <= 1 + sqrt(D))
    tol = delta + (1 + math.sqrt(D)) * delta + 1e-12
    torch.testing.assert_close(sentence_embeddings(debiased, sentences).double(), project(base_emb), atol=tol, rtol=0)
    # MLM scoring: the head sees P h. All float64; logits differ only by summation order: ~20 stages of
    # <= 128-term dot products, |logit| <= ~15 -> <= ~5e-12; a wrong projection or position is off by >= 1e-2
    tok = bert_subject.tokenizer
    enc = tok(["The [MASK] said that she was tired .", "[MASK] is a doctor ."], padding=True, return_tensors="pt")
    rows, cols = (enc["input_ids"] == tok.mask_token_id).nonzero(as_tuple=True)
    with torch.inference_mode():
        got = debiased.mlm_logits(enc["input_ids"], enc["attention_mask"], rows, cols)
        h = bert_subject.model.base_model(**enc).last_hidden_state
        ref = mlm_head(bert_subject.model)(project(h[rows, cols]))
        base = bert_subject.mlm_logits(enc["input_ids"], enc["attention_mask"], rows, cols)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, ref, atol=1e-10, rtol=0)
    assert not torch.allclose(got, base, atol=1e-3)


def test_data_files_and_config_round_trip(data_dir, tmp_path):
    ctx = Context(data_dir=data_dir, cache_dir=tmp_path)
    names = [p.name for p in INLP().data_files(ctx)]
    assert "bias_attribute_words.json" in names and any(n.endswith(".txt") for n in names)
    m = INLP(n_iterations=7, per_class=50)
    assert INLP(**m.config()).config() == m.config()


# ---- the synthetic planted-bias world (slow) ------------------------------------------------------------
def gender_ss_moves_toward_50(base_subject, debiased, ctx, label: str):
    """Score gender SS before/after; assert |SS - 50| shrinks with a paired CI of the change excluding 0."""
    from bench.stats import compare, interval
    from metrics.stereoset import StereoSet

    metric = StereoSet()
    base = metric.score(base_subject, ctx).estimates["ss_gender"]
    new = metric.score(debiased, ctx).estimates["ss_gender"]
    ib, inew, cmp = interval(base), interval(new), compare(new, base)
    print(f"\n{label}: SS base {ib.value:.2f} [{ib.low:.2f}, {ib.high:.2f}] -> {inew.value:.2f} "
          f"[{inew.low:.2f}, {inew.high:.2f}]; change {cmp.delta:+.2f} [{cmp.low:+.2f}, {cmp.high:+.2f}]")  # fmt: skip
    assert not ib.low <= 50 <= ib.high, "the synthetic world should show a planted gender bias in SS"
    assert abs(new.point() - 50) < abs(base.point() - 50)
    if base.point() > 50:
        assert cmp.high < 0, "the CI of the change must exclude 0"
    else:
        assert cmp.low > 0, "the CI of the change must exclude 0"


@pytest.fixture(scope="module")
def synthetic_ctx(synthetic, tmp_path_factory):
    return Context(data_dir=synthetic.data_dir, cache_dir=tmp_path_factory.mktemp("cache"), progress=False)


@pytest.fixture(scope="module")
def synthetic_default_fit(synthetic, synthetic_ctx):
    import time

    method = INLP()
    t0 = time.perf_counter()
    art = method.fit(synthetic, synthetic_ctx)
    print(f"\nINLP default fit on synthetic: {time.perf_counter() - t0:.1f}s, {art['n_iterations']} iterations, "
          f"counts {art['counts']}, dev accuracy {[round(a, 3) for a in art['dev_accuracy']]}")  # fmt: skip
    return method, art


@pytest.mark.slow
def test_inlp_accuracy_falls_to_chance_on_the_synthetic_world(synthetic, synthetic_ctx, synthetic_default_fit):
    d = synthetic.model.config.hidden_size
    # run until (almost) the whole space is used up: accuracy must end at chance
    art = INLP(n_iterations=d // 3, max_removed_fraction=None).fit(synthetic, synthetic_ctx)
    acc = art["dev_accuracy"]
    print(f"\nINLP {d // 3} iterations on synthetic: dev accuracy {[round(a, 3) for a in acc]}, "
          f"probe {art['probe_test_accuracy']:.3f}, chance {art['chance']:.3f}")  # fmt: skip
    assert abs(art["chance"] - 1 / 3) < 0.01  # balanced, stratified classes
    assert acc[0] > 0.85
    assert acc[-1] < 1 / 3 + 0.1
    assert art["probe_test_accuracy"] < 1 / 3 + 0.1
    thirds = np.array_split(np.array(acc), 3)
    assert thirds[0].mean() > thirds[1].mean() > thirds[2].mean()
    # the default fit (fewer iterations) is the same autoregressive sequence, cut earlier
    _, short = synthetic_default_fit
    k = short["n_iterations"]
    assert short["dev_accuracy"] == pytest.approx(acc[:k], abs=1e-9)
    torch.testing.assert_close(short["classifiers"], art["classifiers"][:k], atol=1e-5, rtol=0)
    assert short["dev_accuracy"][-1] < short["dev_accuracy"][0]


@pytest.mark.slow
def test_inlp_moves_gender_ss_toward_50_on_the_synthetic_world(synthetic, synthetic_ctx, synthetic_default_fit):
    method, art = synthetic_default_fit
    debiased = method.apply(synthetic, art)
    assert synthetic.transforms == ()
    gender_ss_moves_toward_50(synthetic, debiased, synthetic_ctx, "INLP")
