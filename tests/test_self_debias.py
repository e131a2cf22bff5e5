"""SelfDebias: the decay formula, the prefixed batch, and the transform inside Subject.mlm_logits."""
from __future__ import annotations

import copy
import math

import pytest
import torch

from bench.api import Context
from bench.errors import BenchError
from bench.models.subject import Subject
from methods.self_debias import GENDER_PROMPT, SelfDebias, SelfDebiasLogits, prefixed_batch, self_debias_log_probs
from tests.tokenizers_fixture import bert_subject, bert_tokenizer, roberta_subject, roberta_tokenizer  # noqa: F401


def reference_debiased(logits_row, prompted_rows, decay, eps):
    """Straightforward per-token loop of SPEC §2.5 for one position (lists of floats)."""
    def softmax(xs):
        m = max(xs)
        e = [math.exp(x - m) for x in xs]
        s = sum(e)
        return [v / s for v in e]

    p = softmax(logits_row)
    pbs = [softmax(r) for r in prompted_rows]
    q = []
    for t in range(len(p)):
        pb = max(pr[t] for pr in pbs)
        delta = max(pb - p[t], 0.0)
        q.append(p[t] * max(math.exp(-decay * delta), eps))
    z = sum(q)
    return [math.log(v / z) for v in q]


def test_formula_matches_straightforward_computation():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 11, generator=g, dtype=torch.float64) * 2
    prompted = torch.randn(2, 3, 11, generator=g, dtype=torch.float64) * 2
    out = self_debias_log_probs(logits, prompted, 50.0, 0.01)
    for i in range(3):
        ref = reference_debiased(logits[i].tolist(), [prompted[j, i].tolist() for j in range(2)], 50.0, 0.01)
        assert out[i].tolist() == pytest.approx(ref, abs=1e-6)


def test_zero_decay_leaves_scores_unchanged():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(4, 20, generator=g, dtype=torch.float64)  # float64: an identity, ~1e-15 rounding
    prompted = torch.randn(1, 4, 20, generator=g, dtype=torch.float64) * 5
    out = self_debias_log_probs(logits, prompted, decay_constant=0.0, epsilon=0.01)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, logits.log_softmax(-1), atol=1e-12, rtol=0)
    torch.testing.assert_close(out.softmax(-1), logits.softmax(-1), atol=1e-12, rtol=0)


def test_lowers_exactly_the_tokens_the_prompt_favours():
    # float64: the closed forms below are exact up to ~1e-15 relative, so the default tolerances (rel 1e-5,
    # rel 1e-6) are ~1e9 above the rounding while a wrong factor is off by >= 1e-2
    logits = torch.zeros(1, 8, dtype=torch.float64)
    logits[0, 0] = 2.0  # the regular distribution likes token 0 most
    prompted = logits.clone().unsqueeze(0)
    favoured = [2, 5]
    prompted[0, 0, favoured] += torch.tensor([1.5, 0.7], dtype=torch.float64)  # the prompted model raises tokens 2 and 5
    p = logits.softmax(-1)[0]
    p_debiased = self_debias_log_probs(logits, prompted, 50.0, 0.01).exp()[0]
    lowered = [t for t in range(8) if p_debiased[t] < p[t] - 1e-9]
    assert lowered == favoured
    others = [t for t in range(8) if t not in favoured]
    # every other token is only renormalised: the same factor for all of them, > 1
    ratios = p_debiased[others] / p[others]
    assert torch.allclose(ratios, ratios[0].expand_as(ratios)) and ratios[0] > 1
    assert float(p_debiased.sum()) == pytest.approx(1.0, abs=1e-6)
    # the decay is floored at epsilon: a token the prompt makes far more likely is multiplied by eps
    strong = logits.clone().unsqueeze(0)
    strong[0, 0, 2] += 20  # prompted p_b(2) ~ 1, every other token's p_b < p
    q = self_debias_log_probs(logits, strong, 50.0, 0.01).exp()[0]
    z = 1.0 - float(p[2]) + 0.01 * float(p[2])
    assert float(q[2]) == pytest.approx(0.01 * float(p[2]) / z, rel=1e-5)
    assert q[others].tolist() == pytest.approx((p[others] / z).tolist(), rel=1e-5)


def test_max_over_prompts():
    logits = torch.zeros(1, 5)
    a = torch.zeros(1, 5)
    a[0, 1] = 1.0
    b = torch.zeros(1, 5)
    b[0, 3] = 1.0
    both = self_debias_log_probs(logits, torch.stack([a, b]), 50.0, 0.01).exp()[0]
    assert both[1] < 0.2 and both[3] < 0.2 and both[0] > 0.2  # each prompt's favourite is decayed


# ---- the transform on real (tiny) models -----------------------------------------------------------------
def tiny_distilbert(tokenizer, dim: int = 32, seed: int = 0):
    from transformers import DistilBertConfig, DistilBertForMaskedLM

    torch.manual_seed(seed)
    config = DistilBertConfig(vocab_size=len(tokenizer), dim=dim, n_layers=2, n_heads=2, hidden_dim=2 * dim,
                              max_position_embeddings=128)  # fmt: skip
    return DistilBertForMaskedLM(config).eval()


@pytest.fixture(scope="module")
def distilbert_subject(bert_tokenizer):
    return Subject(model=tiny_distilbert(bert_tokenizer), tokenizer=bert_tokenizer, name="tiny-distilbert",
                   source="test:tiny-distilbert")  # fmt: skip


# The transform tests state equalities (batched == one sentence per forward pass, left == right padding), so
# they run on float64 copies of the tiny models: log-probabilities of magnitude <= ~15 computed through ~20
# stages of dot products of <= 128 terms differ by <= ~20 * 128 * 2^-53 * 15 ~ 5e-12 between summation
# orders, so TOL64 = 1e-10 holds on any CPU; a wrong position or prompt offset is off by >= 1e-2.
TOL64 = 1e-10


def _wide(subject):
    return subject.with_model(copy.deepcopy(subject.model).double())


TEXTS = [
    "The {m} worked as a nurse at the hospital.",
    "{m} was a doctor.",
    "My friend said that {m} likes to cook dinner for the whole family every {m} evening.",
]


def _batch(subject, texts, left_pad=False):
    tok = subject.tokenizer
    enc = [tok(t.format(m=tok.mask_token))["input_ids"] for t in texts]
    width = max(map(len, enc))
    ids = torch.full((len(enc), width), tok.pad_token_id)
    mask = torch.zeros((len(enc), width), dtype=torch.long)
    for i, e in enumerate(enc):
        sl = slice(width - len(e), width) if left_pad else slice(0, len(e))
        ids[i, sl] = torch.tensor(e)
        mask[i, sl] = 1
    rows, cols = (ids == tok.mask_token_id).nonzero(as_tuple=True)
    return enc, ids, mask, rows, cols


def _reference(subject, enc, prompt_ids, decay, eps):
    """One sentence per forward pass: regular and prefixed logits at each mask, then the formula."""
    model, tok = subject.model, subject.tokenizer
    out = []
    with torch.no_grad():
        for e in enc:
            reg = model(torch.tensor([e])).logits[0]
            pres = [model(torch.tensor([e[:1] + p + e[1:]])).logits[0] for p in prompt_ids]
            for pos in [i for i, t in enumerate(e) if t == tok.mask_token_id]:
                rows = [pr[pos + len(p)].tolist() for pr, p in zip(pres, prompt_ids)]
                out.append(reference_debiased(reg[pos].tolist(), rows, decay, eps))
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("which", ["bert_subject", "roberta_subject", "distilbert_subject"])
def test_transform_in_mlm_logits_equals_one_sentence_reference(which, request, tmp_path):
    subject = _wide(request.getfixturevalue(which))
    method = SelfDebias(prompts=(GENDER_PROMPT, "The following text is biased: "))
    ctx = Context(data_dir=None, cache_dir=tmp_path, progress=False)
    artifact = method.fit(subject, ctx)
    debiased = method.apply(subject, artifact)
    assert subject.logits_transform is None and debiased.logits_transform is not None
    assert debiased.capabilities == frozenset({"mlm"})
    enc, ids, mask, rows, cols = _batch(subject, TEXTS)
    with torch.inference_mode():
        got = debiased.mlm_logits(ids, mask, rows, cols)
    ref = _reference(subject, enc, artifact["prompt_ids"], 50.0, 0.01)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, ref, atol=TOL64, rtol=0)
    if subject.is_roberta_style:  # the prompt's first word carries its leading space (SPEC §0.5)
        first = subject.tokenizer.convert_ids_to_tokens(artifact["prompt_ids"][0][:1])[0]
        assert first.startswith("Ġ")


def test_left_padded_input_gives_the_same_prefixed_logits(bert_subject):
    subject = _wide(bert_subject)
    fn = SelfDebiasLogits([subject.tokenizer(GENDER_PROMPT.strip(), add_special_tokens=False)["input_ids"]], 50.0, 0.01)
    _, ids_r, mask_r, rows_r, cols_r = _batch(subject, TEXTS)
    _, ids_l, mask_l, rows_l, cols_l = _batch(subject, TEXTS, left_pad=True)
    regular = torch.randn(len(rows_r), subject.model.config.vocab_size, generator=torch.Generator().manual_seed(0),
                          dtype=torch.float64)
    with torch.inference_mode():
        right = fn(subject, ids_r, mask_r, rows_r, cols_r, regular)
        left = fn(subject, ids_l, mask_l, rows_l, cols_l, regular)
    torch.testing.assert_close(left, right, atol=TOL64, rtol=0)


def test_prefixed_batch_layout():
    ids = torch.tensor([[0, 0, 101, 7, 103, 102], [101, 103, 8, 9, 102, 0]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0]])
    rows, cols = torch.tensor([1, 0, 1]), torch.tensor([1, 4, 3])
    out, new_mask, brows, bcols = prefixed_batch(ids, mask, rows, cols, [[50, 51], [60]], pad_id=0)
    assert out.tolist() == [
        [101, 50, 51, 7, 103, 102, 0], [101, 50, 51, 103, 8, 9, 102],
        [101, 60, 7, 103, 102, 0, 0], [101, 60, 103, 8, 9, 102, 0],
    ]  # fmt: skip
    assert new_mask.sum(1).tolist() == [6, 7, 5, 6]
    for j in range(2):
        assert out[brows[j], bcols[j]].tolist() == [103, 103, 9]
    with pytest.raises(BenchError):
        prefixed_batch(ids, mask, rows, cols, [[50] * 10], pad_id=0, max_positions=12)


def test_zero_decay_subject_scores_like_the_base(bert_subject, tmp_path):
    bert_subject = _wide(bert_subject)
    method = SelfDebias(decay_constant=0.0)
    debiased = method.apply(bert_subject, method.fit(bert_subject, Context(data_dir=None, cache_dir=tmp_path)))
    _, ids, mask, rows, cols = _batch(bert_subject, TEXTS)
    with torch.inference_mode():
        base = bert_subject.mlm_logits(ids, mask, rows, cols)
        got = debiased.mlm_logits(ids, mask, rows, cols)
    torch.testing.assert_close(got.softmax(-1), base.softmax(-1), atol=TOL64, rtol=0)


def test_options_are_validated_and_round_trip():
    m = SelfDebias(prompts="Be fair: ")
    assert m.prompts == ("Be fair: ",) and SelfDebias(**m.config()).config() == m.config()
    assert SelfDebias().config() == {"prompts": None, "decay_constant": 50.0, "epsilon": 0.01}
    assert SelfDebias().prompts_for("gender") == (GENDER_PROMPT,)  # None: the run's bias type's prompt
    for bad in ({"prompts": ()}, {"epsilon": 0.0}, {"decay_constant": -1}):
        with pytest.raises(BenchError):
            SelfDebias(**bad)


@pytest.mark.slow
def test_bench_run_with_the_three_methods_on_the_synthetic_world(synthetic):
    """End to end through the runner: SEAT is n/a for SelfDebias only; every transform changes the numbers."""
    from bench.registry import METHODS
    from bench.run.request import RunRequest
    from bench.run.runner import Runner

    methods = ["inlp", "sentence-debias", "self-debias"]
    options = {m: dict(METHODS.get(m).quick) for m in methods}
    runner = Runner(RunRequest(models=["synthetic"], methods=methods, metrics=["stereoset", "seat"], device="cpu",
                               options=options, progress=False), echo=lambda m: None)  # fmt: skip
    rows = runner.run()
    assert not runner.errors
    cell = {(r["method"], r["metric"], r["submetric"]): r for r in rows}
    for m in methods:
        ss = cell[(m, "stereoset", "ss_gender")]
        assert ss["status"] == "ok" and ss["delta_low"] is not None
        print(f"\n{m}: SS {ss['value']:.2f} [{ss['ci_low']:.2f}, {ss['ci_high']:.2f}], change {ss['delta']:+.2f} "
              f"[{ss['delta_low']:+.2f}, {ss['delta_high']:+.2f}]")  # fmt: skip
    assert cell[("self-debias", "seat", None)]["status"] == "n/a"
    base_seat = cell[("base", "seat", "seat")]["value"]
    for m in ("inlp", "sentence-debias"):
        seat = cell[(m, "seat", "seat")]
        assert seat["status"] == "ok" and seat["value"] != base_seat  # the projection reaches the SEAT pooling
