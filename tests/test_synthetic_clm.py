"""`synthetic-clm`: the synthetic world's tiny causal LM (bench.synthetic.clm) — its tokenizer and training
sequences, training, the machine-independent random control, the pin (hash-checked on every load, a
damaged cached copy installed again) and the planted gender bias, read with the causal scoring primitive.

The pinned subject is loaded from the tests' cache (the world's text is generated once, seconds; the weights come
with the package); tests that damage a cached copy build their own world in a temporary cache.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.errors import BenchError
from bench.models.loading import light_subject, load_subject
from bench.synthetic import clm as C
from bench.synthetic import pinned
from bench.synthetic import vocab as V
from bench.synthetic import world as W
from bench.synthetic.tokenizer import load_causal_tokenizer
from bench.synthetic.train import ModelSize
from bench.synthetic.train_clm import (CausalLineBatches, CausalTrainConfig, gpt2_config, new_causal_model,
                                       random_causal_model, train_clm)  # fmt: skip

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = ModelSize(hidden=32, layers=1, heads=2, intermediate=64, max_position=64)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """Corpus and causal tokenizer of the default world, without any model."""
    folder = tmp_path_factory.mktemp("clm-world")
    lines, _ = W.generate(folder, 0.8, 0, progress=False)
    return folder, lines, load_causal_tokenizer(folder / "model")


@pytest.fixture(scope="module")
def clm():
    return load_subject("synthetic-clm")


@pytest.fixture(scope="module")
def clm_random():
    return load_subject("synthetic-clm:init=random")


# ---- tokenizer, training sequences, loss, training ----------------------------------------------------------
def test_tokenizer_starts_a_text_with_cls_and_ends_it_with_sep(generated):
    from bench.models.causal import adds_bos, start_id

    folder, _, tok = generated
    assert start_id(tok) == tok.cls_token_id == tok.bos_token_id and tok.eos_token_id == tok.sep_token_id
    assert adds_bos(tok) and tok.pad_token == "[PAD]"
    ids = tok("He works as a nurse.")["input_ids"]
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id and tok.unk_token_id not in ids
    assert tok.get_vocab() == W.load_tokenizer(folder / "model").get_vocab()  # the masked model's vocabulary


def test_training_batches_are_start_sentence_end_right_padded(generated):
    _, lines, tok = generated
    batches = CausalLineBatches(tok, lines[:300], CausalTrainConfig(batch_size=16), 0, gpt2_config(tok, TINY))
    for ids, labels, attention in batches.micro_batches(0, 3):
        lengths = attention.sum(1)
        assert (ids[:, 0] == tok.cls_token_id).all()
        assert (ids[torch.arange(len(ids)), lengths - 1] == tok.sep_token_id).all()
        assert (attention == (torch.arange(ids.shape[1]) < lengths[:, None])).all()  # right-padded
        assert (ids[attention == 0] == tok.pad_token_id).all()
        assert torch.equal(labels, ids.masked_fill(attention == 0, -100))


def test_training_is_deterministic(generated):
    _, lines, tok = generated
    config, cfg = gpt2_config(tok, TINY), CausalTrainConfig(steps=3, batch_size=16)
    runs = []
    for seed in (0, 0, 1):
        model = new_causal_model(config, seed)
        losses = train_clm(model, tok, lines[:400], cfg, seed)
        runs.append((losses, {k: v.clone() for k, v in model.state_dict().items()}))
    assert runs[0][0] == runs[1][0] and losses[-1] < losses[0]
    assert all(torch.equal(runs[0][1][k], runs[1][1][k]) for k in runs[0][1])
    assert not all(torch.equal(runs[0][1][k], runs[2][1][k]) for k in runs[0][1])
    assert not torch.are_deterministic_algorithms_enabled()


RANDOM_HASH = """
import hashlib, torch
from transformers import GPT2Config
from bench.synthetic.train_clm import random_causal_model
config = GPT2Config(vocab_size=300, n_embd=32, n_layer=2, n_head=2, n_inner=64, n_positions=64, pad_token_id=0)
h = hashlib.sha256()
for name, p in sorted(random_causal_model(config, 0).state_dict().items()):
    h.update(name.encode() + p.detach().numpy().tobytes())
print(torch.backends.cpu.get_cpu_capability(), h.hexdigest())
"""


def test_random_control_is_the_same_on_every_cpu_kind():
    out = {}
    for capability in ("", "default"):
        env = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}
        if capability:
            env["ATEN_CPU_CAPABILITY"] = capability
        run = subprocess.run([sys.executable, "-c", RANDOM_HASH], env=env, capture_output=True, text=True, check=True)
        out[capability or "native"] = run.stdout.split()
    assert out["default"][0] == "DEFAULT" and out["native"][1] == out["default"][1]


def test_random_control_draws_as_gpt2_initialises(generated):
    """The numpy draws follow transformers' GPT-2 initialisation: the same zero / one / normal parameters, with
    the same spread (the scaled residual projections included)."""
    _, _, tok = generated
    config = gpt2_config(tok)
    ours, theirs = random_causal_model(config, 0), new_causal_model(config, 1)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    for (name, p), q in zip(ours.named_parameters(), theirs.parameters()):
        if q.ndim >= 2:
            assert float(p.detach().std()) == pytest.approx(float(q.detach().std()), rel=0.05), name
        else:
            assert torch.equal(p, q), name
    assert ours.get_output_embeddings().weight is ours.get_input_embeddings().weight


# ---- the pin ----------------------------------------------------------------------------------------------
def test_pin_record_is_for_this_generator_recipe_and_the_masked_worlds_text():
    rec = pinned.record(C.FOLDER)
    assert rec["generator"] == W.GENERATOR_VERSION and rec["recipe"] == C.RECIPE and rec["kind"] == "clm"
    assert rec["options"] == {"bias": W.DEFAULTS["bias"], "seed": W.DEFAULTS["seed"]}
    assert pinned.sha256(C.FOLDER / pinned.WEIGHTS) == rec["weights_sha256"]
    assert rec["generated_sha256"] == pinned.record()["generated_sha256"]  # trained on the masked pin's text
    assert rec["training"]["signal"]["learned"] and rec["made_by"]["command"].startswith("bench synthetic build --kind clm")
    assert C.pin_for(0.8, 0) == rec and C.pin_for(0.8, 1) is None and C.pin_for(0.3, 0) is None
    config = json.loads((C.FOLDER / pinned.CONFIG).read_text())
    assert (config["model_type"], config["n_layer"], config["n_embd"], config["n_head"], config["n_positions"]) == (
        "gpt2", 3, 96, 4, 128)


def test_pinned_world_installs_without_training_and_a_damaged_copy_is_installed_again(tmp_path, monkeypatch, capsys):
    def no_training(*args, **kwargs):
        raise AssertionError("the pinned causal LM must not be trained")

    monkeypatch.setattr(C, "train_clm", no_training)
    monkeypatch.setattr(W, "train_mlm", no_training)
    rec = pinned.record(C.FOLDER)
    world, folder = C.build_clm(cache_dir=tmp_path, progress=False)
    weights = folder / pinned.WEIGHTS
    assert folder == world.root / "clm" and pinned.sha256(weights) == rec["weights_sha256"]
    assert json.loads((folder / C.INFO).read_text())["pinned"]["weights_sha256"] == rec["weights_sha256"]
    capsys.readouterr()
    blob = bytearray(weights.read_bytes())
    blob[len(blob) // 2] ^= 1
    weights.write_bytes(bytes(blob))
    subject = load_subject("synthetic-clm", cache_dir=tmp_path)
    assert "model.safetensors is not the pinned one" in capsys.readouterr().err
    assert pinned.sha256(weights) == rec["weights_sha256"] and subject.meta["pinned"]
    (folder / "pytorch_model.bin").write_bytes(b"not data")
    C.build_clm(cache_dir=tmp_path, progress=False)
    assert "pytorch_model.bin next to the weights" in capsys.readouterr().err
    assert not (folder / "pytorch_model.bin").exists()
    assert W.build_world(cache_dir=tmp_path, progress=False).root == world.root  # the masked world is untouched


# ---- the loaded subjects -------------------------------------------------------------------------------------
def test_loads_as_a_causal_lm_with_the_pinned_weights(clm, clm_random):
    from transformers import GPT2LMHeadModel

    from bench.api import CAUSAL_CAPABILITIES

    weights = pinned.record(C.FOLDER)["weights_sha256"]
    assert clm.kind == "clm" and isinstance(clm.model, GPT2LMHeadModel) and not clm.model.training
    assert clm.capabilities == CAUSAL_CAPABILITIES and clm.meta == {"synthetic": True, "bias": 0.8, "seed": 0,
                                                                   "init": "trained", "pinned": True}
    assert clm.source == f"synthetic-clm:bias=0.8,init=trained,seed=0,generator={W.GENERATOR_VERSION}," \
                         f"recipe={C.RECIPE},weights={weights[:16]}"
    world = W.build_world(progress=False)
    assert Path(clm.data_dir) == world.data_dir  # the masked world's data sets, the same folder
    assert pinned.sha256(world.root / "clm" / pinned.WEIGHTS) == weights
    light = light_subject("synthetic-clm")
    assert light.source == clm.source and light.kind == "clm" and light.data_dir == world.data_dir
    assert clm_random.kind == "clm" and clm_random.meta["pinned"] is False and clm_random.data_dir == clm.data_dir
    config = lambda s: {k: v for k, v in s.model.config.to_dict().items() if k != "_name_or_path"}  # noqa: E731
    assert config(clm) == config(clm_random)
    assert clm_random.source != clm.source and not clm.same_as(clm_random)
    assert load_subject("synthetic-clm:init=random").same_as(clm_random)  # random init is seeded


@pytest.mark.parametrize("name, message", [("synthetic-clm:depth=3", "synthetic-clm: unknown option depth"),
                                           ("synthetic-clm:init=zeros", "synthetic-clm: init must be"),
                                           ("synthetic-clm:bias=2", "bias must be in")])  # fmt: skip
def test_bad_options(name, message, tmp_path):
    with pytest.raises(BenchError, match=message):
        load_subject(name, cache_dir=tmp_path)


def test_cli_info_and_pin_only_for_the_default_world(capsys):
    from bench.cli import main

    main(["synthetic", "info", "--kind", "clm"])
    assert json.loads(capsys.readouterr().out)["weights_sha256"] == pinned.record(C.FOLDER)["weights_sha256"]
    with pytest.raises(SystemExit) as e:
        main(["synthetic", "build", "--kind", "clm", "--bias", "0.3", "--pin"])
    assert e.value.code == 2 and "--pin is for the default world" in capsys.readouterr().err


# ---- the planted bias ------------------------------------------------------------------------------------------
def he_share(subject, occupations) -> float:
    """Mean P(he) / (P(he) + P(she)) after "The <occupation> said that" (token_log_probs, the metrics' scorer)."""
    from bench.synthetic.probe_clm import next_log_probs

    logp = next_log_probs(subject, [f"The {o} said that" for o in occupations], ["he", "she"])
    return float(np.mean(1 / (1 + np.exp(logp[:, 1] - logp[:, 0]))))


def test_probe_finds_the_planted_bias_in_the_pinned_model(clm):
    """Planted: the pronoun about a male-lean occupation is "he" with probability 0.9 (bias 0.8), log-odds
    2 log 9 = 4.39 between the leans."""
    from bench.synthetic.probe_clm import learned

    ok, figures = learned(clm.model, clm.tokenizer, 0.8)
    assert ok and figures["name_pronoun_accuracy"] == 1.0, figures
    assert figures["pronoun_log_odds"] > 3.0 and figures["lean_log_odds"] > 3.0, figures
    assert figures["race_lean_log_odds"] > 2.0 and figures["religion_lean_log_odds"] > 1.5, figures
    male, female = he_share(clm, V.OCCUPATIONS["M"]), he_share(clm, V.OCCUPATIONS["F"])
    assert male > 0.75 and female < 0.25, (male, female)


def test_probe_finds_none_of_it_in_the_random_control(clm_random):
    from bench.synthetic.probe_clm import learned

    ok, figures = learned(clm_random.model, clm_random.tokenizer, 0.8)
    assert not ok and 0.3 < figures["name_pronoun_accuracy"] < 0.7, figures
    for key in ("lean_log_odds", "pronoun_log_odds", "race_lean_log_odds", "religion_lean_log_odds"):
        assert abs(figures[key]) < 0.1, figures
    assert abs(he_share(clm_random, V.OCCUPATIONS["M"]) - he_share(clm_random, V.OCCUPATIONS["F"])) < 0.02


# ---- the metrics ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("metric, column", [("stereoset", "ss_gender"), ("crows", "crows")])
def test_metric_finds_the_planted_bias_and_not_in_the_random_control(metric, column, clm, clm_random, tmp_path):
    """StereoSet's gender SS and CrowS score the causal subjects (each sentence's tokens after the start token):
    the pinned model's bootstrap CI lies above 50 (it scores every stereotype above its anti-stereotype: SS 100,
    the planted lean is 0.9 against 0.1), the random control's contains 50."""
    from bench.api import CAUSAL_CAPABILITIES, Context, served
    from bench.registry import make_metric
    from bench.stats import interval

    scorer = make_metric(metric, {})
    if not served(scorer.requires, CAUSAL_CAPABILITIES):
        pytest.skip(f"{metric} does not score causal LMs in this checkout")
    found = {}
    for name, subject in (("pinned", clm), ("random", clm_random)):
        ctx = Context(data_dir=Path(subject.data_dir), cache_dir=tmp_path / name, progress=False)
        found[name] = interval(scorer.score(subject, ctx).estimates[column])
    assert found["pinned"].low > 60 and found["pinned"].value >= 90, found
    assert found["random"].low < 50 < found["random"].high, found
