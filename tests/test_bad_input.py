"""Bad input, as a new user would give it (issue 9, item 4): every case ends in ONE line `error: ...` naming the
thing to fix, a non-zero exit, and nothing written to --out. Validation that needs no model runs with model
loading forbidden; the rest uses a tiny random BERT and throw-away plugins registered here."""
from __future__ import annotations

import json
import os
import stat
import sys
from functools import partial
from pathlib import Path

import pytest
import torch

from bench.api import EMBED, Column, Debiaser, Estimate, Metric, Scores, statistic
from bench.errors import BenchError
from bench.registry import METHODS, METRICS, register_method, register_metric
from tests.test_runner_cli import Scale
from cli_helpers import run_bench


@statistic
def _mean(values, idx):
    return values[idx[0]].mean(axis=1)


class FileNorm(Metric):
    """Mean norm of the [CLS] state of the lines of a data file (its content is what the run depends on)."""

    requires = EMBED
    columns = (Column("FN", "fn", "0", 91),)
    bounds = {"batch_size": (1, None)}

    def __init__(self, file: str = "toy/lines.txt", batch_size: int | None = None):
        self.file, self.batch_size = file, batch_size

    def data_files(self, ctx):
        return [ctx.data_path(self.file)]

    def score(self, subject, ctx):
        from bench.data.paths import read_text

        lines = [l for l in read_text(ctx.data_path(self.file)).splitlines() if l]
        enc = subject.tokenizer(lines, return_tensors="pt", padding=True)
        with torch.inference_mode():
            h = subject.hidden_states(enc.input_ids, enc.attention_mask)[:, 0].norm(dim=-1).numpy().astype(float)
        return Scores("fn", {"fn": Estimate((len(h),), partial(_mean, h))})


class OtherNorm(FileNorm):
    columns = (Column("FN2", "fn2", "0", 92),)


class Shrink(Debiaser):
    label = "Shrink"
    changes = "representation"
    bounds = {"n_iterations": (1, None)}

    def __init__(self, n_iterations: int = 1, factor: float = 0.5, mode: str = "mul"):
        self.n_iterations, self.factor, self.mode = n_iterations, factor, mode

    def fit(self, subject, ctx):
        return {"factor": self.factor ** self.n_iterations}

    def apply(self, subject, artifact):
        return subject.with_transform(Scale(artifact["factor"]))


PLUGINS = {"bad-fn": (METRICS, FileNorm), "bad-fn2": (METRICS, OtherNorm), "bad-shrink": (METHODS, Shrink)}


@pytest.fixture(scope="module", autouse=True)
def plugins():
    for name, (registry, cls) in PLUGINS.items():
        if name not in registry:
            (register_metric if registry is METRICS else register_method)(name)(cls)
    yield
    for name, (registry, _) in PLUGINS.items():
        registry.unregister(name)


@pytest.fixture()
def toy_data(tmp_path):
    d = tmp_path / "data"
    (d / "toy").mkdir(parents=True)
    (d / "toy" / "lines.txt").write_text("\n".join(f"she went to the {w}." for w in ["store", "park", "office", "city"]))
    return d


@pytest.fixture()
def no_model_loading(monkeypatch):
    """Validation must fail before any model loads: loading one fails the test."""

    def refuse(name, **kwargs):
        raise AssertionError(f"model {name!r} was loaded before the bad input was reported")

    monkeypatch.setattr("bench.run.unit.load_subject", refuse)


def _one_line_error(code, err, *names, exit_code=2):
    """One `error: ...` line (the last on stderr; progress lines of a run may come before it) naming `names`."""
    assert code == exit_code, err
    lines = err.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    assert "Traceback" not in err
    for name in names:
        assert name in errors[0], err


def _untouched(out: Path):
    assert not out.exists() or (out.is_dir() and not any(out.iterdir())), sorted(out.iterdir())


def _rows(out):
    return [json.loads(l) for l in (out / "results.jsonl").read_text().splitlines()]


# ---- options, seed and stats: typed and range-checked before any model loads ------------------------------------
@pytest.mark.parametrize(
    "args, names",
    [
        (["--methods", "inlp", "-o", "inlp.n_iterations=abc"], ["inlp.n_iterations", "integer", "'abc'"]),
        (["--methods", "inlp", "-o", "inlp.n_iterations=-5"], ["inlp.n_iterations", ">= 1", "-5"]),
        (["--methods", "inlp", "-o", "inlp.n_iterations=0"], ["inlp.n_iterations", ">= 1"]),
        (["--methods", "inlp", "-o", "inlp.n_iterations=true"], ["inlp.n_iterations", "integer", "True"]),
        (["--methods", "inlp", "-o", "inlp.per_class=0"], ["inlp.per_class", ">= 1"]),
        (["--methods", "cda", "-o", "cda.max_steps=0"], ["cda.max_steps", ">= 1"]),
        (["--methods", "gradiend-bpi", "-o", "gradiend-bpi.batch_size=0"], ["gradiend-bpi.batch_size", ">= 1"]),
        (["--methods", "gradiend", "-o", "gradiend.max_steps=-1"], ["gradiend-bpi.max_steps", ">= 1"]),
        (["--methods", "dropout", "-o", "dropout.hidden_dropout=2"], ["dropout.hidden_dropout", "between 0.0 and 1.0"]),
        (["--metrics", "stereoset", "-o", "stereoset.batch_tokens=-1"], ["stereoset.batch_tokens", ">= 1"]),
        (["--metrics", "seat", "-o", "seat.batch_size=0"], ["seat.batch_size", ">= 1"]),
        (["--metrics", "crows", "-o", "crows.batch_size=abc"], ["crows.batch_size", "integer", "'abc'"]),
        (["--metrics", "crows", "-o", "crows.variant=1"], ["crows.variant", "string"]),
        (["--metrics", "seat", "-o", "seat.n_permutations=1.5"], ["seat.n_permutations", "integer"]),
        (["--metrics", "bad-fn", "-o", "bad-fn.nope=1"], ["bad-fn.nope", "unknown option"]),
        (["--resamples", "-5"], ["--resamples", ">= 1", "-5"]),
        (["--resamples", "0"], ["--resamples", ">= 1"]),
        (["--resamples", "1000000000000"], ["--resamples 1000000000000 needs about 32.0 TB", "even one item", "or fewer"]),
        (["--executor", "ray", "--gpus-per-job", "nan"], ["--gpus-per-job", "finite number >= 0", "nan"]),
        (["--executor", "ray", "--gpus-per-job", "inf"], ["--gpus-per-job", "finite number >= 0", "inf"]),
        (["--executor", "ray", "--gpus-per-job", "-1"], ["--gpus-per-job", "finite number >= 0", "-1"]),
        (["--executor", "slurm", "--gpus-per-job", "0.5"], ["--gpus-per-job", "whole number", "0.5"]),
        (["--executor", "ray", "--ray-cpus", "0"], ["--ray-cpus", ">= 1", "0"]),
        (["--executor", "slurm", "--slurm-array-parallelism", "0"], ["--slurm-array-parallelism", ">= 1"]),
        (["--executor", "slurm", "--slurm-time", "-5"], ["--slurm-time", ">= 1", "-5"]),
        (["--seed", "-1"], ["seed", "non-negative integer", "-1"]),
    ],
)
def test_bad_values_fail_before_any_model_loads(args, names, tmp_path, capsys, no_model_loading):
    out = tmp_path / "run"
    code, _, err = run_bench(["run", "--models", "synthetic", "--cache-dir", tmp_path / "c", "--out", out, *args], capsys)
    _one_line_error(code, err, *names)
    _untouched(out)


def test_resamples_beyond_memory_fail_before_the_bootstrap_allocates(tiny_model_dir, toy_data, tmp_path, capsys,
                                                                     monkeypatch):
    """With the items known (4 lines: 32 bytes x 4 per resample), a bootstrap that cannot fit is refused before it
    allocates, naming the --resamples that fit; that one runs."""
    monkeypatch.setattr("bench.run.checks.memory_available", lambda: 10_000_000, raising=False)
    out = tmp_path / "run"
    args = ["run", "--models", tiny_model_dir, "--metrics", "bad-fn", "--data-dir", toy_data,
            "--cache-dir", tmp_path / "c", "--out", out]  # fmt: skip
    code, _, err = run_bench([*args, "--resamples", "100000"], capsys)  # 12.8 MB: fits one item (3.2 MB), not four
    _one_line_error(code, err, "--resamples 100000 needs about 12.8 MB", "over 4 items", "but 10.0 MB",
                    "use --resamples 78,125 or fewer")  # fmt: skip
    _untouched(out)
    code, _, err = run_bench([*args, "--resamples", "78125"], capsys)
    assert code == 0, err
    assert {r["resamples"] for r in _rows(out)} == {78125}


def test_a_cache_dir_that_cannot_be_a_folder(tmp_path, capsys, monkeypatch, no_model_loading):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    cases = [(["--cache-dir", "/dev/null"], ["--cache-dir /dev/null is not a directory", "choose another --cache-dir"]),
             (["--cache-dir", blocker], [f"--cache-dir {blocker} is not a directory"]),
             (["--cache-dir", blocker / "sub"],
              [f"--cache-dir {blocker / 'sub'} cannot be created", f"{blocker} is not a directory", "choose another"])]
    for extra, names in cases:
        for dry in ([], ["--dry-run"]):
            code, _, err = run_bench(["run", "--models", "synthetic", "--out", tmp_path / "run", *extra, *dry], capsys)
            _one_line_error(code, err, *names)
    monkeypatch.setenv("BENCH_CACHE_DIR", str(blocker / "sub"))
    code, _, err = run_bench(["run", "--models", "synthetic", "--out", tmp_path / "run"], capsys)
    _one_line_error(code, err, f"the cache folder {blocker / 'sub'} (from BENCH_CACHE_DIR) cannot be created",
                    "pass --cache-dir or set BENCH_CACHE_DIR")  # fmt: skip
    assert blocker.read_text() == "x"
    _untouched(tmp_path / "run")


def test_a_cache_dir_that_cannot_be_created_but_an_existing_read_only_one_is_used(tmp_path, monkeypatch):
    from bench.run.checks import check_cache_dir

    read_only = tmp_path / "ro"
    read_only.mkdir()
    real = os.access  # (root ignores a folder's mode: the read-only file system as the check sees it)
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == read_only else real(p, mode, **kw))
    with pytest.raises(BenchError, match=f"{read_only / 'c'} cannot be created: no write permission on {read_only}"):
        check_cache_dir(read_only / "c", given=True)
    check_cache_dir(read_only, given=True)  # a shared cache that this user only reads


@pytest.mark.parametrize("module, executor", [("submitit", "slurm"), ("ray", "ray")])
def test_missing_engine_gives_the_install_hint(module, executor, tmp_path, capsys, monkeypatch, no_model_loading):
    monkeypatch.setitem(sys.modules, module, None)  # `import MODULE` fails as if it were not installed
    out = tmp_path / "run"
    code, _, err = run_bench(["run", "--models", "synthetic", "--executor", executor, "--slurm-cluster", "local",
                              "--cache-dir", tmp_path / "c", "--out", out], capsys)  # fmt: skip
    _one_line_error(code, err, f"--executor {executor} needs", f"pip install 'bench-debias[{executor}]'")
    _untouched(out)


def test_auto_and_null_still_mean_the_default(tmp_path, capsys, monkeypatch):
    from bench.run.request import RunRequest

    req = RunRequest(models=["synthetic"], methods=["inlp"], metrics=["stereoset"],
                     options={"stereoset": {"batch_tokens": "auto"}, "inlp": {"max_removed_fraction": None}}).normalised()
    assert req.options == {"stereoset": {"batch_tokens": None}, "inlp": {"max_removed_fraction": None}}


@pytest.mark.parametrize(
    "toml, names",
    [
        ('seed = "zero"\n', ["seed", "non-negative integer", "'zero'", "suite.toml"]),
        ("seed = -3\n", ["seed", "non-negative integer", "suite.toml"]),
        ("[stats]\nresample = 100\n", ["[stats]", "'resample'", "resamples", "suite.toml"]),
        ("[stats]\nresamples = 0\n", ["resamples", ">= 1", "suite.toml"]),
        ('[stats]\nresamples = "many"\n', ["resamples", "integer", "suite.toml"]),
        ("[stats]\nseed = 1\n", ["[stats] seed", "suite.toml"]),
        ('[stats]\nci = "magic"\n', ["ci", "magic", "suite.toml"]),
        ("[options.inlp]\nn_iterations = 0\n", ["inlp.n_iterations", ">= 1"]),
        ("[options]\ninlp = 3\n", ["options", "suite.toml"]),
    ],
)
def test_bad_suite_values(toml, names, tmp_path, capsys, no_model_loading):
    suite = tmp_path / "suite.toml"
    suite.write_text('models = ["synthetic"]\nmethods = ["base", "inlp"]\nmetrics = ["stereoset"]\n' + toml)
    out = tmp_path / "run"
    code, _, err = run_bench(["run", "--suite", suite, "--cache-dir", tmp_path / "c", "--out", out], capsys)
    _one_line_error(code, err, *names)
    _untouched(out)


# ---- --models keeps a model's own key=value options together ----------------------------------------------------
def test_models_option_keeps_model_options_together(tmp_path, capsys, monkeypatch):
    seen = []

    def fake_load(name, **kwargs):
        seen.append(name)
        raise BenchError(f"stop after parsing {name}")

    monkeypatch.setattr("bench.run.unit.load_subject", fake_load)
    out = tmp_path / "run"
    code, _, err = run_bench(["run", "--models", "synthetic:bias=0.8,seed=0", "--metrics", "bad-fn",
                           "--cache-dir", tmp_path / "c", "--out", out], capsys)  # fmt: skip
    _one_line_error(code, err, "stop after parsing synthetic:bias=0.8,seed=0")
    assert seen == ["synthetic:bias=0.8,seed=0"]
    _untouched(out)


def test_split_model_names():
    from bench.models.loading import split_model_names

    assert split_model_names("synthetic:bias=0.8,seed=0") == ["synthetic:bias=0.8,seed=0"]
    assert split_model_names("bert-base, synthetic:bias=0.8,seed=0,init=random,distilbert") == [
        "bert-base", "synthetic:bias=0.8,seed=0,init=random", "distilbert"]  # fmt: skip
    assert split_model_names("random:bert-base-uncased,seed=1,synthetic") == ["random:bert-base-uncased,seed=1", "synthetic"]


# ---- `base` inside a chain; reruns do not duplicate rows --------------------------------------------------------
def test_base_in_a_chain_is_dropped():
    from bench.run.request import RunRequest

    req = RunRequest(models=["synthetic"], methods=["base+inlp", "inlp+base", "base+base", "inlp"], metrics=["seat"])
    assert req.normalised().methods == ["base", "inlp"]


def test_rerun_of_a_chain_with_base_adds_no_rows(tiny_model_dir, toy_data, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["run", "--models", tiny_model_dir, "--methods", "base+bad-shrink", "--metrics", "bad-fn",
            "--data-dir", toy_data, "--cache-dir", tmp_path / "c", "--out", out, "--resamples", "20"]  # fmt: skip
    assert run_bench(args, capsys)[0] == 0
    rows = _rows(out)
    assert sorted(r["method"] for r in rows) == ["bad-shrink", "base"]
    assert run_bench(args, capsys)[0] == 0
    assert run_bench([*args[:4], "bad-shrink+base", *args[5:]], capsys)[0] == 0
    assert _rows(out) == rows


# ---- data files that are not UTF-8 --------------------------------------------------------------------------------
BAD_BYTES = b"sent_more,sent_less,stereo_antistereo,bias_type\ncaf\xe9 he,caf\xe9 she,stereo,gender\n"


@pytest.mark.parametrize(
    "relative, content, metric, bad",
    [
        ("crows_pairs/crows_pairs_anonymized.csv", BAD_BYTES, "crows", b"\xe9"),
        ("stereoset/dev.json", b'{"version": "1.0", "data": {"intrasentence": [{"x": "\xff"}]}}', "stereoset", b"\xff"),
        ("toy/lines.txt", b"she went home.\nhe went \x80 out.\n", "bad-fn", b"\x80"),
    ],
)
def test_non_utf8_data_file_names_file_and_byte(relative, content, metric, bad, tiny_model_dir, tmp_path, capsys):
    offset = content.index(bad)
    data = tmp_path / "data"
    (data / relative).parent.mkdir(parents=True)
    (data / relative).write_bytes(content)
    out = tmp_path / "run"
    code, _, err = run_bench(["run", "--models", tiny_model_dir, "--metrics", metric, "--data-dir", data,
                           "--cache-dir", tmp_path / "c", "--out", out], capsys)  # fmt: skip
    _one_line_error(code, err, str(data / relative), f"byte offset {offset}", "UTF-8")
    _untouched(out)


def test_non_utf8_in_every_reader(tmp_path):
    from bench.data.paths import DataError, read_csv_rows, read_json, text_corpus
    from metrics.glue_tasks import TASKS, read_tsv

    (tmp_path / "text_corpus").mkdir()
    bad = tmp_path / "text_corpus" / "a.txt"
    bad.write_bytes(b"fine line\n" * 3 + b"bad \xc3\x28 line\n")
    for read in (lambda: text_corpus(tmp_path), lambda: read_json(bad), lambda: read_csv_rows(bad, ["x"]),
                 lambda: read_tsv(TASKS["sst2"], bad, "train")):  # fmt: skip
        with pytest.raises(DataError, match=rf"{bad}: not valid UTF-8 text at byte offset 34"):
            read()


# ---- --out: a file, under a file, not writable; a corrupted manifest ----------------------------------------------
def test_out_is_a_file(tmp_path, capsys, no_model_loading):
    out = tmp_path / "run"
    out.write_text("not a directory")
    code, _, err = run_bench(["run", "--models", "synthetic", "--metrics", "bad-fn", "--out", out], capsys)
    _one_line_error(code, err, f"--out {out}", "is a file")
    assert out.read_text() == "not a directory"


def test_out_under_a_file(tmp_path, capsys, no_model_loading):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = blocker / "run"
    code, _, err = run_bench(["run", "--models", "synthetic", "--metrics", "bad-fn", "--out", out], capsys)
    _one_line_error(code, err, f"--out {out}", str(blocker), "not a directory")
    assert blocker.read_text() == "x"


def test_out_not_writable(tmp_path, capsys, monkeypatch, no_model_loading):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    if os.access(parent, os.W_OK):  # root ignores the mode: simulate the read-only file system the check sees
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == parent else real(p, mode, **kw))
    out = parent / "run"
    try:
        code, _, err = run_bench(["run", "--models", "synthetic", "--metrics", "bad-fn", "--out", out], capsys)
    finally:
        parent.chmod(0o755)
    _one_line_error(code, err, f"--out {out}", "not writable", str(parent))
    assert not out.exists()


@pytest.mark.parametrize("content", ['{"request_hash": "abc"', "[1, 2]", "\xff garbage"])
def test_corrupted_manifest(content, tmp_path, capsys, no_model_loading):
    out = tmp_path / "run"
    out.mkdir()
    (out / "manifest.json").write_text(content, encoding="latin-1")
    code, _, err = run_bench(["run", "--models", "synthetic", "--metrics", "bad-fn", "--out", out], capsys)
    _one_line_error(code, err, str(out / "manifest.json"), "corrupted")
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json"]


# ---- the manifest: written only with results; order-insensitive; data fingerprints ---------------------------------
def test_failed_run_does_not_lock_its_directory(tiny_model_dir, toy_data, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    common = ["run", "--models", tiny_model_dir, "--metrics", "bad-fn", "--data-dir", toy_data,
              "--cache-dir", tmp_path / "c", "--out", out, "--resamples", "20"]  # fmt: skip
    monkeypatch.setattr(FileNorm, "score", lambda self, s, c: (_ for _ in ()).throw(BenchError("scoring failed")))
    code, _, err = run_bench([*common, "-o", "bad-fn.batch_size=4"], capsys)
    _one_line_error(code, err, "scoring failed")
    _untouched(out)  # the model loaded, but no result was ready: no manifest
    monkeypatch.undo()
    assert run_bench(common, capsys)[0] == 0  # the corrected command (other options) runs into the same directory
    assert {r["metric"] for r in _rows(out)} == {"bad-fn"}


def test_order_of_metrics_and_methods_is_the_same_run(tiny_model_dir, toy_data, tmp_path, capsys):
    out = tmp_path / "run"
    common = ["run", "--models", tiny_model_dir, "--data-dir", toy_data, "--cache-dir", tmp_path / "c",
              "--out", out, "--resamples", "20"]  # fmt: skip
    assert run_bench([*common, "--metrics", "bad-fn,bad-fn2", "--methods", "bad-shrink"], capsys)[0] == 0
    rows = _rows(out)
    code, _, err = run_bench([*common, "--metrics", "bad-fn2,bad-fn", "--methods", "base,bad-shrink"], capsys)
    assert code == 0, err
    assert _rows(out) == rows


def test_changed_data_file_refuses_resume(tiny_model_dir, toy_data, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["run", "--models", tiny_model_dir, "--metrics", "bad-fn", "--data-dir", toy_data,
            "--cache-dir", tmp_path / "c", "--out", out, "--resamples", "20"]  # fmt: skip
    assert run_bench(args, capsys)[0] == 0
    manifest = json.loads((out / "manifest.json").read_text())
    data_file = toy_data / "toy" / "lines.txt"
    assert str(data_file.resolve()) in manifest["data"]
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    data_file.write_text("he went to the moon.\n")
    code, _, err = run_bench(args, capsys)
    _one_line_error(code, err, "data file", str(data_file.resolve()), "changed")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_changed_file_in_a_models_own_data_dir_refuses_resume(tiny_model_dir, toy_data, tmp_path, capsys):
    """A model that brings its own data (the synthetic world) has its whole data directory fingerprinted."""
    from bench.models.loading import MODELS, load_hf, register_model

    world = tmp_path / "world-data"
    (world / "toy").mkdir(parents=True)
    (world / "toy" / "lines.txt").write_text("he went to the park.\nshe went home.\n")
    (world / "toy" / "unread.txt").write_text("not read by any plugin of this run\n")

    def load_world(spec, data_dir=None, cache_dir=None):
        return load_hf(str(tiny_model_dir), spec.name).replace(data_dir=world)

    register_model("bad-world")(load_world)
    try:
        out = tmp_path / "run"
        args = ["run", "--models", "bad-world:seed=1", "--metrics", "bad-fn", "--cache-dir", tmp_path / "c",
                "--out", out, "--resamples", "20"]  # fmt: skip
        code, _, err = run_bench(args, capsys)
        assert code == 0, err
        (world / "toy" / "unread.txt").write_text("changed\n")
        code, _, err = run_bench(args, capsys)
        _one_line_error(code, err, str((world / "toy" / "unread.txt").resolve()), "changed")
    finally:
        MODELS.unregister("bad-world")


def test_non_utf8_suite_file(tmp_path, capsys, no_model_loading):
    suite = tmp_path / "suite.toml"
    suite.write_bytes(b'models = ["synthetic"]\ndescription = "caf\xe9"\n')
    code, _, err = run_bench(["run", "--suite", suite, "--out", tmp_path / "run"], capsys)
    offset = suite.read_bytes().index(b"\xe9")
    _one_line_error(code, err, str(suite), f"byte offset {offset}")
    _untouched(tmp_path / "run")


# ---- bench check ----------------------------------------------------------------------------------------------------
GOOD = {"model": "m", "method": "base", "metric": "x", "submetric": "x", "seed": 0, "status": "ok", "value": 1.0}


def _write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.mark.parametrize(
    "baseline, code, names",
    [
        ([], 3, ["no comparable values"]),
        ([{**GOOD, "status": "n/a", "value": None}], 3, ["no comparable values"]),
        ([{"value": 1.0}], 4, ["malformed", "baseline row 1", "model, method, metric"]),
        ([GOOD, {**GOOD, "submetric": "y", "value": "abc"}], 4, ["malformed", "baseline row 2", "value"]),
        ([{**GOOD, "tolerance": -1}], 4, ["malformed", "tolerance"]),
        ([GOOD, "{not json"], 4, ["malformed", "line 2"]),
    ],
)
def test_check_nothing_comparable_and_malformed(baseline, code, names, tmp_path, capsys):
    run = _write(tmp_path / "run.jsonl", [GOOD])
    base = _write(tmp_path / "base.jsonl", baseline)
    got, stdout, err = run_bench(["check", run, "--baseline", base], capsys)
    _one_line_error(got, err, *names, exit_code=code)
    assert "within tolerance" not in stdout


def test_check_malformed_run(tmp_path, capsys):
    run = _write(tmp_path / "run.jsonl", [{**GOOD, "value": "1.0"}])
    base = _write(tmp_path / "base.jsonl", [GOOD])
    code, _, err = run_bench(["check", run, "--baseline", base], capsys)
    _one_line_error(code, err, "malformed", "run row", exit_code=4)


@pytest.mark.parametrize("tolerance", ["nan", "-1", "inf", "-inf"])
def test_check_rejects_bad_tolerance(tolerance, tmp_path, capsys):
    run = _write(tmp_path / "run.jsonl", [GOOD])
    code, _, err = run_bench(["check", run, "--baseline", run, "--tolerance", tolerance], capsys)
    _one_line_error(code, err, "--tolerance", "finite number >= 0")


def test_check_ok_and_regression_codes_and_help(tmp_path, capsys):
    run = _write(tmp_path / "run.jsonl", [GOOD])
    assert run_bench(["check", run, "--baseline", run], capsys)[0] == 0
    drift = _write(tmp_path / "drift.jsonl", [{**GOOD, "value": 2.0}])
    code, stdout, _ = run_bench(["check", run, "--baseline", drift], capsys)
    assert code == 1 and "FAIL" in stdout
    _, stdout, _ = run_bench(["check", "--help"], capsys)
    for line in ("0  every", "1  regression", "3  nothing comparable", "4  malformed"):
        assert line in stdout


# ---- permissions of what a run writes ---------------------------------------------------------------------------------
def test_files_get_the_users_umask(tiny_model_dir, toy_data, tmp_path, capsys):
    from bench.files import atomic_dir, write_text

    old = os.umask(0o022)
    try:
        out = tmp_path / "run"
        assert run_bench(["run", "--models", tiny_model_dir, "--methods", "bad-shrink", "--metrics", "bad-fn",
                       "--data-dir", toy_data, "--cache-dir", tmp_path / "c", "--out", out, "--resamples", "20"],
                      capsys)[0] == 0  # fmt: skip
        for name in ("results.jsonl", "manifest.json", "leaderboard.md"):
            assert stat.S_IMODE((out / name).stat().st_mode) == 0o644, name
        cached = [p for p in (tmp_path / "c").rglob("*")]
        assert cached and all(stat.S_IMODE(p.stat().st_mode) in (0o644, 0o755) for p in cached)
        os.umask(0o027)
        write_text(tmp_path / "f.txt", "x")
        assert stat.S_IMODE((tmp_path / "f.txt").stat().st_mode) == 0o640
        with atomic_dir(tmp_path / "d") as d:
            (d / "x").write_text("x")
        assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o750
    finally:
        os.umask(old)
