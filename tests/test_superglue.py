"""SuperGLUE (metrics.superglue, metrics.superglue_tasks): the shared release files load with their known sizes,
BoolQ is reported missing with the file to add, `wsc.fixed` matches the HF builder, every task metric equals
scikit-learn (and HF's MultiRC evaluation) on the same predictions, fine-tuning learns each task's shape and is
at chance with label noise, and the synthetic world gets small defaults."""
from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from bench.api import Context, NotApplicable
from bench.stats import StatsConfig, bootstrap_indices, interval
from glue_tiny import SUPERGLUE_FOLDERS, tiny_subject, write_superglue, write_tiny_bert
from metrics import superglue_tasks
from metrics.glue_tasks import metric_over_resamples
from metrics.superglue import SYNTHETIC_SETTINGS, SuperGLUE, SuperGlueCB
from metrics.superglue_tasks import TASKS, TaskUnavailable, fix_wsc_spans, load_task


pytestmark = pytest.mark.usefixtures("one_thread")


# ---- the shared release files ---------------------------------------------------------------------------------
def _raw(data_dir, folder, split):
    return [json.loads(line) for line in (data_dir / "superglue" / folder / f"{split}.jsonl").read_text().splitlines() if line]


def test_release_files_load_with_their_known_sizes(data_dir):
    sizes = {}
    for key, task in TASKS.items():
        if key == "boolq":
            continue
        data = load_task(task, data_dir)
        sizes[key] = (len(data.train), len(data.evals[0]))
    assert sizes == {"cb": (250, 56), "copa": (400, 100), "multirc": (27243, 4848), "rte": (2490, 277),
                     "wic": (5428, 638), "wsc": (554, 104)}  # fmt: skip
    multirc = load_task(TASKS["multirc"], data_dir)
    assert multirc.train.units == 5131 and multirc.evals[0].units == 953  # questions: the bootstrap's unit


@pytest.mark.parametrize("key", ["cb", "rte", "wic", "copa", "wsc"])
def test_records_framed_as_documented(data_dir, key):
    """Texts and labels equal a straightforward reading of the val file (class order of the HF builder)."""
    task = TASKS[key]
    split = load_task(task, data_dir).evals[0]
    raw = _raw(data_dir, task.folder, "val")
    classes = {"cb": ["entailment", "contradiction", "neutral"], "rte": ["entailment", "not_entailment"]}
    for i, r in enumerate(raw):
        y = classes[key].index(r["label"]) if key in classes else int(r["label"])
        assert split.labels[i] == y
        if key in ("cb", "rte"):
            assert (split.text_a[i], split.text_b[i]) == (r["premise"], r["hypothesis"])
        elif key == "wic":
            assert (split.text_a[i], split.text_b[i]) == (f"{r['word']}: {r['sentence1']}", f"{r['word']}: {r['sentence2']}")
        elif key == "copa":
            pairs = [(c, r["premise"]) if r["question"] == "cause" else (r["premise"], c) for c in (r["choice1"], r["choice2"])]
            assert split.num_choices == 2 and split.text_a[i] == tuple(p[0] for p in pairs) and split.text_b[i] == tuple(p[1] for p in pairs)
        elif key == "wsc":
            assert split.text_a[i] == r["text"] and split.text_b[i].startswith("Pronoun: ")


def test_multirc_rows_and_questions(data_dir):
    split = load_task(TASKS["multirc"], data_dir).evals[0]
    raw = _raw(data_dir, "MultiRC", "val")
    answers = [(p["passage"]["text"], q["question"], a["text"], a["label"]) for p in raw
               for q in p["passage"]["questions"] for a in q["answers"]]  # fmt: skip
    assert len(answers) == len(split) == 4848
    assert [(t, y) for t, y in zip(split.text_b, split.labels)] == [(f"{q} {a}", y) for _, q, a, y in answers]
    sizes = [len(q["answers"]) for p in raw for q in p["passage"]["questions"]]
    np.testing.assert_array_equal(np.bincount(split.groups), sizes)
    assert np.all(np.diff(split.groups) >= 0)  # a question's answers are consecutive


def test_boolq_is_missing_with_the_file_to_add(data_dir, tmp_path):
    with pytest.raises(TaskUnavailable, match=r"no train\.jsonl in .*BoolQ; add BoolQ/train\.jsonl .*9,427 rows"):
        load_task(TASKS["boolq"], data_dir)
    ctx = Context(data_dir=data_dir, cache_dir=tmp_path, progress=False)
    with pytest.raises(NotApplicable, match=r"^missing data: boolq: no train\.jsonl .*add BoolQ/train\.jsonl"):
        SuperGLUE(tasks="boolq").score(tiny_subject(write_tiny_bert(tmp_path / "m")), ctx)


def test_wsc_fixed_corrects_the_spans_the_builder_corrects(data_dir):
    """PROVENANCE: 88 train / 8 val / 7 test rows have a span that is not a substring of the text."""
    kamenev = ("Kamenev and Zinoviev", "Kamenev, Zinoviev, and Stalin")  # the builder leaves these as they are
    for split, expected in (("train", 88), ("val", 8), ("test", 7)):
        broken = changed = 0
        for r in _raw(data_dir, "WSC", split):
            flat = {"text": r["text"], **r["target"]}
            broken += any(flat[k] not in flat["text"] for k in ("span1_text", "span2_text"))
            fixed = fix_wsc_spans(flat)
            changed += fixed != flat
            unfixable = any(flat[k] in kamenev for k in ("span1_text", "span2_text"))
            for k in ("span1_text", "span2_text"):
                assert fixed[k] in fixed["text"] or fixed[k] in kamenev
            assert (fixed != flat) or unfixable or all(flat[k] in flat["text"] for k in ("span1_text", "span2_text"))
        assert broken == expected and 0 <= expected - changed <= 2, (split, broken, changed)
    # the builder's rules: the case of the word at the span index, no trailing '.', no newline
    ex = {"text": "Then the man said it was fine .", "span1_index": 1, "span1_text": "The man.", "span2_index": 4,
          "span2_text": "it"}  # fmt: skip
    assert fix_wsc_spans(ex)["span1_text"] == "the man" and ex["span1_text"] == "The man."


def test_bad_records_name_file_and_line(tmp_path):
    from bench.errors import DataError

    root = write_superglue(tmp_path, 6, 4, tasks=("CB",))
    path = root / "superglue" / "CB" / "val.jsonl"
    lines = path.read_text().splitlines()
    lines[2] = lines[2].replace('"neutral"', '"maybe"').replace('"entailment"', '"maybe"').replace('"contradiction"', '"maybe"')
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"CB/val\.jsonl line 3: .*label 'maybe'"):
        load_task(TASKS["cb"], root)


# ---- metrics against scikit-learn -------------------------------------------------------------------------------
def hf_multirc(groups, labels, preds):
    """HF `super_glue` metric's evaluate_multirc, written out: EM over questions, F1a over all answers."""
    by_q = defaultdict(list)
    for g, y, p in zip(groups, labels, preds):
        by_q[g].append(p == y)
    em = np.mean([all(v) for v in by_q.values()])
    return f1_score(labels, preds), em


def _case(n, k, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    return y, np.stack([np.where(rng.random(n) < q, y, rng.integers(0, k, n)) for q in (0.2, 0.6, 0.9)])


def test_cb_metrics_equal_sklearn_on_every_resample():
    y, preds = _case(56, 3, 0)
    y[:3] = 2  # a rare class that some resamples miss entirely (sklearn then averages over the classes present)
    idx = bootstrap_indices((56,), 200, seed=1)[0]
    acc = metric_over_resamples("accuracy", y, preds, idx, 3)
    f1 = metric_over_resamples("macro_f1", y, preds, idx, 3)
    both = metric_over_resamples("acc_macro_f1", y, preds, idx, 3)
    for s in range(3):
        for r in range(200):
            yy, pp = y[idx[r]], preds[s][idx[r]]
            want_f1 = f1_score(yy, pp, average="macro", zero_division=0)
            # float64 sums of small integer counts are exact; the remaining divisions agree to a few ulp
            assert f1[s, r] == pytest.approx(want_f1, abs=1e-12)
            assert acc[s, r] == pytest.approx(accuracy_score(yy, pp), abs=1e-12)
            assert both[s, r] == pytest.approx((accuracy_score(yy, pp) + want_f1) / 2, abs=1e-12)


def test_multirc_metrics_equal_hf_over_resampled_questions():
    rng = np.random.default_rng(3)
    sizes = rng.integers(1, 7, 60)
    groups = np.repeat(np.arange(60), sizes)
    y, preds = _case(len(groups), 2, 4)
    idx = bootstrap_indices((60,), 100, seed=2)[0]
    f1a = metric_over_resamples("f1a", y, preds, idx, 2, groups)
    em = metric_over_resamples("em", y, preds, idx, 2, groups)
    mean = metric_over_resamples("f1a_em", y, preds, idx, 2, groups)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    for s in range(3):
        for r in range(100):
            rows = np.concatenate([np.arange(starts[q], starts[q + 1]) for q in idx[r]])
            # a question drawn twice counts twice: relabel its copies as distinct questions
            g = np.concatenate([np.full(sizes[q], j) for j, q in enumerate(idx[r])])
            want_f1, want_em = hf_multirc(g, y[rows], preds[s][rows])
            assert f1a[s, r] == pytest.approx(want_f1, abs=1e-12)
            assert em[s, r] == pytest.approx(want_em, abs=1e-12)
            assert mean[s, r] == pytest.approx((want_f1 + want_em) / 2, abs=1e-12)


def test_caps_keep_whole_questions(data_dir):
    data = load_task(TASKS["multirc"], data_dir).capped(200, 128)
    for split, cap in ((data.train, 200), (data.evals[0], 128)):
        assert 0 < len(split) <= cap and split.units >= 1
        sizes = np.bincount(split.groups)
        assert sizes.min() >= 1 and split.groups.max() + 1 == len(sizes)
    full = load_task(TASKS["multirc"], data_dir).evals[0]
    kept = {t for t in data.evals[0].text_b}
    # every kept question has all its answers
    whole = defaultdict(set)
    for t, g in zip(full.text_b, full.groups):
        whole[g].add(t)
    assert all(ans <= kept or not (ans & kept) for ans in whole.values())


# ---- the metric end to end: tiny model, separable tasks of every shape ------------------------------------------
QUICK = dict(epochs=8, lr=1e-3, batch_size=16, max_seq_length=32, source="files")


@pytest.fixture(scope="module")
def tiny64(tmp_path_factory):
    # hidden 32 (the GLUE tests' model) left CB's third class unlearned for 4 of 5 seeds; hidden 64 learns it
    return tiny_subject(write_tiny_bert(tmp_path_factory.mktemp("tiny64"), hidden=64))


def _score(subject, root, tmp_path, **kw):
    ctx = Context(data_dir=root, cache_dir=tmp_path / "cache", progress=False)
    return SuperGLUE(**{**QUICK, **kw}).score(subject, ctx)


def _accuracy(items, task):
    df = items[items.task == task]
    return float((df.label == df.prediction).mean())


@pytest.mark.slow
def test_learns_every_task_shape_and_is_at_chance_with_label_noise(tiny64, tmp_path):
    """Separable tasks in every task's format (tests/glue_tiny.py). Measured over fine-tuning seeds 0-4 (1 thread):
    learned (hidden-64 tiny BERT): accuracy 1.0 on every task and seed (margin 0.1 over 0.9); label noise: accuracy
    at most 0.125 from chance (0.5; CB 1/3) on every task and seed (MultiRC seed 0: 0.615, WSC seed 0: 0.625),
    margin 0.075 under the asserted 0.2 (4 SD of chance accuracy on 96 validation rows)."""
    learned = _score(tiny64, write_superglue(tmp_path / "sep"), tmp_path, seeds=(0,))
    noise = _score(tiny64, write_superglue(tmp_path / "noise", shuffle_train=True), tmp_path, seeds=(0,))
    for key in TASKS:
        assert _accuracy(learned.items, key) >= 0.9, key
        chance = 1 / 3 if key == "cb" else 0.5
        assert abs(_accuracy(noise.items, key) - chance) < 0.2, key
    _check_against_sklearn(learned)
    _check_against_sklearn(noise)


def _check_against_sklearn(scores):
    """Each task estimate equals scikit-learn / HF's MultiRC evaluation on the stored predictions."""
    items = scores.items
    for key in TASKS:
        df = items[items.task == key]
        y, p = df.label.to_numpy(), df.prediction.to_numpy()
        acc = accuracy_score(y, p)
        if key == "cb":
            f1 = f1_score(y, p, average="macro", zero_division=0)
            want = {"": (acc + f1) / 2, ":accuracy": acc, ":f1": f1}
        elif key == "multirc":
            f1a, em = hf_multirc(df.group.to_numpy(), y, p)
            want = {"": (f1a + em) / 2, ":f1a": f1a, ":em": em}
        else:
            want = {"": acc}
        for suffix, value in want.items():
            assert scores.estimates[f"superglue:{key}{suffix}"].point() == pytest.approx(100 * value, abs=1e-9), key + suffix
    means = [scores.estimates[f"superglue:{k}"].point() for k in TASKS]
    assert scores.estimates["superglue"].point() == pytest.approx(np.mean(means), abs=1e-9)


def test_three_shapes_learn_fast(tiny64, tmp_path):
    """The unusual shapes in the fast suite: 3 classes (CB), multiple choice (COPA), grouped answers (MultiRC);
    one seed (seeds 0-4 measured: accuracy 1.0 each), plus the scores against scikit-learn, CIs and notes."""
    root = write_superglue(tmp_path / "d", tasks=("CB", "COPA", "MultiRC"))
    scores = _score(tiny64, root, tmp_path, tasks="cb,copa,multirc,boolq", seeds=(0,))
    for key in ("cb", "copa", "multirc"):
        assert _accuracy(scores.items, key) >= 0.9, key
    assert scores.estimates["superglue:multirc"].strata == (len(set(scores.items[scores.items.task == "multirc"].group)),)
    iv = interval(scores.estimates["superglue"], StatsConfig(resamples=200))
    assert iv.low <= iv.value <= iv.high
    assert scores.extras["superglue_missing"] == 1.0 and scores.notes["superglue_missing"].startswith("boolq: no folder")
    assert "mean over 3 of 4 tasks (CB, COPA, MultiRC); missing: BoolQ" == scores.notes["superglue"]
    desc = json.loads(scores.notes["superglue_table"])
    assert desc["suite"] == "superglue" and [(t["label"], t["order"]) for t in desc["tasks"]] == [("CB", 1), ("COPA", 2), ("MultiRC", 3), ("BoolQ", 0)]
    assert list(desc["missing"]) == ["superglue:boolq"]
    for key in ("cb", "copa", "multirc"):
        df = scores.items[scores.items.task == key]
        y, p = df.label.to_numpy(), df.prediction.to_numpy()
        if key == "cb":
            want = (accuracy_score(y, p) + f1_score(y, p, average="macro", zero_division=0)) / 2
        elif key == "multirc":
            want = np.mean(hf_multirc(df.group.to_numpy(), y, p))
        else:
            want = accuracy_score(y, p)
        assert scores.estimates[f"superglue:{key}"].point() == pytest.approx(100 * want, abs=1e-9)


# ---- options, defaults, registration ---------------------------------------------------------------------------
def test_synthetic_world_gets_small_defaults():
    from types import SimpleNamespace

    synthetic, real = SimpleNamespace(meta={"synthetic": True}), SimpleNamespace(meta={})
    small = SuperGLUE().settings(synthetic)
    assert small == SYNTHETIC_SETTINGS and set(small["tasks"]) == set(TASKS)
    assert len(small["seeds"]) == 1 and small["cpu_threads"] == 1 and small["max_seq_length"] <= 64
    work = small["max_train_examples"] * small["epochs"] * len(small["seeds"]) * len(small["tasks"])
    assert work <= 3000  # rows x epochs x seeds x tasks
    paper = SuperGLUE().settings(real)
    assert paper["tasks"] == tuple(TASKS) and paper["seeds"] == (0, 1, 2) and paper["epochs"] == 3
    assert paper["max_train_examples"] is None and SuperGLUE().finetune_config(real).max_seq_length == 128


def test_options_and_registration():
    from bench.registry import METRICS

    assert SuperGLUE(tasks=["BoolQ", "wsc.fixed", "superglue:CB"]).tasks == ("boolq", "wsc", "cb")
    assert SuperGlueCB().tasks == ("cb",) and "tasks" not in SuperGlueCB().config()
    from bench.errors import BenchError

    with pytest.raises(BenchError, match="unknown SuperGLUE task 'record'"):
        SuperGLUE(tasks="record")
    with pytest.raises(BenchError, match="source"):
        SuperGLUE(source="hub")
    names = {"superglue", *(f"superglue:{k}" for k in TASKS)}
    assert names <= set(METRICS.names())
    assert [c.submetric for c in METRICS.get("superglue").columns] == ["superglue"]
    assert METRICS.get("superglue:multirc").columns[0].label == "MultiRC"
    assert superglue_tasks.FOLDER == "superglue" and len(SUPERGLUE_FOLDERS) == len(TASKS)
