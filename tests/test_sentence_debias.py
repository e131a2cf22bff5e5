"""SentenceDebias: counterfactual pairs, the PCA bias direction, and the transform on a model."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from bench.api import Context
from bench.models.embeddings import sentence_embeddings
from bench.models.subject import mlm_head
from methods.bias_sentences import counterfactual_pairs, load_swapper
from methods.projection import SubspaceRemoval
from methods.sentence_debias import SentenceDebias, bias_subspace
from tests.tokenizers_fixture import bert_subject, bert_tokenizer  # noqa: F401


def planted_pairs(n=200, d=16, seed=0, strength=1.0):
    """Pairs that differ mostly along one planted unit direction v (plus small isotropic noise)."""
    rng = np.random.default_rng(seed)
    v = rng.normal(size=d)
    v /= np.linalg.norm(v)
    base = rng.normal(size=(n, d)) * 3.0  # large between-pair variance that pair-centring must remove
    a = strength * (1.0 + rng.random(n))
    male = base + a[:, None] * v + 0.05 * rng.normal(size=(n, d))
    female = base - a[:, None] * v + 0.05 * rng.normal(size=(n, d))
    return male, female, v


def test_pca_finds_the_planted_direction():
    male, female, v = planted_pairs()
    basis, ratio = bias_subspace(male, female, 1)
    assert basis.shape == (16, 1)
    assert abs(float(basis[:, 0] @ v)) > 0.999
    assert ratio[0] > 0.9
    # independent computation: top right-singular vector of the stacked pair-centred vectors
    mean = (male + female) / 2
    centred = np.concatenate([male - mean, female - mean])
    _, _, vt = np.linalg.svd(centred - centred.mean(0), full_matrices=False)
    assert abs(abs(float(vt[0] @ basis[:, 0])) - 1.0) < 1e-9
    np.testing.assert_allclose(np.abs(basis[:, 0]), np.abs(vt[0]), atol=1e-6)


def test_pair_centring_ignores_between_pair_variance():
    """Without centring each pair, PCA would return the direction of largest spread of the sentences."""
    male, female, v = planted_pairs(strength=0.3)
    u = np.zeros(16)
    u[0] = 1.0
    shift = np.random.default_rng(5).normal(size=(200, 1)) * 20.0 * u  # huge spread along u, shared by both sides
    basis, _ = bias_subspace(male + shift, female + shift, 1)
    assert abs(float(basis[:, 0] @ v)) > 0.99


def test_removal_leaves_no_component_along_the_direction():
    male, female, v = planted_pairs()
    basis, _ = bias_subspace(male, female, 2)
    assert np.allclose(basis.T @ basis, np.eye(2), atol=1e-10)
    remove = SubspaceRemoval(basis)
    # float64 states; the module stores U in float32 (by design), so U^T U = I only to within
    # orth = max|U^T U - I| <= ~2 * 2^-24, and out U = (h U)(I - U^T U) exactly: |out U| <= k * orth * max|h U|
    # (k = 2; float64 rounding adds ~1e-15). Not removing the direction leaves |out U| of order 1.
    h = torch.tensor(np.concatenate([male, female]), dtype=torch.float64).reshape(20, 20, 16)  # (..., d) states
    out = remove(h)
    assert out.dtype == torch.float64
    b = remove.basis.double()
    orth = float((b.T @ b - torch.eye(2, dtype=torch.float64)).abs().max())
    assert orth <= 4 * 2.0**-24
    assert float((out @ b).abs().max()) <= 2 * orth * float((h @ b).abs().max()) + 1e-12
    # the orthogonal complement is untouched
    torch.testing.assert_close(out, h - (h @ b) @ b.T)
    # remove(out) - out = -(out U) U^T: |.| <= k * max|out U| * max|U|, bounded as above
    torch.testing.assert_close(remove(out), out, atol=2 * 2 * orth * float((h @ b).abs().max()) + 1e-12, rtol=0)


def test_counterfactual_pairs_swap_one_attribute_pair_at_a_time(data_dir):
    swapper = load_swapper(data_dir)
    pairs = counterfactual_pairs(["He told his Sister, the actress."], swapper)
    assert pairs == [
        ("he told his sister, the actor.", "he told his sister, the actress."),  # actor/actress
        ("he told his brother, the actress.", "he told his sister, the actress."),  # brother/sister
        ("he told his sister, the actress.", "she told his sister, the actress."),  # he/she
        ("he told his sister, the actress.", "he told her sister, the actress."),  # his/her
    ]  # fmt: skip
    assert counterfactual_pairs(["The weather was fine."], swapper) == []
    cased = counterfactual_pairs(["He said so."], swapper, lowercase=False)
    assert cased == [("He said so.", "She said so.")]
    assert len(counterfactual_pairs(["he and his son ran."] * 5, swapper, max_pairs=7)) == 7
    # a list that repeats a pair in another case (the synthetic world's "He"/"She") gives one pair, cased right
    from methods.counterfactual import CounterfactualSwapper

    twice = CounterfactualSwapper([("he", "she"), ("He", "She")])
    assert counterfactual_pairs(["She said so."], twice, lowercase=False) == [("He said so.", "She said so.")]


# ---- on a (tiny, random) model --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fitted(bert_subject, data_dir, tmp_path_factory):
    ctx = Context(data_dir=data_dir, cache_dir=tmp_path_factory.mktemp("cache"), progress=False)
    method = SentenceDebias(max_pairs=120)
    return method, ctx, method.fit(bert_subject, ctx)


def test_fit_matches_pca_of_the_pair_embeddings(fitted, bert_subject):
    method, ctx, art = fitted
    pairs = method.pairs(ctx)
    assert art["n_pairs"] == len(pairs) == method.max_pairs
    emb = sentence_embeddings(bert_subject, [m for m, _ in pairs] + [f for _, f in pairs], max_length=128).double()
    emb = emb / emb.norm(dim=1, keepdim=True)
    male, female = emb[: len(pairs)].numpy(), emb[len(pairs) :].numpy()
    mean = (male + female) / 2
    centred = np.concatenate([male - mean, female - mean])
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    v = art["basis"][:, 0].double().numpy()
    assert art["basis"].shape == (bert_subject.model.config.hidden_size, 1)
    # v is a float64 unit vector rounded to float32 (each coordinate by <= 2^-24 relative): |norm - 1| <= 2^-24
    assert abs(np.linalg.norm(v) - 1) <= 2.0**-24 + 1e-12
    # the fit embeds the same sentences by the same call, so only the float64 SVD-vs-PCA difference (~1e-13 in
    # angle, entering quadratically) and v's float32 rounding (<= 2^-24) remain: 1e-5 is ~170x above that,
    # while a wrong direction (no pair centring, wrong normalisation) gives |cos| visibly below 1
    assert abs(abs(float(vt[0] @ v)) - 1) < 1e-5


def test_apply_removes_the_direction_from_embeddings_and_mlm_inputs(fitted, bert_subject):
    """On a float64 copy of the model (the artifact was fitted on the float32 one). bench.models.embeddings returns
    float32 embeddings by design: it casts each token's state to float32 and sums L of them in float32, so each
    coordinate is off by <= delta = (L + 2) * 2^-24 * H (H = max |h|) from the float64 mean; in float64 the
    projection itself is exact up to |h U| * |I - U^T U| <= ~2 * 2^-24 * H * sqrt(D) (U stored in float32)."""
    method, _, art = fitted
    bert_subject = bert_subject.with_model(copy.deepcopy(bert_subject.model).double())
    before = {k: v.clone() for k, v in bert_subject.model.state_dict().items()}
    debiased = method.apply(bert_subject, art)
    assert bert_subject.transforms == () and not debiased.same_as(bert_subject)
    assert all(torch.equal(v, bert_subject.model.state_dict()[k]) for k, v in before.items())
    v = art["basis"][:, 0].double()
    sentences = ["she is a nurse .", "he is an engineer .", "the weather was fine today ."]
    enc = bert_subject.tokenizer(sentences, padding=True, return_tensors="pt")
    with torch.inference_mode():
        states = bert_subject.model.base_model(**enc).last_hidden_state[enc["attention_mask"].bool()]
    L, H, D = int(enc["attention_mask"].sum(1).max()), float(states.abs().max()), len(v)
    delta = (L + 2) * 2.0**-24 * H
    emb = sentence_embeddings(debiased, sentences).double()
    # the float32 error along v is <= sqrt(D) * delta (|v| = 1), the projection's <= 2 * 2^-24 * H * sqrt(D)
    assert float((emb @ v).abs().max()) <= math.sqrt(D) * (delta + 2 * 2.0**-24 * H) + 1e-12
    base = sentence_embeddings(bert_subject, sentences).double()
    # both embeddings off by <= delta per coordinate; base's error enters (base @ v) v by <= sqrt(D) * delta
    tol = (2 + math.sqrt(D)) * delta + 2 * math.sqrt(D) * 2.0**-24 * H + 1e-12
    torch.testing.assert_close(emb, base - torch.outer(base @ v, v), atol=tol, rtol=0)
    tok = bert_subject.tokenizer
    enc = tok(["the [MASK] is a nurse .", "[MASK] is an engineer ."], padding=True, return_tensors="pt")
    rows, cols = (enc["input_ids"] == tok.mask_token_id).nonzero(as_tuple=True)
    with torch.inference_mode():
        got = debiased.mlm_logits(enc["input_ids"], enc["attention_mask"], rows, cols)
        h = bert_subject.model.base_model(**enc).last_hidden_state[rows, cols]
        ref = mlm_head(bert_subject.model)(h - torch.outer(h @ v, v))
    # all float64, logits differ only by summation order: ~20 stages of <= 128-term dot products, |logit| <= ~15
    # -> <= ~20 * 128 * 2^-53 * 15 ~ 5e-12; a wrong projection or position is off by >= 1e-2
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, ref, atol=1e-10, rtol=0)


def test_too_few_pairs_is_a_clear_error(tmp_path, bert_subject):
    from bench.errors import DataError

    (tmp_path / "text_corpus").mkdir()
    (tmp_path / "text_corpus" / "a.txt").write_text("The weather was fine . Rain fell all day .\n")
    (tmp_path / "bias_attribute_words").mkdir()
    (tmp_path / "bias_attribute_words" / "bias_attribute_words.json").write_text('{"gender": [["he", "she"]]}')
    ctx = Context(data_dir=tmp_path, cache_dir=tmp_path, progress=False)
    with pytest.raises(DataError, match="SentenceDebias needs"):
        SentenceDebias().fit(bert_subject, ctx)


@pytest.mark.slow
def test_sentence_debias_moves_gender_ss_toward_50_on_the_synthetic_world(synthetic, tmp_path):
    import time

    from tests.test_inlp import gender_ss_moves_toward_50

    ctx = Context(data_dir=synthetic.data_dir, cache_dir=tmp_path, progress=False)
    method = SentenceDebias()
    t0 = time.perf_counter()
    art = method.fit(synthetic, ctx)
    print(f"\nSentenceDebias fit on synthetic: {time.perf_counter() - t0:.1f}s, {art['n_pairs']} pairs, "
          f"explained variance {art['explained_variance_ratio']}")  # fmt: skip
    debiased = method.apply(synthetic, art)
    v = art["basis"][:, 0]
    emb = sentence_embeddings(debiased, ["he is a doctor .", "she is a nurse ."])
    # float32 embeddings of size ~3 over 96 dimensions: what the removal leaves is rounding, <= ~96 * 2^-24 * 3
    # ~ 2e-5 in the worst case; a direction not removed would leave values of order 1
    assert float((emb @ v).abs().max()) < 1e-4
    gender_ss_moves_toward_50(synthetic, debiased, ctx, "SentenceDebias")
