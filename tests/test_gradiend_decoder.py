"""Decoder evaluation (SPEC §1.7): LMS_Dec / P(F) / P(M) / BPI / FPI / MPI against one-sentence-at-a-time
reference computations, in-place edits undone bit for bit, grid, selection, heatmap."""
from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch

from methods.gradiend.data import load
from methods.gradiend.decoder_eval import (DecoderEvaluator, WeightEdit, edit_delta, heatmap, point_metrics, run_grid, select,
                                           selection_table)  # fmt: skip
from methods.gradiend.model import Gradiend
from methods.gradiend.params import ParamSet
from tests.gradiend_helpers import tiny_subject, write_data_dir


# float64 model and GRADIEND: these tests state equalities (batched evaluation == one sentence per forward
# pass, edit == theta + alpha dec(h)); in float32 the summation orders differ by CPU-dependent rounding that can
# also flip near-tied argmax predictions. In float64 a probability of the tiny model is off by ~1e-13 relative
# or less (~20 stages of <= 128-term dot products: <= 20 * 128 * 2^-53 ~ 3e-13), so rel 1e-6 holds with a
# margin ~1e6 while a wrong position or edit changes the metrics by >= 1e-2; elementwise edits (<= 4 roundings
# of values <= ~10) are exact to ~1e-14, checked to 1e-12.
@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    subject = tiny_subject(hidden=32, layers=2, seed=3)
    subject.model.double()
    data = load(write_data_dir(tmp_path_factory.mktemp("gdata")))
    params = ParamSet.select(subject.model)
    g = Gradiend.initialised(params.n, seed=0, dtype=torch.float64)
    with torch.no_grad():  # big enough for edits to change predictions of the tiny model
        g.W_d.mul_(30)
        g.b_d.mul_(30)
    return subject, data, g, DecoderEvaluator(subject, data, batch_size=3)


def reference_metrics(subject, data, evaluator):
    """One sentence per forward pass, full-sequence logits, strings compared by decoding."""
    tok, model = subject.tokenizer, subject.model
    correct = total = 0
    with torch.no_grad():
        for ex in evaluator.lms_items:
            logits = model(input_ids=torch.tensor([ex.ids])).logits[0]
            for pos, label in zip(ex.positions, ex.labels):
                pred = int(logits[pos].argmax())
                correct += tok.decode([pred], skip_special_tokens=True).strip().lower() == tok.decode([label]).strip().lower()
                total += 1
        names = {}
        for info in data.namextend:
            names.setdefault(info.name.lower(), info)
        vocab = tok.convert_ids_to_tokens(list(range(len(tok))))
        name_tokens = [(i, names[t.lower()]) for i, t in enumerate(vocab) if t.lower() in names]
        p_f, p_m = [], []
        for template in data.gentypes:
            ids = tok(template.replace("[NAME]", tok.mask_token))["input_ids"]
            probs = torch.softmax(model(input_ids=torch.tensor([ids])).logits[0, ids.index(tok.mask_token_id)].double(), -1)
            f = m = 0.0
            for i, info in name_tokens:
                f += float(probs[i]) * info.prob_F if info.gender == "F" else 0.0
                m += float(probs[i]) * info.prob_M if info.gender == "M" else 0.0
            p_f.append(f)
            p_m.append(m)
    lms = correct / total
    p_f, p_m = np.array(p_f), np.array(p_m)
    return {"LMS_Dec": lms, "P(F)": p_f.mean(), "P(M)": p_m.mean(),
            "BPI": lms * np.mean([(1 - abs(a - b)) * (a + b) for a, b in zip(p_m, p_f)]),
            "FPI": lms * np.mean([(1 - a) * b for a, b in zip(p_m, p_f)]),
            "MPI": lms * np.mean([(1 - b) * a for a, b in zip(p_m, p_f)])}  # fmt: skip


def test_evaluation_matches_reference(setup):
    subject, data, _, evaluator = setup
    got, want = evaluator.evaluate(), reference_metrics(subject, data, evaluator)
    for k in want:
        assert got[k] == pytest.approx(want[k], rel=1e-6, abs=1e-12), k
    assert got["P(F)"] > 0 and got["P(M)"] > 0


def test_point_metrics_formulas():
    p_f, p_m = np.array([0.2, 0.5]), np.array([0.6, 0.1])
    m = point_metrics(0.5, p_f, p_m)
    assert m["BPI"] == pytest.approx(0.5 * ((1 - 0.4) * 0.8 + (1 - 0.4) * 0.6) / 2)
    assert m["FPI"] == pytest.approx(0.5 * ((1 - 0.6) * 0.2 + (1 - 0.1) * 0.5) / 2)
    assert m["MPI"] == pytest.approx(0.5 * ((1 - 0.2) * 0.6 + (1 - 0.5) * 0.1) / 2)


def test_edit_is_theta_plus_alpha_dec_and_undone_exactly(setup):
    subject, _, g, _ = setup
    params = ParamSet.select(subject.model)
    before = {k: v.clone() for k, v in subject.model.state_dict().items()}
    edit = WeightEdit(params)
    edit.apply(g, 0.6, -0.05)
    want = before["bert.embeddings.word_embeddings.weight"] + (-0.05) * (0.6 * params.views(g.W_d)[0] + params.views(g.b_d)[0])
    assert want.dtype == torch.float64
    assert torch.allclose(subject.model.bert.embeddings.word_embeddings.weight, want, rtol=0, atol=1e-12)
    assert torch.equal(subject.model.cls.predictions.bias, before["cls.predictions.bias"])  # head untouched
    edit.apply(g, -1.0, 0.1)  # every point starts from theta0, not from the previous point
    want = before["bert.encoder.layer.1.output.dense.bias"] + 0.1 * (-1.0 * params.views(g.W_d)[-3] + params.views(g.b_d)[-3])
    assert torch.allclose(subject.model.bert.encoder.layer[1].output.dense.bias, want, rtol=0, atol=1e-12)
    edit.apply(g, -1.0, -0.2)  # same h, another alpha: the kept dec(h) gives bit-for-bit edit_delta's weights
    want = params.flatten().clone()
    edit.restore()
    params.write_sum(params.flatten(), edit_delta(g, -1.0, -0.2))
    assert torch.equal(params.flatten(), want)
    edit.restore()
    after = subject.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_grid_rows_equal_evaluating_edited_copies(setup):
    subject, data, g, evaluator = setup
    before = {k: v.clone() for k, v in subject.model.state_dict().items()}
    result = run_grid(subject, g, evaluator, h_values=(-1.0, 1.0), alpha_values=(-0.1, 0.05))
    table = result.table
    assert list(table["kind"]) == ["base"] + ["grid"] * 4
    assert [(r.h, r.alpha) for r in table.itertuples()] == [(0, 0), (-1, -0.1), (-1, 0.05), (1, -0.1), (1, 0.05)]
    assert all(torch.equal(before[k], v) for k, v in subject.model.state_dict().items())
    assert result.timings["total"] >= result.timings["evaluate"] > 0
    for row in table.itertuples():
        copy_ = subject.replace(model=copy.deepcopy(subject.model))
        p = ParamSet.select(copy_.model)
        with torch.no_grad():
            for t, w, b in zip(p.params, p.views(g.W_d), p.views(g.b_d)):
                t += row.alpha * (row.h * w + b)
        want = reference_metrics(copy_, data, evaluator)
        for k in ("LMS_Dec", "P(F)", "P(M)", "BPI"):
            assert table.loc[row.Index, k] == pytest.approx(want[k], rel=1e-5, abs=1e-12), (row.h, row.alpha, k)
    assert table["LMS_Dec"].nunique() > 1 or table["P(F)"].nunique() > 1, "the edits change the model"


def test_selection_table_and_heatmap(tmp_path):
    table = pd.DataFrame([
        {"kind": "base", "h": 0.0, "alpha": 0.0, "P(F)": 0.1, "P(M)": 0.3, "LMS_Dec": 0.5, "BPI": 0.2, "FPI": 0.1, "MPI": 0.3},
        {"kind": "grid", "h": -1.0, "alpha": 0.1, "P(F)": 0.2, "P(M)": 0.2, "LMS_Dec": 0.5, "BPI": 0.4, "FPI": 0.05, "MPI": 0.1},
        {"kind": "grid", "h": 1.0, "alpha": 0.1, "P(F)": 0.4, "P(M)": 0.1, "LMS_Dec": 0.4, "BPI": 0.1, "FPI": 0.3, "MPI": 0.3},
        {"kind": "grid", "h": -1.0, "alpha": -0.1, "P(F)": 0.4, "P(M)": 0.1, "LMS_Dec": 0.4, "BPI": 0.1, "FPI": 0.2, "MPI": 0.1},
        {"kind": "grid", "h": 1.0, "alpha": -0.1, "P(F)": 0.4, "P(M)": 0.1, "LMS_Dec": 0.4, "BPI": 0.1, "FPI": 0.2, "MPI": 0.1},
    ])  # fmt: skip
    chosen = select(table)
    assert (chosen["bpi"]["h"], chosen["bpi"]["alpha"]) == (-1.0, 0.1)
    assert (chosen["fpi"]["h"], chosen["fpi"]["alpha"]) == (1.0, 0.1)
    assert chosen["mpi"]["kind"] == "base"  # ties: the base model (first row) wins
    text = selection_table(table)
    assert [line.split("|")[1].strip() for line in text.splitlines()[2:]] == ["base", "GRADIEND-BPI", "GRADIEND-FPI", "GRADIEND-MPI"]
    assert heatmap(table, tmp_path / "h.png").read_bytes()[:4] == b"\x89PNG"
