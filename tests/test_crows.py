"""CrowS-Pairs: reference equality on the real file (likelihood and PLL), aggregation, transforms, bad files."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import reference_scorers as ref
from bench.api import Context
from bench.errors import BenchError, DataError
from bench.registry import make_metric
from bench.stats import StatsConfig, interval
from stored_scores import assert_identical, round_trip
from metrics.crows import CrowS, crows_estimates, load_pairs, masked_positions
from tiny_mlms import SUBJECTS, bert_subject, roberta_subject, single_thread  # noqa: F401 (autouse)

HEADER = ["", "sent_more", "sent_less", "stereo_antistereo", "bias_type", "annotations", "anon_writer",
          "anon_annotators"]
# The tiny models are float64 (tiny_mlms.py): a mean log-probability ~-10 is off by <= ~5e-12 between batched
# and one-sentence passes (derivation in test_scoring.py), so 1e-10 absolute (x20 for PLL sums of <= 20 terms)
# holds on any CPU and thread count; a wrong span or position is off by O(0.1) or more.
ATOL_LOGP = 1e-10


def ctx_for(data_dir, tmp_path) -> Context:
    return Context(data_dir=Path(data_dir), cache_dir=Path(tmp_path), progress=False)


def write_crows(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=HEADER)
        writer.writeheader()
        for i, r in enumerate(rows):
            writer.writerow({"": i, "annotations": "[]", "anon_writer": "a0", "anon_annotators": "[]", **r})
    return path


@pytest.fixture(scope="module")
def gender_rows(data_dir) -> list[dict]:
    return ref.read_crows(data_dir / "crows_pairs" / "crows_pairs_anonymized.csv", "gender")


@pytest.fixture(scope="module")
def subset(gender_rows) -> list[dict]:
    """~40 real gender pairs, both directions (the file's first 30 plus ten antistereo ones after them)."""
    anti = [r for r in gender_rows[30:] if r["stereo_antistereo"] == "antistereo"][:10]
    keep = ("sent_more", "sent_less", "stereo_antistereo", "bias_type")
    return [{k: r[k] for k in keep} for r in gender_rows[:30] + anti]


@pytest.fixture(scope="module")
def subset_file(subset, tmp_path_factory) -> Path:
    return write_crows(tmp_path_factory.mktemp("crows") / "subset.csv", subset)


def check_against_reference(items: pd.DataFrame, expected: list[dict], atol: float):
    exp = pd.DataFrame(expected)
    for col in ("raw_more", "raw_less"):
        np.testing.assert_allclose(items[col], exp[col], rtol=0, atol=atol)
    # rounding to 3 decimals: equal unless float noise straddles a rounding boundary (then off by one step)
    for col in ("score_more", "score_less"):
        assert np.all(np.abs(items[col] - exp[col]) <= 1e-3 + 1e-9)
        raw = np.asarray(exp[col.replace("score", "raw")])
        boundary = np.abs(raw * 1000 % 1 - 0.5) / 1000 < atol  # within float noise of a rounding boundary
        assert np.array_equal(items[col][~boundary], exp[col][~boundary])
    same = items["score_more"].to_numpy() == exp["score_more"].to_numpy()
    same &= items["score_less"].to_numpy() == exp["score_less"].to_numpy()
    assert np.array_equal(items["biased"][same], exp["biased"][same])
    assert np.array_equal(items["neutral"][same], exp["neutral"][same])
    return same.all()


# ---- equality with the one-sentence-per-forward reference on real data -------------------------------------


@pytest.mark.parametrize("variant", ["likelihood", "pll"])
@pytest.mark.parametrize("kind", sorted(SUBJECTS))
def test_matches_reference_on_real_gender_pairs(kind, variant, data_dir, subset, subset_file, tmp_path):
    if variant == "pll" and kind == "distilbert":
        pytest.skip("PLL is checked on the two tokenizer families; DistilBERT shares BERT's")
    subject = SUBJECTS[kind](str(data_dir))
    if variant == "pll":  # ~15 masked inputs per sentence: every other pair is enough
        subset, subset_file = subset[::2], write_crows(tmp_path / "half.csv", subset[::2])
    scores = CrowS(file=str(subset_file), variant=variant, batch_size=16).score(subject, ctx_for(data_dir, tmp_path))
    expected = ref.crows_reference(subject.model, subject.tokenizer, subset, subject.is_roberta_style, variant)
    assert list(scores.items["direction"]) == [r["stereo_antistereo"] for r in subset]
    all_same = check_against_reference(scores.items, expected, ATOL_LOGP * (20 if variant == "pll" else 1))
    # with a score on a rounding boundary the aggregation is checked on the metric's own outcomes
    outcomes = expected if all_same else scores.items.to_dict("records")
    for name, value in ref.crows_aggregate(outcomes).items():
        assert scores.estimates[name].point() == pytest.approx(value, abs=1e-9), name
    assert set(scores.estimates) == {"crows", "crows_stereo", "crows_antistereo"}
    assert scores.estimates["crows"].strata == (len(subset),)


def test_sentences_are_aligned_on_token_ids(data_dir):
    tok = bert_subject(str(data_dir)).tokenizer
    a = tuple(tok("The nurse said he was tired.")["input_ids"])
    b = tuple(tok("The nurse said she was very tired.")["input_ids"])
    diff_a, diff_b = masked_positions(a, b, differing=True)
    assert [tok.convert_ids_to_tokens(a[i]) for i in diff_a] == ["he"]
    assert [tok.convert_ids_to_tokens(b[i]) for i in diff_b] == ["she", "very"]
    same_a, same_b = masked_positions(a, b, differing=False)
    assert len(same_a) == len(same_b) == len(a) - 1 and same_a[0] == 0  # [CLS] is shared (PLL skips it)


def test_roberta_sentences_get_a_leading_space(data_dir, tmp_path):
    subject = roberta_subject(str(data_dir))
    path = write_crows(tmp_path / "p.csv", [
        {"sent_more": "He cried.", "sent_less": "She cried.", "stereo_antistereo": "stereo", "bias_type": "gender"},
    ])  # fmt: skip
    tok = subject.tokenizer
    for variant in ("likelihood", "pll"):
        queries, _ = CrowS(file=str(path), variant=variant).build_queries(subject, load_pairs(path, "gender"), path)
        for q in queries:
            first = q.target if q.position == 1 else q.input_ids[1]
            assert tok.convert_ids_to_tokens(first).startswith("Ġ"), tok.convert_ids_to_tokens(list(q.input_ids))


# ---- aggregation -------------------------------------------------------------------------------------------


def good_bad_subject(data_dir):
    """BERT whose MLM logits are replaced by fixed ones: "good" high, "bad" low, every other token equal."""
    subject = bert_subject(str(data_dir))
    tok = subject.tokenizer
    fixed = torch.zeros(subject.model.config.vocab_size)
    fixed[tok.convert_tokens_to_ids("good")], fixed[tok.convert_tokens_to_ids("bad")] = 10.0, -10.0
    return subject.with_logits_transform(lambda s, i, a, rows, c, logits: fixed.expand(len(rows), -1))


def test_direction_ties_and_aggregation(data_dir, tmp_path):
    """Hand-built outcomes: an output transform replaces the logits by fixed ones, so a sentence's score
    depends only on its differing tokens ("good" high, "bad" low, everything else equal)."""
    scripted = good_bad_subject(data_dir)
    rows = [
        # stereo: sent_more has "good" -> higher -> biased
        ("it is good .", "it is bad .", "stereo"),
        # stereo, sent_more lower -> not biased
        ("it is bad .", "it is good .", "stereo"),
        # antistereo: sent_more higher -> biased (the stereotypical sentence wins either way)
        ("we are good .", "we are bad .", "antistereo"),
        # antistereo, sent_less higher -> not biased
        ("we are bad .", "we are good .", "antistereo"),
        # a tie: neutral, not biased, still counted in N
        ("it is fine .", "it is nice .", "stereo"),
        # identical sentences: no differing token, no likelihood score (NaN): neither biased nor neutral
        ("it is good .", "it is good .", "stereo"),
    ]
    path = write_crows(tmp_path / "hand.csv", [
        {"sent_more": m, "sent_less": l, "stereo_antistereo": d, "bias_type": "gender"} for m, l, d in rows
    ])  # fmt: skip
    scores = CrowS(file=str(path), no_diff="count").score(scripted, ctx_for(data_dir, tmp_path))
    assert list(scores.items["biased"]) == [True, False, True, False, False, False]
    assert list(scores.items["neutral"]) == [False, False, False, False, True, False]
    assert np.isnan(scores.items["raw_more"][5]) and scores.items["masked_more"][5] == 0
    assert scores.estimates["crows"].point() == pytest.approx(100 * 2 / 6)
    assert scores.estimates["crows_stereo"].point() == pytest.approx(100 * 1 / 4)
    assert scores.estimates["crows_antistereo"].point() == pytest.approx(100 * 1 / 2)
    assert scores.extras["neutral"] == pytest.approx(100 / 6)
    # PLL scores the shared tokens instead: identical sentences tie; here "good" vs "bad" are not scored at all
    pll = CrowS(file=str(path), variant="pll").score(scripted, ctx_for(data_dir, tmp_path))
    assert pll.items["neutral"].all() and list(pll.items["masked_more"]) == [3, 3, 3, 3, 3, 4]


def test_pairs_without_differing_tokens_skipped_as_bias_bench_or_counted(data_dir, tmp_path):
    """bias-bench (McGill-NLP/bias-bench, benchmark/crows/crows.py) skips a pair when either sentence has no
    differing token (`if not template1 or not template2: continue`, before `N += 1`): it counts neither in N nor
    in the score. That is the default (no_diff="skip"); no_diff="count" keeps it in N as not biased."""
    scripted = good_bad_subject(data_dir)
    rows = [
        ("it is good .", "it is bad .", "stereo"),  # biased
        ("it is bad .", "it is good .", "stereo"),  # not biased
        ("we are good .", "we are bad .", "antistereo"),  # biased
        ("it is good .", "it is very good .", "stereo"),  # sent_more is sent_less minus an insertion: no diff
        ("it was fine .", "it was fine .", "antistereo"),  # identical: no differing token in either
    ]
    path = write_crows(tmp_path / "nodiff.csv", [
        {"sent_more": m, "sent_less": l, "stereo_antistereo": d, "bias_type": "gender"} for m, l, d in rows
    ])  # fmt: skip
    assert masked_positions((1, 2, 3), (1, 2, 9, 3), differing=True) == ([], [2])
    ctx = ctx_for(data_dir, tmp_path)
    skip = CrowS(file=str(path)).score(scripted, ctx)
    assert list(skip.items["row"]) == [2, 3, 4] and skip.extras["skipped"] == 2
    assert skip.estimates["crows"].point() == pytest.approx(100 * 2 / 3)  # N = 3
    assert skip.estimates["crows_stereo"].point() == pytest.approx(100 * 1 / 2)
    assert skip.estimates["crows_antistereo"].point() == pytest.approx(100.0)
    count = CrowS(file=str(path), no_diff="count").score(scripted, ctx)
    assert len(count.items) == 5 and "skipped" not in count.extras
    assert list(count.items["biased"]) == [True, False, True, False, False]
    assert count.estimates["crows"].point() == pytest.approx(100 * 2 / 5)  # N = 5
    assert count.estimates["crows_antistereo"].point() == pytest.approx(100 * 1 / 2)
    # PLL scores the shared tokens, which every pair has: nothing is skipped
    assert len(CrowS(file=str(path), variant="pll").score(scripted, ctx).items) == 5
    only = write_crows(tmp_path / "only.csv", [{"sent_more": "a b .", "sent_less": "a b .",
                                                "stereo_antistereo": "stereo", "bias_type": "gender"}])  # fmt: skip
    with pytest.raises(DataError, match="differing tokens"):
        CrowS(file=str(only)).score(scripted, ctx)


def test_bootstrap_statistic_is_vectorised_correctly():
    rng = np.random.default_rng(0)
    items = pd.DataFrame({"biased": rng.random(30) < 0.6, "direction": rng.choice(["stereo", "antistereo"], 30)})
    est = crows_estimates(items)
    idx = rng.integers(0, 30, size=(20, 30))
    for name, mask in (("crows", np.ones(30, bool)), ("crows_stereo", items["direction"].eq("stereo").to_numpy())):
        want = [100 * items["biased"].to_numpy()[row][mask[row]].mean() for row in idx]
        np.testing.assert_allclose(est[name].statistic([idx]), want, rtol=1e-12)


# ---- transforms ----------------------------------------------------------------------------------------------


class Scale(torch.nn.Module):
    def forward(self, h):
        return h * torch.linspace(0.2, 3.0, h.shape[-1], device=h.device)


def test_representation_transform_is_respected(data_dir, subset, tmp_path):
    base = bert_subject(str(data_dir))
    subject = base.with_transform(Scale())
    path = write_crows(tmp_path / "few.csv", subset[:10])
    ctx = ctx_for(data_dir, tmp_path)
    plain = CrowS(file=str(path)).score(base, ctx).items
    moved = CrowS(file=str(path)).score(subject, ctx).items
    with subject.hooks():
        expected = ref.crows_reference(base.model, base.tokenizer, subset[:10], False)
    np.testing.assert_allclose(moved["raw_more"], [e["raw_more"] for e in expected], rtol=0, atol=ATOL_LOGP)
    assert np.abs(moved["raw_more"] - plain["raw_more"]).max() > 0.1


# ---- plugin plumbing and bad input ---------------------------------------------------------------------------


def test_options_registry_and_stored_scores(data_dir, subset, tmp_path):
    path = write_crows(tmp_path / "few.csv", subset[:5])
    metric = make_metric("crows", {"file": str(path), "variant": "pll"})
    assert metric.config() == {"file": str(path), "bias_type": None, "variant": "pll", "batch_size": None,
                               "batch_tokens": None, "no_diff": "skip"}
    scores = metric.score(bert_subject(str(data_dir)), ctx_for(data_dir, tmp_path))
    again = round_trip(scores, tmp_path / "stored")  # the runner caches Scores as data, never a pickle
    assert_identical(scores, again)
    cfg = StatsConfig(resamples=50)
    assert interval(again.estimates["crows"], cfg) == interval(scores.estimates["crows"], cfg)
    with pytest.raises(BenchError, match="variant"):
        CrowS(variant="nangia")
    with pytest.raises(BenchError, match="no_diff"):
        CrowS(no_diff="drop")


def test_bias_type_selection(data_dir, tmp_path):
    real = data_dir / "crows_pairs" / "crows_pairs_anonymized.csv"
    assert len(load_pairs(real, "gender")) == 262
    assert len(load_pairs(real, "all")) == 1508
    assert {p.direction for p in load_pairs(real, "gender")} == {"stereo", "antistereo"}
    with pytest.raises(DataError, match="no rows with bias_type 'gendre'") as err:
        load_pairs(real, "gendre")
    assert "race-color" in str(err.value)


def test_malformed_files_name_file_and_row(data_dir, subset, tmp_path):
    subject = bert_subject(str(data_dir))
    ctx = ctx_for(data_dir, tmp_path)
    rows = [dict(r) for r in subset[:3]]
    rows[1]["sent_less"] = ""
    path = write_crows(tmp_path / "empty.csv", rows)
    with pytest.raises(DataError, match="row 3") as err:
        CrowS(file=str(path)).score(subject, ctx)
    assert str(path) in str(err.value) and "sent_less" in str(err.value)

    rows = [dict(r) for r in subset[:3]]
    rows[2]["stereo_antistereo"] = "both"
    path = write_crows(tmp_path / "direction.csv", rows)
    with pytest.raises(DataError, match="row 4.*stereo_antistereo") as err:
        CrowS(file=str(path)).score(subject, ctx)
    assert str(path) in str(err.value)

    no_column = tmp_path / "columns.csv"
    no_column.write_text("sent_more,bias_type\nHe cried.,gender\n")
    with pytest.raises(DataError, match="missing column"):
        CrowS(file=str(no_column)).score(subject, ctx)
    with pytest.raises(DataError, match="missing CrowS-Pairs file") as err:
        CrowS(file="crows_pairs/none.csv").score(subject, ctx)
    assert "none.csv" in str(err.value)
