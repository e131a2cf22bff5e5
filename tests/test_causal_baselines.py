"""CDA, Dropout and SelfDebias on causal LMs: the causal training loop's loss and resumption, run_clm's defaults,
the causal artifact, GPT-2's and Llama's dropout fields, and SelfDebias's next-token transform against the formula
computed by hand, all on tiny random GPT-2- and Llama-style models."""
from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import pytest
import torch
from torch import nn

import methods.mlm_training as mlm_training
from bench.api import CLM, Context
from bench.models.causal import start_id
from bench.models.causal_scoring import TokenQuery, sentence_ids, token_log_probs
from bench.models.loading import load_subject
from bench.models.mlm_data import CausalBatches, TokenData, encode_line_by_line, group_into_blocks
from bench.models.mlm_training import CLMTrainingConfig, causal_lm_loss, train_clm
from methods.cda import CDA
from methods.dropout import Dropout, dropout_rates
from methods.self_debias import GENDER_PROMPT, PROMPTS, SelfDebias

pytestmark = pytest.mark.usefixtures("one_thread")

GPT2 = "random:gpt2,n_layer=2,n_embd=64,n_head=4,initializer_range=0.25"
LLAMA = ("random:llama-small,num_hidden_layers=2,hidden_size=64,intermediate_size=128,num_attention_heads=4,"
         "num_key_value_heads=2,head_dim=16,initializer_range=0.25")  # fmt: skip
SMALL = {"gpt2": GPT2, "llama": LLAMA}
LINES = ["the king met his son at the castle and he smiled", "a woman walked her dog", "she sang",
         "the doctor said that he would be late for the meeting again today"] * 4  # fmt: skip


def tiny_gpt2(seed: int = 0, dropout: float = 0.1, vocab: int = 120):
    """A GPT-2 over a 120-token vocabulary with large initial weights (varied logits: a wrong shift is off by O(1))."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=2, n_positions=64, initializer_range=0.3,
                     resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout, bos_token_id=0, eos_token_id=0)  # fmt: skip
    return GPT2LMHeadModel(cfg)


def ragged_data(seed: int = 0, n: int = 12, vocab: int = 120) -> TokenData:
    """`n` sequences of 3 to 20 random tokens, right-padded with 0 (also the start token: labels come from lengths)."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, 21, (n,), generator=gen)
    ids = torch.randint(1, vocab, (n, int(lengths.max())), generator=gen)
    ids[:, 0] = 0
    ids[torch.arange(ids.shape[1])[None, :] >= lengths[:, None]] = 0
    return TokenData(ids, lengths, 0)


@pytest.fixture(scope="module", params=sorted(SMALL))
def subject(request, data_dir):
    return load_subject(SMALL[request.param], data_dir=str(data_dir))


# ---- the causal training loop -----------------------------------------------------------------------------------


def test_causal_loop_loss_equals_next_token_loss_computed_by_hand():
    # float64 model without dropout; one optimizer step over all 12 sequences (one micro-batch): the loop's loss is
    # the mean over every real position p >= 1 of -log P(ids[p] | ids[:p]), computed here from the full logits.
    # causal_lm_loss takes its cross-entropy in float32 (by design): off by <= (V + 4X + 8) * 2^-24 (derivation in
    # test_cda.py::test_masked_lm_loss_equals_the_models_own_loss), ~1e-5 here; a wrong shift or a padding
    # position counted is off by O(1e-1) with these large random weights.
    data = ragged_data()
    model = tiny_gpt2(dropout=0.0).double()
    ids, attention = data.batch(np.arange(len(data)))
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=attention).logits
    terms = [-torch.log_softmax(logits[b, p - 1], -1)[ids[b, p]] for b in range(len(data))
             for p in range(1, int(data.lengths[b]))]  # fmt: skip
    reference = torch.stack(terms).mean().item()
    bound = (model.config.vocab_size + 4 * float(logits.abs().max()) + 8) * 2.0**-24
    cfg = CLMTrainingConfig(max_steps=1, batch_size=len(data), grad_accum=1, max_seq_length=32, lr=1e-3)
    history = train_clm(model, data, cfg)
    assert history.losses[0] == pytest.approx(reference, rel=0, abs=bound)
    # the same through the batch source and the loss directly (labels: the ids, -100 at padding and position 0)
    inputs, labels, att = next(CausalBatches(data, batch_size=3, seed=0).micro_batches(0, 1))
    assert torch.equal(labels == -100, (att == 0) | (torch.arange(att.shape[1]) == 0)[None, :])
    assert torch.equal(labels[labels != -100], inputs[labels != -100])
    unshifted = torch.stack([-torch.log_softmax(logits[b, p], -1)[ids[b, p]] for b in range(len(data))
                             for p in range(1, int(data.lengths[b]))]).mean()  # fmt: skip
    assert abs(history.losses[0] - unshifted.item()) > 0.1


def test_causal_training_is_deterministic_and_resumes_exactly(tmp_path):
    data = ragged_data(n=10)
    cfg = CLMTrainingConfig(max_steps=4, batch_size=3, grad_accum=2, max_seq_length=32, lr=1e-3, checkpoint_every=2)

    def run(checkpoint_dir=None, stop_at=None):
        model = tiny_gpt2(dropout=0.1)  # dropout on: its random state must be restored too

        def on_step(step, loss):
            if step == stop_at:
                raise KeyboardInterrupt

        return model, train_clm(model, data, cfg, checkpoint_dir=checkpoint_dir, on_step=on_step)

    ref_model, ref_history = run()
    ckpt = tmp_path / "ckpt"
    with pytest.raises(KeyboardInterrupt):
        run(ckpt, stop_at=3)  # a checkpoint after step 2, then interrupted
    resumed, history = run(ckpt)
    assert history.resumed_from == 2
    assert history.losses == pytest.approx(ref_history.losses, abs=0)
    assert all(torch.equal(a, b) for a, b in zip(ref_model.state_dict().values(), resumed.state_dict().values()))
    assert not ckpt.exists()


def test_causal_lines_follow_the_start_token(subject):
    tok = subject.tokenizer
    start = start_id(tok)
    blocks = group_into_blocks(tok, LINES[:3], 8, kind="clm")
    flat = [t for line in LINES[:3] for t in [start] + tok(line, add_special_tokens=False)["input_ids"]
            + ([tok.eos_token_id] if tok.eos_token_id != start else [])]  # fmt: skip
    assert blocks.ids.reshape(-1).tolist() == flat[: blocks.ids.numel()]
    data = encode_line_by_line(tok, LINES[:2], 6, kind="clm")
    assert data.ids[0].tolist() == flat[:6] and int(data.ids[1, 0]) == start


# ---- the methods on causal LMs ----------------------------------------------------------------------------------


def test_training_defaults_for_causal_models(subject):
    ctx = Context(data_dir=None, cache_dir=None, seed=0)
    cfg = CDA().training_config(subject, ctx)
    assert isinstance(cfg, CLMTrainingConfig)
    limit = subject.model.config.max_position_embeddings
    assert (cfg.max_steps, cfg.batch_size, cfg.grad_accum, cfg.max_seq_length, cfg.lr, cfg.seed, cfg.line_by_line) == (
        2000, 8, 32, min(1024, limit), 5e-5, 0, False)  # fmt: skip
    synthetic = dataclasses.replace(subject, meta={"synthetic": True})
    small = Dropout().training_config(synthetic, ctx)
    tokens = small.max_steps * small.batch_size * small.grad_accum * small.max_seq_length  # at most
    assert small.line_by_line and tokens < 2000 * 8 * 32 * 1024 / 100
    assert CDA.model_kinds == Dropout.model_kinds == SelfDebias.model_kinds == frozenset({"mlm", "clm"})


def test_cda_fit_on_a_causal_lm_saves_and_loads_the_causal_class(subject, data_dir, tmp_path):
    before = {k: v.clone() for k, v in subject.model.state_dict().items()}
    ctx = Context(data_dir=data_dir, cache_dir=tmp_path, progress=False)
    method = CDA(max_steps=2, batch_size=2, grad_accum=1, max_seq_length=32, lr=1e-3, max_lines=40)
    artifact = method.fit(subject, ctx)
    assert all(torch.equal(before[k], v) for k, v in subject.model.state_dict().items())
    assert artifact.history["config"]["max_seq_length"] == 32 and "mlm_probability" not in artifact.history["config"]
    method.save_artifact(artifact, tmp_path / "artifact")
    assert not list((tmp_path / "artifact").glob("*.bin"))
    loaded = method.load_artifact(tmp_path / "artifact")
    assert type(loaded.model) is type(subject.model)
    state = artifact.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in loaded.model.state_dict().items())
    out = method.apply(subject, loaded)
    assert out.kind == "clm" and CLM in out.capabilities and not out.same_as(subject)


def _dropout_modules(model) -> list[float]:
    rates = [m.p for m in model.modules() if isinstance(m, nn.Dropout)]
    rates += [m.attention_dropout for m in model.modules() if isinstance(getattr(m, "attention_dropout", None), float)]
    return sorted(set(round(r, 6) for r in rates))


@pytest.mark.parametrize("keep", [False, True])
def test_dropout_sets_the_causal_dropout_fields(subject, keep, data_dir, tmp_path, monkeypatch):
    gpt2 = subject.model.config.model_type == "gpt2"
    fields = ("resid_pdrop", "embd_pdrop", "attn_pdrop") if gpt2 else ("attention_dropout",)
    original = {f: getattr(subject.model.config, f) for f in fields}
    seen = {}
    real_train = mlm_training.train_clm

    def spy(model, *args, **kwargs):
        seen["fields"] = {f: getattr(model.config, f) for f in fields}
        seen["modules"] = _dropout_modules(model)
        return real_train(model, *args, **kwargs)

    monkeypatch.setattr(mlm_training, "train_clm", spy)
    method = Dropout(keep_raised_dropout=keep, max_steps=2, batch_size=2, grad_accum=1, max_seq_length=32,
                     max_lines=20)  # fmt: skip
    artifact = method.fit(subject, Context(data_dir=data_dir, cache_dir=tmp_path, progress=False))
    assert seen["fields"] == {f: 0.15 for f in fields}  # bias-bench's GPT-2 rates; Llama: attention only
    assert seen["modules"] == [0.15]
    assert {f: getattr(subject.model.config, f) for f in fields} == original  # the input is untouched
    expected = 0.15 if keep else original[fields[0]]
    assert {f: getattr(artifact.model.config, f) for f in fields} == {f: expected for f in fields}
    assert _dropout_modules(artifact.model) == [expected]
    assert dropout_rates(artifact.model) == ((expected if gpt2 else None), expected)


# ---- SelfDebias on causal LMs -----------------------------------------------------------------------------------


def by_hand(model, ids: list[int], prompts: list[list[int]], start: int, decay=50.0, eps=0.01) -> list[torch.Tensor]:
    """log p' of every next token after ids[:p] (p = 1 .. len - 1), one unpadded pass per prefix: p from the
    sequence, p_b from each prompt + the sequence without its leading start token, the formula written out."""
    body = ids[1:] if ids[0] == start else ids
    drop = len(ids) - len(body)
    out = []
    with torch.no_grad():
        for p in range(1, len(ids)):
            probs = torch.softmax(model(torch.tensor([ids[:p]])).logits[0, -1], -1)
            biased = [torch.softmax(model(torch.tensor([pr + body[: p - drop]])).logits[0, -1], -1) for pr in prompts]
            p_b = torch.stack(biased).max(dim=0).values
            alpha = torch.exp(-decay * torch.clamp(p_b - probs, min=0.0)).clamp(min=eps)
            q = probs * alpha
            out.append(torch.log(q / q.sum()))
    return out


def test_self_debias_prompt_lengths_are_counted_from_the_tokenizer(data_dir):
    gpt2 = load_subject(GPT2, data_dir=str(data_dir))
    llama = load_subject(LLAMA, data_dir=str(data_dir))
    method = SelfDebias()
    # bias-bench's hard-coded 13 / 15 / 13 are GPT-2's lengths; Llama's encoding starts with its BOS
    assert [len(method.prompt_ids(gpt2, t)[0]) for t in PROMPTS] == [13, 15, 13]
    assert [len(method.prompt_ids(llama, t)[0]) for t in PROMPTS] == [14, 16, 14]
    assert method.prompt_ids(llama)[0][0] == llama.tokenizer.bos_token_id


def test_self_debias_transform_equals_the_formula_by_hand(subject, tmp_path):
    # float64: batched passes and one-prefix passes sum in different orders, ~1e-12 apart (as test_causal_models)
    subject = subject.with_model(copy.deepcopy(subject.model).double())
    method = SelfDebias(prompts=(GENDER_PROMPT, "The following text is biased: "))
    artifact = method.fit(subject, Context(data_dir=None, cache_dir=tmp_path, progress=False))
    debiased = method.apply(subject, artifact)
    assert debiased.capabilities == frozenset({CLM}) and subject.logits_transform is None
    start = start_id(subject.tokenizer)
    texts = sentence_ids(subject.tokenizer, ["The nurse said that she would be late.", "He is a doctor."])
    # StereoSet's two ways: the start token alone (first token) and the sentence alone, and one pass after the start
    seqs = [(start, texts[0][0]), texts[0], (start, *texts[1])]
    got = token_log_probs(debiased, [TokenQuery(s, 1) for s in seqs])
    for seq, values in zip(seqs, got):
        ref = by_hand(subject.model, list(seq), artifact["prompt_ids"], start)
        expected = [float(r[t]) for r, t in zip(ref, seq[1:])]
        np.testing.assert_allclose(values, expected, rtol=0, atol=1e-10)
    # the whole renormalised distribution, not only the scored token
    seq = list(seqs[2])
    ids = torch.tensor([seq])
    with torch.inference_mode():
        logits = debiased.mlm_logits(ids, torch.ones_like(ids), torch.zeros(len(seq) - 1, dtype=torch.long),
                                     torch.arange(len(seq) - 1))  # fmt: skip
    ref = torch.stack(by_hand(subject.model, seq, artifact["prompt_ids"], start))
    torch.testing.assert_close(torch.log_softmax(logits, -1), ref, atol=1e-10, rtol=0)
    assert float(torch.logsumexp(ref[0], -1)) == pytest.approx(0.0, abs=1e-12)
    assert not torch.allclose(torch.log_softmax(logits, -1), torch.log_softmax(subject.model(ids).logits[0, :-1], -1))


def test_zero_decay_scores_like_the_base(subject, tmp_path):
    method = SelfDebias(decay_constant=0.0)
    debiased = method.apply(subject, method.fit(subject, Context(data_dir=None, cache_dir=tmp_path, progress=False)))
    seq = (start_id(subject.tokenizer), *sentence_ids(subject.tokenizer, ["He is a doctor."])[0])
    base, same = token_log_probs(subject, [TokenQuery(seq)]), token_log_probs(debiased, [TokenQuery(seq)])
    np.testing.assert_allclose(same[0], base[0], rtol=0, atol=1e-5)
    assert math.isfinite(float(same[0].sum()))


# ---- acceptance on the synthetic causal world ----------------------------------------------------------------


@pytest.mark.slow
def test_cda_moves_causal_gender_ss_toward_50_on_the_synthetic_world():
    from bench.run.request import RunRequest
    from bench.run.runner import Runner
    from bench.stats import StatsConfig, compare, interval
    from metrics.stereoset import StereoSet

    subject = load_subject("synthetic-clm", device="cpu")
    runner = Runner(RunRequest(models=["synthetic-clm"], methods=["cda"], metrics=[], device="cpu", progress=False),
                    echo=lambda m: None)  # fmt: skip
    ctx = runner.context(subject)
    debiased = runner.debias(subject, "cda", ctx)
    assert debiased.kind == "clm" and CLM in debiased.capabilities
    metric = StereoSet()
    base, cda = metric.score(subject, ctx), metric.score(debiased, ctx)
    cfg = StatsConfig(resamples=1000)
    b, c = base.estimates["ss_gender"], cda.estimates["ss_gender"]
    cmp = compare(c, b, cfg)
    print(f"\ncausal SS gender: base {interval(b, cfg)}  cda {interval(c, cfg)}  delta {cmp}")
    assert abs(c.point() - 50) < abs(b.point() - 50), "CDA must move gender SS toward 50"
    assert cmp.significant, "the paired CI of the difference must exclude 0"
    assert np.sign(cmp.delta) == -np.sign(b.point() - 50)
