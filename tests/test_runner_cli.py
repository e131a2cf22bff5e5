"""The runner, the store and the CLI, with small plugins defined here (registered by decorator)."""
from __future__ import annotations

import json
from functools import partial

import pytest
import torch
from torch import nn

from bench.api import EMBED, MLM, Column, Debiaser, Estimate, Metric, Scores, statistic
from bench.cli import main
from bench.registry import METHODS, METRICS, register_method, register_metric
from cli_helpers import run_bench


@statistic
def _mean_rows(values, idx):
    return values[idx[0]].mean(axis=1) * 100


class HeProbability(Metric):
    """Test metric: P(he) at the mask of sentences read from <data>/toy/sentences.txt, per sentence."""

    requires = MLM
    columns = (Column("HE", "he", "max", 1),)

    def __init__(self, file: str = "toy/sentences.txt"):
        self.file = file

    def data_files(self, ctx):
        return [ctx.data_path(self.file)]

    def score(self, subject, ctx):
        lines = ctx.data_path(self.file).read_text().split("\n")
        tok = subject.tokenizer
        enc = tok([l for l in lines if l], return_tensors="pt", padding=True)
        rows, cols = (enc.input_ids == tok.mask_token_id).nonzero(as_tuple=True)
        with torch.inference_mode():
            logits = subject.mlm_logits(enc.input_ids, enc.attention_mask, rows, cols)
        p = logits.softmax(-1)[:, tok.convert_tokens_to_ids("he")].numpy().astype(float)
        return Scores("he-prob", {"he": Estimate((len(p),), partial(_mean_rows, p))})


class MeanNorm(Metric):
    requires = EMBED
    columns = (Column("NORM", "norm", "0", 2),)

    def score(self, subject, ctx):
        enc = subject.tokenizer(["a b c", "d e"], return_tensors="pt", padding=True)
        with torch.inference_mode():
            h = subject.hidden_states(enc.input_ids, enc.attention_mask)[:, 0].norm(dim=-1).numpy().astype(float)
        return Scores("norm", {"norm": Estimate((len(h),), partial(_mean_rows, h))})


class Scale(nn.Module):
    def __init__(self, factor):
        super().__init__()
        self.factor = factor

    def forward(self, h):
        return h * self.factor


class ScaleHidden(Debiaser):
    label = "Scale"
    changes = "representation"

    def __init__(self, factor: float = 0.5):
        self.factor = factor

    def fit(self, subject, ctx):
        return {"factor": self.factor}

    def apply(self, subject, artifact):
        return subject.with_transform(Scale(artifact["factor"]))


class MlmOnly(ScaleHidden):
    label = "MLM only"
    serves = frozenset({MLM})


class DoesNothing(Debiaser):
    label = "Nothing"

    def fit(self, subject, ctx):
        return None

    def apply(self, subject, artifact):
        return subject.with_model(subject.model)


@pytest.fixture(scope="module", autouse=True)
def plugins():
    added = {"he-prob": HeProbability, "norm": MeanNorm}
    for name, cls in added.items():
        if name not in METRICS:
            register_metric(name)(cls)
    for name, cls in {"scale-hidden": ScaleHidden, "mlm-only": MlmOnly, "does-nothing": DoesNothing}.items():
        if name not in METHODS:
            register_method(name)(cls)
    yield


@pytest.fixture()
def toy_data(tmp_path):
    d = tmp_path / "data"
    (d / "toy").mkdir(parents=True)
    (d / "toy" / "sentences.txt").write_text(
        "\n".join(f"[MASK] went to the {w}." for w in ["store", "park", "office", "school", "beach", "city"])
    )
    return d


def _run(args, capsys):
    with pytest.raises(SystemExit) as e:
        main(args)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def test_run_writes_rows_tables_and_resumes(tiny_model_dir, toy_data, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["run", "--models", str(tiny_model_dir), "--methods", "scale-hidden,mlm-only", "--metrics", "he-prob,norm",
            "--data-dir", str(toy_data), "--cache-dir", str(tmp_path / "cache"), "--out", str(out), "--resamples", "200",
            "--device", "cpu"]  # fmt: skip
    code, stdout, _ = run_bench(args, capsys)
    assert code == 0
    rows = [json.loads(l) for l in (out / "results.jsonl").read_text().splitlines()]
    by = {(r["method"], r["metric"]): r for r in rows}
    assert set(by) == {(m, k) for m in ("base", "scale-hidden", "mlm-only") for k in ("he-prob", "norm")}
    assert by[("mlm-only", "norm")]["status"] == "n/a"  # the method does not serve embeddings
    base, scaled = by[("base", "norm")], by[("scale-hidden", "norm")]
    # scaling by 0.5 is exact in binary floating point (x^2 by 0.25, the sum, the sqrt, the mean): equal up to
    # nothing; rel 1e-5 only guards against a future non-power-of-two factor
    assert scaled["value"] == pytest.approx(base["value"] * 0.5, rel=1e-5)
    assert scaled["significant"] and scaled["delta"] == pytest.approx(scaled["value"] - base["value"])
    assert base["ci_low"] <= base["value"] <= base["ci_high"] and base["resamples"] == 200
    assert "| Model" in stdout and "n/a" in stdout and "Scale" in stdout
    assert (out / "leaderboard.tex").read_text().count(r"\toprule") == 1
    # same command again: resumes, nothing recomputed, same rows
    code, _, err = run_bench(args, capsys)
    assert code == 0 and "scale-hidden" not in err.split("[")[-1]
    assert [json.loads(l) for l in (out / "results.jsonl").read_text().splitlines()] == rows


def test_report_and_check(tiny_model_dir, toy_data, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["run", "--models", str(tiny_model_dir), "--methods", "scale-hidden", "--metrics", "norm",
            "--data-dir", str(toy_data), "--cache-dir", str(tmp_path / "cache"), "--out", str(out), "--resamples", "100"]  # fmt: skip
    assert run_bench(args, capsys)[0] == 0
    code, stdout, _ = run_bench(["report", str(out), "--format", "tex"], capsys)
    assert code == 0 and r"\begin{tabular}" in stdout and r"\textbf" in stdout
    assert run_bench(["check", str(out), "--baseline", str(out / "results.jsonl")], capsys)[0] == 0
    drifted = tmp_path / "baseline.jsonl"
    rows = [json.loads(l) for l in (out / "results.jsonl").read_text().splitlines()]
    rows[0]["value"] += 1.0
    drifted.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, stdout, _ = run_bench(["check", str(out), "--baseline", str(drifted)], capsys)
    assert code == 1 and "FAIL" in stdout
    rows[0]["tolerance"] = 2.0
    drifted.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert run_bench(["check", str(out), "--baseline", str(drifted)], capsys)[0] == 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["--methods", "no-such-method"], "unknown method 'no-such-method'; valid methods: "),
        (["--metrics", "no-such-metric"], "unknown metric 'no-such-metric'; valid metrics: "),
        (["--methods", "scale-hidden+"], "malformed method combination"),
        (["-o", "nonsense"], "malformed option"),
        (["-o", "norm.nope=1", "--metrics", "norm"], "bad options for metric 'norm'"),
    ],
)
def test_bad_input_is_one_clear_line(args, message, tiny_model_dir, toy_data, tmp_path, capsys):
    out = tmp_path / "run"
    base = ["run", "--models", str(tiny_model_dir), "--data-dir", str(toy_data), "--cache-dir", str(tmp_path / "c"),
            "--out", str(out)]  # fmt: skip
    code, _, err = run_bench(base + args, capsys)
    assert code == 2
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert not (out / "results.jsonl").exists()


def test_unknown_model_lists_valid_names(capsys):
    code, _, err = run_bench(["run", "--models", "nosuchmodel", "--metrics", "norm"], capsys)
    assert code == 2 and "unknown model 'nosuchmodel'" in err and "bert-base" in err and "synthetic" in err


def test_unavailable_hub_model_says_how_to_provide_it(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    code, _, err = run_bench(["run", "--models", "bert-base", "--metrics", "norm", "--cache-dir", str(tmp_path)], capsys)
    assert code == 2 and "bert-base-cased" in err and "local directory" in err and len(err.strip().splitlines()) == 1


def test_missing_data_file_names_the_file(tiny_model_dir, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run_bench(["run", "--models", str(tiny_model_dir), "--metrics", "he-prob", "--data-dir", str(empty),
                           "--cache-dir", str(tmp_path / "c")], capsys)  # fmt: skip
    assert code == 2 and "toy/sentences.txt" in err and "missing" in err


def test_output_dir_with_a_different_run_is_refused(tiny_model_dir, toy_data, tmp_path, capsys):
    out = tmp_path / "run"
    common = ["run", "--models", str(tiny_model_dir), "--data-dir", str(toy_data), "--cache-dir", str(tmp_path / "c"),
              "--out", str(out), "--resamples", "50"]  # fmt: skip
    assert run_bench(common + ["--metrics", "norm"], capsys)[0] == 0
    before = (out / "results.jsonl").read_text()
    code, _, err = run_bench(common + ["--metrics", "he-prob"], capsys)
    assert code == 2 and "already holds a different run" in err
    assert (out / "results.jsonl").read_text() == before


def test_identical_subject_is_an_error_not_a_row(tiny_model_dir, toy_data, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run_bench(["run", "--models", str(tiny_model_dir), "--methods", "does-nothing", "--metrics", "norm",
                           "--data-dir", str(toy_data), "--cache-dir", str(tmp_path / "c"), "--out", str(out),
                           "--resamples", "50"], capsys)  # fmt: skip
    assert code == 2 and "identical to its input" in err
    rows = [json.loads(l) for l in (out / "results.jsonl").read_text().splitlines()]
    assert {r["method"] for r in rows} == {"base"}


def test_fitted_artifacts_are_cached(tiny_model_dir, toy_data, tmp_path, capsys, monkeypatch):
    calls = []
    original = ScaleHidden.fit
    monkeypatch.setattr(ScaleHidden, "fit", lambda self, s, c: calls.append(1) or original(self, s, c))
    common = ["run", "--models", str(tiny_model_dir), "--methods", "scale-hidden", "--metrics", "norm",
              "--data-dir", str(toy_data), "--cache-dir", str(tmp_path / "c"), "--resamples", "50"]  # fmt: skip
    assert run_bench(common, capsys)[0] == 0
    assert run_bench(common, capsys)[0] == 0
    assert len(calls) == 1


def test_combination_fits_second_on_first(tiny_model_dir, toy_data, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, _ = run_bench(["run", "--models", str(tiny_model_dir), "--methods", "scale-hidden+scale-hidden",
                         "--metrics", "norm", "--data-dir", str(toy_data), "--cache-dir", str(tmp_path / "c"),
                         "--out", str(out), "--resamples", "50"], capsys)  # fmt: skip
    assert code == 0
    rows = {r["method"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    # 0.5 * 0.5 = 0.25: exact in binary (see test above), rel 1e-5 is slack
    assert rows["scale-hidden+scale-hidden"]["value"] == pytest.approx(rows["base"]["value"] * 0.25, rel=1e-5)
    assert rows["scale-hidden+scale-hidden"]["label"] == "Scale + Scale" and rows["scale-hidden+scale-hidden"]["group"] == 3


def test_list_commands(capsys):
    for what, expected in [("methods", "base"), ("metrics", "norm"), ("models", "bert-base"), ("suites", "")]:
        code, stdout, _ = run_bench(["list", what], capsys)
        assert code == 0 and expected in stdout
    _, stdout, _ = run_bench(["list", "methods"], capsys)
    assert "[also: gradiend]" in next(line for line in stdout.splitlines() if line.startswith("gradiend-bpi"))


def test_help_explains(capsys):
    code, stdout, _ = run_bench(["run", "--help"], capsys)
    assert code == 0 and "--methods" in stdout and "resume" in stdout


class RaceNorm(MeanNorm):
    """MeanNorm declared for every bias type: scores in a race run."""

    bias_types = frozenset({"gender", "race", "religion"})


def test_bias_type_is_a_run_level_choice(tiny_model_dir, toy_data, tmp_path, capsys):
    """A race run: gender-only plugins (the default `bias_types`) give n/a cells with a note saying why, plugins
    declaring race score; rows and the leaderboard carry the bias type, and reports of several runs group by it."""
    if "race-norm" not in METRICS:
        register_metric("race-norm")(RaceNorm)
    common = ["--models", str(tiny_model_dir), "--methods", "scale-hidden", "--metrics", "race-norm,norm",
              "--data-dir", str(toy_data), "--cache-dir", str(tmp_path / "cache"), "--resamples", "50"]  # fmt: skip
    code, stdout, _ = run_bench(["run", *common, "--out", str(tmp_path / "race"), "--bias-type", "race"], capsys)
    assert code == 0
    rows = [json.loads(l) for l in (tmp_path / "race" / "results.jsonl").read_text().splitlines()]
    by = {(r["method"], r["metric"]): r for r in rows}
    assert {r["bias_type"] for r in rows} == {"race"}
    assert by[("base", "race-norm")]["status"] == "ok"
    assert by[("base", "norm")]["status"] == "n/a" and "not race" in by[("base", "norm")]["note"]
    assert by[("scale-hidden", "race-norm")]["status"] == "n/a"  # the method is gender-only
    assert "defined for gender bias, not race" in by[("scale-hidden", "race-norm")]["note"]
    assert "(race)" in stdout
    code, _, _ = run_bench(["run", *common, "--out", str(tmp_path / "gender")], capsys)
    assert code == 0
    gender = [json.loads(l) for l in (tmp_path / "gender" / "results.jsonl").read_text().splitlines()]
    assert {r["bias_type"] for r in gender} == {"gender"}
    assert {r["status"] for r in gender} == {"ok"}
    code, stdout, _ = run_bench(["report", str(tmp_path / "gender"), str(tmp_path / "race")], capsys)
    assert code == 0 and "(gender)" in stdout and "(race)" in stdout
    code, _, err = run_bench(["run", *common, "--bias-type", "age"], capsys)
    assert code == 2 and "age" in err
