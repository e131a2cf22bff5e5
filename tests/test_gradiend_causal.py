"""GRADIEND on causal LMs (SPEC-beyond §9.1): next-token examples (cut before the pronoun, the running-text target
token, BOS in front for Llama-style tokenizers), the parameter set of GPT-2 and Llama-3.2-3B, one training step of
the shared trainer against autograd + AdamW, the logits read at the last real token of a right-padded batch, the
shifted-NLL LMS_Dec, and the forward-mode per-example derivatives. Random-init GPT-2 and Llama-style models in
float64 (the identities are checked to ~1e-12; see tests/test_gradiend_gradients.py for why float64)."""
from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from bench.api import Context
from methods.gradiend import example_sets
from methods.gradiend import train as gtrain
from methods.gradiend.data import PRONOUN, Template, load
from methods.gradiend.examples import collate, written_out
from methods.gradiend.examples_causal import CausalText, genter_examples, gentypes_examples, leading_ids, name_prompt
from methods.gradiend.gradients import GradientPair, directional_derivatives, masked_logits
from methods.gradiend.model import Gradiend
from methods.gradiend.params import ParamSet
from tests.gradiend_helpers import NAMES, SHARED_DATA, TEMPLATES, reference_adamw_step, write_data_dir

pytestmark = pytest.mark.usefixtures("one_thread")

GPT2 = "random:gpt2,n_layer=2,n_embd=32,n_head=2"
LLAMA = ("random:llama-small,num_hidden_layers=2,hidden_size=32,intermediate_size=64,num_attention_heads=2,"
         "num_key_value_heads=1,head_dim=16")  # fmt: skip
TRAIN = [Template(t, "M", "train") for t in TEMPLATES[:8]]
EXTRA = ["[PRONOUN] was late, said [NAME].", 'Then [NAME] shouted "[PRONOUN] is here!"',
         "[NAME] left early! [PRONOUN] was tired."]  # fmt: skip
# Relative tolerances of the float64 identities: ~1e-13 is what two summation orders differ by in float64, but
# Llama's RMSNorm computes in float32 whatever the model's dtype (transformers casts its input), so a 1e-16
# difference before it can flip a float32 rounding: measured up to 6e-8 relative on the Llama-style model. Any real
# error (a wrong position, label or sign) is O(1) relative.
TOLS = {"gpt2": 1e-9, "llama": 1e-6}
TOL = TOLS["gpt2"]


def _load(name):
    from bench.models.loading import load_subject

    if not (SHARED_DATA / "models" / "gpt2-tokenizer" / "tokenizer.json").is_file():
        pytest.skip("the GPT-2 tokenizer is not in the data directory")
    subject = load_subject(name, data_dir=SHARED_DATA)
    subject.model.double()
    return subject


@pytest.fixture(scope="module")
def gpt2():
    return _load(GPT2)


@pytest.fixture(scope="module")
def llama():
    return _load(LLAMA)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return load(write_data_dir(tmp_path_factory.mktemp("gdata")))


def _params(subject):
    return ParamSet.select(subject.model)


# ---- examples -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["gpt2", "llama"])
def test_cut_and_target_are_the_running_text(which, request):
    """The input is the text before the first pronoun (BOS in front for Llama, nothing for GPT-2), the target the
    very token the whole written-out text has next: ` he`/` she` after a word, ` He`/` She` after `. `, `He` at the
    start of a text (after GPT-2's start token), `he` right after a quote; the counterfactual the other pronoun in
    the same form."""
    subject = request.getfixturevalue(which)
    tok = subject.tokenizer
    bos = [tok.bos_token_id] if which == "llama" else []
    assert leading_ids(tok) == bos
    masked = TEMPLATES + EXTRA
    for gender, name in (("M", "John"), ("F", "Mary")):
        examples = genter_examples(CausalText(tok), masked, [name] * len(masked), [gender] * len(masked), 48)
        for m, ex in zip(masked, examples):
            written, spans = written_out(m, name, gender)
            start, end = next(span for span, slot in zip(spans, re.findall(r"\[NAME\]|\[PRONOUN\]", m)) if slot == PRONOUN)
            full = bos + tok(written, add_special_tokens=False)["input_ids"]
            context = bos + tok(written[:start].rstrip(), add_special_tokens=False)["input_ids"]
            assert ex.positions == [len(ex.ids) - 1]
            if context:
                assert ex.ids == context and full[: len(context)] == context
                assert ex.labels == [full[len(context)]]
            else:  # GPT-2, pronoun first: the start token alone, target = the text's first token
                assert ex.ids == [tok.eos_token_id] and ex.labels == [full[0]]
            word, other = tok.decode(ex.labels), tok.decode(ex.counter)
            assert word.strip() == written[start:end]
            assert word.startswith(" ") == (start > 0 and written[start - 1] == " ")
            assert other == _swapped(word)
            assert ex.ids[0] == tok.bos_token_id if which == "llama" else tok.bos_token_id not in ex.ids[1:]
    rows = example_sets.gender_rows(subject, [Template(t, "M", "test") for t in masked], NAMES["test"], max_length=48)
    assert len(rows) == 2 * len(masked) and all(r.example.counter is None for r in rows)


def _swapped(word: str) -> str:
    """The other pronoun in the same form (leading space, capital)."""
    stripped = word.strip()
    other = {"he": "she", "she": "he"}[stripped.lower()]
    return word[: len(word) - len(word.lstrip())] + (other.capitalize() if stripped[0].isupper() else other)


def test_training_batches_share_the_input_and_flip_the_target(gpt2, llama):
    for subject in (gpt2, llama):
        tok = subject.tokenizer
        batches = example_sets.train_batches(subject, TRAIN, NAMES["train"], batch_size=6, max_length=48)
        for k in range(3):
            gender = batches.draw(k)[0]
            batch = batches.batch(k)
            assert batch.size == 6 and torch.equal(batch.rows, torch.arange(6))
            assert torch.equal(batch.cols, batch.attention_mask.sum(1) - 1), "the last real token of every row"
            for label, counter in zip(batch.labels.tolist(), batch.counter.tolist()):
                word, other = tok.decode([label]), tok.decode([counter])
                assert word.strip().lower() == {"M": "he", "F": "she"}[gender]
                assert other == _swapped(word)


def test_a_text_too_long_for_max_length_is_dropped(gpt2):
    long = [Template("a b c d e f g h i j k l [NAME] said [PRONOUN] left.", "M", "train")] + TRAIN[:2]
    rows = example_sets.gender_rows(gpt2, long, NAMES["train"], max_length=10)
    assert {r.template for r in rows} == {1, 2}


def test_gentypes_prompts():
    assert name_prompt("My friend, [NAME], excels in the field of mechanical engineering.") == \
        "The person, who excels in the field of mechanical engineering, has the first name"  # fmt: skip
    assert name_prompt("The new pilot, [NAME], landed the plane safely.") == "The new pilot,"
    assert name_prompt("My friend, [NAME], loves knitting.", "before") == "My friend,"


def test_gentypes_items_end_where_the_name_comes(gpt2):
    tok = gpt2.tokenizer
    items = gentypes_examples(["My friend, [NAME], loves knitting.", "[NAME] is a nurse."], tok)
    assert tok.decode(items[0].ids) == "The person, who loves knitting, has the first name"
    assert items[1].ids == [tok.eos_token_id], "a name first: the start token alone"
    assert all(e.positions == [len(e.ids) - 1] for e in items)


# ---- parameters -----------------------------------------------------------------------------------------------
def test_parameter_counts_of_gpt2_and_llama_3b():
    """n = 124,439,808 for gpt2 (the real config of random:gpt2) and 3,212,749,824 for Llama-3.2-3B (SPEC-beyond
    §9.1): every parameter, the LM head tied to the input embedding and listed once as the embedding."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from bench.models.causal import CONFIG_FOLDER

    folder = SHARED_DATA / "models" / "gpt2-tokenizer"
    if not (folder / "config.json").is_file():
        pytest.skip("the GPT-2 config is not in the data directory")
    import json

    llama = AutoConfig.for_model(**json.loads((CONFIG_FOLDER / "llama-3.2-3b.json").read_text()))
    for config, n, embedding in ((AutoConfig.from_pretrained(folder), 124_439_808, "transformer.wte.weight"),
                                 (llama, 3_212_749_824, "model.embed_tokens.weight")):  # fmt: skip
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
        params = ParamSet.select(model)
        assert params.n == n
        assert embedding in params.names and not any("lm_head" in name for name in params.names)
        assert model.get_output_embeddings().weight is dict(model.named_parameters())[embedding]


# ---- logits at the last real token ------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["gpt2", "llama"])
def test_last_real_token_logits_under_right_padding_equal_batch_size_one(which, request):
    subject, tol = request.getfixturevalue(which), TOLS[which]
    rows = example_sets.gender_rows(subject, TRAIN, NAMES["train"], max_length=48)
    batch = collate([r.example for r in rows], subject.tokenizer.pad_token_id)
    assert len({len(r.example.ids) for r in rows}) > 1, "the batch is padded"
    with torch.no_grad():
        got = masked_logits(subject.model, batch, "clm")
        for i, r in enumerate(rows):
            alone = subject.model(input_ids=torch.tensor([r.example.ids])).logits[0, -1]
            assert torch.allclose(got[i], alone, rtol=0, atol=tol * alone.abs().max())
        padded_last = subject.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, -1]
    short = [i for i, r in enumerate(rows) if len(r.example.ids) < batch.input_ids.shape[1]]
    assert not torch.allclose(padded_last[short], got[short]), "logits[:, -1] (the reference) reads pad positions"


def _reference_grad(subject, params, examples, labels):
    """L = mean over examples of the next-token cross-entropy, each example run alone through the whole HF model."""
    losses = [nn.functional.cross_entropy(subject.model(input_ids=torch.tensor([e.ids])).logits[0, -1], torch.tensor(y))
              for e, y in zip(examples, labels)]  # fmt: skip
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(torch.stack(losses).mean(), params.params)])


@pytest.mark.parametrize("which", ["gpt2", "llama"])
def test_gradient_pair_equals_per_text_autograd(which, request):
    subject, tol = request.getfixturevalue(which), TOLS[which]
    params = _params(subject)
    batches = example_sets.train_batches(subject, TRAIN, NAMES["train"], batch_size=5, max_length=48)
    pair = GradientPair(subject, params)
    examples = batches.examples(1)
    x, t = pair(collate(examples, subject.tokenizer.pad_token_id))
    g_pos = _reference_grad(subject, params, examples, [e.labels[0] for e in examples])
    g_neg = _reference_grad(subject, params, examples, [e.counter[0] for e in examples])
    scale = g_pos.abs().max()
    assert torch.allclose(x, g_pos, rtol=0, atol=tol * scale)
    assert torch.allclose(t, g_pos - g_neg, rtol=0, atol=tol * scale)
    emb = params.names.index("transformer.wte.weight" if which == "gpt2" else "model.embed_tokens.weight")
    assert float(params.views(x)[emb].abs().sum()) > 0, "the tied output projection's gradient is in x"


@pytest.mark.parametrize("which", ["gpt2", "llama"])
def test_directional_derivatives_equal_per_example_gradients(which, request):
    subject, tol = request.getfixturevalue(which), TOLS[which]
    params = _params(subject)
    rows = example_sets.gender_rows(subject, TRAIN[:3], NAMES["test"], max_length=48)
    rows += example_sets.neutral_rows(subject, TRAIN[:1], NAMES["test"], ["the weather was cold ."], max_length=48,
                                      neutral_max_length=128)  # fmt: skip
    direction = torch.randn(params.n, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    got = directional_derivatives(subject, params, direction, collate([r.example for r in rows], subject.tokenizer.pad_token_id))
    want = torch.stack([torch.dot(_reference_grad(subject, params, [r.example], r.example.labels), direction) for r in rows])
    assert torch.allclose(got, want, rtol=tol, atol=tol * want.abs().max())


# ---- one step of the shared trainer ---------------------------------------------------------------------------
def test_one_training_step_equals_autograd_and_adamw(gpt2, data, tmp_path):
    """train_run (GradientPair + closed-form GRADIEND gradient + AdamW, then the evaluation and the sign flip) after one
    step equals: g+ and g- by autograd on each text alone, nn.Linear encoder/decoder, autograd MSE, torch AdamW."""
    subject, params = gpt2, _params(gpt2)
    cfg = gtrain.TrainConfig(seeds=(0,), lr=1e-3, eps=1e-8, batch_size=4, max_steps=1, eval_every=1)
    batches = example_sets.train_batches(subject, data.genter["train"], data.names["train"], batch_size=4, max_length=48)
    val = gtrain.ValSet(subject, params, example_sets.gender_rows(subject, data.genter["val"], data.names["val"],
                                                                  max_length=48), 4)  # fmt: skip
    run = gtrain.train_run(subject, params, batches, val, cfg, 0, tmp_path / "run", Context(data_dir=None, cache_dir=tmp_path, progress=False))

    examples = batches.examples(0)
    g_pos = _reference_grad(subject, params, examples, [e.labels[0] for e in examples])
    g_neg = _reference_grad(subject, params, examples, [e.counter[0] for e in examples])
    x, t = g_pos, g_pos - g_neg
    want = reference_adamw_step(params.n, x, t, run.history[0]["flipped"])
    got = run.gradiend.flat
    assert run.best_step == 1 and run.history[0]["r"] >= 0
    assert not torch.equal(got, Gradiend.initialised(params.n, 0, dtype=torch.float64).flat), "the step moved the GRADIEND"
    assert torch.allclose(got, want, rtol=1e-10, atol=1e-14)


# ---- LMS_Dec ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["gpt2", "llama"])
def test_lms_dec_is_one_over_one_plus_the_shifted_nll(which, data, request):
    from methods.gradiend.decoder_eval import DecoderEvaluator

    subject, tol = request.getfixturevalue(which), TOLS[which]
    tok = subject.tokenizer
    evaluator = DecoderEvaluator(subject, data, lms_max_sentences=5, batch_size=3)
    front = [tok.bos_token_id] if which == "llama" else []
    total = count = unshifted = 0.0
    with torch.no_grad():
        for sentence in data.geneutral[:5]:
            ids = torch.tensor([front + tok(sentence, add_special_tokens=False)["input_ids"]])
            out = subject.model(input_ids=ids, labels=ids)  # Hugging Face shifts the labels itself (in float32)
            shifted = float(nn.functional.cross_entropy(out.logits[0, :-1], ids[0, 1:], reduction="sum"))
            assert shifted / (ids.shape[1] - 1) == pytest.approx(float(out.loss), rel=1e-6)
            total += shifted
            count += ids.shape[1] - 1
            unshifted += float(nn.functional.cross_entropy(out.logits[0], ids[0], reduction="sum"))
    assert evaluator.n_masked == count
    assert evaluator.nll() == pytest.approx(total / count, rel=tol)
    assert evaluator.lms() == pytest.approx(1 / (1 + total / count), rel=tol)
    assert abs(unshifted / (count + 5) - total / count) > 1e-3, "the reference's unshifted NLL is another number"


# ---- memory options -------------------------------------------------------------------------------------------
def test_layers_select_whole_blocks(gpt2, llama):
    from bench.errors import BenchError

    last = ParamSet.select(gpt2.model, layers=(-1,))
    assert last.names and all(name.startswith("transformer.h.1.") for name in last.names)
    assert ParamSet.select(gpt2.model, layers=(1,)).names == last.names
    both = ParamSet.select(llama.model, layers=(0, 1))
    assert both.n == _params(llama).n - llama.model.model.embed_tokens.weight.numel() - llama.model.model.norm.weight.numel()
    with pytest.raises(BenchError, match="outside the model's 2 blocks"):
        ParamSet.select(gpt2.model, layers=(2,))


def test_bfloat16_gradient_buffers_hold_the_rounded_float32_gradients():
    subject = _load(GPT2)
    subject.model.float()
    params = _params(subject)
    batch = example_sets.train_batches(subject, TRAIN, NAMES["train"], batch_size=4, max_length=48).batch(0)
    x32, t32 = (v.clone() for v in GradientPair(subject, params)(batch))
    pair = GradientPair(subject, params, torch.bfloat16)
    for _ in range(2):  # the second call starts from the first one's buffers
        x16, t16 = pair(batch)
        assert x16.dtype == torch.bfloat16 and torch.equal(x16, x32.bfloat16()) and torch.equal(t16, t32.bfloat16())
    assert all(p.grad is None for p in subject.model.parameters())


def test_bfloat16_gradiend_on_a_layer_subset_trains_edits_and_applies(data, tmp_path):
    from methods.gradiend.method import GradiendBPI
    from methods.gradiend.stages import GridConfig, evaluate_grid, select_edit

    subject = _load(GPT2)
    subject.model.float()
    before = {k: v.clone() for k, v in subject.model.state_dict().items()}
    cfg = gtrain.TrainConfig(seeds=(0,), lr=1e-2, eps=1e-4, batch_size=4, max_steps=2, eval_every=1, layers=(-1,),
                             dtype="bfloat16")  # fmt: skip
    gradiend, _ = gtrain.train(subject, data, cfg, tmp_path / "out", Context(data_dir=None, cache_dir=tmp_path, progress=False))
    assert gradiend.flat.dtype == torch.bfloat16 and gradiend.n == ParamSet.select(subject.model, layers=(-1,)).n
    grid = GridConfig(h_values=(1.0,), alpha_values=(-0.1, 0.1), lms_max_sentences=4, layers=(-1,))
    table = evaluate_grid(subject, gradiend, data, grid).table
    assert len(table) == 3 and table["LMS_Dec"].between(0, 1).all()
    assert all(torch.equal(v, subject.model.state_dict()[k]) for k, v in before.items()), "the grid restores the model"
    edit = select_edit(subject, gradiend, table.assign(BPI=[0.0, 1.0, 0.0]), "bpi", layers=(-1,))
    method = GradiendBPI(layers=[-1], dtype="bfloat16")
    from methods.gradiend.method import GradiendArtifact

    edited = method.apply(subject, GradiendArtifact("bpi", edit.h, edit.alpha, edit.signature, edit.delta, table))
    changed = {k for k, v in edited.model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.startswith("transformer.h.1.") for k in changed)


# ---- the command line -----------------------------------------------------------------------------------------
CLI_OPTS = ["-o", "seeds=[0]", "-o", "max_steps=3", "-o", "eval_every=3", "-o", "batch_size=4", "-o", "lr=0.01",
            "-o", "eps=0.0001", "-o", "h_values=[1.0]", "-o", "alpha_values=[-0.1, 0.1]", "-o", "lms_max_sentences=8"]  # fmt: skip


def _synthetic_clm_name() -> str:
    from bench.errors import BenchError
    from bench.models.loading import parse_model_name

    try:
        parse_model_name("synthetic-clm")
    except BenchError:
        pytest.skip("the synthetic world's causal LM (synthetic-clm) is not in this checkout")
    return "synthetic-clm"


@pytest.mark.parametrize("which", ["gpt2-dir", "synthetic-clm"])
def test_cli_train_encoder_decoder_on_a_causal_model(which, tmp_path, capsys):
    from bench.cli import main

    if which == "gpt2-dir":
        subject = _load(GPT2)
        subject.model.float().save_pretrained(tmp_path / "model")
        subject.tokenizer.save_pretrained(tmp_path / "model")
        common = ["--model", str(tmp_path / "model"), "--data-dir", str(write_data_dir(tmp_path / "data"))]
    else:
        common = ["--model", _synthetic_clm_name()]
    common += ["--device", "cpu", "--no-progress", *CLI_OPTS]
    for args in (["train", "--out", str(tmp_path / "run")],
                 ["encoder", "--gradiend", str(tmp_path / "run"), "--neutral-max", "4", "--out", str(tmp_path / "enc")],
                 ["decoder", "--gradiend", str(tmp_path / "run"), "--out", str(tmp_path / "dec")]):  # fmt: skip
        capsys.readouterr()
        try:
            main(["gradiend", *args[:1], *common, *args[1:]])
        except SystemExit as e:
            assert e.code == 0, capsys.readouterr().err
    assert (tmp_path / "run" / "gradiend" / "gradiend.safetensors").is_file()
    assert (tmp_path / "enc" / "encoder_rows.csv").is_file() and (tmp_path / "dec" / "heatmap.png").is_file()
    import pandas as pd

    grid = pd.read_csv(tmp_path / "dec" / "grid.csv")
    assert len(grid) == 3 and grid["LMS_Dec"].between(0, 1).all() and (grid["P(F)"] > 0).all()


# ---- acceptance on the synthetic world's causal LM (slow: trains 3 seeds and runs the grid once, cached) ---------
@pytest.fixture(scope="module")
def clm_world():
    import os
    from pathlib import Path

    from bench.models.loading import load_subject

    subject = load_subject(_synthetic_clm_name(), device="cpu")
    return subject, Context(data_dir=Path(subject.data_dir), cache_dir=Path(os.environ["BENCH_CACHE_DIR"]), progress=False)


@pytest.mark.slow
def test_encoder_separates_the_genders_on_synthetic_clm(clm_world):
    """Every one of the 3 training seeds separates female from male on the GENTER test split. Measured on the pinned
    synthetic-clm (float32, one thread): val r 0.8795 / 0.8784 / 0.8793 (seeds 0, 1, 2), test Cor_GENTER 0.916 /
    0.915 / 0.916, Acc_GENTER 0.993 / 0.978 / 0.993 (600 rows): thresholds 0.85 (margin >= 0.028 on val, 0.065 on
    test) and 0.95 (>= 8 templates of 300)."""
    from methods.gradiend.encoder_eval import analyse
    from methods.gradiend.method import GradiendBPI

    subject, ctx = clm_world
    _, summary, folder = GradiendBPI().trained(subject, ctx)
    data = load(ctx.data_dir)
    assert len(summary["runs"]) >= 3
    for run in summary["runs"]:
        gradiend, _ = Gradiend.load(folder / f"seed-{run['seed']}" / "best")
        report = analyse(subject, gradiend, data, split="test", neutral_max=1000)
        print(f"seed {run['seed']}: val r {run['val_cor']:.4f}\n{report.table()}")
        assert run["val_cor"] >= 0.85
        assert report.metrics["Cor_GENTER"] >= 0.85 and report.metrics["Acc_GENTER"] >= 0.95


@pytest.fixture(scope="module")
def clm_fitted(clm_world):
    from methods.gradiend.method import GradiendBPI

    subject, ctx = clm_world
    return GradiendBPI(), GradiendBPI().fit(subject, ctx)


@pytest.mark.slow
def test_fpi_and_mpi_move_name_probabilities_apart_and_bpi_balances_on_synthetic_clm(clm_fitted):
    """P(F) - P(M) after the GENTYPES openers: base +0.011; FPI +0.067, MPI -0.053, BPI -0.002 with LMS_Dec 0.346
    as the base's (measured on the pinned synthetic-clm)."""
    _, artifact = clm_fitted
    table = artifact.grid
    print("\n" + artifact.summary["selection"])
    diff = table["P(F)"] - table["P(M)"]
    base = diff[table["kind"] == "base"].iloc[0]
    chosen = {c: diff[table[c.upper()].idxmax()] for c in ("bpi", "fpi", "mpi")}
    assert chosen["fpi"] > base + 0.02 and chosen["mpi"] < base - 0.02
    assert abs(chosen["bpi"]) < abs(base)
    lms = table["LMS_Dec"]
    assert abs(lms[table["BPI"].idxmax()] - lms[table["kind"] == "base"].iloc[0]) < 0.01


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason=(
    "not on synthetic-clm: its base model prefers the stereotype in every StereoSet item (SS 100.0 in every domain, "
    "LMS 100), and BPI balances the names' prior after the GENTYPES openers, which is balanced already (P(F) 0.326, "
    "P(M) 0.315): no trait ever precedes a name in this world, so the criterion cannot see the stereotype and "
    "selects a near-identity edit (h=-0.2, alpha=-0.005; gender SS stays 100.0, overall 99.6). FPI and MPI edits do "
    "move SS: overall 91.7 and 83.3, profession 80.0 and 60.0 (measured)"))  # fmt: skip
def test_bpi_moves_causal_stereoset_ss_toward_50(clm_world, clm_fitted):
    from bench.api import served
    from bench.stats import StatsConfig, compare
    from metrics.stereoset import StereoSet

    subject, ctx = clm_world
    if not served(StereoSet.requires, subject.capabilities):
        pytest.skip("StereoSet does not score causal LMs yet")
    method, artifact = clm_fitted
    base, new = StereoSet().score(subject, ctx), StereoSet().score(method.apply(subject, artifact), ctx)
    ss_base, ss_new = base.estimates["ss_gender"].point(), new.estimates["ss_gender"].point()
    cmp = compare(new.estimates["ss_gender"], base.estimates["ss_gender"], StatsConfig(resamples=1000, seed=0))
    print(f"gender SS {ss_base:.1f} -> {ss_new:.1f} (change {cmp.delta:+.1f}, CI [{cmp.low:+.1f}, {cmp.high:+.1f}])")
    assert abs(ss_new - 50) < abs(ss_base - 50)
    assert cmp.significant
