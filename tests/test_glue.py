"""GLUE (metrics.glue, metrics.glue_tasks, reports.glue_table): data loading, metric values against scikit-learn
and scipy, bootstrap statistics, missing tasks, caching/resume, runner rows and the GLUE table."""
from __future__ import annotations

import functools
import time
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.stats import pearsonr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

import bench.models.finetune as ft
from bench.api import Context, Estimate
from bench.errors import BenchError, DataError
from bench.stats import StatsConfig, bootstrap_indices, interval
from glue_tiny import tiny_subject, write_glue, write_tiny_bert
from metrics import glue_tasks
from metrics.glue import GLUE, GlueSTSB
from metrics.glue_tasks import TASKS, TaskUnavailable, load_task, metric_over_resamples, task_statistic

SKLEARN = {
    "accuracy": accuracy_score,
    "f1": f1_score,
    "mcc": matthews_corrcoef,
    "pearson": lambda y, p: pearsonr(y, p)[0],
}


pytestmark = pytest.mark.usefixtures("one_thread")


# ---- data ----------------------------------------------------------------------------------------------------
def _naive_tsv(path, header=True):
    return pd.read_csv(path, sep="\t", quoting=3, header=0 if header else None, dtype=str, keep_default_na=False,
                       encoding="utf-8-sig")  # fmt: skip


@pytest.mark.parametrize("key", ["cola", "sst2", "mrpc", "stsb", "rte", "wnli"])
def test_real_files_load_as_a_straightforward_reader_sees_them(data_dir, key):
    task = TASKS[key]
    data = load_task(task, data_dir, source="files")
    for split, (_, name) in zip([data.train, *data.evals], [("train", "train.tsv"), *task.eval_files]):
        df = _naive_tsv(data_dir / "glue" / task.folder / name, task.header)
        assert len(split) == len(df)
        col = lambda c: df.iloc[:, c] if isinstance(c, int) else df[c]  # noqa: E731
        assert split.text_a == list(col(task.text_columns[0]))
        if len(task.text_columns) > 1:
            assert split.text_b == list(col(task.text_columns[1]))
        if task.is_regression:
            np.testing.assert_allclose(split.labels, col(task.label_column).astype(float), rtol=1e-6)
        else:
            assert [task.labels[i] for i in split.labels] == list(col(task.label_column))


def test_known_sizes_and_label_spaces(data_dir):
    sizes = {k: (len(d.train), len(d.evals[0])) for k in ("cola", "sst2", "mrpc", "stsb", "rte", "wnli")
             for d in [load_task(TASKS[k], data_dir, "files")]}  # fmt: skip
    assert sizes == {"cola": (8551, 1043), "sst2": (67349, 872), "mrpc": (3667, 408), "stsb": (5749, 1500),
                     "rte": (2490, 277), "wnli": (635, 71)}  # fmt: skip
    rte = load_task(TASKS["rte"], data_dir, "files")
    assert rte.evals[0].labels[0] == 1  # first dev row is not_entailment: class 1 as in nyu-mll/glue


def test_missing_tasks_are_unavailable_not_errors(data_dir):
    with pytest.raises(TaskUnavailable, match="no train.tsv"):
        load_task(TASKS["qnli"], data_dir, "files")  # dev only
    with pytest.raises(TaskUnavailable, match="no folder"):
        load_task(TASKS["mnli"], data_dir, "files")


def test_malformed_rows_name_file_and_row(tmp_path):
    root = write_glue(tmp_path, n_train=10, n_dev=6)
    rte = root / "glue" / "RTE" / "dev.tsv"
    lines = rte.read_text().splitlines()
    lines[3] = lines[3].rsplit("\t", 1)[0] + "\tmaybe"
    rte.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"RTE/dev\.tsv row 4: .*label 'maybe'"):
        load_task(TASKS["rte"], root, "files")
    sst = root / "glue" / "SST-2" / "train.tsv"
    lines = sst.read_text().splitlines()
    lines[5] = lines[5] + "\textra"
    sst.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"SST-2/train\.tsv row 6: malformed record, 3 fields instead of 2"):
        load_task(TASKS["sst2"], root, "files")
    sts = root / "glue" / "STS-B" / "dev.tsv"
    lines = sts.read_text().splitlines()
    lines[2] = lines[2].rsplit("\t", 1)[0] + "\tfive"
    sts.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"STS-B/dev\.tsv row 3: .*score 'five'"):
        load_task(TASKS["stsb"], root, "files")
    cola = root / "glue" / "CoLA" / "train.tsv"
    cola.write_text("src\t1\t\t\n")
    with pytest.raises(DataError, match=r"CoLA/train\.tsv row 1: .*empty text"):
        load_task(TASKS["cola"], root, "files")


def test_hub_layout_is_converted(monkeypatch):
    datasets = pytest.importorskip("datasets")

    def split(n, seed):
        rng = np.random.default_rng(seed)
        return datasets.Dataset.from_dict({"premise": [f"p{i}" for i in range(n)], "hypothesis": [f"h{i}" for i in range(n)],
                                           "label": rng.integers(0, 3, n).tolist(), "idx": list(range(n))})  # fmt: skip

    fake = datasets.DatasetDict({"train": split(12, 0), "validation_matched": split(5, 1), "validation_mismatched": split(4, 2)})
    seen = []
    monkeypatch.setattr(datasets, "load_dataset", lambda name, config: seen.append((name, config)) or fake)
    monkeypatch.setattr(glue_tasks, "_hub_failed", None)
    monkeypatch.setattr(glue_tasks, "_hub_reachable", lambda: None)
    data = load_task(TASKS["mnli"], None, source="hub")
    assert seen == [("nyu-mll/glue", "mnli")]
    assert [s.name for s in data.evals] == ["matched", "mismatched"] and [len(s) for s in data.evals] == [5, 4]
    assert data.train.text_a[3] == "p3" and data.train.text_b[3] == "h3"
    np.testing.assert_array_equal(data.evals[1].labels, fake["validation_mismatched"]["label"])
    assert data.origin.startswith("hub:nyu-mll/glue/mnli:")


def test_unreachable_hub_makes_the_task_missing(monkeypatch, tmp_path):
    datasets = pytest.importorskip("datasets")
    calls = []

    def offline(*a, **k):
        calls.append(a)
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    monkeypatch.setattr(glue_tasks, "_hub_failed", None)
    monkeypatch.setattr(glue_tasks, "_hub_reachable", lambda: None)  # the probe passes, datasets then fails
    with pytest.raises(TaskUnavailable, match="no network"):
        load_task(TASKS["qqp"], tmp_path, source="auto")
    with pytest.raises(TaskUnavailable, match="failed earlier|not reachable"):
        load_task(TASKS["mnli"], tmp_path, source="auto")
    assert len(calls) == 1  # the second task does not wait for the same failure again


def test_hub_probe_failure_skips_datasets_and_says_what_to_do(monkeypatch, tmp_path):
    datasets = pytest.importorskip("datasets")
    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: calls.append(a))
    monkeypatch.setattr(glue_tasks, "_hub_failed", None)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    def refused(address, timeout):
        raise ConnectionRefusedError("refused")

    monkeypatch.setattr("socket.create_connection", refused)
    with pytest.raises(TaskUnavailable, match=r"not reachable.*<data-dir>/glue/<TASK>/.*HF_DATASETS_OFFLINE=1"):
        load_task(TASKS["qqp"], tmp_path, source="auto")
    assert calls == []


# ---- metrics -------------------------------------------------------------------------------------------------
def _random_case(metric, n, seed, k=2):
    rng = np.random.default_rng(seed)
    if metric == "pearson":
        y = rng.uniform(0, 5, n)
        return y, np.stack([y + rng.normal(0, s, n) for s in (0.5, 1.0, 3.0)])
    y = rng.integers(0, k, n)
    return y, np.stack([np.where(rng.random(n) < q, y, rng.integers(0, k, n)) for q in (0.2, 0.6, 0.9)])


@pytest.mark.parametrize("metric,k", [("accuracy", 2), ("accuracy", 3), ("f1", 2), ("mcc", 2), ("mcc", 3), ("pearson", 1)])
def test_vectorised_metric_equals_sklearn_scipy(metric, k):
    y, preds = _random_case(metric, 157, 0, k)
    idx = bootstrap_indices((157,), 25, seed=3)[0]
    got = metric_over_resamples(metric, y, preds, idx, num_labels=k)
    assert got.shape == (3, 25)
    for s in range(3):
        for r in range(25):
            want = SKLEARN[metric](y[idx[r]], preds[s][idx[r]])
            assert got[s, r] == pytest.approx(want, abs=1e-9)
    # identity indices: the point estimate on the full set
    full = metric_over_resamples(metric, y, preds, np.arange(157)[None], num_labels=k)[:, 0]
    np.testing.assert_allclose(full, [SKLEARN[metric](y, p) for p in preds], atol=1e-12)


def test_degenerate_cases_follow_sklearn():
    y = np.array([0, 1, 1, 0, 1])
    const = np.zeros((1, 5), int)
    idx = np.arange(5)[None]
    assert metric_over_resamples("mcc", y, const, idx)[0, 0] == matthews_corrcoef(y, const[0]) == 0.0
    assert metric_over_resamples("f1", y, const, idx)[0, 0] == f1_score(y, const[0]) == 0.0
    negatives = np.zeros(5, int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = f1_score(negatives, const[0])  # no positive label or prediction at all
    assert metric_over_resamples("f1", negatives, const, idx)[0, 0] == want == 0.0
    assert np.isnan(metric_over_resamples("pearson", y.astype(float), const.astype(float), idx)[0, 0])


def test_chunked_sums_equal_unchunked(monkeypatch):
    y, preds = _random_case("mcc", 300, 1, 3)
    idx = bootstrap_indices((300,), 40, seed=0)[0]
    whole = metric_over_resamples("mcc", y, preds, idx, 3)
    from metrics import resampled

    monkeypatch.setattr(resampled, "_CHUNK", 1000)  # 3 resamples per chunk
    np.testing.assert_array_equal(metric_over_resamples("mcc", y, preds, idx, 3), whole)


def test_task_statistic_mnli_style_average():
    """Two validation splits (matched/mismatched), three seeds: per seed the split mean, then the seed mean."""
    y1, p1 = _random_case("accuracy", 80, 4, 3)
    y2, p2 = _random_case("accuracy", 50, 5, 3)
    stat = functools.partial(task_statistic, metric="accuracy", num_labels=3, labels=(y1, y2), predictions=(p1, p2))
    est = Estimate((80, 50), stat)
    want = 100 * np.mean([(accuracy_score(y1, a) + accuracy_score(y2, b)) / 2 for a, b in zip(p1, p2)])
    assert est.point() == pytest.approx(want, abs=1e-9)
    i1, i2 = bootstrap_indices((80, 50), 7, seed=1)
    dist = stat([i1, i2])
    for r in range(7):
        per_seed = [(accuracy_score(y1[i1[r]], a[i1[r]]) + accuracy_score(y2[i2[r]], b[i2[r]])) / 2 for a, b in zip(p1, p2)]
        assert dist[r] == pytest.approx(100 * np.mean(per_seed), abs=1e-9)
    iv = interval(est, StatsConfig(resamples=500))
    assert iv.low <= iv.value <= iv.high


# ---- the metric end to end on a tiny model -----------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_subject(write_tiny_bert(tmp_path_factory.mktemp("tiny")))


@pytest.fixture()
def glue_ctx(tmp_path):
    root = write_glue(tmp_path / "data", n_train=48, n_dev=30)
    return Context(data_dir=root, cache_dir=tmp_path / "cache", progress=False, resamples=300)


QUICK = dict(epochs=1, lr=1e-3, batch_size=16, max_seq_length=32, seeds=(0, 1), source="files")


def test_glue_scores_equal_sklearn_on_the_stored_predictions(tiny, glue_ctx):
    metric = GLUE(tasks="cola,sst2,stsb,mnli,rte,qqp", **QUICK)
    scores = metric.score(tiny, glue_ctx)
    assert set(scores.estimates) == {"glue:cola", "glue:sst2", "glue:stsb", "glue:mnli", "glue:rte", "glue"}
    items = scores.items
    points = {}
    for key in ("cola", "sst2", "stsb", "mnli", "rte"):
        task = TASKS[key]
        per_seed = []
        for seed_index in (0, 1):
            per_split = []
            for split, df in items[(items.task == key) & (items.seed_index == seed_index)].groupby("split", sort=False):
                y, p = df.label.to_numpy(), df.prediction.to_numpy()
                per_split.append(SKLEARN[task.metric](y, p) if task.is_regression else SKLEARN[task.metric](y.astype(int), p.astype(int)))
            per_seed.append(np.mean(per_split))
        points[key] = 100 * np.mean(per_seed)
        est = scores.estimates[f"glue:{key}"]
        assert est.point() == pytest.approx(points[key], abs=1e-6)
        iv = interval(est, StatsConfig(resamples=300))
        assert iv.low <= iv.value <= iv.high
    assert scores.estimates["glue:mnli"].strata == (30, 15)
    assert scores.estimates["glue"].point() == pytest.approx(np.mean(list(points.values())), abs=1e-6)
    iv = interval(scores.estimates["glue"], StatsConfig(resamples=300))
    assert iv.low <= iv.value <= iv.high
    # missing tasks are said, not dropped silently
    assert scores.extras == {"glue_missing": 1.0, "glue_table": 6.0}
    assert scores.notes["glue_missing"].startswith("qqp: no folder")
    # the table description the task table reads (reports/task_table.py knows no metric module)
    import json

    desc = json.loads(scores.notes["glue_table"])
    assert desc["suite"] == "glue" and desc["label"] == "GLUE" and desc["mean"] == "glue"
    assert [(t["key"], t["label"], t["metric"]) for t in desc["tasks"]][:3] == [
        ("glue:cola", "CoLA", "MCC"), ("glue:sst2", "SST-2", "Acc."), ("glue:stsb", "STS-B", "Pearson")]  # fmt: skip
    assert [t["order"] for t in desc["tasks"]] == [0, 1, 3, 5, 7, 4] and list(desc["missing"]) == ["glue:qqp"]
    assert "mean over 5 of 6 tasks" in scores.notes["glue"] and "missing: QQP" in scores.notes["glue"]


def test_predictions_come_from_the_finetuned_model(tiny, glue_ctx):
    """The stored predictions are argmax of the logits of a classifier fine-tuned with the same settings."""
    metric = GLUE(tasks="sst2", **QUICK)
    scores = metric.score(tiny, glue_ctx)
    data = load_task(TASKS["sst2"], glue_ctx.data_dir, "files")
    tok = tiny.tokenizer
    res = ft.finetune(tiny, ft.encode(tok, data.train, 32), {"dev": ft.encode(tok, data.evals[0], 32)}, 2, 1,
                      metric.finetune_config())  # fmt: skip
    got = scores.items[(scores.items.task == "sst2") & (scores.items.seed_index == 1)].prediction.to_numpy()
    np.testing.assert_array_equal(got, res.logits["dev"].argmax(1))


def test_second_score_reuses_cached_finetuning(tiny, glue_ctx, monkeypatch):
    metric = GLUE(tasks="sst2,rte", **QUICK)
    first = metric.score(tiny, glue_ctx)

    def no_training(*a, **k):
        raise AssertionError("fine-tuned again although cached")

    monkeypatch.setattr(ft, "finetune", no_training)
    again = metric.score(tiny, glue_ctx)
    for key, est in first.estimates.items():
        assert again.estimates[key].point() == est.point()
    # the per-task metric shares the cache
    assert GLUE(tasks="rte", **QUICK).score(tiny, glue_ctx).estimates["glue:rte"].point() == first.estimates["glue:rte"].point()


def test_caps_subsample_deterministically(tiny, glue_ctx):
    scores = GLUE(tasks="sst2", max_train_examples=20, max_eval_examples=12, **QUICK).score(tiny, glue_ctx)
    assert scores.estimates["glue:sst2"].strata == (12,)
    data = load_task(TASKS["sst2"], glue_ctx.data_dir, "files").capped(20, 12)
    again = load_task(TASKS["sst2"], glue_ctx.data_dir, "files").capped(20, 12)
    assert len(data.train) == 20 and data.train.text_a == again.train.text_a


def test_per_task_metric_and_options():
    m = GlueSTSB(epochs=1, seeds="0,2")
    assert m.tasks == ("stsb",) and m.seeds == (0, 2) and "tasks" not in m.config()
    assert GLUE(tasks=["SST-2", "sts-b", "glue:CoLA"]).tasks == ("sst2", "stsb", "cola")
    with pytest.raises(BenchError, match="unknown GLUE task 'squad'"):
        GLUE(tasks="squad")
    with pytest.raises(BenchError, match="source"):
        GLUE(source="web")
    with pytest.raises(BenchError, match="batch_size"):
        GLUE(batch_size=0)


def test_synthetic_world_gets_small_defaults_real_models_the_papers():
    """With a data directory that has glue/ (BENCH_DATA_DIR = the real data), `--suite paper --models synthetic`
    fine-tunes for every one of its 14 fine-tunable rows: the synthetic defaults keep that to a few seconds a
    row (measured 4.6 s wall / 3.1 s CPU per row on 2 busy cores, SST-2 + RTE), whatever the data directory."""
    from types import SimpleNamespace

    from metrics.glue import ALL_TASKS, PAPER_SETTINGS, SYNTHETIC_SETTINGS

    synthetic, real = SimpleNamespace(meta={"synthetic": True}), SimpleNamespace(meta={})
    small = GLUE().settings(synthetic)
    assert small == SYNTHETIC_SETTINGS
    assert len(small["tasks"]) <= 3 and len(small["seeds"]) == 1 and small["cpu_threads"] == 1
    assert small["max_train_examples"] <= 256 and small["max_eval_examples"] <= 256 and small["max_seq_length"] <= 64
    # training sequences x epochs x seeds x tasks: a bounded amount of work per row
    work = small["max_train_examples"] * small["epochs"] * len(small["seeds"]) * len(small["tasks"])
    assert work <= 1000
    assert GLUE().finetune_config(synthetic).max_seq_length == small["max_seq_length"]
    assert GLUE().settings(real) == PAPER_SETTINGS == GLUE().settings(None)
    assert PAPER_SETTINGS["tasks"] == ALL_TASKS and PAPER_SETTINGS["seeds"] == (0, 1, 2) and PAPER_SETTINGS["epochs"] == 3
    assert PAPER_SETTINGS["max_train_examples"] is None and GLUE().finetune_config(real).max_seq_length == 128
    # explicit options win on either kind of subject
    chosen = GLUE(tasks="cola", seeds="0,1", epochs=2, max_train_examples=1000, max_seq_length=128).settings(synthetic)
    assert (chosen["tasks"], chosen["seeds"], chosen["epochs"], chosen["max_train_examples"], chosen["max_seq_length"]) == (
        ("cola",), (0, 1), 2, 1000, 128)  # fmt: skip
    assert GlueSTSB().settings(synthetic)["tasks"] == ("stsb",) and GlueSTSB().settings(synthetic)["seeds"] == (0,)
    # the paper suite sets no GLUE options, so these are what `--suite paper --models synthetic` runs
    from bench.run.suite import load_suite

    assert "glue" not in (load_suite("paper").get("options") or {})


def test_not_applicable_without_finetune_capability(tiny, glue_ctx):
    from bench.api import NotApplicable

    with pytest.raises(NotApplicable):
        GLUE(**QUICK).score(tiny.replace(capabilities=frozenset({"mlm"})), glue_ctx)


# ---- runner rows and the GLUE table --------------------------------------------------------------------------
def test_runner_rows_and_glue_table(tmp_path):
    from bench.run.request import RunRequest
    from bench.run.runner import Runner
    from reports.glue_table import render, write_tables

    model_dir = write_tiny_bert(tmp_path / "tinymodel")
    data = write_glue(tmp_path / "data", n_train=32, n_dev=20)
    request = RunRequest(
        models=[f"random:{model_dir}"], methods=["base"], metrics=["glue", "glue:rte"], device="cpu",
        data_dir=str(data), cache_dir=str(tmp_path / "cache"), progress=False, stats={"resamples": 200},
        options={"glue": dict(QUICK, tasks=["sst2", "mnli", "qqp"]), "glue:rte": QUICK},
    )  # fmt: skip
    rows = Runner(request, out=tmp_path / "run", echo=lambda m: None).run()
    by_sub = {(r["metric"], r["submetric"]): r for r in rows}
    assert {("glue", "glue:sst2"), ("glue", "glue:mnli"), ("glue", "glue"), ("glue", "glue_missing"), ("glue:rte", "glue:rte")} <= set(by_sub)
    glue_row = by_sub[("glue", "glue")]
    assert glue_row["ci_low"] <= glue_row["value"] <= glue_row["ci_high"]
    assert "missing: QQP" in glue_row["note"] and by_sub[("glue", "glue_missing")]["note"].startswith("qqp:")
    # a subject that cannot be fine-tuned is an n/a row
    na = dict(glue_row, method="self-debias", label="SelfDebias", submetric=None, status="n/a", value=None,
              note="self-debias does not serve finetune")  # fmt: skip
    md = render(rows + [na], "md")
    header = md.splitlines()[0]
    assert header.index("SST-2") < header.index("QQP") < header.index("MNLI") < header.index("RTE") < header.index("GLUE")
    base_line = next(line for line in md.splitlines() if f"| {glue_row['label']} " in line)
    assert "missing" in base_line and f"{glue_row['value']:.1f} [{glue_row['ci_low']:.1f}, {glue_row['ci_high']:.1f}]" in base_line
    na_line = next(line for line in md.splitlines() if "SelfDebias" in line)
    assert na_line.count("n/a") == 5  # SST-2, MNLI, QQP, RTE columns and the mean
    tex = render(rows + [na], "tex")
    assert tex.startswith(r"\begin{tabular}{ll" + "r" * 5 + "}") and r"\toprule" in tex and r"\bottomrule" in tex
    assert r"\scriptsize[" in tex and "missing" in tex
    paths = write_tables(rows, tmp_path / "run")
    assert [p.name for p in paths] == ["glue.md", "glue.tex"] and all(p.read_text() for p in paths)


def test_glue_table_cli(tmp_path):
    from click.testing import CliRunner

    from bench.files import write_text
    from reports.glue_table import glue_table

    row = dict(model="m", method="base", label="Base", group=0, metric="glue:cola", submetric="glue:cola", status="ok",
               value=12.34, ci_low=10.0, ci_high=14.0, significant=None, note="")  # fmt: skip
    import json

    write_text(tmp_path / "results.jsonl", json.dumps(row) + "\n")
    result = CliRunner().invoke(glue_table, [str(tmp_path), "--write"])
    assert result.exit_code == 0, result.output
    assert "12.3 [10.0, 14.0]" in result.output and (tmp_path / "glue.md").is_file()


# ---- acceptance: the quick GLUE suite on the synthetic model -------------------------------------------------
@pytest.mark.slow
def test_quick_glue_suite_on_the_synthetic_model(synthetic, data_dir, cache_dir, tmp_path):
    """`bench run --suite glue-quick`: real tasks from the data directory, capped, all the way to the GLUE table."""
    from bench.run.request import RunRequest
    from bench.run.runner import Runner
    from bench.run.suite import load_suite
    from reports.glue_table import write_tables

    suite = load_suite("glue-quick")
    # fresh fine-tuning caches, the already built synthetic world (the `synthetic` fixture) shared
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "synthetic").symlink_to(cache_dir / "synthetic", target_is_directory=True)
    request = RunRequest(models=suite["models"], methods=suite["methods"], metrics=suite["metrics"], seed=suite.get("seed", 0),
                         device="cpu", data_dir=str(data_dir), cache_dir=str(tmp_path / "cache"), options=suite["options"],
                         stats=suite.get("stats", {}), progress=False)  # fmt: skip
    t0, c0 = time.perf_counter(), time.process_time()
    rows = Runner(request, out=tmp_path / "run", echo=lambda m: None).run()
    paths = write_tables(rows, tmp_path / "run")
    # reported, not asserted (timings belong to tests/benchmarks); the acceptance figure is in the GLUE notes
    print(f"\nquick GLUE suite: wall {time.perf_counter() - t0:.1f} s, CPU {time.process_time() - c0:.1f} s")
    tasks = suite["options"]["glue"]["tasks"]
    subs = {r["submetric"]: r for r in rows if r["metric"] == "glue"}
    for key in tasks:
        if key == "qnli":
            assert "qnli" in subs["glue_missing"]["note"]
        else:
            r = subs[f"glue:{key}"]
            assert r["status"] == "ok" and r["ci_low"] <= r["value"] <= r["ci_high"]
    md = paths[0].read_text()
    assert "QNLI" in md and "missing" in md and "GLUE" in md


def test_glue_data_found_in_the_runs_data_dir_when_the_model_brings_its_own(tiny, glue_ctx, tmp_path):
    """The synthetic world has its own data directory without GLUE: GLUE reads the run's data directory."""
    own = tmp_path / "world_data"
    own.mkdir()
    ctx = Context(data_dir=own, cache_dir=glue_ctx.cache_dir, progress=False, run_data_dir=glue_ctx.data_dir)
    metric = GLUE(tasks="sst2", **QUICK)
    assert GLUE.glue_data_dir(ctx) == glue_ctx.data_dir
    assert metric.data_files(ctx) == [glue_ctx.data_dir / "glue" / "SST-2" / "train.tsv", glue_ctx.data_dir / "glue" / "SST-2" / "dev.tsv"]
    assert "glue:sst2" in metric.score(tiny, ctx).estimates


def test_a_task_metric_without_data_is_marked_missing(tiny, glue_ctx):
    from bench.api import NotApplicable
    from metrics.glue import GlueQQP
    from reports.glue_table import render

    with pytest.raises(NotApplicable, match="^missing data: qqp: no folder") as info:
        GlueQQP(**GlueQQP.quick).score(tiny, glue_ctx)
    row = dict(model="m", method="base", label="Base", group=0, metric="glue:qqp", submetric=None, status="n/a",
               value=None, note=str(info.value))  # fmt: skip
    md = render([row], "md")
    assert "QQP" in md.splitlines()[0] and "| missing" in md and "n/a" not in md
