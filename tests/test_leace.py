"""LEACE: the eraser (concept-erasure's), the affine transform, the Bias-in-Bios file option, the synthetic world."""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from concept_erasure import LeaceFitter

from bench.api import Context
from bench.models.embeddings import sentence_embeddings
from bench.errors import BenchError, DataError
from methods.bias_sentences import FEMALE, MALE, NEUTRAL
from methods.bias_sentences import read_bios
from methods.leace import LEACE, concept_matrix, eraser_transform, fit_eraser, probe_accuracy
from methods.projection import AffineErasure
from tests.tokenizers_fixture import bert_subject, bert_tokenizer, single_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("single_thread")


def chance_margin(n_test: int, p: float = 0.5) -> float:
    """3 standard errors of a chance-level (p) accuracy on n_test held-out examples."""
    return 3 * math.sqrt(p * (1 - p) / n_test)


def planted_data(n_per_class=400, d=24, seed=0):
    """Male / female / neutral classes whose means differ along random directions; labels as INLP's."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(3, d)) * 1.5
    x = np.concatenate([rng.normal(size=(n_per_class, d)) + means[c] for c in range(3)])
    y = np.repeat([MALE, FEMALE, NEUTRAL], n_per_class)
    perm = rng.permutation(len(y))
    return x[perm], y[perm]


def split(x, y, frac=0.7):
    cut = int(frac * len(y))
    return x[:cut], y[:cut], x[cut:], y[cut:]


# ---- the eraser and the transform (planted data) ---------------------------------------------------------
@pytest.mark.parametrize("neutral_class", [False, True])
def test_transform_is_concept_erasures_own_eraser(neutral_class):
    x, y = planted_data()
    if not neutral_class:
        x, y = x[y != NEUTRAL], y[y != NEUTRAL]
    eraser = fit_eraser(x, y, neutral_class)
    # the same as calling the package directly, in float64
    z = torch.as_tensor(concept_matrix(y, neutral_class))
    ref = LeaceFitter.fit(torch.as_tensor(x), z).eraser
    assert eraser.proj_left.dtype == torch.float64
    for a, b in [(eraser.proj_left, ref.proj_left), (eraser.proj_right, ref.proj_right), (eraser.bias, ref.bias)]:
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert eraser.proj_left.shape == (x.shape[1], z.shape[1])
    assert int(torch.linalg.matrix_rank(eraser.proj_left @ eraser.proj_right)) == (2 if neutral_class else 1)
    # AffineErasure applies the same map: float64, identical operations up to summation order (~1e-14 here)
    transform = AffineErasure(eraser.proj_left, eraser.proj_right, eraser.bias)
    x64 = torch.as_tensor(x)
    torch.testing.assert_close(transform(x64), eraser(x64), atol=1e-12, rtol=0)
    # and on a batch of token states (..., d)
    torch.testing.assert_close(transform(x64[:60].reshape(3, 20, -1)), eraser(x64[:60]).reshape(3, 20, -1),
                               atol=1e-12, rtol=0)  # fmt: skip
    # the erased data carry no linear concept information: zero cross-covariance with z (float64 rounding)
    xe = eraser(x64)
    cross = (xe - xe.mean(0)).T @ (z - z.mean(0)) / len(z)
    assert float(cross.abs().max()) < 1e-10


def test_transform_on_float32_states_is_within_float32_rounding():
    x, y = planted_data()
    x, y = x[y != NEUTRAL], y[y != NEUTRAL]
    eraser = fit_eraser(x, y)
    transform = AffineErasure(eraser.proj_left, eraser.proj_right, eraser.bias)
    h32 = torch.as_tensor(x[:100], dtype=torch.float32)
    got = transform(h32)
    assert got.dtype == torch.float32
    exact = eraser(h32.double())
    # Error bound (Higham): h - b, then a k-term and a d-term dot product, then h - ..., each in float32 after
    # rounding L, R, b to float32: per entry <= (d + k + 4) u (|h| + |L| |R| (|h| + |b|)), u = 2^-24.
    u, d, k = 2.0**-24, x.shape[1], eraser.proj_left.shape[1]
    left, right, b, h = eraser.proj_left.abs(), eraser.proj_right.abs(), eraser.bias.abs(), h32.double().abs()
    bound = (d + k + 4) * u * (h + ((h + b) @ right.T) @ left.T)
    assert bool(((got.double() - exact).abs() <= bound).all())
    assert not torch.allclose(got.double(), h32.double(), atol=1e-3)  # it does change the states


def test_probe_reads_the_concept_before_and_nothing_after_erasure():
    """Held-out check: the eraser is fitted on the training part only; a logistic-regression probe trained on
    erased training data is scored on erased held-out data (the fitted eraser, through AffineErasure)."""
    x, y = planted_data(n_per_class=500)
    x, y = x[y != NEUTRAL], y[y != NEUTRAL]
    xt, yt, xd, yd = split(x, y)
    before = probe_accuracy(xt, yt, xd, yd)
    eraser = fit_eraser(xt, yt)
    transform = AffineErasure(eraser.proj_left, eraser.proj_right, eraser.bias)
    et, ed = (transform(torch.as_tensor(a)).numpy() for a in (xt, xd))
    after = probe_accuracy(et, yt, ed, yd)
    chance = max(np.mean(yd == MALE), np.mean(yd == FEMALE))
    print(f"\nplanted: probe before {before:.3f}, after {after:.3f}, chance {chance:.3f}, n_test {len(yd)}")
    assert before > 0.97
    assert abs(after - chance) <= chance_margin(len(yd))
    # three classes (neutral_class=True): chance 1/3
    x, y = planted_data(n_per_class=400, seed=1)
    xt, yt, xd, yd = split(x, y)
    eraser = fit_eraser(xt, yt, neutral_class=True)
    after3 = probe_accuracy(eraser(torch.as_tensor(xt)).numpy(), yt, eraser(torch.as_tensor(xd)).numpy(), yd)
    chance3 = max(np.mean(yd == c) for c in (MALE, FEMALE, NEUTRAL))
    assert probe_accuracy(xt, yt, xd, yd) > 0.9
    assert abs(after3 - chance3) <= 3 * math.sqrt(chance3 * (1 - chance3) / len(yd))


def test_artifact_round_trips_as_data_and_transform_checks_shapes(tmp_path):
    x, y = planted_data()
    x, y = x[y != NEUTRAL], y[y != NEUTRAL]
    e = fit_eraser(x, y)
    art = {"proj_left": e.proj_left, "proj_right": e.proj_right, "bias": e.bias, "counts": {"male": 3}, "rank": 1}
    method = LEACE()
    method.save_artifact(art, tmp_path / "art")
    assert not list((tmp_path / "art").glob("*.pkl")) and not list((tmp_path / "art").glob("*.pickle"))
    back = method.load_artifact(tmp_path / "art")
    for key in ("proj_left", "proj_right", "bias"):
        assert back[key].dtype == torch.float64 and torch.equal(back[key], art[key])
    assert back["counts"] == {"male": 3}
    x64 = torch.as_tensor(x)
    assert torch.equal(eraser_transform(back)(x64), eraser_transform(art)(x64))
    with pytest.raises(BenchError, match="hidden size"):
        eraser_transform(art)(torch.zeros(2, 5, dtype=torch.float64))
    with pytest.raises(BenchError, match="nothing to erase"):
        AffineErasure(torch.zeros(24, 1), torch.zeros(1, 24), None)
    with pytest.raises(BenchError):
        AffineErasure(torch.zeros(24, 1), torch.zeros(2, 24), None)


def test_concept_matrix():
    y = np.array([MALE, FEMALE, FEMALE, NEUTRAL])
    assert concept_matrix(y[:3]).tolist() == [[0.0], [1.0], [1.0]]
    assert concept_matrix(y, neutral_class=True).tolist() == [[1, 0, 0], [0, 1, 0], [0, 1, 0], [0, 0, 1]]
    with pytest.raises(ValueError):
        concept_matrix(y)


def test_config_round_trip_and_data_files(tmp_path):
    m = LEACE(per_class=50, neutral_class=True, bios_file="bios.jsonl", max_bios=7)
    assert LEACE(**m.config()).config() == m.config()
    (tmp_path / "bios.jsonl").write_text('{"text": "He is a nurse .", "gender": "M"}\n')
    ctx = Context(data_dir=tmp_path, cache_dir=tmp_path)
    assert m.data_files(ctx) == [tmp_path / "bios.jsonl"]
    assert LEACE(bios_file=str(tmp_path / "bios.jsonl")).data_files(Context(data_dir=None, cache_dir=tmp_path)) == [
        tmp_path / "bios.jsonl"]  # fmt: skip
    with pytest.raises(DataError, match="missing"):
        LEACE(bios_file="nope.jsonl").data_files(ctx)


# ---- Bias-in-Bios-style files ----------------------------------------------------------------------------
def write_bios(tmp_path, fmt: str, n_per_class: int = 12):
    rng = np.random.default_rng(0)
    jobs = ["nurse", "surgeon", "teacher", "lawyer", "painter", "pilot", "chef", "editor"]
    rows = []
    for i in range(2 * n_per_class):
        gender = "F" if i % 2 else "M"
        pron = "She" if gender == "F" else "He"
        rows.append({"text": f"{pron} works as a {jobs[rng.integers(len(jobs))]} in the city number {i} .",
                     "gender": gender if i % 3 else gender.lower()})  # fmt: skip
    path = tmp_path / f"bios.{fmt}"
    if fmt == "csv":
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=["text", "gender", "title"])
            w.writeheader()
            w.writerows([dict(r, title="x") for r in rows])
    else:
        path.write_text("".join(json.dumps(dict(r, title="x")) + "\n" for r in rows), encoding="utf-8")
    return path, [r["text"] for r in rows], np.array([FEMALE if r["gender"].upper() == "F" else MALE for r in rows])


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_bios_file_is_what_the_eraser_is_fitted_on(fmt, tmp_path, bert_subject):  # noqa: F811
    path, texts, labels = write_bios(tmp_path, fmt)
    got_texts, got_labels = read_bios(path)
    assert got_texts == texts and got_labels.tolist() == labels.tolist()
    ctx = Context(data_dir=tmp_path, cache_dir=tmp_path, progress=False)  # no corpus there: only the file is read
    method = LEACE(bios_file=path.name)
    art = method.fit(bert_subject, ctx)
    assert art["source"] == "bios_file" and art["counts"] == {"male": 12, "female": 12}
    # the same eraser as concept-erasure's on exactly these texts' embeddings and labels (deterministic, float64)
    x = sentence_embeddings(bert_subject, texts).numpy().astype(np.float64)
    ref = LeaceFitter.fit(torch.as_tensor(x), torch.as_tensor((labels == FEMALE).astype(np.float64))[:, None]).eraser
    torch.testing.assert_close(art["proj_left"], ref.proj_left, atol=1e-12, rtol=0)
    torch.testing.assert_close(art["proj_right"], ref.proj_right, atol=1e-12, rtol=0)
    torch.testing.assert_close(art["bias"], ref.bias, atol=1e-12, rtol=0)
    # max_bios keeps the first rows only
    art10 = LEACE(bios_file=str(path), max_bios=20).fit(bert_subject, ctx)
    assert art10["counts"] == {"male": 10, "female": 10}
    # applied: sentence embeddings through the hook are the erased embeddings. Both sides are float32 work:
    # the hook erases each token state in float32 (<= (d + k + 4) u (|h| + |L||R|(|h| + |b|)) per entry, and
    # |L||R| v <= ||L R||_2 sqrt(d) max|v| for rank k = 1), then sentence_embeddings takes a float32 mean of
    # L states (<= (L + 2) u max|state|); the reference erases the float32 base means, whose own rounding
    # ((L + 2) u H) passes through I - L R. Summed with H = max|h| (|b| <= H, a mean of states): u = 2^-24.
    debiased = method.apply(bert_subject, art)
    assert bert_subject.transforms == () and len(debiased.transforms) == 1
    erased = sentence_embeddings(debiased, texts[:6]).double()
    expect = eraser_transform(art)(torch.as_tensor(x[:6]))
    enc = bert_subject.tokenizer(texts[:6], padding=True, return_tensors="pt")
    with torch.inference_mode():
        states = bert_subject.model.base_model(**enc).last_hidden_state[enc["attention_mask"].bool()]
    d, length = x.shape[1], int(enc["attention_mask"].sum(1).max())
    big = float(torch.linalg.matrix_norm(art["proj_left"] @ art["proj_right"], ord=2))
    scale = (1 + big) * 2 * float(states.abs().max()) * math.sqrt(d)
    tol = 2 * (length + d + 4) * 2.0**-24 * scale
    change = float((expect - torch.as_tensor(x[:6])).abs().max())
    print(f"\nmax error {float((erased - expect).abs().max()):.2e}, bound {tol:.2e}, change {change:.2e}")
    assert change > 10 * tol  # the check can tell an erased embedding from an untouched one
    torch.testing.assert_close(erased, expect, atol=tol, rtol=0)


def test_bad_bios_files_are_rejected(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "x", "gender": "X"}\n')
    with pytest.raises(DataError, match="'M' or 'F'"):
        read_bios(bad)
    bad.write_text('{"text": "x"}\n')
    with pytest.raises(DataError, match="'text' and 'gender'"):
        read_bios(bad)
    bad.write_text("not json\n")
    with pytest.raises(DataError, match="not JSON"):
        read_bios(bad)
    with pytest.raises(DataError, match="jsonl"):
        read_bios(tmp_path / "bios.txt")
    few = tmp_path / "few.jsonl"
    few.write_text("".join(json.dumps({"text": f"t {i}", "gender": "MF"[i % 2]}) + "\n" for i in range(8)))
    with pytest.raises(DataError, match="at least"):
        LEACE(bios_file="few.jsonl").examples(Context(data_dir=tmp_path, cache_dir=tmp_path))


# ---- the synthetic planted-bias world (slow) ------------------------------------------------------------
@pytest.fixture(scope="module")
def synthetic_ctx(synthetic, tmp_path_factory):
    return Context(data_dir=synthetic.data_dir, cache_dir=tmp_path_factory.mktemp("cache"), progress=False)


@pytest.mark.slow
def test_leace_leaves_a_probe_at_chance_on_the_synthetic_world(synthetic, synthetic_ctx):
    """End to end and held out: LEACE is fitted (its own fit) on 70 % of the gendered sentences; the other 30 %
    are embedded through the debiased subject (the hook); a probe trained on the erased 70 % reads nothing."""
    from sklearn.model_selection import train_test_split

    method = LEACE()
    texts, labels, counts = method.examples(synthetic_ctx)
    tr, te = train_test_split(np.arange(len(labels)), test_size=0.3, random_state=0, stratify=labels)
    train_texts = [texts[i] for i in tr]
    method.examples = lambda ctx: (train_texts, labels[tr], counts)  # fit on the training part only
    art = method.fit(synthetic, synthetic_ctx)
    debiased = method.apply(synthetic, art)
    x_base = {k: sentence_embeddings(synthetic, [texts[i] for i in idx]).numpy() for k, idx in (("tr", tr), ("te", te))}
    x_new = {k: sentence_embeddings(debiased, [texts[i] for i in idx]).numpy() for k, idx in (("tr", tr), ("te", te))}
    before = probe_accuracy(x_base["tr"], labels[tr], x_base["te"], labels[te])
    after = probe_accuracy(x_new["tr"], labels[tr], x_new["te"], labels[te])
    chance = max(np.mean(labels[te] == MALE), np.mean(labels[te] == FEMALE))
    print(f"\nLEACE on synthetic: counts {counts}, held-out probe before {before:.3f}, after {after:.3f}, "
          f"chance {chance:.3f} (n_test {len(te)}, margin {chance_margin(len(te)):.3f}); artifact's own "
          f"{art['probe_test_accuracy_before']:.3f} -> {art['probe_test_accuracy']:.3f}")  # fmt: skip
    assert before > 0.9
    assert abs(after - chance) <= chance_margin(len(te))
    assert abs(art["probe_test_accuracy"] - art["chance"]) <= chance_margin(round(0.3 * len(tr)))


@pytest.mark.slow
def test_leace_moves_gender_ss_toward_50_on_the_synthetic_world(synthetic, synthetic_ctx):
    from tests.test_inlp import gender_ss_moves_toward_50

    method = LEACE()
    art = method.fit(synthetic, synthetic_ctx)
    assert art["source"] == "corpus" and art["rank"] == 1 and art["counts"]["male"] == art["counts"]["female"]
    debiased = method.apply(synthetic, art)
    assert synthetic.transforms == ()
    gender_ss_moves_toward_50(synthetic, debiased, synthetic_ctx, "LEACE")
