"""GRADIEND data: loading the file formats, building GENTER/GENEUTRAL/GENTYPES-style sets from a text corpus,
training batches (SPEC §1.2), encoder rows (§1.6) and the decoder's masked sets (§1.7)."""
from __future__ import annotations

import csv
import random
import re

import numpy as np
import pytest

from bench.errors import DataError
from methods.gradiend import data as gdata
from methods.gradiend.examples import (TrainBatches, gender_rows, gentypes_examples, label_ids, lms_examples,
                                       neutral_rows, pronoun_words)  # fmt: skip
from tests.gradiend_helpers import NAMES, SHARED_DATA, TEMPLATES, write_data_dir
from tests.tokenizers_fixture import load_bert_tokenizer


@pytest.fixture(scope="module")
def tok():
    return load_bert_tokenizer(SHARED_DATA)


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    return gdata.load(write_data_dir(tmp_path_factory.mktemp("gdata")))


def test_published_files_load_by_split(small_data):
    d = small_data
    assert [len(d.genter[s]) for s in gdata.SPLITS] == [8, 2, 2]
    assert d.genter["train"][0].masked == TEMPLATES[0]
    assert d.names["val"] == NAMES["validation"] and d.names["test"] == NAMES["test"]
    assert len(d.geneutral) == 8 and len(d.gentypes) == 4
    assert {n.name for n in d.namextend} >= {"John", "Mary", "Taylor"}
    assert all(p.is_file() for p in d.files)


def test_malformed_files_name_file_and_row(tmp_path):
    folder = write_data_dir(tmp_path)
    rows = list(csv.reader(open(folder / "gradiend" / "genter.csv")))
    rows[3][2] = "no slots here"
    with open(folder / "gradiend" / "genter.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    with pytest.raises(DataError, match=r"genter.csv row 4"):
        gdata.load(folder)
    (folder / "gradiend" / "namexact.csv").unlink()
    with pytest.raises(DataError, match="namexact.csv"):
        gdata.load(folder)


def test_genter_without_split_column_is_split_87_5_2_5_10(tmp_path):
    path = tmp_path / "genter.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["masked", "label"])
        for i in range(200):
            w.writerow([f"[NAME] saw item {i} and [PRONOUN] left.", "MF"[i % 2]])
    split = gdata.load_genter_file(path)
    assert [len(split[s]) for s in gdata.SPLITS] == [175, 5, 20]
    assert len({t.masked for s in gdata.SPLITS for t in split[s]}) == 200


def test_built_from_real_corpus_obeys_the_filters(data_dir):
    """No genter/geneutral/gentypes in the real data dir: built from its text corpus with the paper's filters."""
    d = gdata.load(data_dir)
    assert "built from" in d.sources["genter"]
    gendered = gdata.gendered_words(data_dir)
    name_gender = {n: g for s in gdata.load_namexact(data_dir).values() for g in "MF" for n in s[g]}
    templates = [t for s in gdata.SPLITS for t in d.genter[s]]
    assert len(templates) >= 5 and all(d.genter[s] for s in gdata.SPLITS)  # WikiText-2 valid+test: few bios
    for t in templates:
        assert t.masked.count("[NAME]") == 1 and t.masked.count("[PRONOUN]") >= 1
        assert t.masked.index("[NAME]") < t.masked.index("[PRONOUN]")
        words = [w.lower() for w in re.findall(r"[A-Za-z]+", t.masked.replace("[NAME]", "").replace("[PRONOUN]", ""))]
        assert not [w for w in words if w in gendered], t.masked
        assert not [w for w in re.findall(r"[A-Za-z]+", t.masked) if w in name_gender and w not in ("NAME", "PRONOUN")]
    for s in d.geneutral[:500]:
        assert s == s.lower()
        assert not set(re.findall(r"[a-z]+", s)) & gendered
    assert all(t.count("[NAME]") == 1 for t in d.gentypes)
    # the split is 87.5 / 2.5 / 10 % of what was found
    n = len(templates)
    assert len(d.genter["val"]) == max(1, round(0.025 * n)) and len(d.genter["test"]) == max(1, round(0.10 * n))


def test_build_from_corpus_examples():
    names = {"John": "M", "Mary": "F"}
    gendered = frozenset({"he", "she", "him", "his", "her", "hers", "himself", "herself", "king"})
    genter, neutral, types = gdata.build_from_corpus([
        "John said he was late .",          # GENTER
        "He said John was late .",          # pronoun before the name: dropped
        "Mary said he was late .",          # wrong pronoun: dropped
        "John met the king and he left .",  # other gendered word: dropped
        "Mary thinks she can . She did .",  # two pronouns
        "The train was late .",             # neutral
        "John likes trains .",              # GENTYPES-style
    ], names, gendered)  # fmt: skip
    assert [t.masked for t in genter] == ["[NAME] said [PRONOUN] was late .", "[NAME] thinks [PRONOUN] can . [PRONOUN] did ."]
    assert [t.gender for t in genter] == ["M", "F"]
    assert neutral == ["the train was late ."]
    assert types == ["[NAME] likes trains ."]


def test_labels_capitalise_at_sentence_start(tok):
    assert pronoun_words("[NAME] said [PRONOUN] was late.", "M") == ["he"]
    assert pronoun_words("[NAME] left. [PRONOUN] was late. [PRONOUN] ran.", "F") == ["She", "She"]
    assert pronoun_words("[NAME] left... [PRONOUN] was late.", "F") == ["she"]
    assert pronoun_words("[PRONOUN] said [NAME] was late.", "M") == ["He"]
    assert label_ids(tok, "[NAME] said [PRONOUN] was late.", "F", roberta=False) == [tok.convert_tokens_to_ids("she")]


def test_roberta_labels_have_a_leading_space(tmp_path):
    from tests.tokenizers_fixture import train_roberta_tokenizer

    rtok = train_roberta_tokenizer(SHARED_DATA, tmp_path / "bpe", vocab_size=800, max_lines=600)
    mid = label_ids(rtok, "[NAME] said [PRONOUN] was late.", "M", roberta=True)
    assert mid == [rtok.encode(" he", add_special_tokens=False)[0]]
    assert rtok.convert_ids_to_tokens(mid)[0].startswith("Ġ")
    start = label_ids(rtok, "[PRONOUN] said [NAME] left. [PRONOUN] ran.", "F", roberta=True)
    assert start == [rtok.encode("She", add_special_tokens=False)[0], rtok.encode(" She", add_special_tokens=False)[0]]


def test_train_batches_follow_spec(tok, small_data):
    train = small_data.genter["train"]
    tb = TrainBatches(train, small_data.names["train"], tok, roberta=False, batch_size=5)
    assert len(tb) == len(train)
    starts = np.random.default_rng(42).permutation(5 * len(train))
    for k in range(6):
        gender = random.Random(k).choice(["M", "F"])
        assert tb.gender(k) == gender
        examples = tb.examples(k)
        assert len(examples) == 5
        for o, ex in enumerate(examples):
            template = train[(starts[k] % len(train) + o) % len(train)].masked
            text = tok.decode(ex.ids, skip_special_tokens=True)
            names = [n for n in NAMES["train"][gender] if n.lower() in text]
            assert names, "every example gets a name of the batch's gender from the train split"
            assert not any(n.lower() in text for g in NAMES if g != "train" for n in NAMES[g]["M"] + NAMES[g]["F"])
            assert [ex.ids[p] for p in ex.positions] == [tok.mask_token_id] * template.count("[PRONOUN]")
            assert ex.labels == label_ids(tok, template, gender, False)
            assert ex.counter == label_ids(tok, template, "F" if gender == "M" else "M", False)
    b1, b2 = tb.batch(3), tb.batch(3)
    assert b1.input_ids.equal(b2.input_ids) and b1.labels.equal(b2.labels)


def test_truncated_masks_are_dropped(tok):
    long = "[NAME] " + "went far away and " * 20 + "then [PRONOUN] came back."
    templates = [gdata.Template(long, "M", "train"), gdata.Template(TEMPLATES[0], "M", "train")]
    tb = TrainBatches(templates, NAMES["train"], tok, roberta=False, batch_size=2, max_length=16)
    assert all(len(e.positions) == 1 for e in tb.examples(0))
    assert len(tb.examples(0)) == 1


def test_encoder_rows(tok, small_data):
    test = small_data.genter["test"]
    rows = gender_rows(test, small_data.names["test"], tok, roberta=False)
    assert [r.kind for r in rows] == ["F", "M"] * len(test)
    assert [r.template for r in rows] == [i for i in range(len(test)) for _ in (0, 1)]
    f_names = iter(NAMES["test"]["F"] * 3)
    for r in rows[::2]:
        assert next(f_names).lower() in tok.decode(r.example.ids)
    neutral = neutral_rows(test, small_data.names["test"], small_data.geneutral, tok, roberta=False)
    assert [r.type for r in neutral] == [2] * (2 * len(test)) + [3] * len(small_data.geneutral)
    protected = {tok.convert_tokens_to_ids(w) for w in ("he", "she")} | set(tok.all_special_ids)
    for r in neutral:
        (pos,) = r.example.positions
        assert r.example.ids[pos] == tok.mask_token_id and r.example.labels[0] not in protected
        if r.type == 2:  # never a token of the name or of a pronoun
            start, end = tok(r.text, return_offsets_mapping=True)["offset_mapping"][pos]
            words = "|".join(["he", "she", "He", "She"] + NAMES["test"]["F"] + NAMES["test"]["M"])
            spans = [(m.start(), m.end()) for m in re.finditer(rf"\b(?:{words})\b", r.text)]
            assert len(spans) >= 2 and not any(a < end and start < b for a, b in spans)


def test_lms_and_gentypes_items(tok, small_data):
    items = lms_examples(small_data.geneutral, tok, seed=42)
    enc = tok(small_data.geneutral, return_special_tokens_mask=True)
    for ex, ids, special in zip(items, enc["input_ids"], enc["special_tokens_mask"]):
        n_words = len(ids) - sum(special)
        assert len(ex.positions) == max(1, int(0.15 * n_words))
        assert all(not special[p] for p in ex.positions)
        assert ex.labels == [ids[p] for p in ex.positions]
        assert all(ex.ids[p] == tok.mask_token_id for p in ex.positions)
    assert items[0].positions == lms_examples(small_data.geneutral, tok, seed=42)[0].positions
    types = gentypes_examples(small_data.gentypes, tok)
    assert all(len(t.positions) == 1 and t.ids[t.positions[0]] == tok.mask_token_id for t in types)
