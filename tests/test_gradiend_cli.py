"""`bench gradiend train|encoder|decoder` on a tiny saved model: outputs, resume, clear errors."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from bench.cli import main
from tests.gradiend_helpers import tiny_subject, write_data_dir

OPTS = ["-o", "seeds=[0]", "-o", "max_steps=4", "-o", "eval_every=2", "-o", "batch_size=4", "-o", "lr=0.001",
        "-o", "h_values=[-1.0, 1.0]", "-o", "alpha_values=[0.1]", "-o", "lms_max_sentences=8"]  # fmt: skip


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("gcli")
    subject = tiny_subject(hidden=16, layers=1)
    subject.model.save_pretrained(root / "model")
    subject.tokenizer.save_pretrained(root / "model")
    return root, write_data_dir(root / "data")


def _run(args, capsys):
    capsys.readouterr()
    code = 0
    try:
        main(args)
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_train_encoder_decoder(saved, capsys):
    root, data = saved
    common = ["--model", str(root / "model"), "--data-dir", str(data), "--device", "cpu", "--no-progress", *OPTS]
    code, out, err = _run(["gradiend", "train", *common, "--out", str(root / "run")], capsys)
    assert code == 0, err
    assert "Cor_GENTER (val)" in out and (root / "run" / "gradiend" / "gradiend.safetensors").is_file()
    summary = json.loads((root / "run" / "gradiend" / "config.json").read_text())["summary"]
    assert summary["selected_seed"] == 0 and summary["steps"] == 4
    # a finished training is reused (no new run folder, same file)
    stamp = (root / "run" / "gradiend" / "gradiend.safetensors").stat().st_mtime_ns
    assert _run(["gradiend", "train", *common, "--out", str(root / "run")], capsys)[0] == 0
    assert (root / "run" / "gradiend" / "gradiend.safetensors").stat().st_mtime_ns == stamp

    code, out, err = _run(["gradiend", "encoder", *common, "--gradiend", str(root / "run"), "--neutral-max", "4",
                           "--out", str(root / "enc")], capsys)  # fmt: skip
    assert code == 0, err
    assert "Acc_GENTER" in out and (root / "enc" / "encoder.png").is_file()
    rows = pd.read_csv(root / "enc" / "encoder_rows.csv")
    assert list(rows["type"].value_counts().sort_index()) == [4, 4, 4]

    code, out, err = _run(["gradiend", "decoder", *common, "--gradiend", str(root / "run" / "gradiend"),
                           "--out", str(root / "dec")], capsys)  # fmt: skip
    assert code == 0, err
    assert "GRADIEND-MPI" in out and (root / "dec" / "heatmap.png").is_file()
    assert len(pd.read_csv(root / "dec" / "grid.csv")) == 3


def test_errors_are_one_line(saved, capsys, tmp_path):
    root, data = saved
    code, _, err = _run(["gradiend", "train", "--model", str(root / "model"), "--data-dir", str(tmp_path),
                         "--device", "cpu", "--out", str(tmp_path / "o"), "--no-progress"], capsys)  # fmt: skip
    assert code == 2 and "namexact.csv" in err and "Traceback" not in err
    code, _, err = _run(["gradiend", "train", "--model", str(root / "model"), "--data-dir", str(data), "--device", "cpu",
                         "--out", str(tmp_path / "o"), "-o", "nonsense=1"], capsys)  # fmt: skip
    assert code == 2 and "nonsense" in err
