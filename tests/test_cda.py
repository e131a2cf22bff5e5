"""CDA: counterfactual swapping (both ways, tricky text, two-sided), MLM training mechanics, fitted weights."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from bench.api import Context
from bench.data.paths import attribute_words, text_corpus
from bench.errors import TrainingDiverged
from methods.counterfactual import (
    FEMALE,
    MALE,
    CounterfactualSwapper,
    augment_two_sided,
    paper_pairs,
    paper_roundtrip,
)
from bench.models.mlm_data import block_order, encode_line_by_line, group_into_blocks
from bench.models.mlm_training import MLMTrainingConfig, masked_lm_loss, mlm_loss, train_mlm
from tests.tokenizers_fixture import load_bert_tokenizer, tiny_bert


@pytest.fixture(scope="module")
def pairs(data_dir):
    return attribute_words(data_dir, "gender")


@pytest.fixture(scope="module")
def swapper(pairs):
    return CounterfactualSwapper(pairs)


@pytest.fixture(scope="module")
def tokenizer(data_dir):
    return load_bert_tokenizer(data_dir)


# ---- swapping ------------------------------------------------------------------------------------------------


def test_attribute_list_and_paper_variants(pairs):
    assert len(pairs) == 57
    variants = paper_pairs(pairs)
    assert len(variants) == 57 * 7
    assert ("him,", "her,") in variants and ("mr.?", "mrs.?") in variants


@pytest.mark.parametrize(
    "text, expected",
    [
        ("He said him, and HIS man's hat.", "She said her, and HER woman's hat."),
        ("She gave her sister the queen's crown!", "He gave his brother the king's crown!"),
        ("“Her brother!” she cried (the actress).", "“His sister!” he cried (the actor)."),
        ("Mr. Smith met Mrs. Jones; the boys and girls.", "Ms. Smith met Mr. Jones; the girls and guys."),
        ("he. she? him! himself; herself: ma'am", "she. he? her! herself; himself: sir"),
        ("The X-Men and a he-goat; he2 and his_", "The X-Men and a he-goat; he2 and his_"),
        ("  spaces\tkept  he  ", "  spaces\tkept  she  "),
    ],
)
def test_swap_both_ways_on_tricky_text(swapper, text, expected):
    out, n = swapper.swap(text)
    assert out == expected
    # the number of swaps equals the number of words that changed
    assert n == sum(a != b for a, b in zip(text.split(), expected.split()))


def test_ambiguous_words_follow_the_last_pair_in_the_list(swapper, pairs):
    # her is female in (him, her) and (his, her); the pair listed last wins, as in bias-bench
    last = {}
    for m, f in pairs:
        last[m], last[f] = f, m
    for word in ("her", "girl", "lady", "ladies", "sir", "mr."):
        assert swapper.swap(word)[0] == last[word]
    assert swapper.swap("her")[0] == "his" and swapper.swap("girl")[0] == "guy"


def test_sides(swapper):
    assert swapper.sides("He and his wife") == {MALE, FEMALE}
    assert swapper.sides("The King spoke.") == {MALE}
    assert swapper.sides("nothing gendered here") == set()


def test_only_pair_swaps_just_that_pair(swapper):
    assert swapper.swap("He met the boy and his girl.", only_pair=("boy", "girl")) == ("He met the girl and his boy.", 2)
    assert swapper.swap("He met the boy.", only_pair=("he", "she")) == ("She met the boy.", 1)


def _paper_reference(sentence: str, pairs) -> tuple[str, bool]:
    """bias-bench's gender_counterfactual_augmentation for one sentence, written out as in the paper's code."""
    bias_attribute_words = [list(p) for p in pairs]
    for punctuation in [".", ",", "?", "!", ";", ":"]:
        for words in [list(p) for p in pairs]:
            bias_attribute_words.append([w + punctuation for w in words])
    words = sentence.split()
    augmented_sentence = words[:]
    augmented = False
    for position, word in enumerate(words):
        for male_word, female_word in bias_attribute_words:
            if male_word == word:
                augmented = True
                augmented_sentence[position] = female_word
            if female_word == word:
                augmented = True
                augmented_sentence[position] = male_word
    return " ".join(augmented_sentence), augmented


def test_exact_paper_swap_matches_the_paper_code(data_dir, pairs):
    exact = CounterfactualSwapper(pairs, exact=True)
    lines = text_corpus(data_dir, max_lines=600)
    lines += ["He said him, and his man's hat.", "her. Her her,"]
    changed = 0
    for line in lines:
        ref, augmented = _paper_reference(line, pairs)
        out, n = exact.swap(line)
        assert (n > 0) == augmented
        if augmented:
            assert out == ref
            changed += 1
    assert changed > 100


def test_default_swap_equals_paper_swap_on_lowercased_pretokenised_text(data_dir, pairs, swapper):
    # WikiText is pre-tokenised (punctuation spaced out); lower-cased, the two modes must agree exactly ...
    lines = text_corpus(data_dir, max_lines=1500)
    for line in lines:
        low = line.lower()
        ref, augmented = _paper_reference(low, pairs)
        out, n = swapper.swap(low)
        assert (n > 0) == augmented
        if augmented:
            assert out == ref
    # ... while on the original text the default also swaps capitalised words the paper's split misses
    more = sum(swapper.swap(l)[1] > CounterfactualSwapper(pairs, exact=True).swap(l)[1] for l in lines)
    assert more > 20


def test_two_sided_augmentation_keeps_both_sides_and_drops_neutral_lines(swapper):
    lines = ["He is a doctor.", "The weather is fine.", "Her mother smiled, and she left.", "No words here either"]
    out = augment_two_sided(lines, swapper)
    assert out == [
        "She is a doctor.", "He is a doctor.",
        "His father smiled, and he left.", "Her mother smiled, and she left.",
    ]  # fmt: skip


def test_paper_roundtrip_decodes_like_the_tokenizer(tokenizer):
    lines = ["He said: Hello, World!", "The Queen's guard."]
    expected = [tokenizer.decode(tokenizer(l, add_special_tokens=False)["input_ids"]) for l in lines]
    assert paper_roundtrip(lines, tokenizer) == expected
    assert expected[0] == "he said : hello, world!"  # uncased: lower-cased, and some punctuation re-glued


def test_cda_training_lines_from_a_data_dir(tmp_path, tokenizer):
    (tmp_path / "text_corpus").mkdir()
    (tmp_path / "text_corpus" / "a.txt").write_text(
        "= Heading =\nThe king met his son.\nA tree grew.\nShe sang, HE listened.\n", encoding="utf-8"
    )
    (tmp_path / "bias_attribute_words").mkdir()
    (tmp_path / "bias_attribute_words" / "bias_attribute_words.json").write_text(
        json.dumps({"gender": [["king", "queen"], ["son", "daughter"], ["he", "she"], ["his", "her"]]})
    )
    from methods.cda import CDA

    ctx = Context(data_dir=tmp_path, cache_dir=tmp_path / "cache", progress=False)

    class S:  # only the tokenizer is needed for the lines
        pass

    subject = S()
    subject.tokenizer = tokenizer
    assert CDA().training_lines(subject, ctx) == [
        "The queen met her daughter.", "The king met his son.", "He sang, SHE listened.", "She sang, HE listened.",
    ]  # fmt: skip
    # the paper's swap sees tokenizer-decoded text split on whitespace: "sang," is one piece, "he" lower-cased
    assert CDA(exact_paper_swap=True).training_lines(subject, ctx) == [
        "the queen met her daughter.", "the king met his son.", "he sang, she listened.", "she sang, he listened.",
    ]  # fmt: skip
    files = {p.name for p in CDA().data_files(ctx)}
    assert {"a.txt", "bias_attribute_words.json", "mlm_training.py", "counterfactual.py"} <= files


# ---- MLM training mechanics -------------------------------------------------------------------------------------


def test_group_into_blocks_is_run_mlm_grouping(tokenizer):
    lines = ["the cat sat on the mat", "a dog", "he ran to the river and swam across it quickly"]
    ids = [t for line in lines for t in tokenizer(line)["input_ids"]]  # [CLS] line [SEP], concatenated
    blocks = group_into_blocks(tokenizer, lines, 8)
    n = len(ids) // 8
    assert blocks.ids.tolist() == [ids[i * 8 : (i + 1) * 8] for i in range(n)]
    assert blocks.lengths.tolist() == [8] * n
    assert group_into_blocks(tokenizer, ["a b"], 64).ids.tolist() == [tokenizer("a b")["input_ids"]]


def test_line_by_line_sequences_and_padded_batches(tokenizer):
    lines = ["the cat sat on the mat", "a dog", "he ran to the river and swam across it quickly"]
    data = encode_line_by_line(tokenizer, lines, 8)
    expected = [tokenizer(line, truncation=True, max_length=8)["input_ids"] for line in lines]
    assert data.lengths.tolist() == [len(e) for e in expected]
    ids, attention = data.batch(np.array([1, 0]))
    width = max(len(expected[0]), len(expected[1]))
    assert ids.shape == (2, width) and attention.shape == (2, width)
    for row, i in enumerate([1, 0]):
        n = len(expected[i])
        assert ids[row, :n].tolist() == expected[i] and attention[row].tolist() == [1] * n + [0] * (width - n)
        assert (ids[row, n:] == tokenizer.pad_token_id).all()


def test_block_order_is_a_permutation_per_epoch_and_resumable():
    stream = block_order(7, seed=3, start=0, count=7 * 4)
    for e in range(4):
        assert sorted(stream[e * 7 : (e + 1) * 7]) == list(range(7))
    assert not np.array_equal(stream[:7], stream[7:14])
    assert np.array_equal(block_order(7, 3, 10, 9), stream[10:19])


def test_masked_lm_loss_equals_the_models_own_loss(tokenizer):
    # float64 model; masked_lm_loss casts the logits to float32 for the cross-entropy (by design), so its result
    # carries float32 rounding only (u = 2^-24): rounding the logits (|x| <= X) moves the log-sum-exp and the
    # target logit by <= u*X each, x - max by <= 2uX, exp/log by a few u, and the sum of V positive terms is off
    # by <= V*u relative (gamma_V bound, any summation order) -> |ours - ref| <= (V + 4X + 8) * u (~2e-3 for
    # V = 30522; a wrong position or label is off by O(1)). The reference is the float64 HF loss.
    model = tiny_bert(tokenizer, hidden=32).double()
    data = encode_line_by_line(tokenizer, ["he said hello to his friend and she smiled back", "a short one"] * 2, 16)
    ids, attention = data.batch(np.arange(4))
    labels = ids.clone()
    masked = (torch.rand(ids.shape, generator=torch.Generator().manual_seed(0)) < 0.3) & (attention == 1)
    labels[~masked] = -100
    with torch.inference_mode():
        ours = masked_lm_loss(model, ids, labels, attention)
        out = model(input_ids=ids, attention_mask=attention, labels=labels)
    assert out.loss.dtype == torch.float64
    bound = (model.config.vocab_size + 4 * float(out.logits.abs().max()) + 8) * 2.0**-24
    assert abs(ours.item() - out.loss.item()) <= bound


def _tiny_corpus():
    return [
        "the king met his son at the castle and he smiled",
        "the queen met her daughter at the castle and she smiled",
        "a man walked his dog to the river every morning",
        "a woman walked her dog to the river every evening",
    ] * 8


@pytest.mark.parametrize("line_by_line", [False, True])
def test_mlm_training_reduces_the_loss(tokenizer, line_by_line):
    model = tiny_bert(tokenizer, hidden=32)
    encode = encode_line_by_line if line_by_line else group_into_blocks
    blocks = encode(tokenizer, _tiny_corpus(), 16)
    before = mlm_loss(model, tokenizer, blocks)
    cfg = MLMTrainingConfig(max_steps=25, batch_size=8, grad_accum=1, max_seq_length=16, lr=3e-3,
                            line_by_line=line_by_line)  # fmt: skip
    history = train_mlm(model, tokenizer, blocks, cfg)
    after = mlm_loss(model, tokenizer, blocks)
    assert len(history.losses) == 25
    assert after < before - 1.0, (before, after)
    assert np.mean(history.losses[-5:]) < np.mean(history.losses[:5])
    assert not model.training


def test_training_is_deterministic_and_resumes_exactly(tokenizer, tmp_path):
    blocks = encode_line_by_line(tokenizer, _tiny_corpus(), 16)
    cfg = MLMTrainingConfig(max_steps=4, batch_size=4, grad_accum=2, max_seq_length=16, lr=1e-3, checkpoint_every=2)

    def run(checkpoint_dir=None, stop_at=None):
        model = tiny_bert(tokenizer, hidden=32)

        def on_step(step, loss):
            if step == stop_at:
                raise KeyboardInterrupt

        history = train_mlm(model, tokenizer, blocks, cfg, checkpoint_dir=checkpoint_dir, on_step=on_step)
        return model, history

    ref_model, ref_history = run()
    again, _ = run()
    assert all(torch.equal(a, b) for a, b in zip(ref_model.state_dict().values(), again.state_dict().values()))

    ckpt = tmp_path / "ckpt"
    with pytest.raises(KeyboardInterrupt):
        run(ckpt, stop_at=3)  # a checkpoint after step 2, then interrupted
    assert (ckpt / "checkpoint" / "data.json").is_file()
    resumed, history = run(ckpt)
    assert history.resumed_from == 2
    assert history.losses == pytest.approx(ref_history.losses, abs=0)
    assert all(torch.equal(a, b) for a, b in zip(ref_model.state_dict().values(), resumed.state_dict().values()))
    assert not ckpt.exists()  # removed once training completed


def test_nan_loss_raises_training_diverged(tokenizer):
    model = tiny_bert(tokenizer, hidden=32)
    with torch.no_grad():
        model.bert.embeddings.LayerNorm.weight.fill_(float("nan"))
    blocks = group_into_blocks(tokenizer, _tiny_corpus(), 16)
    cfg = MLMTrainingConfig(max_steps=3, batch_size=4, grad_accum=1, max_seq_length=16)
    with pytest.raises(TrainingDiverged, match="step 1"):
        train_mlm(model, tokenizer, blocks, cfg)


# ---- the method -------------------------------------------------------------------------------------------------


def _subject(tokenizer):
    from bench.models.subject import Subject

    return Subject(model=tiny_bert(tokenizer, hidden=32), tokenizer=tokenizer, name="tiny", source="test:tiny-bert")


def test_cda_fit_differs_from_base_and_leaves_the_input_alone(data_dir, tokenizer, tmp_path):
    from methods.cda import CDA

    subject = _subject(tokenizer)
    before = {k: v.clone() for k, v in subject.model.state_dict().items()}
    ctx = Context(data_dir=data_dir, cache_dir=tmp_path, progress=False)
    method = CDA(max_steps=3, batch_size=4, grad_accum=1, max_seq_length=32, lr=1e-3, max_lines=50)
    artifact = method.fit(subject, ctx)
    out = method.apply(subject, artifact)
    assert all(torch.equal(before[k], v) for k, v in subject.model.state_dict().items())
    assert out.model is not subject.model and not out.model.training
    assert not out.same_as(subject)
    assert out.tokenizer is subject.tokenizer and out.device == subject.device
    assert artifact.history["config"]["max_steps"] == 3 and len(artifact.history["losses"]) == 3
    assert artifact.history["n_lines"] % 2 == 0  # two-sided: counterfactual + original per kept line

    method.save_artifact(artifact, tmp_path / "artifact")
    loaded = method.load_artifact(tmp_path / "artifact")
    state = artifact.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in loaded.model.state_dict().items())
    assert loaded.history == json.loads(json.dumps(artifact.history))
    assert not method.apply(subject, loaded).same_as(subject)


def test_training_defaults_paper_vs_synthetic(tokenizer):
    from methods.cda import CDA

    subject = _subject(tokenizer)
    ctx = Context(data_dir=None, cache_dir=None, seed=7)
    cfg = CDA().training_config(subject, ctx)
    assert (cfg.max_steps, cfg.batch_size, cfg.grad_accum, cfg.max_seq_length, cfg.lr, cfg.seed, cfg.line_by_line) == (
        2000, 32, 16, 512, 5e-5, 7, False)  # fmt: skip
    synthetic = dataclasses.replace(subject, meta={"synthetic": {"bias": 0.8}})
    small = CDA().training_config(synthetic, ctx)
    assert small.max_steps * small.batch_size * small.grad_accum < 2000 * 32 * 16 / 50
    assert small.line_by_line
    assert CDA(max_steps=5, lr=1e-4, seed=1).training_config(synthetic, ctx).max_steps == 5
    # blocks never exceed the model's positions
    short = dataclasses.replace(subject, model=tiny_bert(tokenizer, hidden=32))
    short.model.config.max_position_embeddings = 128
    assert CDA().training_config(short, ctx).max_seq_length == 128


# ---- acceptance on the synthetic world ----------------------------------------------------------------------


@pytest.mark.slow
def test_cda_moves_gender_ss_toward_50_on_the_synthetic_world(synthetic, tmp_path):
    from bench.run.request import RunRequest
    from bench.run.runner import Runner
    from bench.stats import StatsConfig, compare, interval
    from metrics.stereoset import StereoSet

    runner = Runner(RunRequest(models=["synthetic"], methods=["cda"], metrics=[], device="cpu", progress=False),
                    echo=lambda m: None)  # fmt: skip
    ctx = runner.context(synthetic)
    debiased = runner.debias(synthetic, "cda", ctx)
    metric = StereoSet()
    base, cda = metric.score(synthetic, ctx), metric.score(debiased, ctx)
    cfg = StatsConfig(resamples=1000)
    b, c = base.estimates["ss_gender"], cda.estimates["ss_gender"]
    distance = abs(c.point() - 50) - abs(b.point() - 50)
    cmp = compare(c, b, cfg)
    print(f"\nSS gender: base {interval(b, cfg)}  cda {interval(c, cfg)}  delta {cmp}")
    assert distance < 0, "CDA must move gender SS toward 50"
    assert cmp.significant, "the paired CI of the difference must exclude 0"
    assert np.sign(cmp.delta) == -np.sign(b.point() - 50)
