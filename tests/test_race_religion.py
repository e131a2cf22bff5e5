"""Race and religion: the bias type as a run-level choice in the metrics, the baselines and the synthetic world.

(a) StereoSet, CrowS-Pairs and SEAT select their race / religion items by `ctx.bias_type` and equal the
    straightforward one-sentence-per-forward references (tests/reference_scorers.py, tests/test_seat.py) on the
    real files, for a WordPiece and a byte-level BPE tokenizer (float64 tiny models; tolerances as derived in
    test_stereoset.py, test_crows.py and test_seat.py).
(b) The baselines' race / religion forms: multi-group swapping (bias-bench's ternary CDA and SentenceDebias
    triples), INLP's binary classes, SelfDebias's prompts, multi-class LEACE and RLACE.
(c) The synthetic world plants race and religion: the pinned model shows them (CI excludes 50), the
    random-weight control does not (CI contains 50), and each baseline run for race moves the planted race bias.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import reference_scorers as ref
from bench.api import BIAS_TYPES, Context, serves_bias_type
from bench.errors import DataError
from bench.registry import METHODS, METRICS
from bench.stats import interval
from metrics.crows import ROWS, CrowS, load_pairs
from metrics.seat import SEAT, TESTS
from metrics.stereoset import DOMAINS, StereoSet
from methods.counterfactual import GroupSwapper, augment_multi_group
from tiny_mlms import SUBJECTS
from tests.tokenizers_fixture import bert_subject, bert_tokenizer, roberta_subject, roberta_tokenizer  # noqa: F401

RTOL = 1e-10  # StereoSet sentence scores, float64 tiny models (test_stereoset.py)
ATOL_LOGP = 1e-10  # CrowS mean log-probabilities (test_crows.py)


def ctx_for(data_dir, tmp_path, bias_type: str, seed: int = 0) -> Context:
    return Context(data_dir=Path(data_dir), cache_dir=Path(tmp_path), progress=False, bias_type=bias_type, seed=seed)


pytestmark = pytest.mark.usefixtures("one_thread")


# ---- (a) metrics on the real files ------------------------------------------------------------------------
def test_per_type_defaults_live_in_one_place_and_exist(data_dir):
    assert set(DOMAINS) == set(ROWS) == set(TESTS) == {"gender", "race", "religion"}
    assert TESTS["race"] == ("sent-angry_black_woman_stereotype", "sent-angry_black_woman_stereotype_b",
                             "sent-weat3", "sent-weat3b", "sent-weat4", "sent-weat5", "sent-weat5b")  # fmt: skip
    assert TESTS["religion"] == ("sent-religion1", "sent-religion1b", "sent-religion2", "sent-religion2b")
    for names in TESTS.values():
        for name in names:
            assert (data_dir / "seat" / f"{name}.jsonl").is_file(), name
    real = data_dir / "crows_pairs" / "crows_pairs_anonymized.csv"
    assert len(load_pairs(real, ROWS["race"])) == 516 and len(load_pairs(real, ROWS["religion"])) == 105
    examples = ref.read_stereoset(data_dir / "stereoset" / "dev.json")
    assert sum(e["bias_type"] == DOMAINS["race"] for e in examples) == 962
    assert sum(e["bias_type"] == DOMAINS["religion"] for e in examples) == 79
    for cls in (StereoSet, CrowS, SEAT):
        assert cls.bias_types == frozenset({"gender", "race", "religion"})
    assert [c.submetric for c in StereoSet.columns_for("race")] == ["ss_race", "lms"]
    assert [c.submetric for c in StereoSet.columns_for("gender")] == [c.submetric for c in StereoSet.columns]


def _stereoset_subset(data_dir, bias_type: str, n: int) -> list[dict]:
    examples = ref.read_stereoset(data_dir / "stereoset" / "dev.json")
    return [e for e in examples if e["bias_type"] == bias_type][:n]


@pytest.mark.parametrize("kind", ["bert", "roberta"])
@pytest.mark.parametrize("bias_type", ["race", "religion"])
def test_stereoset_race_religion_equal_the_reference(kind, bias_type, data_dir, tmp_path):
    from test_stereoset import lone_space_words, write_stereoset

    subject = SUBJECTS[kind](str(data_dir))
    chosen = _stereoset_subset(data_dir, bias_type, 24) + _stereoset_subset(data_dir, "gender", 4)
    path = write_stereoset(tmp_path / "subset.json", chosen)
    scores = StereoSet(file=str(path), batch_size=16).score(subject, ctx_for(data_dir, tmp_path, bias_type))
    items = scores.items
    expected = pd.DataFrame(ref.stereoset_reference(subject.model, subject.tokenizer, chosen, subject.is_roberta_style))
    assert list(items["id"]) == list(expected["id"])
    differ = 0
    for col in ("stereo", "anti", "unrelated"):
        assert list(items[f"{col}_word"]) == list(expected[f"{col}_word"])
        lone = items[f"{col}_word"].isin(lone_space_words(subject, items[f"{col}_word"])).to_numpy()
        np.testing.assert_allclose(items[col][~lone], expected[col][~lone], rtol=RTOL, atol=0)
        differ += int(lone.sum())
    agg = ref.stereoset_aggregate((expected if not differ else items).to_dict("records"))
    for name in (f"ss_{bias_type}", f"lms_{bias_type}", f"icat_{bias_type}", "ss_overall", "lms_overall"):
        assert scores.estimates[name].point() == pytest.approx(agg[name], abs=1e-6), name
    assert scores.estimates[f"ss_{bias_type}"].strata == (24,)


def test_stereoset_run_without_its_domain_stops(data_dir, tmp_path):
    from test_stereoset import write_stereoset
    from tiny_mlms import bert_subject

    path = write_stereoset(tmp_path / "gender.json", _stereoset_subset(data_dir, "gender", 3))
    with pytest.raises(DataError, match="no intrasentence example of the religion domain") as err:
        StereoSet(file=str(path)).score(bert_subject(str(data_dir)), ctx_for(data_dir, tmp_path, "religion"))
    assert str(path) in str(err.value) and "gender" in str(err.value)


@pytest.mark.parametrize("kind", ["bert", "roberta"])
@pytest.mark.parametrize("bias_type", ["race", "religion"])
def test_crows_race_religion_equal_the_reference(kind, bias_type, data_dir, tmp_path):
    from test_crows import check_against_reference, write_crows

    real = data_dir / "crows_pairs" / "crows_pairs_anonymized.csv"
    rows = ref.read_crows(real, ROWS[bias_type])
    anti = [r for r in rows[20:] if r["stereo_antistereo"] == "antistereo"][:6]
    keep = ("sent_more", "sent_less", "stereo_antistereo", "bias_type")
    subset = [{k: r[k] for k in keep} for r in rows[:20] + anti]
    # a file with every bias type's rows: the run's type picks its own
    other = [{k: r[k] for k in keep} for r in ref.read_crows(real, "gender")[:5]]
    path = write_crows(tmp_path / "subset.csv", other + subset)
    subject = SUBJECTS[kind](str(data_dir))
    scores = CrowS(file=str(path), batch_size=16).score(subject, ctx_for(data_dir, tmp_path, bias_type))
    expected = ref.crows_reference(subject.model, subject.tokenizer, subset, subject.is_roberta_style)
    lacking = [i for i, e in enumerate(expected) if not np.isfinite(e["raw_more"]) or not np.isfinite(e["raw_less"])]
    expected = [e for i, e in enumerate(expected) if i not in lacking]  # bias-bench skips such pairs
    assert len(scores.items) == len(expected) and scores.extras["skipped"] == len(lacking)
    all_same = check_against_reference(scores.items, expected, ATOL_LOGP)
    outcomes = expected if all_same else scores.items.to_dict("records")
    for name, value in ref.crows_aggregate(outcomes).items():
        assert scores.estimates[name].point() == pytest.approx(value, abs=1e-9), name
    # an explicit option still names the rows (here: the gender rows of the same file, in a race run)
    gender = CrowS(file=str(path), bias_type="gender").score(subject, ctx_for(data_dir, tmp_path, bias_type))
    assert len(gender.items) == 5


@pytest.mark.parametrize("which", ["bert_subject", "roberta_subject"])
@pytest.mark.parametrize("bias_type", ["race", "religion"])
def test_seat_race_religion_equal_the_reference(which, bias_type, request, data_dir, tmp_path):
    from test_seat import ref_seat, wide

    subject = wide(request.getfixturevalue(which))
    scores = SEAT(n_permutations=500).score(subject, ctx_for(data_dir, tmp_path, bias_type))
    expected, tol = ref_seat(subject, data_dir, tests=TESTS[bias_type])
    assert set(scores.items["test"]) == set(TESTS[bias_type])
    for name in TESTS[bias_type]:
        assert scores.estimates[f"d:{name}"].point() == pytest.approx(expected[name], abs=tol[name]), name
    want = statistics.mean(abs(d) for d in expected.values())
    assert scores.estimates["seat"].point() == pytest.approx(want, abs=statistics.mean(tol.values()))
    assert len(scores.estimates["seat"].strata) == 4 * len(TESTS[bias_type])


# ---- (b) the baselines' race / religion forms ---------------------------------------------------------------
def test_declared_bias_types():
    every = frozenset({"gender", "race", "religion"})
    for name in ("cda", "inlp", "sentence-debias", "self-debias", "leace", "rlace"):
        assert METHODS.get(name).bias_types == every, name
    assert METHODS.get("dropout").bias_types is None  # one type-independent checkpoint, as in bias-bench
    for name in ("gradiend-bpi", "gradiend-fpi", "gradiend-mpi"):  # gender GRADIENDs; race/religion: pair models
        assert not serves_bias_type(METHODS.get(name), "race"), name
        assert not serves_bias_type(METHODS.get(name), "religion"), name
    for name in [n for n in METHODS.names() if n.startswith("gradiend-race") or n.startswith("gradiend-religion")]:
        assert METHODS.get(name).bias_types == {name.split("-")[1]}, name  # tests/test_gradiend_pairs.py
    for name in ("stereoset", "crows", "seat"):
        assert METRICS.get(name).bias_types == every


def test_a_type_independent_fit_is_one_cache_entry_for_every_bias_type(data_dir, tmp_path):
    """Dropout's checkpoint does not depend on the bias type, so gender, race and religion runs share it; a method
    with per-type fits (CDA) keeps one entry per type."""
    from types import SimpleNamespace

    from bench.registry import make_method
    from bench.run.request import RunRequest
    from bench.run.runner import Runner

    runner = Runner(RunRequest(models=["synthetic"], methods=["base"], metrics=["crows"], cache_dir=str(tmp_path),
                               data_dir=str(data_dir)), out=None)
    subject = SimpleNamespace(identity={"model": "x", "stamps": []})
    for name, entries in (("dropout", 1), ("cda", 3)):
        method = make_method(name, {})
        keys = {runner.method_key(name, method, subject, ctx_for(data_dir, tmp_path, t))[0] for t in BIAS_TYPES}
        assert len(keys) == entries, name


def _paper_ternary(line: str, triples, choice: dict[int, int]) -> str:
    """bias-bench's `ternary_counterfactual_augmentation` for one line with a given group mapping (its loop)."""
    words = line.split()
    out = words[:]
    for i, word in enumerate(words):
        for t in triples:
            for g in range(3):
                if t[g] == word:
                    out[i] = t[choice[g]]
    return " ".join(out)


def test_ternary_cda_as_bias_bench(data_dir):
    from bench.data.paths import attribute_words
    from methods.counterfactual import PAPER_PUNCTUATION

    triples = attribute_words(data_dir, "race")
    paper = [tuple(triples)] + [tuple(tuple(w + m for w in t) for t in triples) for m in PAPER_PUNCTUATION]
    flat = [t for group in paper for t in group]
    exact = GroupSwapper(triples, exact=True)
    lines = ["the black cat met an asian dog in africa, near china.", "no attribute word here",
             "caucasian and white and black people of europe!"]  # fmt: skip
    for mapping in ({0: 1, 1: 2, 2: 0}, {0: 2, 1: 0, 2: 1}):
        for line in lines:
            assert exact.swap(line, mapping)[0] == _paper_ternary(line, flat, mapping)
    # "black" is in triples 0 and 2: the last one wins ("white"), as in bias-bench's loop
    assert exact.swap("black", {0: 1, 1: 0, 2: 0})[0] == "white"
    # default matching: capitalisation and punctuation kept, possessives found
    loose = GroupSwapper(triples)
    assert loose.swap("Black people's Africa, and ASIA's.", {0: 2, 2: 1}) == ("Asian people's Asia, and EUROPE's.", 3)
    # per line one random other group per group, seeded; two-sided; lines without attribute words dropped
    out = augment_multi_group(lines, loose, seed=0)
    assert out[1::2] == [lines[0], lines[2]] and len(out) == 4
    assert augment_multi_group(lines, loose, seed=0) == out
    for line, swapped in zip(out[1::2], out[0::2]):
        before = [m.group for m in loose.matches(line)]
        after = [m.group for m in loose.matches(swapped)]
        assert len(before) == len(after) and all(a != b for a, b in zip(before, after))
        mapping = {}
        for b, a in zip(before, after):
            assert mapping.setdefault(b, a) == a  # one target group per source group within a line


def test_sentence_debias_triples_and_subspace(data_dir):
    from bench.data.paths import attribute_words
    from methods.bias_sentences import counterfactual_tuples
    from methods.sentence_debias import bias_subspace, group_bias_subspace

    swapper = GroupSwapper(attribute_words(data_dir, "religion"))
    got = counterfactual_tuples(["The Rabbi read the Torah.", "No religion here."], swapper)
    assert got == [("the rabbi read the torah.", "the rabbi read the bible.", "the rabbi read the quran."),
                   ("the rabbi read the torah.", "the priest read the torah.", "the imam read the torah.")]
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(20, 6)), rng.normal(size=(20, 6))
    for x, y in zip(bias_subspace(a, b), group_bias_subspace([a, b])):
        np.testing.assert_array_equal(x, y)
    # three versions that differ along e0 only: the subspace is e0
    base = rng.normal(size=(30, 6))
    e0 = np.eye(6)[0]
    basis, ratio = group_bias_subspace([base - e0, base, base + 2 * e0])
    assert abs(abs(basis[0, 0]) - 1) < 1e-12 and ratio[0] == pytest.approx(1.0)


def test_rlace_multiclass_gradients_match_autograd():
    from methods.rlace import game_gradients_multi

    gen = torch.Generator().manual_seed(0)
    d, k, n = 7, 3, 11
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    y = torch.randint(0, k, (n,), generator=gen)
    p = torch.randn(d, d, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(d, k, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(k, generator=gen, dtype=torch.float64, requires_grad=True)
    s = (p + p.T) / 2
    loss = torch.nn.functional.cross_entropy(x @ (torch.eye(d, dtype=torch.float64) - s) @ w + b, y)
    loss.backward()
    got = game_gradients_multi(x, y, p.detach(), w.detach(), b.detach())
    assert float(got[0]) == pytest.approx(float(loss), rel=1e-12)
    for mine, auto in zip(got[1:], (p.grad, w.grad, b.grad)):
        torch.testing.assert_close(mine, auto, rtol=1e-10, atol=1e-12)


def test_rlace_erases_a_planted_three_class_concept():
    from methods.rlace import probe_loss, rlace

    rng = np.random.default_rng(0)
    n, d = 600, 10
    y = np.repeat(np.arange(3), n // 3)
    means = np.zeros((3, d))
    means[0, 0], means[1, 1], means[2, 0] = 2.0, 2.0, -2.0  # the classes differ in a 2-d subspace
    x = rng.normal(size=(n, d)) + means[y]
    before = probe_loss(x, y)[1]
    res = rlace(x, y, rank=2, n_iterations=3000, evaluate_every=100, seed=0)
    u = res.basis
    after = probe_loss(x - (x @ u) @ u.T, y)[1]
    assert before > 0.8 and after < 0.5, (before, after)  # chance 1/3
    assert u.shape == (d, 2)


def test_concept_examples_by_group_and_bios_refused(data_dir, tmp_path):
    from methods.bias_sentences import concept_examples

    ctx = ctx_for(data_dir, tmp_path, "race")
    texts, labels, counts = concept_examples(ctx, "LEACE", bios_file=None, max_bios=None, corpus=None,
                                             per_class=50, min_tokens=5)  # fmt: skip
    assert set(counts) == {"black", "caucasian", "asian"} and len(set(counts.values())) == 1
    assert sorted(set(labels.tolist())) == [0, 1, 2] and len(texts) == len(labels)
    with pytest.raises(DataError, match="gender labels only"):
        concept_examples(ctx, "RLACE", bios_file="bios.jsonl", max_bios=None, corpus=None, per_class=50,
                         min_tokens=5)  # fmt: skip


def test_self_debias_prompt_follows_the_bias_type(data_dir, tmp_path):
    from methods.self_debias import PROMPTS, SelfDebias
    from tiny_mlms import bert_subject as tiny

    subject = tiny(str(data_dir))
    for bias_type, words in (("race", "race/color"), ("religion", "religion"), ("gender", "gender")):
        art = SelfDebias().fit(subject, ctx_for(data_dir, tmp_path, bias_type))
        assert art["prompts"] == list(PROMPTS[bias_type]) and words + ": " in art["prompts"][0]
    art = SelfDebias(prompts="Be fair: ").fit(subject, ctx_for(data_dir, tmp_path, "race"))
    assert art["prompts"] == ["Be fair: "]


# ---- (c) the synthetic world plants race and religion --------------------------------------------------------
def test_the_world_writes_race_and_religion_sets(synthetic):
    from bench.synthetic import vocab as V

    data = Path(synthetic.data_dir)
    examples = ref.read_stereoset(data / "stereoset" / "dev.json")
    for bias_type in ("race", "religion"):
        mine = [e for e in examples if e["bias_type"] == bias_type]
        assert len(mine) == 144 and {e["target"] for e in mine} == set(V.GROUPS[bias_type])
        assert len(ref.read_crows(data / "crows_pairs" / "crows_pairs_anonymized.csv", ROWS[bias_type])) == 200
        for name in TESTS[bias_type]:
            assert (data / "seat" / f"{name}.jsonl").is_file()
    words = json.loads((data / "bias_attribute_words" / "bias_attribute_words.json").read_text())
    assert words["race"][0] == ["african", "european", "asian"] and words["religion"][0] == ["jewish", "christian", "muslim"]
    corpus = (data / "text_corpus" / "synthetic.txt").read_text().splitlines()
    assert sum("rabbi" in line or "jewish" in line for line in corpus) > 100


def race_religion_scores(subject, tmp_path) -> dict:
    out = {}
    for bias_type in ("race", "religion"):
        ctx = ctx_for(subject.data_dir, tmp_path, bias_type)
        out[bias_type] = {
            "ss": interval(StereoSet().score(subject, ctx).estimates[f"ss_{bias_type}"]),
            "crows": interval(CrowS().score(subject, ctx).estimates["crows"]),
            "seat": SEAT(n_permutations=1000).score(subject, ctx),
        }
    return out


@pytest.mark.slow
def test_planted_race_and_religion_are_detected(synthetic, tmp_path):
    for bias_type, s in race_religion_scores(synthetic, tmp_path).items():
        seat = s["seat"]
        ds = {k[2:]: round(v.point(), 3) for k, v in seat.estimates.items() if k.startswith("d:")}
        print(f"\n{bias_type}: SS {s['ss']}, CrowS {s['crows']}, SEAT {seat.estimates['seat'].point():.3f} {ds}")
        assert s["ss"].low > 50, (bias_type, s["ss"])
        assert s["crows"].low > 50, (bias_type, s["crows"])


@pytest.mark.slow
def test_random_weights_show_no_race_or_religion_bias(synthetic_random, tmp_path):
    for bias_type, s in race_religion_scores(synthetic_random, tmp_path).items():
        print(f"\nrandom control, {bias_type}: SS {s['ss']}, CrowS {s['crows']}")
        assert s["ss"].low <= 50 <= s["ss"].high, (bias_type, s["ss"])
        assert s["crows"].low <= 50 <= s["crows"].high, (bias_type, s["crows"])


# Measured on the pinned world (generator 5, weights 49c030ec59199db7), base race SS 100.00 [100, 100], CrowS
# 100.0: SS after CDA 84.03 (change -15.97 [-22.34, -10.49]), LEACE 84.03 (-15.97 [-22.00, -10.37]), RLACE 68.06
# (-31.94 [-38.63, -25.25]), SentenceDebias 89.58 (-10.42 [-14.89, -5.95]); CrowS CDA 95.5, LEACE 76.5, RLACE
# 74.0, SentenceDebias 98.5. These four must move race SS toward 50 with a paired CI of the change that excludes
# 0 (the pinned weights and the float64 fits are the same on every machine; CDA's training is float32 and may
# differ in the last digits on another CPU, far inside the margin of >= 10 points).
# INLP with bias-bench's binary "any race word vs. neutral" classes leaves race SS at 100.00 (one class per group,
# `group_classes=True`: 94.44, -5.56 [-9.22, -2.27]); SelfDebias leaves it at 100.00 (the tiny model cannot read
# a prompt, as for gender). They run for race; they are only checked not to move it away from 50.
@pytest.fixture(scope="module")
def race_ctx(synthetic, tmp_path_factory):
    return ctx_for(synthetic.data_dir, tmp_path_factory.mktemp("race-cache"), "race")


def _race_ss_change(synthetic, race_ctx, method_name: str):
    from bench.registry import make_method
    from bench.stats import compare

    method = make_method(method_name)
    debiased = method.apply(synthetic, method.fit(synthetic, race_ctx))
    base = StereoSet().score(synthetic, race_ctx).estimates["ss_race"]
    new = StereoSet().score(debiased, race_ctx).estimates["ss_race"]
    cmp = compare(new, base)
    print(f"\n{method_name} (race): SS {base.point():.2f} -> {new.point():.2f}, change {cmp.delta:+.2f} "
          f"[{cmp.low:+.2f}, {cmp.high:+.2f}]")
    return base, new, cmp


@pytest.mark.slow
@pytest.mark.parametrize("method_name", ["cda", "leace", "rlace", "sentence-debias"])
def test_race_baselines_move_the_planted_race_bias(method_name, synthetic, race_ctx):
    base, new, cmp = _race_ss_change(synthetic, race_ctx, method_name)
    assert interval(base).low > 50
    assert abs(new.point() - 50) < abs(base.point() - 50) and cmp.high < 0


@pytest.mark.slow
@pytest.mark.parametrize("method_name", ["inlp", "self-debias"])
def test_race_baselines_that_do_not_move_it_here_still_run(method_name, synthetic, race_ctx):
    base, new, cmp = _race_ss_change(synthetic, race_ctx, method_name)
    assert abs(new.point() - 50) <= abs(base.point() - 50)  # never away from 50 (measured: no change, 100.00)


def test_leaderboard_ss_column_follows_each_groups_bias_type():
    """One SS column for every bias type: a race group shows ss_race, a gender group ss_gender (the sub-metric
    comes from StereoSet.columns_for), in one table rendered from the rows of two runs."""
    from reports.leaderboard import render_markdown

    def row(bias_type, submetric, value):
        return dict(model="m", method="base", label="Base", group=0, metric="stereoset", submetric=submetric,
                    status="ok", value=value, ci_low=value - 1, ci_high=value + 1, bias_type=bias_type, seed=0)

    text = render_markdown([row("race", "ss_race", 61.0), row("race", "ss_gender", 99.0),
                            row("gender", "ss_gender", 72.0), row("gender", "ss_race", 98.0)])
    lines = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| m")}
    assert "61.00" in lines["m (race)"] and "99.00" not in lines["m (race)"]
    assert "72.00" in lines["m (gender)"] and "98.00" not in lines["m (gender)"]
