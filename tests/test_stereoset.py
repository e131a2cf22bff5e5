"""StereoSet (SS, LMS, ICAT): reference equality on the real dev set, aggregation, transforms, bad files."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import reference_scorers as ref
from stored_scores import assert_identical, round_trip
from bench.api import Context
from bench.errors import DataError
from bench.registry import METRICS, make_metric
from bench.models.scoring import encode
from bench.stats import StatsConfig, interval
from metrics.stereoset import (
    StereoSet,
    blank_word,
    build_queries,
    candidate_inputs,
    load_examples,
    masked_context,
    stereoset_estimates,
    word_ids,
)
from tiny_mlms import SUBJECTS, bert_subject, roberta_subject, single_thread  # noqa: F401 (autouse)

# The tiny models are float64 (tiny_mlms.py): log-probabilities agree to <= ~5e-12 absolute between batched and
# one-sentence passes (derivation in test_scoring.py), so a sentence score (a mean of probabilities) agrees to
# ~5e-12 relative; RTOL 1e-10 holds on any CPU and thread count, a wrong position or word is off by >= 1e-2.
RTOL, ATOL = 1e-10, 0
# dev-set positions: the two contexts with two BLANKs, BLANK glued to text ("BLANKed", "sometimes.BLANK"),
# BLANK at the start, and sentences that lower-case part of their context ("Cape verde").
SPECIAL = [242, 300, 357, 950, 1139, 1158, 1933, 2006]


def ctx_for(data_dir, tmp_path) -> Context:
    return Context(data_dir=Path(data_dir), cache_dir=Path(tmp_path), progress=False)


def write_stereoset(path: Path, examples: list[dict]) -> Path:
    path.write_text(json.dumps({"version": "test", "data": {"intrasentence": examples, "intersentence": []}}))
    return path


@pytest.fixture(scope="module")
def dev_examples(data_dir) -> list[dict]:
    return ref.read_stereoset(data_dir / "stereoset" / "dev.json")


@pytest.fixture(scope="module")
def subset(dev_examples) -> list[dict]:
    """~60 real examples: the first 48 (race, profession, gender), 8 tricky ones, and more gender examples."""
    gender = [i for i, ex in enumerate(dev_examples) if ex["bias_type"] == "gender" and i >= 48][:6]
    chosen = list(range(48)) + SPECIAL + gender
    return [dev_examples[i] for i in sorted(set(chosen))]


@pytest.fixture(scope="module")
def subset_file(subset, tmp_path_factory) -> Path:
    return write_stereoset(tmp_path_factory.mktemp("stereoset") / "subset.json", subset)


def reference_items(subject, examples) -> pd.DataFrame:
    return pd.DataFrame(ref.stereoset_reference(subject.model, subject.tokenizer, examples, subject.is_roberta_style))


# ---- equality with the one-sentence-per-forward reference on real data -------------------------------------


def lone_space_words(subject, words) -> set[str]:
    """Words whose byte-level encoding starts with a lone "Ġ" sub-token: the SPEC's decode-and-retokenize
    route loses that token (RoBERTa's <mask> strips the space on its left), the token-id route keeps it."""
    if not subject.is_roberta_style:
        return set()
    lone = subject.tokenizer.convert_tokens_to_ids("Ġ")
    return {w for w in words if subject.tokenizer.encode(" " + w, add_special_tokens=False)[:1] == [lone]}


@pytest.mark.parametrize("kind", sorted(SUBJECTS))
def test_matches_reference_on_real_dev_subset(kind, data_dir, subset, subset_file, tmp_path):
    subject = SUBJECTS[kind](str(data_dir))
    scores = StereoSet(file=str(subset_file), batch_size=16).score(subject, ctx_for(data_dir, tmp_path))
    items, expected = scores.items, reference_items(subject, subset)

    assert list(items["id"]) == list(expected["id"])
    differ = 0
    for col in ("stereo", "anti", "unrelated"):
        assert list(items[f"{col}_word"]) == list(expected[f"{col}_word"])
        lone = items[f"{col}_word"].isin(lone_space_words(subject, items[f"{col}_word"])).to_numpy()
        np.testing.assert_allclose(items[col][~lone], expected[col][~lone], rtol=RTOL, atol=ATOL)
        assert not np.isclose(items[col][lone], expected[col][lone], rtol=1e-3, atol=0).any()
        differ += int(lone.sum())
    assert (differ > 0) == (kind == "roberta")  # the tiny BPE vocabulary splits e.g. " urban" as Ġ urb an
    # no near-ties that float64 noise (~1e-12) could flip, so the aggregates agree exactly with the reference's
    # aggregation (of the reference's own scores where every sentence agrees)
    agg = ref.stereoset_aggregate((expected if not differ else items).to_dict("records"))
    assert set(agg) | {"lms", "icat"} == set(scores.estimates)
    for name, value in agg.items():
        assert scores.estimates[name].point() == pytest.approx(value, abs=1e-6), name
    assert scores.estimates["lms"].point() == pytest.approx(agg["lms_overall"], abs=1e-6)
    assert scores.estimates["icat"].point() == pytest.approx(agg["icat_overall"], abs=1e-6)
    # the subset covers every domain, and the tiny random model has some preference either way
    assert {"gender", "race", "profession", "religion"} <= set(items["bias_type"])
    assert 0 < scores.estimates["ss_overall"].point() < 100


def test_matches_reference_in_float64(data_dir, subset, subset_file, tmp_path):
    base = bert_subject(str(data_dir))
    subject = base.with_model(copy.deepcopy(base.model).double())
    few = subset[:8] + [ex for ex in subset if ex["context"].count("BLANK") > 1]
    path = write_stereoset(tmp_path / "few.json", few)
    items = StereoSet(file=str(path)).score(subject, ctx_for(data_dir, tmp_path)).items
    expected = reference_items(subject, few)
    for col in ("stereo", "anti", "unrelated"):
        np.testing.assert_allclose(items[col], expected[col], rtol=1e-10, atol=0)


def test_whole_dev_file_loads_and_aligns(data_dir, dev_examples):
    examples = load_examples(data_dir / "stereoset" / "dev.json")
    assert len(examples) == 2106
    counts = pd.Series([ex.bias_type for ex in examples]).value_counts().to_dict()
    assert counts == {"race": 962, "profession": 810, "gender": 255, "religion": 79}
    for ex, raw in zip(examples, dev_examples):
        by_label = {s["gold_label"]: s["sentence"] for s in raw["sentences"]}
        for label, word in zip(("stereotype", "anti-stereotype", "unrelated"), ex.words):
            assert word == ref.fill_word(raw["context"], by_label[label])


# ---- candidate words and masked inputs ----------------------------------------------------------------------


def test_blank_word_alignment():
    assert blank_word("The chess player was BLANK.", "The chess player was asian.") == "asian"
    assert blank_word("The grandfather BLANKed the kids.", "The grandfather protected the kids.") == "protect"
    assert blank_word("Cape Verde is BLANK to Africa.", "Cape verde is isolated to africa.") == "isolated"
    assert blank_word("x is BLANK and says BLANK.", "x is poor and says poor.") == "poor"
    assert blank_word("BLANK people are tall.", "Dutch people are tall.") == "Dutch"
    assert blank_word("well-BLANK men", "well-dressed men") == "dressed"
    assert blank_word("x is BLANK and says BLANK.", "x is poor and says rich.") is None
    assert blank_word("The man was BLANK.", "The woman was tall.") is None
    assert blank_word("The man was BLANK.", "The man was .") is None
    assert blank_word("The man was tall.", "The man was tall.") is None


def query_inputs(subject, examples):
    queries, owner = build_queries(subject, examples, Path("dev.json"))
    by_sentence: dict[int, list] = {}
    for q, o in zip(queries, owner):
        by_sentence.setdefault(int(o), []).append((list(q.input_ids), q.position, q.target))
    return by_sentence


def test_token_route_equals_the_spec_text_route_for_wordpiece(data_dir, dev_examples):
    """Inserting w_1..w_{i-1} as ids gives exactly the SPEC's decode-and-retokenize inputs, for every input of
    the whole dev set with the real bert-base-uncased tokenizer."""
    subject = bert_subject(str(data_dir))
    examples = load_examples(data_dir / "stereoset" / "dev.json")
    inputs = query_inputs(subject, examples)
    assert sum(len(v) for v in inputs.values()) > 3 * len(examples) + 1500  # many multi-token words
    for k, ex in enumerate(examples):
        for j, word in enumerate(ex.words):
            assert inputs[3 * k + j] == [tuple(x) for x in ref.spec_inputs(subject.tokenizer, ex.context, word, False)]


def test_bert_inputs(data_dir):
    tok = bert_subject(str(data_dir)).tokenizer
    ids = tok.encode("welldressed", add_special_tokens=False)
    assert len(ids) == 3  # well ##dre ##ssed
    masked = tuple(tok(masked_context(tok, "The man was BLANK today.", False))["input_ids"])
    queries = candidate_inputs(masked, tok.mask_token_id, ids)
    texts = ["The man was [MASK] today.", "The man was well[MASK] today.", "The man was welldre[MASK] today."]
    assert [list(q.input_ids) for q in queries] == [tok(t)["input_ids"] for t in texts]
    assert [q.target for q in queries] == ids
    assert [q.input_ids[q.position] for q in queries] == [tok.mask_token_id] * 3
    assert masked_context(tok, "He BLANKed her.", False) == "He [MASK]ed her."


def test_roberta_inputs_carry_the_leading_space(data_dir, subset, tmp_path):
    subject = roberta_subject(str(data_dir))
    tok = subject.tokenizer
    assert masked_context(tok, "He was BLANK.", True) == "He was<mask>."
    # same tokens as the natural "He was <mask>." (the mask strips the space on its left)
    assert tok("He was<mask>.")["input_ids"] == tok("He was <mask>.")["input_ids"]
    assert masked_context(tok, "BLANK people, BLANK.", True) == "<mask> people,<mask>."
    ids = word_ids(tok, ["asianistic"], roberta_style=True)[0]
    assert tok.convert_ids_to_tokens(ids)[0].startswith("Ġ") and len(ids) >= 2
    # on the real subset the inputs equal the SPEC's text route, except the first-but-one input of words that
    # start with a lone "Ġ", where the text route loses that token and the token route keeps it
    examples = load_examples(write_stereoset(tmp_path / "s.json", subset))
    inputs = query_inputs(subject, examples)
    lone = lone_space_words(subject, [w for ex in examples for w in ex.words])
    assert lone  # the tiny vocabulary has such words (" urban" -> Ġ urb an)
    for k, ex in enumerate(examples):
        for j, word in enumerate(ex.words):
            ours, spec = inputs[3 * k + j], ref.spec_inputs(tok, ex.context, word, True)
            word_ids_ = tok.encode(" " + word, add_special_tokens=False)
            for i, ((a, pa, ta), (b, pb, tb)) in enumerate(zip(ours, spec)):
                assert ta == tb == word_ids_[i] and a[pa] == tok.mask_token_id
                assert a[pa - i : pa] == word_ids_[:i]  # w_1..w_{i-1} right before the mask
                if word in lone and i == 1:
                    assert b == a[: pa - 1] + a[pa:]  # the text route dropped the lone "Ġ"
                else:
                    assert (a, pa) == (b, pb)


def test_first_masked_input_is_shared_by_the_three_candidates(data_dir, subset, tmp_path):
    subject = bert_subject(str(data_dir))
    examples = load_examples(write_stereoset(tmp_path / "s.json", subset))
    queries, owner = build_queries(subject, examples, tmp_path / "s.json")
    lengths = [len(ids) for ids in word_ids(subject.tokenizer, [w for ex in examples for w in ex.words], False)]
    assert len(queries) == sum(lengths)
    distinct = {q.input_ids for q in queries}
    assert len(distinct) == len(examples) + sum(k - 1 for k in lengths)
    assert len(encode(subject.tokenizer, [])) == 0


# ---- aggregation -------------------------------------------------------------------------------------------


def hand_items() -> pd.DataFrame:
    rows = [
        # gender, target "mother": stereo wins, a tie (counts as anti), anti wins
        ("g1", "mother", "gender", 0.5, 0.1, 0.2),
        ("g2", "mother", "gender", 0.3, 0.3, 0.4),
        ("g3", "mother", "gender", 0.1, 0.6, 0.05),
        # gender, target "himself": one example, stereo wins, both related
        ("g4", "himself", "gender", 0.9, 0.2, 0.1),
        # race, one target, two examples
        ("r1", "Norway", "race", 0.2, 0.1, 0.3),
        ("r2", "Norway", "race", 0.4, 0.1, 0.05),
    ]
    return pd.DataFrame(rows, columns=["id", "target", "bias_type", "stereo", "anti", "unrelated"])


def test_aggregation_by_hand():
    est = stereoset_estimates(hand_items())
    # SS per term: mother 1/3 (the tie counts as anti), himself 1/1 -> macro mean, not micro (2/4)
    assert est["ss_gender"].point() == pytest.approx((100 / 3 + 100) / 2)
    # LMS per term: mother (s>u: 1,0,1; a>u: 0,0,1) = 3/6, himself 2/2
    assert est["lms_gender"].point() == pytest.approx((50 + 100) / 2)
    ss, lms = (100 / 3 + 100) / 2, 75.0
    assert est["icat_gender"].point() == pytest.approx(lms * min(ss, 100 - ss) / 50)
    assert est["ss_race"].point() == pytest.approx(100.0)
    assert est["lms_race"].point() == pytest.approx(100 * (0 + 1 + 0 + 1) / 4)
    assert est["icat_race"].point() == pytest.approx(0.0)
    # overall: macro over the three terms of all domains
    assert est["ss_overall"].point() == pytest.approx((100 / 3 + 100 + 100) / 3)
    assert est["lms_overall"].point() == pytest.approx((50 + 100 + 50) / 3)
    assert est["lms"].point() == est["lms_overall"].point()
    assert est["icat"].point() == est["icat_overall"].point()
    assert est["ss_gender"].strata == (4,) and est["ss_overall"].strata == (6,)


def test_vectorised_bootstrap_equals_aggregating_each_resample():
    rng = np.random.default_rng(0)
    n = 40
    items = pd.DataFrame({
        "id": [f"e{i}" for i in range(n)],
        "target": rng.choice(["a", "b", "c", "d", "e"], size=n),
        "bias_type": rng.choice(["gender", "race"], size=n),
        "stereo": rng.integers(0, 4, size=n) / 4, "anti": rng.integers(0, 4, size=n) / 4,
        "unrelated": rng.integers(0, 4, size=n) / 4,
    })  # fmt: skip  (quarter steps: many ties)
    est = stereoset_estimates(items)
    for name in ("ss_overall", "lms_overall", "icat_overall", "ss_gender", "icat_race"):
        domain = name.split("_")[1]
        sub = items if domain == "overall" else items[items["bias_type"] == domain].reset_index(drop=True)
        idx = rng.integers(0, len(sub), size=(25, len(sub)))
        got = est[name].statistic([idx])
        want = [ref.stereoset_aggregate(sub.iloc[row].assign(bias_type="x").to_dict("records"))[
            name.split("_")[0] + "_overall"] for row in idx]  # fmt: skip
        np.testing.assert_allclose(got, want, rtol=1e-12)


# ---- transforms ----------------------------------------------------------------------------------------------


class Rotate(torch.nn.Module):
    def __init__(self, d: int):
        super().__init__()
        q, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(3)))
        self.register_buffer("q", q)

    def forward(self, h):
        return h @ self.q.to(h.dtype)


def test_representation_transform_changes_scores_as_the_reference_does(data_dir, subset, tmp_path):
    base = bert_subject(str(data_dir))
    subject = base.with_transform(Rotate(base.model.config.hidden_size))
    path = write_stereoset(tmp_path / "few.json", subset[:12])
    ctx = ctx_for(data_dir, tmp_path)
    plain = StereoSet(file=str(path)).score(base, ctx).items
    moved = StereoSet(file=str(path)).score(subject, ctx).items
    with subject.hooks():
        expected = reference_items(base, subset[:12])
    for col in ("stereo", "anti", "unrelated"):
        np.testing.assert_allclose(moved[col], expected[col], rtol=RTOL, atol=ATOL)
        assert not np.allclose(moved[col], plain[col], rtol=1e-3)


# ---- plugin plumbing -----------------------------------------------------------------------------------------


def test_registry_aliases_options_and_stored_scores(data_dir, subset, tmp_path):
    assert METRICS.canonical("ss") == METRICS.canonical("lms") == METRICS.canonical("icat") == "stereoset"
    path = write_stereoset(tmp_path / "few.json", subset[:6])
    metric = make_metric("ss", {"file": str(path), "batch_size": 8})
    assert metric.config() == {"file": str(path), "batch_size": 8, "batch_tokens": None}
    ctx = ctx_for(data_dir, tmp_path)
    assert metric.data_files(ctx) == [path]
    scores = metric.score(bert_subject(str(data_dir)), ctx)
    assert scores.metric == "stereoset"
    again = round_trip(scores, tmp_path / "stored")  # the runner caches Scores as data, never a pickle
    assert_identical(scores, again)
    cfg = StatsConfig(resamples=50)
    assert interval(again.estimates["lms"], cfg) == interval(scores.estimates["lms"], cfg)
    assert [c.submetric for c in StereoSet.columns] == ["ss_gender", "lms"]


# ---- bad files -----------------------------------------------------------------------------------------------


def good_example(i: int = 0) -> dict:
    sentences = [("stereotype", "The nurse was kind."), ("anti-stereotype", "The nurse was rude."),
                 ("unrelated", "The nurse was blue.")]  # fmt: skip
    return {
        "id": f"ex{i}", "target": "nurse", "bias_type": "profession", "context": "The nurse was BLANK.",
        "sentences": [{"id": f"s{i}{j}", "sentence": s, "gold_label": g, "labels": []}
                      for j, (g, s) in enumerate(sentences)],
    }  # fmt: skip


def broken(change) -> list[dict]:
    bad = good_example(1)
    change(bad)
    return [good_example(0), bad]


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda e: e.update(context="The nurse was kind."), "no BLANK"),
        (lambda e: e["sentences"][1].update(gold_label="stereotype"), "exactly one stereotype"),
        (lambda e: e["sentences"].pop(), "exactly one stereotype"),
        (lambda e: e["sentences"][2].update(sentence="The doctor was blue."), "does not match its context"),
        (lambda e: e.pop("target"), "missing or empty target"),
    ],
)
def test_malformed_example_names_file_and_example(change, message, data_dir, tmp_path):
    path = write_stereoset(tmp_path / "bad.json", broken(change))
    with pytest.raises(DataError, match=message) as err:
        StereoSet(file=str(path)).score(bert_subject(str(data_dir)), ctx_for(data_dir, tmp_path))
    assert str(path) in str(err.value) and "example 1" in str(err.value) and "ex1" in str(err.value)


def test_missing_and_malformed_files(data_dir, tmp_path):
    subject = bert_subject(str(data_dir))
    with pytest.raises(DataError, match="missing StereoSet file") as err:
        StereoSet(file="stereoset/nope.json").score(subject, ctx_for(data_dir, tmp_path))
    assert "nope.json" in str(err.value)
    with pytest.raises(DataError, match="missing StereoSet file"):
        StereoSet(file=str(tmp_path / "absent.json")).score(subject, ctx_for(data_dir, tmp_path))
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"data": {"intrasentence": [}')
    with pytest.raises(DataError, match="malformed JSON") as err:
        StereoSet(file=str(bad_json)).score(subject, ctx_for(data_dir, tmp_path))
    assert str(bad_json) in str(err.value)
    wrong = tmp_path / "wrong.json"
    wrong.write_text('{"data": {"intersentence": []}}')
    with pytest.raises(DataError, match="not a StereoSet file"):
        StereoSet(file=str(wrong)).score(subject, ctx_for(data_dir, tmp_path))
    with pytest.raises(DataError, match="no data directory"):
        StereoSet().score(subject, Context(data_dir=None, cache_dir=tmp_path, progress=False))


# ---- the planted-bias world --------------------------------------------------------------------------------


def synthetic_ss(subject, tmp_path):
    ctx = Context(data_dir=Path(subject.data_dir), cache_dir=Path(tmp_path), progress=False)
    return interval(StereoSet().score(subject, ctx).estimates["ss_gender"])


@pytest.mark.slow
def test_planted_bias_is_found(synthetic, tmp_path):
    ss = synthetic_ss(synthetic, tmp_path)
    assert ss.value >= 60 and ss.low > 50, ss


@pytest.mark.slow
def test_random_weights_show_no_bias(synthetic_random, tmp_path):
    ss = synthetic_ss(synthetic_random, tmp_path)
    assert ss.low <= 50 <= ss.high, ss
