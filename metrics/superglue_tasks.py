"""The seven SuperGLUE tasks of the paper's ICLR tables: where their data live, how each is read and framed for an
encoder, and how each is scored (SPEC §3.4; the paper's fork aieng-lab/bias-bench `experiments/run_glue.py`).

Data: `<data_dir>/superglue/<Task>/{train,val}.jsonl` in the SuperGLUE v2 release layout (the test files carry no
labels and are not read). Only files: the hub's `super_glue` is a loading script that recent `datasets` no longer
runs, so there is no hub fallback; a task without its files is reported missing with the file to add. Class
indices follow the Hugging Face `super_glue` builder (CB 0 entailment / 1 contradiction / 2 neutral, RTE 0
entailment / 1 not_entailment, booleans 0 False / 1 True, COPA 0 choice1 / 1 choice2).

How each task is framed (one or two segments per example; the tokenizer joins a pair with its separator and
truncates the longest segment first to max_seq_length, as run_glue does):
  BoolQ    (passage, question), binary.                                                         [fork]
  CB, RTE  (premise, hypothesis); CB 3 classes, RTE 2.                                           [fork]
  COPA     multiple choice: one pair per choice, scored by a multiple-choice head (softmax over the 2 pair
           scores): (choice, premise) when the question is "cause", (premise, choice) when "effect". [fork]
  MultiRC  one example per answer: (paragraph, question + " " + answer), binary.                  [fork]
  WiC      ("word: sentence1", "word: sentence2"), binary. The fork passes the two sentences alone; the label
           is about the target word, so here both segments name it (a deliberate difference).
  WSC      (text, "Pronoun: span1; Candidate: span2"), binary, on `wsc.fixed`. This is the fork's string, kept
           so that numbers stay comparable, although it names the spans the other way round (span1 is the
           candidate noun phrase, span2 the pronoun).
`wsc.fixed`: span texts that are not substrings of the text are corrected at load time exactly as the Hugging
Face builder's `_fix_wst` does (first letter's case taken from the word at the span index, trailing "." and
newlines removed; the two "Kamenev ..." spans are left as they are), 88 train / 8 val / 7 test rows here.

Metrics (×100 in the tables, SuperGLUE's official ones): accuracy; CB the mean of accuracy and macro-F1 (both
also reported); MultiRC the mean of F1a (binary F1 over all answer rows) and EM (share of questions whose
answers are all right), both also reported, bootstrapped over questions (an answer row never leaves its
question). Values equal the HF `super_glue` metric / scikit-learn on the same predictions (tests).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from bench.data.paths import open_text
from bench.errors import BenchError, DataError
from metrics.glue_tasks import Split, TaskData, TaskUnavailable

FOLDER = "superglue"
SOURCES = ("auto", "files")  # auto = files: there is no hub fallback for SuperGLUE
EVAL_SPLIT = ("val", "val.jsonl")
RELEASE = "https://dl.fbaipublicfiles.com/glue/superglue/data/v2/"

_BOOL = ("False", "True")


@dataclass(frozen=True)
class SuperGlueTask:
    key: str  # registry suffix: superglue:<key>
    label: str  # column header
    folder: str  # folder under <data_dir>/superglue
    metric: str  # a glue_tasks metric name
    metric_label: str
    labels: tuple[str, ...]  # class names, in class-index order
    reader: str  # name of the row reader below
    parts: tuple[tuple[str, str, str], ...] = ()  # (sub-estimate, metric, label) reported beside the task score
    train_rows: int | None = None  # rows of the release's train file (named when it is missing)
    num_choices: int | None = None

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    @property
    def is_regression(self) -> bool:
        return False


TASKS: dict[str, SuperGlueTask] = {
    t.key: t
    for t in (
        SuperGlueTask("boolq", "BoolQ", "BoolQ", "accuracy", "Acc.", _BOOL, "boolq", train_rows=9427),
        SuperGlueTask("cb", "CB", "CB", "acc_macro_f1", "Acc./F1", ("entailment", "contradiction", "neutral"), "nli",
                      parts=(("accuracy", "accuracy", "Acc."), ("f1", "macro_f1", "macro-F1")), train_rows=250),
        SuperGlueTask("copa", "COPA", "COPA", "accuracy", "Acc.", ("choice1", "choice2"), "copa", train_rows=400,
                      num_choices=2),
        SuperGlueTask("multirc", "MultiRC", "MultiRC", "f1a_em", "F1a/EM", _BOOL, "multirc",
                      parts=(("f1a", "f1a", "F1a"), ("em", "em", "EM")), train_rows=27243),
        SuperGlueTask("rte", "RTE", "RTE", "accuracy", "Acc.", ("entailment", "not_entailment"), "nli", train_rows=2490),
        SuperGlueTask("wic", "WiC", "WiC", "accuracy", "Acc.", _BOOL, "wic", train_rows=5428),
        SuperGlueTask("wsc", "WSC", "WSC", "accuracy", "Acc.", _BOOL, "wsc", train_rows=554),
    )
}  # fmt: skip

_ALIASES = {"wsc.fixed": "wsc"}


def task_key(name: str) -> str:
    """Canonical task key for a user-given name (`BoolQ`, `superglue:cb`, `wsc.fixed`, ...)."""
    key = str(name).strip().lower().removeprefix("superglue:")
    key = _ALIASES.get(key, key)
    if key not in TASKS:
        raise BenchError(f"unknown SuperGLUE task {name!r}; valid tasks: {', '.join(TASKS)}")
    return key


def task_files(task: SuperGlueTask, data_dir) -> list[Path]:
    if data_dir is None:
        return []
    folder = Path(data_dir) / FOLDER / task.folder
    return [folder / "train.jsonl", folder / EVAL_SPLIT[1]]


def load_task(task: SuperGlueTask, data_dir) -> TaskData:
    """Train and validation data of `task`; raises TaskUnavailable (saying which file to add) or DataError."""
    from bench.data.paths import fingerprint

    files = task_files(task, data_dir)
    if not files:
        raise TaskUnavailable("no data directory")
    absent = [p for p in files if not p.is_file()]
    if absent:
        folder = files[0].parent
        if not folder.is_dir():
            why = f"no folder {folder}"
        else:
            why = f"no {', '.join(p.name for p in absent)} in {folder}"
        rows = f", {task.train_rows:,} rows" if task.train_rows and files[0] in absent else ""
        add = ", ".join(f"{task.folder}/{p.name}" for p in absent)
        raise TaskUnavailable(f"{why}; add {add} of the SuperGLUE v2 release ({RELEASE}{task.folder}.zip{rows}) "
                              f"under <data-dir>/{FOLDER}/")  # fmt: skip
    train = read_jsonl(task, files[0], "train")
    val = read_jsonl(task, files[1], EVAL_SPLIT[0])
    return TaskData(task, train, [val], f"files:{fingerprint(files)}", tuple(files))


# ---- readers: one JSON record -> examples ---------------------------------------------------------------------
def _label(task: SuperGlueTask, value, where: str) -> int:
    if isinstance(value, bool) and task.labels == _BOOL:
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < task.num_labels:
        return value  # COPA, MultiRC: class indices
    if isinstance(value, str) and value in task.labels:
        return task.labels.index(value)
    raise DataError(f"{where}: malformed record, label {value!r} not one of {', '.join(task.labels)}")


def _text(record: dict, key: str, where: str, allow_empty: bool = False) -> str:
    value = record.get(key)
    if not isinstance(value, str) or not (allow_empty or value.strip()):
        raise DataError(f"{where}: malformed record, missing or empty {key!r}")
    return value


def fix_wsc_spans(ex: dict) -> dict:
    """`wsc.fixed`: the Hugging Face super_glue builder's `_fix_wst`, on a flat record with text, span1_index,
    span1_text, span2_index, span2_text. Returns a corrected copy; raises ValueError where the builder's
    assertion would fail."""
    ex = dict(ex)
    for k in ("span1", "span2"):
        text, index = ex[k + "_text"], ex[k + "_index"]
        if text in ex["text"]:
            continue
        if text in ("Kamenev and Zinoviev", "Kamenev, Zinoviev, and Stalin"):
            continue  # subjects with intervening text: no correction possible (left as the builder leaves them)
        if "theyscold" in text:  # the builder also tries to split 'theyscold' in the text, but discards the result
            ex["span2_index"] = 10
        first_word = ex["text"].split()[index]
        text = (text[0].lower() if first_word[0].islower() else text[0].upper()) + text[1:]
        text = text.rstrip(".").replace("\n", " ")
        ex[k + "_text"] = text
        if text not in ex["text"]:
            raise ValueError(f"span {text!r} is not in the text after the wsc.fixed correction")
    return ex


def _boolq(r, where):
    return [(_text(r, "passage", where), _text(r, "question", where), r.get("label"))]


def _nli(r, where):
    return [(_text(r, "premise", where), _text(r, "hypothesis", where), r.get("label"))]


def _copa(r, where):
    premise, choices = _text(r, "premise", where), (_text(r, "choice1", where), _text(r, "choice2", where))
    question = r.get("question")
    if question not in ("cause", "effect"):
        raise DataError(f"{where}: malformed record, question {question!r} not 'cause' or 'effect'")
    pairs = [(c, premise) if question == "cause" else (premise, c) for c in choices]
    return [(tuple(a for a, _ in pairs), tuple(b for _, b in pairs), r.get("label"))]


def _wic(r, where):
    word = _text(r, "word", where)
    return [(f"{word}: {_text(r, 'sentence1', where)}", f"{word}: {_text(r, 'sentence2', where)}", r.get("label"))]


def _wsc(r, where):
    target = r.get("target")
    if not isinstance(target, dict) or any(k not in target for k in ("span1_text", "span2_text", "span1_index", "span2_index")):
        raise DataError(f"{where}: malformed record, 'target' needs span1/span2 text and index")
    try:
        ex = fix_wsc_spans({"text": _text(r, "text", where), **target})
    except (ValueError, IndexError) as e:
        raise DataError(f"{where}: malformed record, {e}") from None
    return [(ex["text"], f"Pronoun: {ex['span1_text']}; Candidate: {ex['span2_text']}", r.get("label"))]


def _multirc(r, where):
    passage = r.get("passage")
    if not isinstance(passage, dict) or not isinstance(passage.get("questions"), list):
        raise DataError(f"{where}: malformed record, 'passage' needs 'text' and 'questions'")
    paragraph = _text(passage, "text", where)  # (a few answers in the release are empty strings: kept, as HF does)
    out = []
    for q in passage["questions"]:
        question = _text(q, "question", where)
        answers = q.get("answers")
        if not isinstance(answers, list) or not answers:
            raise DataError(f"{where}: malformed record, question {q.get('idx')!r} has no answers")
        out.append([(paragraph, f"{question} {_text(a, 'text', where, allow_empty=True)}", a.get("label")) for a in answers])
    return out  # one list of answer rows per question


_READERS: dict[str, Callable] = {"boolq": _boolq, "nli": _nli, "copa": _copa, "wic": _wic, "wsc": _wsc, "multirc": _multirc}


def read_jsonl(task: SuperGlueTask, path: Path, split: str) -> Split:
    """One release file; DataError names file and line of a bad record."""
    reader = _READERS[task.reader]
    text_a, text_b, labels, groups = [], [], [], []
    n_groups = 0
    with open_text(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path} line {line_no}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{where}: not JSON ({e.msg})") from None
            if not isinstance(record, dict):
                raise DataError(f"{where}: malformed record, not a JSON object")
            produced = reader(record, where)
            question_lists = produced if task.reader == "multirc" else [produced]
            for rows in question_lists:
                for a, b, y in rows:
                    text_a.append(a)
                    text_b.append(b)
                    labels.append(_label(task, y, where))
                    groups.append(n_groups)
                n_groups += 1
    if not labels:
        raise DataError(f"{path}: no records")
    return Split(split, text_a, text_b, np.asarray(labels, dtype=np.int64),
                 np.asarray(groups, dtype=np.int64) if task.reader == "multirc" else None, task.num_choices)  # fmt: skip
