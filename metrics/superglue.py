"""SuperGLUE: fine-tune the (debiased) subject on each task and score the validation sets, exactly as GLUE
(SPEC §3.4 last item, §0.8; the ICLR tables' SuperGLUE column).

The same machinery as GLUE (`metrics.glue.TaskSuite`, `bench.models.finetune`): a fresh seed-initialised head per
(task, seed), representation transforms active and frozen, the paper's hyperparameters (3 epochs, lr 2e-5, batch
32, max length 128, seeds 0, 1, 2), the final model (no checkpoint selection, §0.8), cached per (task, seed).
Tasks, their encodings and metrics: metrics/superglue_tasks.py (BoolQ, CB, COPA, MultiRC, RTE, WiC, WSC as
`wsc.fixed`; ReCoRD is not run, as in the paper's fork).

Estimates:
  superglue:<task>           mean over seeds of the task score ×100 (CB: mean of accuracy and macro-F1; MultiRC:
                             mean of F1a and EM; accuracy otherwise); bootstrap over validation examples
                             (MultiRC: questions), the same resampled indices for every seed.
  superglue:cb:accuracy, superglue:cb:f1, superglue:multirc:f1a, superglue:multirc:em
                             the parts of the two-metric tasks, on the same resamples.
  superglue                  unweighted mean over the available tasks (each task one stratum).
Tasks without data are reported, never dropped silently: BoolQ's train file is not in the project's shared data,
so `superglue_missing` counts it and its note says which file to add; the `superglue` row's note says over which
tasks the mean runs. COPA is n/a for causal LMs (GPT-2, Llama): transformers has no multiple-choice head for them
(`TaskSuite.not_applicable`); their `superglue` mean runs over the other tasks and its note says so.
`superglue_table` describes the per-task table for reports/task_table.py (`bench task-table RUN --suite superglue`).

Options (`-o superglue.NAME=VALUE`) as GLUE's: tasks, epochs, lr, batch_size, max_seq_length, seeds,
max_train_examples / max_eval_examples (seeded random caps on rows; MultiRC keeps whole questions), source
(auto|files: files only), save_checkpoint, cpu_threads. Per-task metrics `superglue:boolq`, ... `superglue:wsc`.

Defaults depend on the subject: real models get the paper's settings (PAPER_SETTINGS: all seven tasks, no caps);
the synthetic world gets small ones (SYNTHETIC_SETTINGS: the seven tasks, one seed, 3 epochs, max length 64, 128
training and 128 validation rows per task, one thread) — a plumbing check on a 64-position model, measured at
about 10 s per method row on one CPU thread.
"""
from __future__ import annotations

from typing import ClassVar

from bench.api import Column
from metrics import superglue_tasks
from metrics.glue import TaskSuite, single_task
from metrics.superglue_tasks import TASKS

ALL_TASKS = tuple(TASKS)

PAPER_SETTINGS: dict = {"tasks": ALL_TASKS, "epochs": 3, "seeds": (0, 1, 2), "max_seq_length": 128,
                        "max_train_examples": None, "max_eval_examples": None, "cpu_threads": None}  # fmt: skip
SYNTHETIC_SETTINGS: dict = {"tasks": ALL_TASKS, "epochs": 3, "seeds": (0,), "max_seq_length": 64,
                            "max_train_examples": 128, "max_eval_examples": 128, "cpu_threads": 1}  # fmt: skip


class SuperGLUE(TaskSuite):
    suite: ClassVar[str] = "superglue"
    suite_label: ClassVar[str] = "SuperGLUE"
    data_folder: ClassVar[str] = superglue_tasks.FOLDER
    tasks_table: ClassVar[dict] = TASKS
    sources: ClassVar[tuple] = superglue_tasks.SOURCES
    paper_settings: ClassVar[dict] = PAPER_SETTINGS
    synthetic_settings: ClassVar[dict] = SYNTHETIC_SETTINGS
    reader_module: ClassVar[object] = superglue_tasks
    columns: ClassVar[tuple[Column, ...]] = (Column("SuperGLUE", "superglue", "max", 60),)
    quick: ClassVar[dict] = {"tasks": ["cb", "copa", "multirc"], "epochs": 1, "seeds": [0], "max_train_examples": 64,
                             "max_eval_examples": 64, "cpu_threads": 1}  # fmt: skip

    @classmethod
    def task_key(cls, name: str) -> str:
        return superglue_tasks.task_key(name)

    def task_files(self, task, root) -> list:
        return superglue_tasks.task_files(task, root)

    def load(self, task, root):
        return superglue_tasks.load_task(task, root)

    def cache_name(self, task) -> str:
        return f"superglue-{task.key}"


def _task_metric(key: str, order: int) -> type:
    return single_task(SuperGLUE, key, order, __name__)


SuperGlueBoolQ = _task_metric("boolq", 61)
SuperGlueCB = _task_metric("cb", 62)
SuperGlueCOPA = _task_metric("copa", 63)
SuperGlueMultiRC = _task_metric("multirc", 64)
SuperGlueRTE = _task_metric("rte", 65)
SuperGlueWiC = _task_metric("wic", 66)
SuperGlueWSC = _task_metric("wsc", 67)
