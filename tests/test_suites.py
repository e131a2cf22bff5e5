"""The shipped suites: every name resolves, and `paper` is the paper's main table (SPEC §2.7, ICLR row order)."""
from __future__ import annotations

import pytest

from bench.models.loading import parse_model_name
from bench.registry import METRICS, make_method, make_metric, method_chain
from bench.run.request import RunRequest
from bench.run.suite import load_suite, suite_names

# SPEC §2.7: row groups of the ICLR main table, RLACE and LEACE left out.
ICLR_ROWS = [
    ["base"],
    ["gradiend-bpi", "gradiend-fpi", "gradiend-mpi"],
    ["cda", "dropout", "inlp", "self-debias", "sentence-debias"],
    ["gradiend-bpi+inlp", "gradiend-bpi+sentence-debias", "cda+inlp", "dropout+sentence-debias",
     "cda+sentence-debias", "dropout+inlp"],
]  # fmt: skip


# SPEC §2.7: the ICLR main table's baseline group, with RLACE and LEACE.
ICLR_FULL_ROWS = [ICLR_ROWS[0], ICLR_ROWS[1],
                  ["cda", "dropout", "inlp", "rlace", "leace", "self-debias", "sentence-debias"], ICLR_ROWS[3]]


@pytest.mark.parametrize("name", ["demo", "paper", "ci", "iclr", "iclr-race", "iclr-religion"])
def test_suite_resolves(name):
    assert name in suite_names()
    suite = load_suite(name)
    assert suite["description"]
    for model in suite["models"]:
        parse_model_name(model)
    for spec in suite["methods"]:
        for part in method_chain(spec):
            make_method(part, suite.get("options", {}).get(part))
    for metric in suite["metrics"]:
        make_metric(metric, suite.get("options", {}).get(metric))
    RunRequest(models=suite["models"], methods=suite["methods"], metrics=suite["metrics"]).normalised()


def test_paper_suite_is_the_papers_main_table():
    suite = load_suite("paper")
    assert suite["models"] == ["bert-base", "bert-large", "distilbert", "roberta-large"]
    assert suite["methods"] == [m for group in ICLR_ROWS for m in group]
    assert suite["metrics"] == ["stereoset", "seat", "crows", "glue"]
    assert not suite.get("options"), "the paper suite runs every plugin with its (paper) defaults"
    # the leaderboard groups rows by method group, in request order within a group: base, GRADIEND,
    # baselines, combinations, exactly as the paper's row groups
    from bench.registry import METHODS

    def group(spec):
        parts = spec.split("+")
        return 3 if len(parts) > 1 else METHODS.get(parts[0]).group

    assert [group(m) for m in suite["methods"]] == [i for i, g in enumerate(ICLR_ROWS) for _ in g]


def test_iclr_suite_is_the_iclr_main_table():
    from bench.registry import METHODS

    suite = load_suite("iclr")
    assert suite["models"] == ["bert-base", "bert-large", "distilbert", "roberta-large", "gpt2", "llama-3.2-3b"]
    assert suite["methods"] == [m for group in ICLR_FULL_ROWS for m in group]
    assert suite["metrics"] == ["stereoset", "seat", "glue", "superglue"]  # SS, SEAT, LMS, GLUE, SuperGLUE
    assert not suite.get("options")
    groups = [3 if "+" in m else METHODS.get(m).group for m in suite["methods"]]
    assert groups == [i for i, g in enumerate(ICLR_FULL_ROWS) for _ in g]


def test_demo_suite_is_the_readme_demo():
    suite = load_suite("demo")
    assert suite["models"] == ["synthetic"]
    assert suite["methods"] == ["base", "gradiend-bpi", "inlp", "gradiend-bpi+inlp"]
    assert suite["metrics"] == ["stereoset", "seat", "crows"]
    assert all(m in METRICS for m in suite["metrics"])
