"""GLUE: fine-tune the (debiased) subject on each task and score the validation sets (SPEC §3.4, §0.8).

Per task and seed the subject is fine-tuned with a sequence-classification head (`bench.finetune`:
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
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from bench.api import FINETUNE, Column, Estimate, Metric, NotApplicable, Scores
from bench.errors import BenchError
from bench.finetune import FinetuneConfig, FinetuneJob
from bench.store import Cache, source_hash, stable_hash
from metrics import glue_tasks
from metrics.glue_tasks import TASKS, TaskUnavailable, load_task, mean_statistic, predictions_from_logits, task_statistic

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


class GLUE(Metric):
    requires = FINETUNE
    columns: ClassVar[tuple[Column, ...]] = (Column("GLUE", "glue", "max", 50),)
    bounds: ClassVar[dict] = {"epochs": (1, None), "lr": (0.0, None), "batch_size": (1, None), "max_seq_length": (1, None),
                               "max_train_examples": (1, None), "max_eval_examples": (1, None), "cpu_threads": (1, None)}  # fmt: skip
    report_mean: ClassVar[bool] = True
    quick: ClassVar[dict] = {"tasks": ["sst2", "rte"], "epochs": 1, "seeds": [0], "max_train_examples": 64,
                             "max_eval_examples": 64, "source": "files", "cpu_threads": 1}  # fmt: skip

    def __init__(self, tasks=None, epochs: int | None = None, lr: float = 2e-5, batch_size: int = 32,
                 max_seq_length: int | None = None, seeds=None, max_train_examples: int | None = None,
                 max_eval_examples: int | None = None, source: str = "auto", save_checkpoint: bool = False,
                 cpu_threads: int | None = None):  # fmt: skip
        self.tasks = None if tasks is None else tuple(dict.fromkeys(_as_tuple(tasks, glue_tasks.task_key)))
        self.epochs = None if epochs is None else int(epochs)
        self.lr, self.batch_size = float(lr), int(batch_size)
        self.max_seq_length = None if max_seq_length is None else int(max_seq_length)
        self.seeds = None if seeds is None else tuple(dict.fromkeys(_as_tuple(seeds, int)))
        self.max_train_examples = None if max_train_examples is None else int(max_train_examples)
        self.max_eval_examples = None if max_eval_examples is None else int(max_eval_examples)
        self.source = str(source)
        self.save_checkpoint = bool(save_checkpoint)
        self.cpu_threads = None if cpu_threads is None else int(cpu_threads)
        if self.cpu_threads is not None and self.cpu_threads < 1:
            raise BenchError(f"GLUE cpu_threads must be at least 1, got {cpu_threads}")
        if (self.tasks is not None and not self.tasks) or (self.seeds is not None and not self.seeds):
            raise BenchError("GLUE needs at least one task and one seed")
        if self.source not in glue_tasks.SOURCES:
            raise BenchError(f"GLUE source must be one of {', '.join(glue_tasks.SOURCES)}, got {self.source!r}")
        self.finetune_config()  # validates the hyperparameters now, not after the first task

    def settings(self, subject=None) -> dict:
        """tasks, epochs, seeds, max_seq_length, max_train_examples, max_eval_examples, cpu_threads: the options given, else the
        defaults for this subject (SYNTHETIC_SETTINGS for the synthetic world, PAPER_SETTINGS otherwise)."""
        meta = getattr(subject, "meta", None) or {}
        defaults = SYNTHETIC_SETTINGS if meta.get("synthetic") else PAPER_SETTINGS
        return {k: defaults[k] if getattr(self, k) is None else getattr(self, k) for k in PAPER_SETTINGS}

    def finetune_config(self, subject=None) -> FinetuneConfig:
        opts = self.settings(subject)
        return FinetuneConfig(epochs=opts["epochs"], lr=self.lr, batch_size=self.batch_size,
                              max_seq_length=opts["max_seq_length"])  # fmt: skip

    @staticmethod
    def glue_data_dir(ctx):
        """The data directory holding glue/: the context's, else the run's (a synthetic model brings its own
        data directory, without GLUE)."""
        run_dir = getattr(ctx, "run_data_dir", None)
        for candidate in (ctx.data_dir, run_dir):
            if candidate is not None and (Path(candidate) / "glue").is_dir():
                return Path(candidate)
        return run_dir if run_dir is not None else ctx.data_dir

    def data_files(self, ctx) -> list:
        root = self.glue_data_dir(ctx)
        tasks = ALL_TASKS if self.tasks is None else self.tasks  # the subject is not known here: every candidate
        return [p for key in tasks for p in glue_tasks.task_files(TASKS[key], root) if p.is_file()]

    # ---- scoring ---------------------------------------------------------------------------------------------
    def score(self, subject, ctx) -> Scores:
        if FINETUNE not in subject.capabilities:
            raise NotApplicable(f"{subject.method} cannot be fine-tuned honestly (it changes only MLM outputs)")
        cache = Cache(ctx.cache_dir)
        opts = self.settings(subject)
        estimates: dict[str, Estimate] = {}
        parts, widths, items, missing = [], [], [], {}
        for key in opts["tasks"]:
            task = TASKS[key]
            try:
                data = load_task(task, self.glue_data_dir(ctx), self.source)
            except TaskUnavailable as e:
                missing[key] = str(e)
                continue
            data = data.capped(opts["max_train_examples"], opts["max_eval_examples"])
            logits = self._finetune(subject, data, cache, ctx, opts)  # one dict split -> (n, K) per seed
            labels = tuple(s.labels for s in data.evals)
            preds = tuple(
                np.stack([predictions_from_logits(task, lg[s.name]) for lg in logits]) for s in data.evals
            )  # each (n_seeds, n)
            stat = functools.partial(task_statistic, metric=task.metric, num_labels=task.num_labels, labels=labels, predictions=preds)
            estimates[f"glue:{key}"] = Estimate(tuple(len(s) for s in data.evals), stat)
            parts.append(stat)
            widths.append(len(data.evals))
            items.append(_items(key, data, preds))
        if not estimates:  # the note's prefix lets the GLUE table mark the cells "missing" rather than "n/a"
            raise NotApplicable(MISSING_DATA + "; ".join(f"{k}: {v}" for k, v in missing.items()))
        notes = {}
        if self.report_mean:
            strata = tuple(n for k in estimates for n in estimates[k].strata)
            estimates["glue"] = Estimate(strata, functools.partial(mean_statistic, parts=tuple(parts), widths=tuple(widths)))
            done = [TASKS[k].label for k in opts["tasks"] if k not in missing]
            notes["glue"] = f"mean over {len(done)} of {len(opts['tasks'])} tasks ({', '.join(done)})" + (
                f"; missing: {', '.join(TASKS[k].label for k in missing)}" if missing else ""
            )
        extras = {"glue_missing": float(len(missing))} if self.report_mean else {}
        if missing:
            notes["glue_missing"] = "; ".join(f"{k}: {why}" for k, why in missing.items())
        return Scores(self.name or "glue", estimates, items=pd.concat(items, ignore_index=True), extras=extras, notes=notes)

    def _finetune(self, subject, data, cache: Cache, ctx, opts: dict | None = None) -> list[dict[str, np.ndarray]]:
        task = data.task
        opts = self.settings(subject) if opts is None else opts
        data_key = stable_hash({
            "origin": data.origin, "max_train": opts["max_train_examples"], "max_eval": opts["max_eval_examples"],
            "reader": source_hash(glue_tasks.__file__),
        })  # fmt: skip
        job = FinetuneJob(
            subject, task.key, data.train, {s.name: s for s in data.evals}, task.num_labels, self.finetune_config(subject),
            cache, data_key, label_names=task.labels, save_checkpoint=self.save_checkpoint,
            bar=(lambda **kw: ctx.bar(**kw)) if ctx.progress else None, threads=opts["cpu_threads"],
        )  # fmt: skip
        return [job.result(seed)[0].logits for seed in opts["seeds"]]


def _items(key: str, data, preds: tuple) -> pd.DataFrame:
    frames = []
    for split, p in zip(data.evals, preds):
        n = len(split)
        for s_i, row in enumerate(p):
            frames.append(pd.DataFrame({"task": key, "split": split.name, "item": np.arange(n), "seed_index": s_i,
                                        "label": split.labels, "prediction": row}))  # fmt: skip
    return pd.concat(frames, ignore_index=True)


class _GlueTask(GLUE):
    """One GLUE task as its own metric (`glue:<task>`): the task's estimate, no mean."""

    task: ClassVar[str] = ""
    report_mean: ClassVar[bool] = False
    quick: ClassVar[dict] = {k: v for k, v in GLUE.quick.items() if k != "tasks"}

    def __init__(self, epochs: int | None = None, lr: float = 2e-5, batch_size: int = 32, max_seq_length: int | None = None,
                 seeds=None, max_train_examples: int | None = None, max_eval_examples: int | None = None,
                 source: str = "auto", save_checkpoint: bool = False, cpu_threads: int | None = None):  # fmt: skip
        super().__init__((self.task,), epochs, lr, batch_size, max_seq_length, seeds, max_train_examples,
                         max_eval_examples, source, save_checkpoint, cpu_threads)  # fmt: skip


def _task_metric(key: str, order: int) -> type:
    task = TASKS[key]
    cls = type(f"Glue{task.label.replace('-', '')}", (_GlueTask,), {
        "task": key, "__doc__": f"GLUE {task.label} ({task.metric_label}) alone.", "__module__": __name__,
        "columns": (Column(task.label, f"glue:{key}", "max", order),),
    })  # fmt: skip
    return cls


GlueCoLA = _task_metric("cola", 51)
GlueSST2 = _task_metric("sst2", 52)
GlueMRPC = _task_metric("mrpc", 53)
GlueSTSB = _task_metric("stsb", 54)
GlueQQP = _task_metric("qqp", 55)
GlueMNLI = _task_metric("mnli", 56)
GlueQNLI = _task_metric("qnli", 57)
GlueRTE = _task_metric("rte", 58)
GlueWNLI = _task_metric("wnli", 59)
