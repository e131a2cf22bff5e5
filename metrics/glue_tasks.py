"""The nine GLUE tasks: where their data lives, how to read it, and how each is scored (SPEC §3.4).

Data come from a data directory in the classic `glue_data` layout (`<data_dir>/glue/<Task>/{train,dev}.tsv`;
MNLI: `dev_matched.tsv` and `dev_mismatched.tsv`), or, when a task's files are absent and the hub is reachable,
from the `nyu-mll/glue` dataset through `datasets`. Class indices follow `nyu-mll/glue` in both cases (e.g. MNLI
0 entailment / 1 neutral / 2 contradiction), so file and hub runs give the same label space.

Per-task metrics (×100 in the tables): CoLA Matthews correlation, MRPC F1 of the positive class ("equivalent"),
STS-B Pearson correlation, accuracy otherwise; MNLI is the mean of matched and mismatched accuracy. The
bootstrap statistics below (`task_statistic`, `mean_statistic`) compute them on every resample from
per-resample sums (metrics/resampled.py), for GLUE and SuperGLUE (metrics/superglue_tasks.py) alike.
`Split` (with multiple-choice and grouped forms) and `cap_split` are shared with SuperGLUE.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from bench.api import statistic
from bench.data.paths import open_text
from bench.errors import BenchError, DataError
from metrics.resampled import metric_over_resamples

HUB_DATASET = "nyu-mll/glue"
SOURCES = ("auto", "files", "hub")


@dataclass(frozen=True)
class GlueTask:
    key: str  # registry suffix: glue:<key>
    label: str  # column header
    folder: str  # folder under <data_dir>/glue
    metric: str  # "mcc" | "f1" | "pearson" | "accuracy"
    text_columns: tuple  # header names (or column numbers for header-less files)
    label_column: str | int
    labels: tuple[str, ...] | None  # class names in the files, in class-index order; None: regression
    hub_name: str
    hub_text_columns: tuple[str, ...]
    header: bool = True
    n_columns: int | None = None  # required field count of header-less files
    eval_files: tuple[tuple[str, str], ...] = (("dev", "dev.tsv"),)  # (split, file)
    hub_eval_splits: tuple[str, ...] = ("validation",)

    @property
    def num_labels(self) -> int:
        return 1 if self.labels is None else len(self.labels)

    @property
    def is_regression(self) -> bool:
        return self.labels is None

    @property
    def metric_label(self) -> str:
        return {"mcc": "MCC", "f1": "F1", "pearson": "Pearson", "accuracy": "Acc."}[self.metric]


_BINARY = ("0", "1")
_ENTAILMENT = ("entailment", "not_entailment")

TASKS: dict[str, GlueTask] = {
    t.key: t
    for t in (
        GlueTask("cola", "CoLA", "CoLA", "mcc", (3,), 1, _BINARY, "cola", ("sentence",), header=False, n_columns=4),
        GlueTask("sst2", "SST-2", "SST-2", "accuracy", ("sentence",), "label", _BINARY, "sst2", ("sentence",)),
        GlueTask("mrpc", "MRPC", "MRPC", "f1", ("#1 String", "#2 String"), "Quality", _BINARY, "mrpc",
                 ("sentence1", "sentence2")),
        GlueTask("stsb", "STS-B", "STS-B", "pearson", ("sentence1", "sentence2"), "score", None, "stsb",
                 ("sentence1", "sentence2")),
        GlueTask("qqp", "QQP", "QQP", "accuracy", ("question1", "question2"), "is_duplicate", _BINARY, "qqp",
                 ("question1", "question2")),
        GlueTask("mnli", "MNLI", "MNLI", "accuracy", ("sentence1", "sentence2"), "gold_label",
                 ("entailment", "neutral", "contradiction"), "mnli", ("premise", "hypothesis"),
                 eval_files=(("matched", "dev_matched.tsv"), ("mismatched", "dev_mismatched.tsv")),
                 hub_eval_splits=("validation_matched", "validation_mismatched")),
        GlueTask("qnli", "QNLI", "QNLI", "accuracy", ("question", "sentence"), "label", _ENTAILMENT, "qnli",
                 ("question", "sentence")),
        GlueTask("rte", "RTE", "RTE", "accuracy", ("sentence1", "sentence2"), "label", _ENTAILMENT, "rte",
                 ("sentence1", "sentence2")),
        # WNLI: 1 = entailment in the files; nyu-mll/glue names class 0 not_entailment, 1 entailment.
        GlueTask("wnli", "WNLI", "WNLI", "accuracy", ("sentence1", "sentence2"), "label", _BINARY, "wnli",
                 ("sentence1", "sentence2")),
    )
}  # fmt: skip

_ALIASES = {"sst-2": "sst2", "sts-b": "stsb"}


def task_key(name: str) -> str:
    """Canonical task key for a user-given name (`CoLA`, `SST-2`, `glue:rte`, ...)."""
    key = str(name).strip().lower()
    key = key.removeprefix("glue:")
    key = _ALIASES.get(key, key)
    if key not in TASKS:
        raise BenchError(f"unknown GLUE task {name!r}; valid tasks: {', '.join(TASKS)}")
    return key


# ---- data -------------------------------------------------------------------------------------------------
@dataclass
class Split:
    """Texts (one or two segments) and labels (int64 class indices, or float32 scores for regression).

    Shared by every fine-tuned task suite (GLUE, SuperGLUE). Two optional shapes:
      num_choices  multiple choice (COPA): text_a/text_b hold one K-tuple of segments per example, the label is
                   the index of the right choice (bench.models.finetune trains a multiple-choice head).
      groups       grouped items (MultiRC): one int per row naming its resampling unit (the question), numbered
                   0..G-1; bootstrap and caps work on whole groups.
    """

    name: str
    text_a: list
    text_b: list | None
    labels: np.ndarray
    groups: np.ndarray | None = None
    num_choices: int | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def units(self) -> int:
        """Number of resampling units: groups if the split has them, else rows."""
        return len(self) if self.groups is None else (int(self.groups.max()) + 1 if len(self.groups) else 0)

    def subset(self, indices: np.ndarray) -> "Split":
        indices = np.asarray(indices, dtype=np.int64)
        groups = None
        if self.groups is not None:  # renumber the kept groups 0..G'-1, in order of first appearance
            _, groups = np.unique(self.groups[indices], return_inverse=True)
            groups = groups.astype(np.int64)
        return Split(
            self.name, [self.text_a[i] for i in indices],
            None if self.text_b is None else [self.text_b[i] for i in indices], self.labels[indices],
            groups, self.num_choices,
        )  # fmt: skip


@dataclass
class TaskData:
    task: GlueTask
    train: Split
    evals: list[Split]
    origin: str  # "files:<fingerprint>" or "hub:nyu-mll/glue/<config>:<fingerprints>" (part of cache keys)
    files: tuple[Path, ...] = ()

    def capped(self, max_train: int | None, max_eval: int | None, seed: int = 0) -> "TaskData":
        """A seeded random subset (same for every fine-tuning seed and every subject), order kept."""
        return TaskData(self.task, cap_split(self.train, max_train, seed), [cap_split(s, max_eval, seed) for s in self.evals],
                        self.origin, self.files)  # fmt: skip


def cap_split(split: Split, cap: int | None, seed: int = 0) -> Split:
    """A seeded random subset of at most `cap` rows, order kept. A grouped split keeps whole groups: random
    groups are taken until the next one would pass the cap (at least one group)."""
    if cap is None or len(split) <= cap:
        return split
    if cap < 1:
        raise BenchError(f"example caps must be at least 1, got {cap}")
    rng = np.random.default_rng(seed)
    if split.groups is None:
        return split.subset(np.sort(rng.choice(len(split), size=int(cap), replace=False)))
    sizes = np.bincount(split.groups)
    order = rng.permutation(len(sizes))
    total = np.cumsum(sizes[order])
    keep = order[: max(1, int(np.searchsorted(total, cap, side="right")))]
    return split.subset(np.flatnonzero(np.isin(split.groups, keep)))


class TaskUnavailable(BenchError):
    """A task whose data are not available here (reported as missing, never silently dropped)."""


def task_files(task: GlueTask, data_dir) -> list[Path]:
    if data_dir is None:
        return []
    folder = Path(data_dir) / "glue" / task.folder
    return [folder / "train.tsv"] + [folder / f for _, f in task.eval_files]


def load_task(task: GlueTask, data_dir, source: str = "auto") -> TaskData:
    """Train and validation data of `task`; raises TaskUnavailable (why) or DataError (malformed file)."""
    if source not in SOURCES:
        raise BenchError(f"GLUE source must be one of {', '.join(SOURCES)}, got {source!r}")
    files = task_files(task, data_dir)
    absent = [p for p in files if not p.is_file()]
    if source != "hub" and files and not absent:
        return _load_files(task, files)
    if source == "files" or (source == "auto" and not _hub_allowed()):
        if not files:
            why = "no data directory"
        elif not files[0].parent.is_dir():
            why = f"no folder {files[0].parent}"
        else:
            why = f"no {', '.join(p.name for p in absent)} in {files[0].parent}"
        why += "" if source == "files" else "; hub not reachable"
        raise TaskUnavailable(f"{why} (`bench data fetch glue --data-dir DIR` downloads GLUE)")
    return _load_hub(task)


def _load_files(task: GlueTask, files: list[Path]) -> TaskData:
    from bench.data.paths import fingerprint

    train = read_tsv(task, files[0], "train")
    evals = [read_tsv(task, path, split) for (split, _), path in zip(task.eval_files, files[1:])]
    return TaskData(task, train, evals, f"files:{fingerprint(files)}", tuple(files))


def read_tsv(task: GlueTask, path: Path, split: str) -> Split:
    """One classic glue_data TSV (tab-separated, no quoting); DataError names file and row of a bad record."""
    texts: list[list[str]] = [[] for _ in task.text_columns]
    labels: list = []
    with open_text(path, encoding="utf-8-sig", newline="") as f:  # MRPC files start with a byte-order mark
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        if task.header:
            header = next(reader, None) or []
            missing = [c for c in (*task.text_columns, task.label_column) if c not in header]
            if missing:
                raise DataError(f"{path}: missing column(s) {', '.join(missing)} (header: {', '.join(header)})")
            text_idx = [header.index(c) for c in task.text_columns]
            label_idx = header.index(task.label_column)
            width = len(header)
        else:
            text_idx, label_idx, width = list(task.text_columns), task.label_column, task.n_columns
        for row in reader:
            line = reader.line_num
            if len(row) != width:
                raise DataError(f"{path} row {line}: malformed record, {len(row)} fields instead of {width}")
            for column, i in zip(texts, text_idx):
                if not row[i].strip():
                    raise DataError(f"{path} row {line}: malformed record, empty text in field {i + 1}")
                column.append(row[i])
            labels.append(_parse_label(task, row[label_idx], path, line))
    if not labels:
        raise DataError(f"{path}: no records")
    dtype = np.float32 if task.is_regression else np.int64
    return Split(split, texts[0], texts[1] if len(texts) > 1 else None, np.asarray(labels, dtype=dtype))


def _parse_label(task: GlueTask, value: str, path: Path, line: int):
    value = value.strip()
    if task.is_regression:
        try:
            score = float(value)
        except ValueError:
            score = math.nan
        if not math.isfinite(score):
            raise DataError(f"{path} row {line}: malformed record, score {value!r} is not a number")
        return score
    if value not in task.labels:
        raise DataError(f"{path} row {line}: malformed record, label {value!r} not one of {', '.join(task.labels)}")
    return task.labels.index(value)


# ---- the hub (online only) ---------------------------------------------------------------------------------
_hub_failed: str | None = None  # first failure of this process: later tasks do not wait for the same timeout


def _hub_allowed() -> bool:
    """Try the hub (or the datasets cache, with HF_DATASETS_OFFLINE=1) unless it already failed in this process."""
    return _hub_failed is None


def _hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> str | None:
    """None if a TCP connection to the hub opens within `timeout`, else why not. Checked before `datasets` is
    asked, whose own retries take ~30 s per task on a machine without network."""
    import os
    import socket

    if os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1":
        return None  # offline mode: datasets reads its local cache without touching the network
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError as e:
        return (f"{host} not reachable ({type(e).__name__}); put the task's files under <data-dir>/glue/<TASK>/ "
                f"or set HF_DATASETS_OFFLINE=1 to use a datasets cache")  # fmt: skip
    return None


def _load_hub(task: GlueTask) -> TaskData:
    global _hub_failed
    if _hub_failed is not None:
        raise TaskUnavailable(f"not in the data directory, and the hub failed earlier ({_hub_failed})")
    why = _hub_reachable()
    if why is not None:
        _hub_failed = why
        raise TaskUnavailable(f"not in the data directory, and {why}")
    try:
        import datasets

        ds = datasets.load_dataset(HUB_DATASET, task.hub_name)
    except Exception as e:  # no network, no cached copy: the task is missing, with the reason
        _hub_failed = f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
        raise TaskUnavailable(f"not in the data directory, and {HUB_DATASET}/{task.hub_name} not loadable ({_hub_failed})") from None
    return task_data_from_hub(task, ds)


def task_data_from_hub(task: GlueTask, ds) -> TaskData:
    """Convert a `datasets.DatasetDict` of nyu-mll/glue (columns as on the hub) to TaskData."""
    names = ["train", *[name for name, _ in task.eval_files]]
    hub_splits = ["train", *task.hub_eval_splits]
    missing = [s for s in hub_splits if s not in ds]
    if missing:
        raise TaskUnavailable(f"{HUB_DATASET}/{task.hub_name} has no split(s) {', '.join(missing)}")
    out = []
    for split_name, hub_split in zip(names, hub_splits):
        d = ds[hub_split]
        absent = [c for c in (*task.hub_text_columns, "label") if c not in d.column_names]
        if absent:
            raise DataError(f"{HUB_DATASET}/{task.hub_name} {hub_split}: missing column(s) {', '.join(absent)}")
        labels = np.asarray(d["label"], dtype=np.float32 if task.is_regression else np.int64)
        if not task.is_regression:
            bad = np.flatnonzero((labels < 0) | (labels >= task.num_labels))
            if bad.size:
                raise DataError(f"{HUB_DATASET}/{task.hub_name} {hub_split} row {int(bad[0])}: label {int(labels[bad[0]])} "
                                f"outside 0..{task.num_labels - 1}")  # fmt: skip
        cols = [list(d[c]) for c in task.hub_text_columns]
        out.append(Split(split_name, cols[0], cols[1] if len(cols) > 1 else None, labels))
    prints = ",".join(str(getattr(ds[s], "_fingerprint", "")) for s in hub_splits)
    return TaskData(task, out[0], out[1:], f"hub:{HUB_DATASET}/{task.hub_name}:{prints}")


# ---- metrics -----------------------------------------------------------------------------------------------
def predictions_from_logits(task: GlueTask, logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits)
    return logits[:, 0].astype(np.float64) if task.is_regression else logits.argmax(axis=1)


def _task_shapes(strata, *, metric: str, num_labels: int, labels: tuple, predictions: tuple, groups=None) -> None:
    groups = (None,) * len(labels) if groups is None else groups
    if not (len(strata) == len(labels) == len(predictions) == len(groups)):
        raise ValueError("one stratum, label array and prediction array per validation split expected")
    for n, y, p, g in zip(strata, labels, predictions, groups):
        rows = len(y)
        if p.ndim != 2 or p.shape[1] != rows:
            raise ValueError(f"predictions must be (seeds, {rows}) per split, got {p.shape}")
        units = rows if g is None else (int(g.max()) + 1 if len(g) else 0)
        if (g is not None and g.shape != (rows,)) or units != n:
            raise ValueError(f"a split of {units} items under a stratum of {n}")


def _mean_shapes(strata, *, parts: tuple, widths: tuple) -> None:
    from bench.api import Estimate

    if sum(widths) != len(strata) or len(parts) != len(widths):
        raise ValueError("the parts' widths do not add up to the strata")
    start = 0
    for part, width in zip(parts, widths):
        Estimate(tuple(strata[start : start + width]), part).validate()
        start += width


@statistic(check=_task_shapes)
def task_statistic(indices: Sequence[np.ndarray], *, metric: str, num_labels: int, labels: tuple, predictions: tuple,
                   groups: tuple | None = None) -> np.ndarray:  # fmt: skip
    """×100 task score per resample: per seed the metric on every validation split (averaged: MNLI m/mm),
    then the mean over seeds. One index array per split; the same indices serve every seed. `groups`: one
    array (or None) per split for the grouped metrics."""
    groups = (None,) * len(labels) if groups is None else groups
    per_split = [
        metric_over_resamples(metric, y, p, idx, num_labels, g) for idx, y, p, g in zip(indices, labels, predictions, groups)
    ]  # each (S, R)
    return 100.0 * np.mean(per_split, axis=0).mean(axis=0)


@statistic(check=_mean_shapes)
def mean_statistic(indices: Sequence[np.ndarray], *, parts: tuple, widths: tuple[int, ...]) -> np.ndarray:
    """Unweighted mean of several task statistics; `widths[i]` strata belong to `parts[i]`."""
    values, start = [], 0
    for part, width in zip(parts, widths):
        values.append(np.asarray(part(indices[start : start + width]), dtype=float))
        start += width
    return np.mean(values, axis=0)
