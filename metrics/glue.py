"""GLUE: fine-tune the (debiased) subject on each task and score the validation sets (SPEC §3.4, §0.8).

Per task and seed the subject is fine-tuned with a sequence-classification head (`bench.models.finetune`:
representation transforms active and frozen, seed-initialised pooler/head, the paper's hyperparameters,
final model). Estimates:
  glue:<task>  mean over seeds of the task metric ×100 (CoLA MCC, MRPC F1, STS-B Pearson, MNLI mean of
               matched/mismatched accuracy, accuracy otherwise). Bootstrap over validation examples, the same
               resampled indices for every seed: per resample the metric per seed, then the seed mean.
  glue         unweighted mean over the available tasks; one stratum per validation split, resampled
               independently.
Tasks without data are never dropped silently: `glue_missing` (count) and its row note name them, and the
`glue` row's note says over which tasks the mean runs. Per (task, seed) results are cached, so an interrupted
run resumes with the finished ones.

Table description (for reports/task_table.py, which knows no metric module): besides its estimates every
scoring emits an extra row `glue_table` (value: number of tasks asked for) whose note is JSON
{"suite", "label", "mean", "tasks": [{"key", "label", "metric", "order"}], "missing": {key: why}}; tasks that
cannot be scored at all raise NotApplicable("missing data: <task>: <why>; ...").

Causal LMs (GPT-2, Llama) are fine-tuned the same way (`bench.models.finetune`: the last real token pooled, as
GPT2ForSequenceClassification, found from the attention mask). A task that needs a head transformers lacks for the
subject's model type (`not_applicable`: multiple choice, SuperGLUE COPA, on GPT-2 and Llama) is left out: the
mean runs over the other tasks and its note names it "n/a" with the reason; the task scored alone is an n/a cell.

The machinery is shared with SuperGLUE (metrics/superglue.py): `TaskSuite` is the fine-tuned task-suite
metric, parameterised by its task table, data folder, loader and settings; GLUE is one instance.

Options (constructor arguments, `-o glue.NAME=VALUE`): tasks, epochs, lr, batch_size, max_seq_length, seeds,
max_train_examples / max_eval_examples (seeded random caps for quick runs), source (auto|files|hub),
save_checkpoint (also store fine-tuned weights in the cache), cpu_threads (intra-op threads while fine-tuning
on CPU; default: torch's setting). Per-task metrics `glue:cola`, `glue:sst2`, ...
run one task with the same options (and share the cache).

Defaults depend on the subject, like every plugin's (`subject.meta["synthetic"]`): real models get the paper's
settings (PAPER_SETTINGS: all nine tasks, 3 epochs, seeds 0, 1, 2, max length 128, no caps); the synthetic
world gets small ones (SYNTHETIC_SETTINGS: SST-2 and RTE, one seed, 3 epochs, max length 64, 128 training and
128 validation examples per task, one thread), because with a data directory that has glue/ (e.g. BENCH_DATA_DIR = the real data) the tiny model would
otherwise fine-tune on every full task for every method row. Options given explicitly always win; `tasks`,
`epochs`, `seeds`, `max_seq_length`, `max_train_examples`, `max_eval_examples` and `cpu_threads` left at None
take the
subject's defaults (`settings(subject)`). To fine-tune the synthetic model without caps, give a cap larger
than the task (e.g. `-o glue.max_train_examples=1000000`).
"""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import pandas as pd

from bench.api import FINETUNE, Column, Estimate, Metric, NotApplicable, Scores
from bench.errors import BenchError
from bench.files import source_hash, stable_hash
from bench.cache import Cache
from metrics import glue_tasks
from metrics.glue_tasks import TASKS, TaskUnavailable, load_task, mean_statistic, predictions_from_logits, task_statistic

if TYPE_CHECKING:  # imported where it runs: `bench report` reads this metric's columns without torch
    from bench.models.finetune import FinetuneConfig

ALL_TASKS = tuple(TASKS)
MISSING_DATA = "missing data: "

# Defaults by subject kind (options left at None). The synthetic world's GLUE is a plumbing check, not a
# measurement (a 0.35M-parameter model on 128 examples), sized so that the paper suite on synthetic (14 rows
# that can be fine-tuned) spends about 1 min in GLUE on 2 busy CPU cores (measured ~3-4 s per row).
PAPER_SETTINGS: dict = {"tasks": ALL_TASKS, "epochs": 3, "seeds": (0, 1, 2), "max_seq_length": 128,
                        "max_train_examples": None, "max_eval_examples": None, "cpu_threads": None}  # fmt: skip
SYNTHETIC_SETTINGS: dict = {"tasks": ("sst2", "rte"), "epochs": 3, "seeds": (0,), "max_seq_length": 64,
                            "max_train_examples": 128, "max_eval_examples": 128, "cpu_threads": 1}  # fmt: skip


def _as_tuple(value, convert) -> tuple:
    if isinstance(value, str):
        value = [v for v in value.replace(" ", "").split(",") if v]
    elif not isinstance(value, (list, tuple)):
        value = [value]
    return tuple(convert(v) for v in value)


class TaskSuite(Metric):
    """A suite of tasks, each fine-tuned per seed and scored on its validation split(s) (GLUE, SuperGLUE).

    Subclasses set the class attributes below and, where their data differ, `load` / `task_files`. A task is
    any object with `key`, `label`, `metric` (a glue_tasks metric name), `metric_label`, `num_labels`,
    `labels` and optionally `parts` ((name, metric, label), ...: further estimates of the same predictions,
    e.g. SuperGLUE CB's accuracy and macro-F1 beside their mean)."""

    suite: ClassVar[str] = "glue"  # registry prefix: <suite>, <suite>:<task>
    suite_label: ClassVar[str] = "GLUE"
    data_folder: ClassVar[str] = "glue"  # under the data directory
    tasks_table: ClassVar[dict] = TASKS
    sources: ClassVar[tuple] = glue_tasks.SOURCES
    paper_settings: ClassVar[dict] = PAPER_SETTINGS
    synthetic_settings: ClassVar[dict] = SYNTHETIC_SETTINGS
    reader_module: ClassVar[object] = glue_tasks  # its source is part of the fine-tuning cache key
    requires = FINETUNE
    bias_types = None  # task accuracy of the (debiased) model, whatever bias type the run removes
    bounds: ClassVar[dict] = {"epochs": (1, None), "lr": (0.0, None), "batch_size": (1, None), "max_seq_length": (1, None),
                               "max_train_examples": (1, None), "max_eval_examples": (1, None), "cpu_threads": (1, None)}  # fmt: skip
    report_mean: ClassVar[bool] = True

    def __init__(self, tasks=None, epochs: int | None = None, lr: float = 2e-5, batch_size: int = 32,
                 max_seq_length: int | None = None, seeds=None, max_train_examples: int | None = None,
                 max_eval_examples: int | None = None, source: str = "auto", save_checkpoint: bool = False,
                 cpu_threads: int | None = None):  # fmt: skip
        self.tasks = None if tasks is None else tuple(dict.fromkeys(_as_tuple(tasks, self.task_key)))
        self.epochs = None if epochs is None else int(epochs)
        self.lr, self.batch_size = float(lr), int(batch_size)
        self.max_seq_length = None if max_seq_length is None else int(max_seq_length)
        self.seeds = None if seeds is None else tuple(dict.fromkeys(_as_tuple(seeds, int)))
        self.max_train_examples = None if max_train_examples is None else int(max_train_examples)
        self.max_eval_examples = None if max_eval_examples is None else int(max_eval_examples)
        self.source = str(source)
        self.save_checkpoint = bool(save_checkpoint)
        self.cpu_threads = None if cpu_threads is None else int(cpu_threads)
        name = self.suite_label
        if self.cpu_threads is not None and self.cpu_threads < 1:
            raise BenchError(f"{name} cpu_threads must be at least 1, got {cpu_threads}")
        if (self.tasks is not None and not self.tasks) or (self.seeds is not None and not self.seeds):
            raise BenchError(f"{name} needs at least one task and one seed")
        if self.source not in self.sources:
            raise BenchError(f"{name} source must be one of {', '.join(self.sources)}, got {self.source!r}")
        self.finetune_config()  # validates the hyperparameters now, not after the first task

    # ---- what a subclass may override ------------------------------------------------------------------
    @classmethod
    def task_key(cls, name: str) -> str:
        return glue_tasks.task_key(name)

    def task_files(self, task, root) -> list:
        return glue_tasks.task_files(task, root)

    def load(self, task, root):
        return load_task(task, root, self.source)

    def cache_name(self, task) -> str:
        """Folder of the task's fine-tuning results in the cache."""
        return task.key

    # ---- settings ------------------------------------------------------------------------------------------
    def settings(self, subject=None) -> dict:
        """tasks, epochs, seeds, max_seq_length, max_train_examples, max_eval_examples, cpu_threads: the options given, else the
        defaults for this subject (the synthetic settings for the synthetic world, the paper's otherwise)."""
        meta = getattr(subject, "meta", None) or {}
        defaults = self.synthetic_settings if meta.get("synthetic") else self.paper_settings
        return {k: defaults[k] if getattr(self, k) is None else getattr(self, k) for k in self.paper_settings}

    def finetune_config(self, subject=None) -> FinetuneConfig:
        from bench.models.finetune import FinetuneConfig  # here: `bench report` reads the columns and needs no torch

        opts = self.settings(subject)
        return FinetuneConfig(epochs=opts["epochs"], lr=self.lr, batch_size=self.batch_size,
                              max_seq_length=opts["max_seq_length"])  # fmt: skip

    @classmethod
    def suite_data_dir(cls, ctx):
        """The data directory holding the suite's folder: the context's, else the run's (a synthetic model brings
        its own data directory, without GLUE/SuperGLUE)."""
        run_dir = getattr(ctx, "run_data_dir", None)
        for candidate in (ctx.data_dir, run_dir):
            if candidate is not None and (Path(candidate) / cls.data_folder).is_dir():
                return Path(candidate)
        return run_dir if run_dir is not None else ctx.data_dir

    @classmethod
    def glue_data_dir(cls, ctx):  # the name GLUE's callers know
        return cls.suite_data_dir(ctx)

    def data_files(self, ctx) -> list:
        root = self.suite_data_dir(ctx)
        tasks = tuple(self.tasks_table) if self.tasks is None else self.tasks  # the subject is not known here
        return [p for key in tasks for p in self.task_files(self.tasks_table[key], root) if p.is_file()]

    # ---- scoring ---------------------------------------------------------------------------------------------
    def describe(self, keys, missing: dict) -> str:
        """The JSON table description carried by the `<suite>_table` row (see the module docstring)."""
        order = list(self.tasks_table)
        tasks = [{"key": f"{self.suite}:{k}", "label": self.tasks_table[k].label,
                  "metric": self.tasks_table[k].metric_label, "order": order.index(k)} for k in keys]  # fmt: skip
        return json.dumps({
            "suite": self.suite, "label": self.suite_label, "mean": self.suite if self.report_mean else None,
            "tasks": tasks, "missing": {f"{self.suite}:{k}": why for k, why in missing.items()},
        }, separators=(",", ":"))  # fmt: skip

    def not_applicable(self, task, subject) -> str:
        """Why `task` cannot be scored on `subject` ("" when it can): a multiple-choice task (COPA) on a model type
        transformers has no multiple-choice head for (the causal LMs GPT-2 and Llama)."""
        if not getattr(task, "num_choices", None):
            return ""
        from bench.models.finetune import multiple_choice_note

        return multiple_choice_note(subject)

    def score(self, subject, ctx) -> Scores:
        if FINETUNE not in subject.capabilities:
            raise NotApplicable(f"{subject.method} cannot be fine-tuned honestly (it changes only MLM outputs)")
        cache = Cache(ctx.cache_dir)
        opts = self.settings(subject)
        root = self.suite_data_dir(ctx)
        estimates: dict[str, Estimate] = {}
        parts, widths, items, missing, na = [], [], [], {}, {}
        for key in opts["tasks"]:
            task = self.tasks_table[key]
            if why := self.not_applicable(task, subject):
                na[key] = why
                continue
            try:
                data = self.load(task, root)
            except TaskUnavailable as e:
                missing[key] = str(e)
                continue
            data = data.capped(opts["max_train_examples"], opts["max_eval_examples"])
            logits = self._finetune(subject, data, cache, ctx, opts)  # one dict split -> (n, K) per seed
            stat, preds = self._task_estimates(key, task, data, logits, estimates)
            parts.append(stat)
            widths.append(len(data.evals))
            items.append(_items(key, data, preds))
        if not items:  # the note's prefix lets the task table mark the cells "missing" rather than "n/a"
            if na and not missing:
                raise NotApplicable("; ".join(na.values()))
            raise NotApplicable(MISSING_DATA + "; ".join(f"{k}: {v}" for k, v in missing.items()))
        notes = {f"{self.suite}_table": self.describe(opts["tasks"], missing)}
        extras = {f"{self.suite}_table": float(len(opts["tasks"]))}
        if self.report_mean:
            self._mean(opts["tasks"], estimates, parts, widths, missing, na, notes, extras)
        if missing:
            notes[f"{self.suite}_missing"] = "; ".join(f"{k}: {why}" for k, why in missing.items())
        return Scores(self.name or self.suite, estimates, items=pd.concat(items, ignore_index=True), extras=extras, notes=notes)

    def _task_estimates(self, key: str, task, data, logits, estimates: dict) -> tuple:
        """Add the task's estimates (and those of its parts) to `estimates`; (its statistic, predictions per split)."""
        labels = tuple(s.labels for s in data.evals)
        preds = tuple(
            np.stack([predictions_from_logits(task, lg[s.name]) for lg in logits]) for s in data.evals
        )  # each (n_seeds, n)
        extra = {} if all(s.groups is None for s in data.evals) else {"groups": tuple(s.groups for s in data.evals)}
        strata = tuple(s.units for s in data.evals)

        def statistic(metric):
            return functools.partial(task_statistic, metric=metric, num_labels=task.num_labels, labels=labels,
                                     predictions=preds, **extra)  # fmt: skip

        stat = statistic(task.metric)
        estimates[f"{self.suite}:{key}"] = Estimate(strata, stat)
        for part, metric, _label in getattr(task, "parts", ()):
            estimates[f"{self.suite}:{key}:{part}"] = Estimate(strata, statistic(metric))
        return stat, preds

    def _mean(self, tasks, estimates: dict, parts, widths, missing: dict, na: dict, notes: dict, extras: dict) -> None:
        """The suite's mean over the tasks scored, its note (which tasks, which missing, which n/a) and the missing
        count."""
        scored = [k for k in tasks if k not in missing and k not in na]
        strata = tuple(n for k in scored for n in estimates[f"{self.suite}:{k}"].strata)
        estimates[self.suite] = Estimate(strata, functools.partial(mean_statistic, parts=tuple(parts), widths=tuple(widths)))
        done = [self.tasks_table[k].label for k in scored]
        notes[self.suite] = f"mean over {len(done)} of {len(tasks)} tasks ({', '.join(done)})" + (
            f"; missing: {', '.join(self.tasks_table[k].label for k in missing)}" if missing else ""
        ) + "".join(f"; n/a: {self.tasks_table[k].label} ({why})" for k, why in na.items())
        extras[f"{self.suite}_missing"] = float(len(missing))

    def _finetune(self, subject, data, cache: Cache, ctx, opts: dict | None = None) -> list[dict[str, np.ndarray]]:
        task = data.task
        opts = self.settings(subject) if opts is None else opts
        data_key = stable_hash({
            "origin": data.origin, "max_train": opts["max_train_examples"], "max_eval": opts["max_eval_examples"],
            "reader": source_hash(self.reader_module.__file__),
        })  # fmt: skip
        from bench.models.finetune import FinetuneJob

        num_labels = data.train.num_choices or task.num_labels
        job = FinetuneJob(
            subject, self.cache_name(task), data.train, {s.name: s for s in data.evals}, num_labels,
            self.finetune_config(subject), cache, data_key, label_names=task.labels, save_checkpoint=self.save_checkpoint,
            bar=(lambda **kw: ctx.bar(**kw)) if ctx.progress else None, threads=opts["cpu_threads"],
        )  # fmt: skip
        return [job.result(seed)[0].logits for seed in opts["seeds"]]


def _items(key: str, data, preds: tuple) -> pd.DataFrame:
    frames = []
    for split, p in zip(data.evals, preds):
        n = len(split)
        for s_i, row in enumerate(p):
            frame = {"task": key, "split": split.name, "item": np.arange(n), "seed_index": s_i, "label": split.labels,
                     "prediction": row}  # fmt: skip
            if split.groups is not None:
                frame["group"] = split.groups
            frames.append(pd.DataFrame(frame))
    return pd.concat(frames, ignore_index=True)


class GLUE(TaskSuite):
    columns: ClassVar[tuple[Column, ...]] = (Column("GLUE", "glue", "max", 50),)
    quick: ClassVar[dict] = {"tasks": ["sst2", "rte"], "epochs": 1, "seeds": [0], "max_train_examples": 64,
                             "max_eval_examples": 64, "source": "files", "cpu_threads": 1}  # fmt: skip


def single_task(suite_cls: type, key: str, order: int, module: str) -> type:
    """The metric `<suite>:<key>`: one task of `suite_cls` alone (its estimate, no mean), same options and cache."""
    task = suite_cls.tasks_table[key]

    def __init__(self, epochs: int | None = None, lr: float = 2e-5, batch_size: int = 32, max_seq_length: int | None = None,
                 seeds=None, max_train_examples: int | None = None, max_eval_examples: int | None = None,
                 source: str = "auto", save_checkpoint: bool = False, cpu_threads: int | None = None):  # fmt: skip
        suite_cls.__init__(self, (key,), epochs, lr, batch_size, max_seq_length, seeds, max_train_examples,
                           max_eval_examples, source, save_checkpoint, cpu_threads)  # fmt: skip

    name = f"{suite_cls.suite_label}{task.label.replace('-', '')}".replace("SuperGLUE", "SuperGlue").replace("GLUE", "Glue")
    return type(name, (suite_cls,), {
        "task": key, "report_mean": False, "__init__": __init__, "__module__": module,
        "__doc__": f"{suite_cls.suite_label} {task.label} ({task.metric_label}) alone.",
        "quick": {k: v for k, v in suite_cls.quick.items() if k != "tasks"},
        "columns": (Column(task.label, f"{suite_cls.suite}:{key}", "max", order),),
    })  # fmt: skip


def _task_metric(key: str, order: int) -> type:
    return single_task(GLUE, key, order, __name__)


GlueCoLA = _task_metric("cola", 51)
GlueSTSB = _task_metric("stsb", 54)
GlueSST2 = _task_metric("sst2", 52)
GlueMRPC = _task_metric("mrpc", 53)
GlueQQP = _task_metric("qqp", 55)
GlueMNLI = _task_metric("mnli", 56)
GlueQNLI = _task_metric("qnli", 57)
GlueRTE = _task_metric("rte", 58)
GlueWNLI = _task_metric("wnli", 59)
