"""Dropout debiasing: the right config fields and built modules for BERT, RoBERTa and DistilBERT."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import (
    BertConfig,
    BertForMaskedLM,
    DistilBertConfig,
    DistilBertForMaskedLM,
    RobertaConfig,
    RobertaForMaskedLM,
)

import methods.mlm_training as mlm_training
from bench.api import Context
from bench.errors import BenchError
from methods.dropout import Dropout, dropout_fields, dropout_rates, set_dropout
from bench.models.mlm_training import masked_lm_loss


def tiny(arch: str, seed: int = 0):
    torch.manual_seed(seed)
    if arch == "bert":
        cfg = BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64)  # fmt: skip
        return BertForMaskedLM(cfg)
    if arch == "roberta":
        cfg = RobertaConfig(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=64, max_position_embeddings=66, pad_token_id=1)  # fmt: skip
        return RobertaForMaskedLM(cfg)
    cfg = DistilBertConfig(vocab_size=120, dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=64)
    return DistilBertForMaskedLM(cfg)


# Which config field each dropout module of the MLM model takes its rate from, by module name.
def expected_rate(arch: str, name: str, hidden: float, attention: float) -> float:
    if arch in ("bert", "roberta"):
        return attention if name.endswith("attention.self.dropout") else hidden
    return attention if name.endswith("attention.dropout") else hidden


ARCHS = ["bert", "roberta", "distilbert"]
FIELDS = {
    "bert": ("hidden_dropout_prob", "attention_probs_dropout_prob"),
    "roberta": ("hidden_dropout_prob", "attention_probs_dropout_prob"),
    "distilbert": ("dropout", "attention_dropout"),
}


@pytest.mark.parametrize("arch", ARCHS)
def test_set_dropout_sets_config_fields_and_built_modules(arch):
    model = tiny(arch)
    assert dropout_fields(model.config) == FIELDS[arch]
    set_dropout(model, 0.20, 0.15)
    hidden_field, attention_field = FIELDS[arch]
    assert getattr(model.config, hidden_field) == 0.20 and getattr(model.config, attention_field) == 0.15
    modules = {n: m for n, m in model.named_modules() if isinstance(m, nn.Dropout)}
    n_attention = sum(expected_rate(arch, n, 0.2, 0.15) == 0.15 for n in modules)
    assert n_attention == 2  # one attention dropout per layer
    for name, module in modules.items():
        assert module.p == pytest.approx(expected_rate(arch, name, 0.20, 0.15)), name
    assert dropout_rates(model) == (0.20, 0.15)


@pytest.mark.parametrize("arch", ARCHS)
def test_every_dropout_the_forward_pass_uses_is_reached(arch):
    """With both rates set to 0, train mode must compute exactly what eval mode computes; a dropout module
    left at its old rate (e.g. only the config changed, as the paper did for DistilBERT) would break this."""
    model = tiny(arch)
    ids = torch.randint(5, 120, (3, 12))
    set_dropout(model, 0.0, 0.0)
    model.train()
    with torch.no_grad():
        train_out = model(input_ids=ids).logits
    model.eval()
    with torch.no_grad():
        eval_out = model(input_ids=ids).logits
    assert torch.equal(train_out, eval_out)
    # ... and with the raised rates train mode really drops units
    set_dropout(model, 0.2, 0.15)
    model.train()
    with torch.no_grad():
        assert not torch.equal(model(input_ids=ids).logits, eval_out)


@pytest.mark.parametrize("arch", ARCHS)
def test_masked_lm_loss_matches_model_loss_for_every_architecture(arch):
    # float64 model; masked_lm_loss's float32 cross-entropy is off by <= (V + 4X + 8) * 2^-24 (X = max |logit|;
    # derivation in test_cda.py::test_masked_lm_loss_equals_the_models_own_loss), ~1e-5 here for V = 120.
    model = tiny(arch).double().eval()
    ids = torch.randint(5, 120, (4, 10))
    labels = ids.clone()
    labels[torch.rand(ids.shape, generator=torch.Generator().manual_seed(1)) > 0.3] = -100
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels)
        bound = (model.config.vocab_size + 4 * float(out.logits.abs().max()) + 8) * 2.0**-24
        assert masked_lm_loss(model, ids, labels).item() == pytest.approx(out.loss.item(), rel=0, abs=bound)


def test_unknown_architecture_is_a_clear_error():
    class Cfg:
        model_type = "mystery"

    with pytest.raises(BenchError, match="mystery"):
        dropout_fields(Cfg())
    with pytest.raises(BenchError):
        Dropout(hidden_dropout=1.5)


@pytest.mark.parametrize("arch", ["bert", "distilbert"])
@pytest.mark.parametrize("keep", [False, True])
def test_dropout_fit_trains_with_raised_dropout_and_returns_eval_model(arch, keep, data_dir, tmp_path, monkeypatch):
    from bench.models.subject import Subject
    from tests.tokenizers_fixture import load_bert_tokenizer

    tokenizer = load_bert_tokenizer(data_dir)  # DistilBERT shares BERT's vocabulary
    torch.manual_seed(0)
    if arch == "bert":
        model = BertForMaskedLM(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                                           num_attention_heads=2, intermediate_size=64))  # fmt: skip
    else:
        model = DistilBertForMaskedLM(DistilBertConfig(vocab_size=len(tokenizer), dim=32, n_layers=2, n_heads=2,
                                                       hidden_dim=64))  # fmt: skip
    model.eval()
    subject = Subject(model=model, tokenizer=tokenizer, name="tiny", source=f"test:{arch}")
    original = dropout_rates(model)
    seen = {}
    real_train = mlm_training.train_mlm

    def spy(m, *args, **kwargs):
        seen["rates"] = dropout_rates(m)
        seen["modules"] = sorted({round(x.p, 6) for x in m.modules() if isinstance(x, nn.Dropout)})
        seen["same_object"] = m is subject.model
        history = real_train(m, *args, **kwargs)
        return history

    monkeypatch.setattr(mlm_training, "train_mlm", spy)
    method = Dropout(keep_raised_dropout=keep, max_steps=2, batch_size=4, grad_accum=1, max_seq_length=32,
                     max_lines=30)  # fmt: skip
    ctx = Context(data_dir=data_dir, cache_dir=tmp_path, progress=False)
    artifact = method.fit(subject, ctx)
    assert seen["rates"] == (0.20, 0.15) and seen["modules"] == [0.15, 0.2]
    assert not seen["same_object"]
    assert dropout_rates(subject.model) == original  # the input is untouched
    out = method.apply(subject, artifact)
    assert not out.model.training and not out.same_as(subject)
    expected = (0.20, 0.15) if keep else original
    assert dropout_rates(out.model) == pytest.approx(expected)
    rates = sorted({round(x.p, 6) for x in out.model.modules() if isinstance(x, nn.Dropout)})
    assert rates == sorted({round(r, 6) for r in expected})
    # the saved weights load back with the same dropout configuration
    method.save_artifact(artifact, tmp_path / "art")
    loaded = method.load_artifact(tmp_path / "art")
    assert dropout_rates(loaded.model) == pytest.approx(expected)


@pytest.mark.slow
def test_dropout_is_measured_and_reported_on_the_synthetic_world(synthetic, tmp_path):
    """Dropout's effect on bias is not asserted (the paper finds it inconsistent); it must run and be reported."""
    from bench.run.request import RunRequest
    from bench.run.runner import Runner

    runner = Runner(RunRequest(models=["synthetic"], methods=["dropout"], metrics=["stereoset"], device="cpu",
                               progress=False), out=tmp_path / "run", echo=lambda m: None)  # fmt: skip
    rows = runner.run()
    assert not runner.errors
    ss = [r for r in rows if r["method"] == "dropout" and r["submetric"] == "ss_gender"]
    assert len(ss) == 1 and ss[0]["status"] == "ok"
    row = ss[0]
    assert row["ci_low"] <= row["value"] <= row["ci_high"] and row["delta"] is not None
    print(f"\nDropout on synthetic: SS gender {row['value']:.2f} [{row['ci_low']:.2f}, {row['ci_high']:.2f}], "
          f"delta vs base {row['delta']:+.2f} [{row['delta_low']:+.2f}, {row['delta_high']:+.2f}]")  # fmt: skip
