"""Encoder evaluation (SPEC §1.6): the metrics against straightforward computations, h per row against
batch-size-1 gradients, table and plot."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from methods.gradiend.data import load
from methods.gradiend.encoder_eval import analyse, encoder_metrics, plot
from methods.gradiend.examples import collate
from methods.gradiend.model import Gradiend
from methods.gradiend.params import ParamSet
from tests.gradiend_helpers import tiny_subject, write_data_dir


def _rows():
    # template 0: both right; template 1: F right, M wrong; template 2: both wrong with h >= 0 -> F
    return pd.DataFrame({
        "kind": ["F", "M", "F", "M", "F", "M", "masked-neutral", "masked-neutral", "neutral", "neutral"],
        "type": [1, 1, 1, 1, 1, 1, 2, 2, 3, 3],
        "template": [0, 0, 1, 1, 2, 2, 0, 1, -1, -1],
        "h": [0.9, -0.8, 0.7, 0.2, -0.6, 0.55, 0.1, -0.7, 0.0, 0.3],
        "text": [""] * 10,
    })  # fmt: skip


def _pearson(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def _balanced(y_true, y_pred):
    """Mean over the classes present in y_true of the recall."""
    classes = sorted(set(y_true))
    return float(np.mean([np.mean([p == c for t, p in zip(y_true, y_pred) if t == c]) for c in classes]))


def test_metrics_match_straightforward_computation():
    rows = _rows()
    m = encoder_metrics(rows)
    h = rows["h"].to_numpy()
    # Acc_GENTER: per-template fraction correct (h >= 0 -> F), mean, max over the two signs
    acc_pos = np.mean([1.0, 0.5, 0.0])
    flipped = [[(-x >= 0) == (k == "F") for x, k in zip(h[i : i + 2], rows["kind"][i : i + 2])] for i in (0, 2, 4)]
    acc_neg = np.mean([np.mean(f) for f in flipped])
    assert m["Acc_GENTER"] == pytest.approx(max(acc_pos, acc_neg), abs=1e-12)
    assert m["Cor_GENTER"] == pytest.approx(_pearson(h[:6], [1, 0, 1, 0, 1, 0]), abs=1e-12)
    labels = [1, -1, 1, -1, 1, -1, 0, 0, 0, 0]
    three = lambda v: [1 if x >= 0.5 else (-1 if x <= -0.5 else 0) for x in v]  # noqa: E731
    assert m["Acc_Enc"] == pytest.approx(max(_balanced(labels, three(h)), _balanced(labels, three(-h))), abs=1e-12)
    assert m["Acc_Enc (paper)"] == pytest.approx(max(_balanced(three(h), labels), _balanced(three(-h), labels)), abs=1e-12)
    assert m["Cor_Enc"] == pytest.approx(_pearson(h, labels), abs=1e-12)
    assert m["mean|h| gender"] == pytest.approx(np.abs(h[:6]).mean())
    assert m["mean|h| masked-neutral"] == pytest.approx(0.4)
    assert m["mean|h| neutral"] == pytest.approx(0.15)


def test_analyse_encodes_per_example_gradients(tmp_path):
    # float64: h is a dot product over all n parameters, computed batched by forward mode and here by batch-1
    # backward passes; in float32 that differs by CPU-dependent rounding. In float64 the gradients agree to ~1e-13
    # relative (tests/test_gradiend_gradients.py), so |dh| <= 1e-9 * sum |W_e| |grad| (tanh' <= 1) holds with a
    # margin ~1e4, while a wrong label or position changes h by O(1) relative.
    subject = tiny_subject(hidden=16, layers=1)
    subject.model.double()
    data = load(write_data_dir(tmp_path / "d"))
    params = ParamSet.select(subject.model)
    g = Gradiend.initialised(params.n, seed=0, dtype=torch.float64)
    with torch.no_grad():  # a direction with a bigger projection than the tiny random init
        g.W_e.mul_(50)
    report = analyse(subject, g, data, split="test", neutral_max=3)
    rows = report.rows
    assert list(rows["type"]) == [1] * 4 + [2] * 4 + [3] * 3
    assert list(rows["kind"][:4]) == ["F", "M", "F", "M"]
    from methods.gradiend.examples import gender_rows, neutral_rows

    examples = gender_rows(data.genter["test"], data.names["test"], subject.tokenizer, roberta=False)
    examples += neutral_rows(data.genter["test"], data.names["test"], data.geneutral[:3], subject.tokenizer, roberta=False)
    for row, ex in zip(rows.itertuples(), examples):  # batch size 1, one backward each
        one = collate([ex.example], subject.tokenizer.pad_token_id)
        lab = torch.full_like(one.input_ids, -100)
        lab[one.rows, one.cols] = one.labels
        loss = subject.model(input_ids=one.input_ids, attention_mask=one.attention_mask, labels=lab).loss
        grad = torch.cat([x.reshape(-1) for x in torch.autograd.grad(loss, params.params)])
        tol = 1e-9 * float((g.W_e.abs() * grad.abs()).sum()) + 1e-15
        assert row.h == pytest.approx(float(torch.tanh(g.W_e @ grad + g.b_e[0])), rel=0, abs=tol)
    assert report.metrics == encoder_metrics(rows)
    table = report.table()
    assert "Cor_GENTER" in table and "Acc_Enc (paper)" in table
    png = plot(rows, tmp_path / "enc.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
