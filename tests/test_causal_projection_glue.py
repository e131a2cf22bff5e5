"""The projection baselines (INLP, SentenceDebias, LEACE, RLACE) and GLUE/SuperGLUE fine-tuning on causal LMs.

Tiny random GPT-2 (and Llama-style) models in float64: a fitted method's transform reaches every token's state
before the LM head (hidden states, next-token logits, the full forward, the scorer), equal to applying it by hand;
the sequence classifier pools each row's last real token (read from the attention mask, so a sequence that ends
with eos = pad is pooled right), equal to each sequence run alone; COPA is n/a for causal LMs."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.api import Context, NotApplicable, served, serves_model_kind
from bench.models.causal_scoring import TokenQuery, sentence_ids, token_log_probs
from bench.models.embeddings import sentence_embeddings
from bench.models.finetune import (FinetuneConfig, build_classifier, classifier_output, encode, finetune,
                                   last_real_positions)
from bench.models.loading import load_subject
from methods.inlp import INLP
from methods.leace import LEACE
from methods.rlace import RLACE
from methods.sentence_debias import SentenceDebias
from tests.glue_tiny import sentiment, write_glue, write_superglue

pytestmark = pytest.mark.usefixtures("one_thread")

GPT2 = "random:gpt2,n_layer=2,n_embd=64,n_head=4,initializer_range=0.25"
LLAMA = ("random:llama-small,num_hidden_layers=2,hidden_size=64,intermediate_size=128,num_attention_heads=4,"
         "num_key_value_heads=2,head_dim=16,initializer_range=0.25")  # fmt: skip
SENTENCES = ["The nurse said that she would be late.", "He is a doctor.", "She paints.",
             "My neighbour, a retired engineer from the north, fixed the old bicycle in an afternoon."]  # fmt: skip
QUICK = {
    "inlp": (INLP, {"n_iterations": 4, "per_class": 150}),
    "sentence-debias": (SentenceDebias, {"max_pairs": 300}),
    "leace": (LEACE, {"per_class": 150}),
    "rlace": (RLACE, {"n_iterations": 300, "evaluate_every": 100, "per_class": 150}),
}


def _load(name, data_dir):
    subject = load_subject(name, data_dir=str(data_dir))
    subject.model.double()
    return subject


@pytest.fixture(scope="module")
def gpt2(data_dir):
    return _load(GPT2, data_dir)


@pytest.fixture(scope="module")
def ctx(data_dir, tmp_path_factory):
    return Context(data_dir=data_dir, cache_dir=tmp_path_factory.mktemp("cache"), progress=False)


@pytest.fixture(scope="module", params=sorted(QUICK))
def fitted(request, gpt2, ctx):
    cls, options = QUICK[request.param]
    method = cls(**options)
    artifact = method.fit(gpt2, ctx)
    return request.param, artifact, method.apply(gpt2, artifact)


def by_hand(name: str, artifact: dict, h: torch.Tensor) -> torch.Tensor:
    """The fitted map written out in float64: h - (h U) Uᵀ, or LEACE's h - ((h - b) Rᵀ) Lᵀ."""
    if name == "leace":
        left, right, bias = (artifact[k].to(torch.float64) for k in ("proj_left", "proj_right", "bias"))
        return h - ((h - bias) @ right.T) @ left.T
    u = artifact["basis"].to(torch.float64)
    return h - (h @ u) @ u.T


def removed(name: str, artifact: dict, h: torch.Tensor) -> torch.Tensor:
    """The coordinates of h along what the method removes (R (h - b) for LEACE, Uᵀ h otherwise)."""
    if name == "leace":
        return (h - artifact["bias"].to(torch.float64)) @ artifact["proj_right"].to(torch.float64).T
    return h @ artifact["basis"].to(torch.float64)


def padded(subject, texts):
    """Right-padded ids (pad = eos) and attention mask of `texts` as the tokenizer encodes them."""
    ids = [subject.tokenizer(t)["input_ids"] for t in texts]
    width = max(map(len, ids))
    input_ids = torch.full((len(ids), width), subject.tokenizer.pad_token_id)
    mask = torch.zeros_like(input_ids)
    for i, x in enumerate(ids):
        input_ids[i, : len(x)], mask[i, : len(x)] = torch.tensor(x), 1
    return input_ids, mask


# ---- the projection baselines ---------------------------------------------------------------------------------
def test_the_methods_declare_causal_lms():
    for cls, _ in QUICK.values():
        assert serves_model_kind(cls, "clm") and serves_model_kind(cls, "mlm")


def test_hidden_states_are_projected(fitted, gpt2):
    name, artifact, debiased = fitted
    ids, mask = padded(gpt2, SENTENCES)
    real = mask.bool()
    with torch.no_grad():
        h, h_deb = gpt2.hidden_states(ids, mask)[real], debiased.hidden_states(ids, mask)[real]
    assert gpt2.transforms == () and len(debiased.transforms) == 1
    torch.testing.assert_close(h_deb, by_hand(name, artifact, h), atol=1e-12, rtol=0)
    scale = h.norm(dim=-1, keepdim=True)
    before, after = removed(name, artifact, h) / scale, removed(name, artifact, h_deb) / scale
    assert before.abs().max() > 1e-2  # there was something to remove
    assert after.abs().max() < (1e-12 if name == "leace" else 1e-6)  # float64 factors; float32-stored bases


def test_next_token_logits_are_those_of_the_projected_states(fitted, gpt2):
    name, artifact, debiased = fitted
    ids, mask = padded(gpt2, SENTENCES)
    rows, cols = mask.nonzero(as_tuple=True)
    head = gpt2.model.get_output_embeddings()
    with torch.no_grad():
        h = gpt2.hidden_states(ids, mask)
        want = head(by_hand(name, artifact, h))
        got = debiased.mlm_logits(ids, mask, rows, cols)
        with debiased.hooks():
            full = debiased.model(input_ids=ids, attention_mask=mask).logits
        plain = gpt2.mlm_logits(ids, mask, rows, cols)
    torch.testing.assert_close(got, want[rows, cols], atol=1e-10, rtol=0)
    torch.testing.assert_close(full[rows, cols], want[rows, cols], atol=1e-10, rtol=0)
    assert (got - plain).abs().max() > 1e-3  # the projection changes what the model predicts
    # the causal scorer reads the same logits: log P(token | prefix) of the projected model
    query = TokenQuery(tuple(int(t) for t in ids[0][mask[0].bool()]), 1)
    scored = token_log_probs(debiased, [query])[0]
    log_probs = torch.log_softmax(want[0], dim=-1)
    expected = [float(log_probs[p - 1, query.input_ids[p]]) for p in range(1, len(query.input_ids))]
    np.testing.assert_allclose(scored, expected, atol=1e-10, rtol=0)


@pytest.fixture(scope="module")
def llama(data_dir):
    return _load(LLAMA, data_dir)


def test_a_llama_style_model_is_projected_before_its_head(fitted, llama):
    """The same hook on Llama's base model (its output after `norm`), with the GPT-2 fit (both 64-dimensional)."""
    name, artifact, _ = fitted
    debiased = QUICK[name][0]().apply(llama, artifact)
    ids, mask = padded(llama, SENTENCES)
    rows, cols = mask.nonzero(as_tuple=True)
    with torch.no_grad():
        want = llama.model.get_output_embeddings()(by_hand(name, artifact, llama.hidden_states(ids, mask)))
        with debiased.hooks():
            full = debiased.model(input_ids=ids, attention_mask=mask).logits
        got = debiased.mlm_logits(ids, mask, rows, cols)
    torch.testing.assert_close(full[rows, cols], want[rows, cols], atol=1e-10, rtol=0)
    torch.testing.assert_close(got, want[rows, cols], atol=1e-10, rtol=0)


def test_sentence_embeddings_of_the_debiased_subject_are_projected_means(fitted, gpt2):
    """The maps are affine, so the mean of projected token states is the projected mean."""
    name, artifact, debiased = fitted
    base = sentence_embeddings(gpt2, SENTENCES).double()
    torch.testing.assert_close(sentence_embeddings(debiased, SENTENCES).double(), by_hand(name, artifact, base),
                               atol=1e-5, rtol=0)  # fmt: skip  (float32 embeddings)


@pytest.mark.parametrize("name", [GPT2, LLAMA])
def test_sentence_embeddings_are_means_of_the_final_norm_states(name, data_dir):
    """Each sentence alone through the base model, the mean over every token (Llama's BOS included)."""
    subject = _load(name, data_dir)
    got = sentence_embeddings(subject, SENTENCES + SENTENCES[:1]).double()
    assert got.shape == (len(SENTENCES) + 1, subject.model.config.hidden_size)
    for i, text in enumerate(SENTENCES):
        ids = subject.tokenizer(text)["input_ids"]
        assert (ids[0] == subject.tokenizer.bos_token_id) == ("llama" in name)
        with torch.no_grad():
            h = subject.model.base_model(input_ids=torch.tensor([ids]))[0][0]
        torch.testing.assert_close(got[i], h.mean(0), atol=1e-6, rtol=0)
    torch.testing.assert_close(got[-1], got[0], atol=0, rtol=0)


# ---- fine-tuning a causal LM ----------------------------------------------------------------------------------
def test_classifier_takes_the_base_weights_and_a_seeded_head(gpt2, data_dir):
    clf = build_classifier(gpt2, 3, seed=0)
    assert type(clf).__name__ == "GPT2ForSequenceClassification"
    assert clf.config.pad_token_id == gpt2.tokenizer.eos_token_id
    base = gpt2.model.base_model.state_dict()
    for key, value in clf.state_dict().items():
        if key.startswith("transformer."):
            torch.testing.assert_close(value, base[key[len("transformer."):]], atol=0, rtol=0)
    other = load_subject(GPT2 + ",seed=1", data_dir=str(data_dir)).replace(source="other")
    other.model.double()
    again, reseeded = build_classifier(other, 3, seed=0), build_classifier(gpt2, 3, seed=1)
    torch.testing.assert_close(again.score.weight, clf.score.weight, atol=0, rtol=0)  # the seed alone
    assert not torch.equal(reseeded.score.weight, clf.score.weight)
    llama = build_classifier(_load(LLAMA, data_dir), 2, seed=0)
    assert type(llama).__name__ == "LlamaForSequenceClassification" and llama.config.pad_token_id is not None


def _pooled_alone(clf, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return clf.score(clf.base_model(input_ids=torch.tensor([ids]))[0][0, -1])


def test_pooling_reads_the_last_real_token_even_when_it_is_eos(gpt2):
    """Right padding with pad = eos: a sequence that really ends with eos is pooled at that eos. transformers' own
    forward takes the rightmost token that is not the pad id and so pools it one token early."""
    eos = gpt2.tokenizer.eos_token_id
    seqs = [gpt2.tokenizer(t)["input_ids"] for t in SENTENCES[:3]]
    seqs[1] = seqs[1] + [eos]  # ends with eos, shorter than the longest
    clf = build_classifier(gpt2, 2, seed=0).eval()
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), eos)
    mask = torch.zeros_like(ids)
    for i, x in enumerate(seqs):
        ids[i, : len(x)], mask[i, : len(x)] = torch.tensor(x), 1
    assert last_real_positions(mask).tolist() == [len(x) - 1 for x in seqs]
    labels = torch.tensor([0, 1, 1])
    with torch.no_grad():
        logits, loss = classifier_output(clf, {"input_ids": ids, "attention_mask": mask, "labels": labels}, "clm")
        hf = clf(input_ids=ids, attention_mask=mask).logits
    for i, x in enumerate(seqs):
        torch.testing.assert_close(logits[i], _pooled_alone(clf, x), atol=1e-10, rtol=0)
    assert (hf[1] - logits[1]).abs().max() > 1e-6  # HF: pooled at the token before the final eos
    torch.testing.assert_close(hf[[0, 2]], logits[[0, 2]], atol=1e-10, rtol=0)
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(logits, labels), atol=0, rtol=0)
    keep = [0, 2]  # without the eos row, HF's loss is the same
    with torch.no_grad():
        hf_loss = clf(input_ids=ids[keep], attention_mask=mask[keep], labels=labels[keep]).loss
        ours = classifier_output(clf, {"input_ids": ids[keep], "attention_mask": mask[keep], "labels": labels[keep]},
                                 "clm")[1]  # fmt: skip
    torch.testing.assert_close(ours, hf_loss, atol=1e-12, rtol=0)


def test_pooling_sees_the_transform(fitted, gpt2):
    name, artifact, debiased = fitted
    clf = build_classifier(debiased, 2, seed=0).eval()
    ids, mask = padded(gpt2, SENTENCES)
    with torch.no_grad(), debiased.hooks(model=clf):
        logits, _ = classifier_output(clf, {"input_ids": ids, "attention_mask": mask}, "clm")
    with torch.no_grad():
        h = by_hand(name, artifact, clf.base_model(input_ids=ids, attention_mask=mask)[0])
    want = clf.score(h[torch.arange(len(ids)), mask.sum(-1) - 1])
    torch.testing.assert_close(logits, want, atol=1e-10, rtol=0)


def test_finetune_learns_a_few_examples_through_a_frozen_transform(gpt2):
    from methods.projection import SubspaceRemoval

    basis = torch.linalg.qr(torch.randn(64, 3, generator=torch.Generator().manual_seed(0)))[0]
    debiased = gpt2.with_transform(SubspaceRemoval(basis))
    texts, labels = sentiment(32, seed=0)
    examples = type("Examples", (), {"text_a": texts, "text_b": None, "labels": labels})
    data = encode(gpt2.tokenizer, examples, 32)
    config = FinetuneConfig(epochs=3, lr=1e-3, batch_size=16, eval_batch_size=7)
    result = finetune(debiased, data, {"train": data}, 2, seed=0, config=config, keep_model=True)
    assert result.logits["train"].shape == (32, 2) and np.isfinite(result.logits["train"]).all()
    assert result.epoch_loss[-1] < result.epoch_loss[0]
    ids, mask = padded(gpt2, texts[:5])
    clf, batch = result.model.eval(), {"input_ids": ids, "attention_mask": mask}
    with torch.no_grad(), debiased.hooks(model=clf):  # the evaluation logits are the pooled, projected states
        np.testing.assert_allclose(classifier_output(clf, batch, "clm")[0].numpy(), result.logits["train"][:5],
                                   atol=1e-5, rtol=0)  # fmt: skip
    again = finetune(debiased, data, {"train": data}, 2, seed=0, config=config)
    np.testing.assert_array_equal(again.logits["train"], result.logits["train"])  # seeded


def test_glue_and_superglue_on_a_causal_lm(gpt2, tmp_path):
    from metrics.glue import GLUE
    from metrics.superglue import SuperGLUE, SuperGlueCOPA

    root = write_superglue(write_glue(tmp_path / "data", n_train=32, n_dev=16), n_train=32, n_val=16,
                           tasks=("CB", "COPA"))  # fmt: skip
    ctx = Context(data_dir=root, cache_dir=tmp_path / "cache", progress=False)
    quick = dict(epochs=1, seeds=(0,), batch_size=16, max_seq_length=32, cpu_threads=1)
    glue = GLUE(tasks=("sst2",), source="files", **quick).score(gpt2, ctx)
    assert np.isfinite(glue.estimates["glue:sst2"].point())
    sg = SuperGLUE(tasks=("cb", "copa"), **quick).score(gpt2, ctx)
    assert "superglue:cb" in sg.estimates and "superglue:copa" not in sg.estimates
    note = sg.notes["superglue"]
    assert note.startswith("mean over 1 of 2 tasks (CB); n/a: COPA (transformers has no multiple-choice head for 'gpt2'")
    with pytest.raises(NotApplicable, match="no multiple-choice head for 'gpt2' models"):
        SuperGlueCOPA(**quick).score(gpt2, ctx)


# ---- the synthetic world's causal LM (slow) ------------------------------------------------------------------
@pytest.fixture(scope="module")
def synthetic_clm(tmp_path_factory):
    from metrics.stereoset import StereoSet

    subject = load_subject("synthetic-clm")
    if not served(StereoSet.requires, subject.capabilities):
        pytest.skip("StereoSet does not score causal LMs here")
    ctx = Context(data_dir=subject.data_dir, cache_dir=tmp_path_factory.mktemp("cache"), progress=False)
    return subject, ctx


# Measured (seed 0, 1,000 resamples): gender SS 100.00 [100.00, 100.00] on the base model; SentenceDebias 71.2
# [66.6, 76.0], RLACE 78.4 [73.7, 82.8], INLP with 20 iterations 90.9 [87.4, 94.1] (LMS 99.4): all significant.
@pytest.mark.slow
@pytest.mark.parametrize("method", [SentenceDebias(), RLACE(), INLP(n_iterations=20, max_removed_fraction=None)],
                         ids=["sentence-debias", "rlace", "inlp-20"])  # fmt: skip
def test_projections_move_synthetic_clm_gender_ss_toward_50(synthetic_clm, method):
    from tests.test_inlp import gender_ss_moves_toward_50

    subject, ctx = synthetic_clm
    debiased = method.apply(subject, method.fit(subject, ctx))
    gender_ss_moves_toward_50(subject, debiased, ctx, f"{type(method).__name__} on synthetic-clm")


@pytest.mark.slow
@pytest.mark.xfail(reason="INLP's default keeps 10 iterations on the world's 96 dimensions (max_removed_fraction): "
                          "dev accuracy only falls from 0.98 to 0.91 and SS stays at 99.6 [98.7, 100.0] (LEACE: "
                          "98.9); the masked world's falls from 89.4 to 69.3 with the same rule")  # fmt: skip
def test_inlp_default_moves_synthetic_clm_gender_ss_toward_50(synthetic_clm):
    from tests.test_inlp import gender_ss_moves_toward_50

    subject, ctx = synthetic_clm
    method = INLP()
    gender_ss_moves_toward_50(subject, method.apply(subject, method.fit(subject, ctx)), ctx, "INLP on synthetic-clm")
