"""The plan: units (model x method chain x seed, with the run's metrics and bias type), what each waits for,
what is cached (found without loading a model), the critical path; `bench run --dry-run`."""
from __future__ import annotations

import json
from functools import partial

import pytest
import torch

from bench.api import EMBED, Column, Debiaser, Estimate, Metric, Scores, statistic
from bench.models.loading import light_subject
from bench.run.plan import Plan, Unit, _prefix_owner
from bench.registry import METHODS, METRICS, register_method, register_metric
from bench.run.request import RunRequest
from bench.run.runner import Runner
from ci_runs import REPO
from cli_helpers import run_bench

TOKENIZER_DIR = REPO.parent / "shared" / "data" / "models" / "bert-base-uncased-tokenizer"


@statistic
def _mean_rows(values, idx):
    return values[idx[0]].mean(axis=1)


class PlanNorm(Metric):
    requires = EMBED
    columns = (Column("NORM", "norm", "0", 2),)

    def score(self, subject, ctx):
        enc = subject.tokenizer(["a b c", "d e"], return_tensors="pt", padding=True)
        with torch.inference_mode():
            h = subject.hidden_states(enc.input_ids, enc.attention_mask)[:, 0].norm(dim=-1).numpy().astype(float)
        return Scores("plan-norm", {"norm": Estimate((len(h),), partial(_mean_rows, h))})


class _Half(torch.nn.Module):
    def forward(self, h):
        return h * 0.5


class PlanHalf(Debiaser):
    label = "Half"
    changes = "representation"

    def fit(self, subject, ctx):
        return {"x": 1}

    def apply(self, subject, artifact):
        return subject.with_transform(_Half())


@pytest.fixture(scope="module", autouse=True)
def plugins():
    if "plan-norm" not in METRICS:
        register_metric("plan-norm")(PlanNorm)
    if "plan-half" not in METHODS:
        register_method("plan-half")(PlanHalf)
    yield
    METRICS.unregister("plan-norm")
    METHODS.unregister("plan-half")


@pytest.fixture()
def no_model_loading(monkeypatch):
    def refuse(name, **kwargs):
        raise AssertionError(f"model {name!r} was loaded by a dry run")

    monkeypatch.setattr("bench.run.unit.load_subject", refuse)
    monkeypatch.setattr("bench.models.loading.load_subject", refuse)


def _plan(methods, seeds=(0,), models=("synthetic",)):
    runner = Runner(RunRequest(models=list(models), methods=methods, metrics=["stereoset", "seat"], seeds=list(seeds)),
                    echo=lambda m: None)  # fmt: skip
    return runner.plan()


def test_units_and_dependencies_of_the_paper_grid():
    from bench.run.suite import load_suite

    suite = load_suite("paper")
    plan = _plan(suite["methods"], seeds=(0, 1), models=("synthetic", "bert-base"))
    assert len(plan.units) == 2 * 2 * 15
    assert [u.chain for u in plan.units[:15]] == suite["methods"]  # plan order: model, seed, chain
    assert [(u.model, u.seed) for u in plan.units[::15]] == [("synthetic", 0), ("synthetic", 1), ("bert-base", 0),
                                                             ("bert-base", 1)]  # fmt: skip
    waits = {u.id: [plan.by_id[w].chain for w in u.waits_for] for u in plan.units if u.model == "synthetic" and u.seed == 1}
    ids = {u.chain: u.id for u in plan.units if u.model == "synthetic" and u.seed == 1}
    assert waits[ids["base"]] == []
    assert waits[ids["inlp"]] == ["base"]
    assert waits[ids["gradiend-bpi+inlp"]] == ["base", "gradiend-bpi"]  # never fits the same GRADIEND twice at once
    assert waits[ids["gradiend-bpi+sentence-debias"]] == ["base", "gradiend-bpi"]
    assert waits[ids["dropout+inlp"]] == ["base", "dropout"]
    # GRADIEND's three variants share one training and grid (fit_family): never trained twice at once
    assert waits[ids["gradiend-bpi"]] == ["base"]
    assert waits[ids["gradiend-fpi"]] == ["base", "gradiend-bpi"]
    assert waits[ids["gradiend-mpi"]] == ["base", "gradiend-bpi"]
    for u in plan.units:  # a unit waits only for units of its own model and seed, earlier in plan order
        for w in u.waits_for:
            dep = plan.by_id[w]
            assert (dep.model, dep.seed) == (u.model, u.seed) and plan.units.index(dep) < plan.units.index(u)
    assert all(u.metrics == ("stereoset", "seat") and u.bias_type == "gender" for u in plan.units)
    assert json.loads(json.dumps(plan.units[0].to_dict())) == plan.units[0].to_dict()  # names and dicts only


def test_a_shared_prefix_without_its_own_unit_is_fitted_once():
    assert _prefix_owner("a+b", ["base", "a"]) == "a"
    assert _prefix_owner("a+b", ["base"]) is None
    assert _prefix_owner("a+c", ["base", "a+b"]) == "a+b"  # a+b fits `a` first; a+c waits for it
    assert _prefix_owner("a+b+d", ["base", "a+b+c", "a"]) == "a+b+c"  # the longest shared prefix wins
    assert _prefix_owner("x", ["base", "a"]) is None


def test_critical_path_is_the_longest_chain_of_waiting_units():
    units = [Unit("b", "m", "base", 0, ()), Unit("a", "m", "a", 0, (), waits_for=("b",)),
             Unit("ab", "m", "a+b", 0, (), waits_for=("b", "a")), Unit("c", "m", "c", 0, (), waits_for=("b",))]  # fmt: skip
    plan = Plan(units, ["m"], ["base", "a", "a+b", "c"], [0], [])
    assert plan.critical_path({"b": 1, "a": 10, "ab": 5, "c": 12}) == (["b", "a", "ab"], 16)
    assert plan.critical_path({"b": 1, "a": 1, "ab": 1, "c": 12}) == (["b", "c"], 13)


def test_dry_run_of_the_paper_suite_loads_no_model_and_writes_nothing(tmp_path, capsys, no_model_loading):
    out = tmp_path / "run"
    code, stdout, err = run_bench(["run", "--suite", "paper", "--dry-run", "--out", out, "--cache-dir", tmp_path / "c"], capsys)
    assert code == 0, err
    assert "plan: 60 units = 4 model(s) x 15 method chain(s) x 1 seed(s)" in stdout
    assert "bert-large / gradiend-bpi+inlp / seed 0" in stdout and "waits for: #" in stdout
    assert "critical path" in stdout and "to fit" in stdout  # HF models: identity known without loading
    lines = stdout.splitlines()
    path = lines[lines.index(next(l for l in lines if l.startswith("critical path"))) + 1:]
    assert any("gradiend-bpi" in l for l in path)  # a chain through a prefix fit is the longest
    assert not out.exists()


def test_dry_run_says_what_is_cached(tmp_path, capsys):
    model = tmp_path / "tiny"
    from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

    torch.manual_seed(0)
    BertForMaskedLM(BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=32, max_position_embeddings=32)).save_pretrained(model)  # fmt: skip
    BertTokenizerFast.from_pretrained(TOKENIZER_DIR).save_pretrained(model)
    args = ["run", "--models", model, "--methods", "plan-half,plan-half+plan-half", "--metrics", "plan-norm",
            "--data-dir", tmp_path, "--cache-dir", tmp_path / "c", "--resamples", "20", "--out", tmp_path / "run"]  # fmt: skip
    code, before, _ = run_bench([*args, "--dry-run"], capsys)
    assert code == 0 and "plan-half to fit" in before and "1 to score" in before and "[done" not in before
    assert run_bench(args, capsys)[0] == 0
    code, after, _ = run_bench([*args, "--dry-run"], capsys)
    assert code == 0
    assert "to fit" not in after and "to score" not in after and "plan-half cached" in after and "1 cached" in after
    assert after.count("[done in the run directory]") == 3 and "(nothing to do)" in after


def test_light_subject_has_the_loaded_subjects_identity(synthetic, cache_dir):
    light = light_subject("synthetic", None, cache_dir)
    assert light is not None and light.identity == synthetic.identity and light.data_dir == synthetic.data_dir
    assert light_subject("random:bert-base-uncased", None, cache_dir) is None  # unknown until loaded


def test_one_seed_keeps_the_manifest_of_a_run_without_the_seed_axis():
    one = RunRequest(models=["synthetic"], methods=["inlp"], metrics=["seat"], seeds=[3]).normalised()
    plain = RunRequest(models=["synthetic"], methods=["inlp"], metrics=["seat"], seed=3).normalised()
    assert one.manifest() == plain.manifest() and "seeds" not in one.manifest()["request"]
    two = RunRequest(models=["synthetic"], methods=["inlp"], metrics=["seat"], seeds=[3, 4]).normalised()
    assert two.seed == 3 and two.manifest()["request"]["seeds"] == [3, 4]
    assert two.manifest()["request_hash"] != one.manifest()["request_hash"]
