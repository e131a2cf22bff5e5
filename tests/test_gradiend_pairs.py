"""Pair GRADIENDs for race and religion (SPEC-beyond §8): data reader and corpus builder, one training step of the
shared trainer against autograd + AdamW (float64, including a batch whose words differ in token count), BalancedBS
against an independent computation, the encoder metrics, and `gradiend` standing for the pairs in a race run."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bench.api import Context
from bench.errors import DataError
from methods.gradiend import pairs_data as P
from methods.gradiend.pairs_examples import PairTrainBatches
from tests.gradiend_helpers import SHARED_DATA, reference_adamw_step, tiny_subject

pytestmark = pytest.mark.usefixtures("one_thread")

ATTRIBUTES = {"race": [["black", "caucasian", "asian"], ["african", "caucasian", "asian"], ["black", "white", "asian"],
                       ["africa", "america", "asia"]],
              "religion": [["jewish", "christian", "muslim"], ["rabbi", "priest", "imam"]]}  # fmt: skip
CORPUS = [
    "The Black cat sat on the mat .",  # Black -> [MASK]; counterparts in its casing: Caucasian / White, Asian
    "A black, white and asian flag .",  # `black,` is no whole token: only white and asian match
    "Some MASK and KAS lines from Africa stay .",  # upper-case M/A/S/K in the first words: kept (no regex bug)
    "black and black again .",  # the word twice: no row for it
    "The rabbi spoke . The imam listened .",  # two sentences (split at ` . `)
    "Nothing to see here .",
]


def write_attributes(folder: Path) -> None:
    import json

    (folder / "bias_attribute_words").mkdir(parents=True, exist_ok=True)
    (folder / "bias_attribute_words" / "bias_attribute_words.json").write_text(json.dumps(ATTRIBUTES))


@pytest.fixture
def corpus_dir(tmp_path):
    write_attributes(tmp_path)
    (tmp_path / "text_corpus").mkdir()
    (tmp_path / "text_corpus" / "small.txt").write_text("\n".join(CORPUS) + "\n")
    return tmp_path


# ---- data ------------------------------------------------------------------------------------------------------
def test_class_words_follow_the_triples_columns(corpus_dir):
    triples, words = P.class_words(corpus_dir, "race")
    assert words == {"black": ["black", "african", "africa"], "white": ["caucasian", "white", "america"],
                     "asian": ["asian", "asia"]}  # fmt: skip
    assert triples[0] == ["black", "caucasian", "asian"]


def test_corpus_builder_rules(corpus_dir):
    data = P.load(corpus_dir, "race")
    assert data.source.startswith("built from")
    black = [(r.masked, dict(r.words)) for r in data.rows["black"]]
    cat = "The [MASK] cat sat on the mat ."
    # `Black` is in two triples (black/caucasian/asian and black/white/asian): one row each, in its casing
    assert (cat, {"black": "Black", "white": "Caucasian", "asian": "Asian"}) in black
    assert (cat, {"black": "Black", "white": "White", "asian": "Asian"}) in black
    assert not any("black," in m.lower() or "and black again" in m for m, _ in black)
    flag = "A black, white and [MASK] flag ."
    assert (flag, {"black": "black", "white": "caucasian", "asian": "asian"}) in [(r.masked, dict(r.words)) for r in data.rows["asian"]]
    assert any(r.masked == "A black, [MASK] and asian flag ." for r in data.rows["white"])
    africa = [r for r in data.rows["black"] if r.masked.startswith("Some MASK and KAS")]
    assert [r.word("black") for r in africa] == ["Africa"] and africa[0].word("white") == "America"
    assert all(r.masked.count(P.MASK) == 1 for rows in data.rows.values() for r in rows)
    religion = P.load(corpus_dir, "religion")
    assert [r.masked for r in religion.rows["jewish"]] == ["The [MASK] spoke ."]
    assert [r.masked for r in religion.rows["muslim"]] == ["The [MASK] listened ."]
    assert data.neutral == ["The rabbi spoke .", "The imam listened .", "Nothing to see here ."]  # race-neutral
    assert religion.neutral == [s for s in P.sentences(CORPUS) if "rabbi" not in s and "imam" not in s]


def test_class_files_are_read_and_round_trip(corpus_dir, tmp_path):
    built = P.load(corpus_dir, "race")
    P.write_class_files(built, corpus_dir / "gradiend" / "race")
    read = P.load(corpus_dir, "race")
    assert not read.source.startswith("built") and read.rows == built.rows
    with open(corpus_dir / "gradiend" / "race" / "white.csv", "a", newline="") as f:
        csv.writer(f).writerow(["no mask here", "train", "black", "white", "asian"])
    with pytest.raises(DataError, match="exactly one"):
        P.load(corpus_dir, "race")


def test_directed_sets_labels_and_downsampling():
    rows = {"white": [P.GroupRow(f"w{i} [MASK]", "train", (("black", "Black"), ("white", "White"), ("asian", "Asian")))
                      for i in range(5)],
            "black": [P.GroupRow(f"b{i} [MASK]", "train", (("black", "black"), ("white", "white"), ("asian", "asian")))
                      for i in range(3)], "asian": []}  # fmt: skip
    data = P.GroupData("race", rows, {}, [], "test")
    ab = data.directed("white", "black", "train", 1)
    assert ab[0] == P.Directed("w0 [MASK]", "White", "Black", 1)
    pair = data.pair_rows(("white", "black"), "train")
    assert [r.label for r in pair] == [1, 1, 1, -1, -1, -1]  # both directions downsampled to the smaller (3)
    assert pair[3] == P.Directed("b0 [MASK]", "black", "white", -1)
    assert pair == data.pair_rows(("white", "black"), "train")  # seeded


def test_real_wikitext_corpus():
    race, religion = P.load(SHARED_DATA, "race"), P.load(SHARED_DATA, "religion")
    assert {c: len(r) for c, r in race.rows.items()} == {"black": 335, "white": 315, "asian": 199}
    assert {c: len(r) for c, r in religion.rows.items()} == {"jewish": 88, "christian": 112, "muslim": 11}
    for data in (race, religion):
        for cls, rows in data.rows.items():
            splits = {}
            for r in rows:
                assert splits.setdefault(r.masked, r.split) == r.split, "a sentence is in one split only"
                assert r.masked.count(P.MASK) == 1
                fact = r.word(cls)
                assert f" {fact} " in f" {r.masked.replace(P.MASK, fact)} "
                for other in data.classes:  # every word in the factual word's casing
                    assert r.word(other)[:1].isupper() == fact[:1].isupper()
            counts = pd.Series(list(splits.values())).value_counts()
            n = len(splits)
            assert counts["train"] == int(0.7 * n) and counts.get("validation", 0) == int(0.2 * n)
    # the reference's "[MASK]" regex would drop every row with an upper-case M, A, S or K in its first ten words
    kept = [r for r in race.rows["black"] if set("MASK") & set("".join(r.masked.split(" ")[:10]).replace(P.MASK, ""))]
    assert len(kept) > 100
    assert [len(race.pair_rows(p, "train")) for p in P.PAIRS["race"]] == [440, 290, 290]


# ---- one training step through the shared trainer -----------------------------------------------------------------
@pytest.fixture(scope="module")
def bert():
    subject = tiny_subject(hidden=32, layers=2)
    subject.model.double()
    return subject


def _batch_grad(subject, params, examples):
    """Hugging Face's MLM loss over the batch = mean over all masked tokens (each example alone, then weighted)."""
    total = sum(len(e.positions) for e in examples)
    loss = 0
    for e in examples:
        lab = torch.full((1, len(e.ids)), -100)
        lab[0, e.positions] = torch.tensor(e.labels)
        loss = loss + subject.model(input_ids=torch.tensor([e.ids]), labels=lab).loss * len(e.positions) / total
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params.params)])


def _pair_rows():
    words = [("white", "black"), ("caucasian", "zyxwvutsr"), ("Europe", "Africa")]  # zyxwvutsr: several tokens
    texts = ["the [MASK] house is big .", "a [MASK] family came .", "[MASK] is far away ."]
    rows = [P.Directed(t, a, b, 1) for t, (a, b) in zip(texts, words)]
    return rows + [P.Directed(t, b, a, -1) for t, (a, b) in zip(texts, words) if a != "caucasian"]  # single tokens


@pytest.mark.parametrize("k", [0, 1])
def test_one_training_step_equals_autograd_and_adamw(bert, tmp_path, k):
    from methods.gradiend import train as gtrain
    from methods.gradiend.examples import MaskedExample
    from methods.gradiend.model import Gradiend
    from methods.gradiend.params import ParamSet

    subject, params = bert, ParamSet.select(bert.model)
    batches = PairTrainBatches(_pair_rows(), subject.tokenizer, roberta=False, batch_size=3)
    examples = batches.examples(k)
    twin = batches.batch(k).twin
    assert (twin is not None) == (k == 0), "only direction +1 holds the multi-token word: a second forward pass"
    fact = [MaskedExample(e.ids, e.positions, e.labels) for e, _ in examples]
    counter = [t if t is not None else MaskedExample(e.ids, e.positions, e.counter) for e, t in examples]
    x = _batch_grad(subject, params, fact)
    t = x - _batch_grad(subject, params, counter)
    rows = [gtrain.EncoderRow("", "white" if i % 2 else "black", 1, -1, e) for i, e in enumerate(fact + counter)]
    val = gtrain.ValSet(subject, params, rows, 4, positive="white")
    cfg = gtrain.TrainConfig(seeds=(0,), lr=1e-3, eps=1e-8, batch_size=3, max_steps=1, eval_every=1)

    class Shifted:  # step 1 of the trainer on batch k
        def __len__(self):
            return 1

        def batch(self, j, device=None):
            return batches.batch(j + k, device)

    run = gtrain.train_run(subject, params, Shifted(), val, cfg, 0, tmp_path / "run",
                           Context(data_dir=None, cache_dir=tmp_path, progress=False))  # fmt: skip
    want = reference_adamw_step(params.n, x, t, run.history[0]["flipped"])
    assert not torch.equal(run.gradiend.flat, Gradiend.initialised(params.n, 0, dtype=torch.float64).flat)
    assert torch.allclose(run.gradiend.flat, want, rtol=1e-10, atol=1e-14)


def test_training_batches_alternate_directions(bert):
    batches = PairTrainBatches(_pair_rows(), bert.tokenizer, roberta=False, batch_size=2)
    assert len(batches) == 3  # 5 rows, batches of 2
    tok = bert.tokenizer
    words = [[tok.decode(e.labels) for e, _ in batches.examples(k)] for k in range(4)]
    assert set(words[0]) | set(words[2]) <= {"white", "caucasian", "europe"}  # direction +1
    assert set(words[1]) | set(words[3]) == {"black", "africa"}  # direction -1, cyclic
    assert words[1] != words[3] or len(set(words[1])) == 2


# ---- BalancedBS and LMS_Dec against an independent computation -------------------------------------------------
def test_balanced_bs_equals_an_independent_computation(bert):
    from methods.gradiend.pairs import PairEvaluator

    subject, tok = bert, bert.tokenizer
    words = {"white": ["white", "caucasian", "zyxwvutsr"], "black": ["black", "africa"], "asian": ["asian"]}
    rows = {c: [] for c in ("black", "white", "asian")}
    for i, (text, a, b) in enumerate([("the [MASK] house is big .", "White", "Black"), ("a [MASK] family came .", "white", "black"),
                                      ("we saw the [MASK] flag .", "caucasian", "africa")]):  # fmt: skip
        w = (("black", b), ("white", a), ("asian", "asian"))
        rows["white"].append(P.GroupRow(text, "test", w))
        rows["black"].append(P.GroupRow(text, "test", w))
    data = P.GroupData("race", rows, words, [], "test")
    ev = PairEvaluator(subject, data, ("white", "black"), batch_size=2)
    got = ev.evaluate()
    p = np.zeros((len(ev.rows), 2))
    with torch.no_grad():
        for i, r in enumerate(ev.rows):
            for g, cls in enumerate(("white", "black")):
                for w in words[cls]:
                    w = P.in_casing(w, r.factual)
                    ids = tok.encode(w, add_special_tokens=False)
                    text = r.masked.replace(P.MASK, " ".join([tok.mask_token] * len(ids)))
                    enc = tok(text, return_tensors="pt")
                    logits = subject.model(**enc).logits[0]
                    pos = (enc["input_ids"][0] == tok.mask_token_id).nonzero()[:, 0]
                    p[i, g] += float(torch.prod(torch.stack([torch.softmax(logits[q], -1)[j] for q, j in zip(pos, ids)])))
    lms = ev.lms()
    assert got["P(white)"] == pytest.approx(p[:, 0].mean(), rel=1e-9)
    assert got["P(black)"] == pytest.approx(p[:, 1].mean(), rel=1e-9)
    want = lms * np.mean([(1 - abs(a - b)) * min(a, b) for a, b in p])
    assert got["BalancedBS"] == pytest.approx(want, rel=1e-9)
    # LMS_Dec never masks the group word: every masked label is another token of the sentence
    group_ids = {i for ws in words.values() for w in ws for i in tok.encode(w, add_special_tokens=False)}
    assert all(not set(e.labels) & group_ids for e in ev.lms_items)


# ---- encoder metrics -------------------------------------------------------------------------------------------
def test_pair_metrics():
    from methods.gradiend.pairs import pair_metrics

    frame = pd.DataFrame({"kind": ["white", "white", "black", "black", "asian", "neutral", "masked-neutral"],
                          "h": [0.9, 0.7, -0.8, 0.1, 0.05, -0.02, 0.6]})  # fmt: skip
    m = pair_metrics(frame, ("white", "black"))
    assert m["Acc_pair"] == 0.75
    assert m["Cor_pair"] == pytest.approx(np.corrcoef([0.9, 0.7, -0.8, 0.1], [1, 1, -1, -1])[0, 1])
    assert m["mean|h| third"] == pytest.approx(0.05) and m["mean|h| neutral"] == pytest.approx(0.02)
    # three classes: predictions 1, 1, -1, 0, 0, 0, 1 against labels 1, 1, -1, -1, 0, 0, 0 -> recalls 1, 1/2, 2/3
    assert m["Acc_Enc"] == pytest.approx((1 + 0.5 + 2 / 3) / 3)


# ---- `gradiend` in a race / religion run -------------------------------------------------------------------------
def test_gradiend_stands_for_the_pairs_of_a_type():
    from bench.registry import METHODS
    from bench.run.request import RunRequest

    def methods(bias_type, names):
        return RunRequest(models=["synthetic"], methods=names, metrics=[], bias_type=bias_type).normalised().methods

    race = ["gradiend-race-white-black", "gradiend-race-white-asian", "gradiend-race-black-asian"]
    assert methods("race", ["gradiend"]) == ["base", *race]
    assert methods("race", ["gradiend-bpi+inlp"]) == ["base", *(f"{m}+inlp" for m in race)]
    assert methods("religion", ["gradiend"])[1:] == ["gradiend-religion-christian-muslim",
                                                     "gradiend-religion-christian-jewish", "gradiend-religion-muslim-jewish"]  # fmt: skip
    assert methods("gender", ["gradiend"]) == ["base", "gradiend-bpi"]
    assert methods("race", ["gradiend-fpi"]) == ["base", "gradiend-fpi"]  # no pair stands in: n/a cells
    assert METHODS.canonical("gradiend-race2") == "gradiend-race-white-asian"
    assert METHODS.canonical("gradiend-religion3") == "gradiend-religion-muslim-jewish"


def test_pairs_serve_masked_lms_of_their_type_only():
    from bench.api import serves_bias_type, serves_model_kind
    from methods.gradiend.pair_method import PAIR_PLUGINS

    for name, cls in PAIR_PLUGINS.items():
        assert serves_bias_type(cls, cls.bias_type) and not serves_bias_type(cls, "gender")
        assert serves_model_kind(cls, "mlm") and not serves_model_kind(cls, "clm")
        assert name.endswith("-".join(cls.pair))


@pytest.mark.parametrize("bias_type", ["race", "religion"])
def test_iclr_race_and_religion_suites(bias_type):
    from bench.run.request import RunRequest
    from bench.run.suite import load_suite
    from methods.gradiend.pair_method import pair_plugins

    suite = load_suite(f"iclr-{bias_type}")
    assert suite["bias_type"] == bias_type and suite["metrics"] == ["stereoset", "seat", "glue", "superglue"]
    request = RunRequest(models=suite["models"], methods=suite["methods"], metrics=suite["metrics"],
                         bias_type=bias_type).normalised()  # fmt: skip
    assert request.methods == ["base", *pair_plugins(bias_type), "cda", "dropout", "inlp", "self-debias",
                               "sentence-debias"]  # fmt: skip
