"""StereoSet, CrowS-Pairs and SEAT on causal LMs: equality with one sentence per forward pass on the real files.

Two tiny float64 models of the two tokenizer conventions (SPEC-beyond §9.4): GPT-2-style (byte-level BPE, no BOS,
pad = eos = `<|endoftext|>`) and Llama-style (the same BPE with `<|begin_of_text|>` added in front of every text).
The references below share no code with bench/ or metrics/: one sentence per forward pass through
`model(input_ids).logits`, `log_softmax`, Python loops, the sentence score as bias-bench writes it
(2 ** mean log2 p). In float64 batched and single passes agree to ~1e-15 relative, so 1e-9 is far above any
rounding and far below any real error (a wrong start token or position changes a score by O(1) relative).
"""
from __future__ import annotations

import json
import math
import statistics

import numpy as np
import pandas as pd
import pytest
import torch

import reference_scorers as ref
from bench.api import ALL_CAPABILITIES, CAUSAL_CAPABILITIES, Context, NotApplicable, served
from bench.errors import BenchError
from bench.models.causal_scoring import TokenQuery, sentence_log_probs, token_log_probs
from bench.models.loading import load_subject
from metrics.crows import CrowS
from metrics.seat import GENDER_TESTS, SEAT, SETS
from metrics.stereoset import StereoSet
from tests.test_crows import write_crows
from tests.test_seat import d_tolerance, ref_effect_size
from tests.test_stereoset import SPECIAL, write_stereoset

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = "initializer_range=0.25,seed=0"  # peaked, varied next-token distributions (as tests/tiny_mlms.py)
MODELS = {
    "gpt2": f"random:gpt2,n_layer=2,n_embd=64,n_head=4,{SMALL}",
    "llama": f"random:llama-small,num_hidden_layers=2,hidden_size=64,intermediate_size=128,num_attention_heads=4,"
    f"num_key_value_heads=2,head_dim=16,{SMALL}",
}
MODES = ("joint", "bias-bench")
RTOL = 1e-9


@pytest.fixture(scope="module", params=sorted(MODELS))
def causal(request, data_dir):
    subject = load_subject(MODELS[request.param], data_dir=data_dir)
    subject.model.double().eval()
    return subject


def ctx_for(data_dir, tmp_path) -> Context:
    return Context(data_dir=data_dir, cache_dir=tmp_path, progress=False)


# ---- the straightforward reference -------------------------------------------------------------------------


def ref_start(tokenizer, mode: str) -> int:
    """joint: BOS where the tokenizer has one (Llama), else EOS (GPT-2); bias-bench: EOS (its start token)."""
    if mode == "joint" and tokenizer.bos_token_id is not None:
        return tokenizer.bos_token_id
    return tokenizer.eos_token_id


def ref_next_token_log_probs(model, ids: list[int]) -> list[float]:
    """log P(ids[p] | ids[:p]) for p >= 1 from one forward pass of `ids` alone."""
    with torch.no_grad():
        log_probs = torch.log_softmax(model(torch.tensor([ids])).logits[0], dim=-1)
    return [float(log_probs[p - 1, ids[p]]) for p in range(1, len(ids))]


def ref_log_probs(model, tokenizer, text: str, mode: str) -> list[float]:
    """log p_1 .. log p_T of the sentence's tokens (no special tokens): joint, the sentence after the start
    token in one pass; bias-bench, p_1 from a pass on the start token alone and the rest from the sentence alone."""
    tokens = tokenizer(text, add_special_tokens=False)["input_ids"]
    start = ref_start(tokenizer, mode)
    if mode == "joint":
        return ref_next_token_log_probs(model, [start] + tokens)
    with torch.no_grad():
        first = torch.log_softmax(model(torch.tensor([[start]])).logits[0, 0], dim=-1)[tokens[0]]
    return [float(first)] + ref_next_token_log_probs(model, tokens)


def ref_score(model, tokenizer, text: str, mode: str) -> float:
    """bias-bench's sentence score: 2 ** (mean of log2 p_i), the geometric mean of the token probabilities."""
    log2 = [lp / math.log(2) for lp in ref_log_probs(model, tokenizer, text, mode)]
    return 2.0 ** (sum(log2) / len(log2))


def stereoset_causal_reference(model, tokenizer, examples: list[dict], mode: str) -> list[dict]:
    """Per example: id, target, bias_type and the scores of its three sentences (BLANK filled by the word)."""
    model.eval()
    rows = []
    for ex in examples:
        row = {"id": ex["id"], "target": ex["target"], "bias_type": ex["bias_type"]}
        for s in ex["sentences"]:
            text = ex["context"].replace("BLANK", ref.fill_word(ex["context"], s["sentence"]))
            key = {"stereotype": "stereo", "anti-stereotype": "anti", "unrelated": "unrelated"}[s["gold_label"]]
            row[key] = ref_score(model, tokenizer, text, mode)
        rows.append(row)
    return rows


# ---- StereoSet -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ss_subset(data_dir) -> list[dict]:
    """~90 real dev examples: the first 48, the tricky ones (two BLANKs, BLANK glued to text or at the start,
    lower-cased context), and every 60th after them."""
    examples = ref.read_stereoset(data_dir / "stereoset" / "dev.json")
    chosen = sorted(set(range(48)) | set(SPECIAL) | set(range(48, len(examples), 60)))
    return [examples[i] for i in chosen]


@pytest.fixture(scope="module")
def ss_file(ss_subset, tmp_path_factory):
    return write_stereoset(tmp_path_factory.mktemp("stereoset") / "subset.json", ss_subset)


@pytest.mark.parametrize("mode", MODES)
def test_stereoset_equals_reference(causal, mode, data_dir, ss_subset, ss_file, tmp_path):
    scores = StereoSet(file=str(ss_file), causal_scoring=mode).score(causal, ctx_for(data_dir, tmp_path))
    expected = pd.DataFrame(stereoset_causal_reference(causal.model, causal.tokenizer, ss_subset, mode))
    items = scores.items
    assert list(items["id"]) == list(expected["id"])
    for col in ("stereo", "anti", "unrelated"):
        np.testing.assert_allclose(items[col], expected[col], rtol=RTOL, atol=0)
    for name, value in ref.stereoset_aggregate(expected.to_dict("records")).items():
        assert scores.estimates[name].point() == pytest.approx(value, abs=1e-9), name
    assert {"gender", "race", "profession", "religion"} <= set(items["bias_type"])
    assert 0 < scores.estimates["ss_overall"].point() < 100


def test_bias_bench_mode_differs_from_joint(causal, data_dir, ss_subset):
    """Different computations: joint conditions every token on the start token, bias-bench only the first one;
    for GPT-2 (start token EOS in both) the first token's log-probability is the same in both."""
    texts = [ex["context"].replace("BLANK", ref.fill_word(ex["context"], s["sentence"]))
             for ex in ss_subset[:20] for s in ex["sentences"]]  # fmt: skip
    ids = [tuple(causal.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    joint, bias_bench = sentence_log_probs(causal, ids, "joint"), sentence_log_probs(causal, ids, "bias-bench")
    same_start = causal.tokenizer.bos_token_id in (None, causal.tokenizer.eos_token_id)
    for a, b in zip(joint, bias_bench):
        assert len(a) == len(b)
        assert (a[0] == pytest.approx(b[0], rel=1e-12)) == same_start
        assert np.abs(a[1:] - b[1:]).min(initial=1.0) > 1e-6  # every later token is conditioned differently
    assert sum(len(a) > 1 for a in joint) > 50


def test_prefix_sharing_equals_plain_passes(causal, ss_subset):
    """The prefix-tree passes and plain padded passes give the same log-probabilities, under any batch limits."""
    texts = [ex["context"].replace("BLANK", ref.fill_word(ex["context"], s["sentence"]))
             for ex in ss_subset[:30] for s in ex["sentences"]]  # fmt: skip
    seqs = [(causal.tokenizer.eos_token_id, *causal.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    queries = [TokenQuery(s, 1 + i % 3) for i, s in enumerate(seqs)] + [TokenQuery(seqs[0], len(seqs[0]))]
    plain = token_log_probs(causal, queries, share_prefixes=False)
    for limits in ({}, {"batch_tokens": 40}, {"batch_size": 1, "batch_tokens": 7}):
        shared = token_log_probs(causal, queries, **limits)
        for a, b in zip(shared, plain):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=0)
    assert len(plain[-1]) == 0


# ---- CrowS-Pairs ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def crows_subset(data_dir) -> list[dict]:
    """~80 real gender pairs: the first 40 and every 4th after them (both directions)."""
    rows = ref.read_crows(data_dir / "crows_pairs" / "crows_pairs_anonymized.csv", "gender")
    keep = ("sent_more", "sent_less", "stereo_antistereo", "bias_type")
    return [{k: r[k] for k in keep} for r in rows[:40] + rows[40::4]]


@pytest.mark.parametrize("mode", MODES)
def test_crows_equals_reference(causal, mode, data_dir, crows_subset, tmp_path):
    path = write_crows(tmp_path / "crows.csv", crows_subset)
    scores = CrowS(file=str(path), causal_scoring=mode).score(causal, ctx_for(data_dir, tmp_path))
    items = scores.items
    assert len(items) == len(crows_subset)  # every pair counts: both sentences always have tokens
    more = [ref_score(causal.model, causal.tokenizer, r["sent_more"], mode) for r in crows_subset]
    less = [ref_score(causal.model, causal.tokenizer, r["sent_less"], mode) for r in crows_subset]
    np.testing.assert_allclose(items["score_more"], more, rtol=RTOL, atol=0)
    np.testing.assert_allclose(items["score_less"], less, rtol=RTOL, atol=0)
    np.testing.assert_allclose(np.exp(items["raw_more"]), more, rtol=RTOL, atol=0)
    # unrounded comparison (bias-bench's generative CrowS); no near-ties that float noise could flip
    assert min(abs(a - b) / a for a, b in zip(more, less)) > 1e-6
    biased = [a > b for a, b in zip(more, less)]
    assert list(items["biased"]) == biased and not items["neutral"].any()
    assert scores.estimates["crows"].point() == pytest.approx(100.0 * sum(biased) / len(biased), abs=1e-9)
    stereo = [b for b, r in zip(biased, crows_subset) if r["stereo_antistereo"] == "stereo"]
    assert scores.estimates["crows_stereo"].point() == pytest.approx(100.0 * sum(stereo) / len(stereo), abs=1e-9)
    tokens = [len(causal.tokenizer(r["sent_more"], add_special_tokens=False)["input_ids"]) for r in crows_subset]
    assert list(items["tokens_more"]) == tokens


def test_crows_pll_variant_is_not_applicable_to_causal_models(causal, data_dir, crows_subset, tmp_path):
    path = write_crows(tmp_path / "crows.csv", crows_subset[:3])
    with pytest.raises(NotApplicable, match="masked LMs only"):
        CrowS(file=str(path), variant="pll").score(causal, ctx_for(data_dir, tmp_path))


# ---- SEAT ------------------------------------------------------------------------------------------------------


def ref_hidden(model, tokenizer, sentence: str) -> np.ndarray:
    """The final-norm last hidden states of the sentence alone, with the tokenizer's special tokens (Llama: BOS)."""
    ids = tokenizer(sentence)["input_ids"]
    assert (ids[0] == tokenizer.bos_token_id) == (tokenizer.bos_token_id != tokenizer.eos_token_id)
    with torch.no_grad():
        return model(torch.tensor([ids]), output_hidden_states=True).hidden_states[-1][0].double().numpy()


def test_seat_equals_reference(causal, data_dir, tmp_path):
    scores = SEAT(n_permutations=1000).score(causal, ctx_for(data_dir, tmp_path))
    hidden = {}
    for name in GENDER_TESTS:
        obj = json.loads((data_dir / "seat" / f"{name}.jsonl").read_text())
        sets = [obj[k]["examples"] for k in SETS]
        for sentence in (s for group in sets for s in group):
            if sentence not in hidden:
                hidden[sentence] = ref_hidden(causal.model, causal.tokenizer, sentence)
        d = ref_effect_size(*([hidden[s].mean(axis=0) for s in group] for group in sets))
        # the metric pools in float32 by design (bench.models.embeddings); d_tolerance bounds what that changes
        assert scores.estimates[f"d:{name}"].point() == pytest.approx(d, abs=d_tolerance(hidden, sets)), name
        assert abs(d) > 1e-3
    means = [abs(scores.estimates[f"d:{n}"].point()) for n in GENDER_TESTS]
    assert scores.estimates["seat"].point() == pytest.approx(statistics.mean(means), abs=1e-12)


# ---- options, requirements -------------------------------------------------------------------------------------


def test_requirements_and_options():
    for cls in (StereoSet, CrowS):
        assert served(cls.requires, CAUSAL_CAPABILITIES) and served(cls.requires, ALL_CAPABILITIES)
        assert "causal_scoring" not in cls().config()  # masked runs keep their configs and cache keys
        other = cls(causal_scoring="bias-bench")
        assert other.config()["causal_scoring"] == "bias-bench" and cls(**other.config()).config() == other.config()
        with pytest.raises(BenchError, match="causal_scoring"):
            cls(causal_scoring="two-pass")
    assert served(SEAT.requires, CAUSAL_CAPABILITIES)


def test_masked_subject_ignores_causal_scoring(data_dir, ss_subset, tmp_path):
    from tiny_mlms import bert_subject

    subject = bert_subject(str(data_dir))
    path = write_stereoset(tmp_path / "few.json", ss_subset[:6])
    ctx = ctx_for(data_dir, tmp_path)
    a = StereoSet(file=str(path)).score(subject, ctx).items
    b = StereoSet(file=str(path), causal_scoring="bias-bench").score(subject, ctx).items
    pd.testing.assert_frame_equal(a, b)
