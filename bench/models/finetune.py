"""Sequence-classification and multiple-choice fine-tuning of a Subject (GLUE, SuperGLUE; SPEC §3.4 and §0.8).

The classifier is built in memory, never through a checkpoint on disk: `AutoModelForSequenceClassification`
from the subject's config, with the subject's base-model weights (its `base_model` state dict: the edited
weights of GRADIEND/CDA/Dropout subjects) copied in. The subject's representation transforms (INLP,
SentenceDebias) are attached to the classifier's encoder for training and evaluation, frozen.

Pooler and classification head (§0.8): masked-LM checkpoints carry no pooler, so every head parameter the
base model does not provide (BERT `pooler.*` + `classifier.*`, DistilBERT `pre_classifier.*` + `classifier.*`,
RoBERTa `classifier.*`) is initialised from the fine-tuning seed alone — normal(0, initializer_range) weights,
zero biases, with a generator seeded by `seed`. A debiased model therefore gets exactly the same head
initialisation as its base model for every seed. (bias-bench loads bert-base's pretrained pooler for the base
rows but fresh poolers for debiased MLM checkpoints; here every row starts from the same fresh head.)

Training follows the HF Trainer defaults of the paper's run_glue: AdamW (betas 0.9/0.999, eps 1e-8, weight
decay 0), linear decay to 0 without warmup, gradient clipping at norm 1.0, shuffled batches, dropout on; the
final model after the last epoch is evaluated (no checkpoint selection on the validation set, §0.8). Batches
are padded to their longest sequence instead of max_seq_length: with attention masks this changes speed, not
the computation (only the dropout random stream differs from a padded-to-128 run). max_seq_length is lowered
to what the model's position embeddings allow (`effective_max_length`; the synthetic model has 64).

Deterministic for a seed: data order and dropout come from seeded generators (inside `torch.random.fork_rng`,
so the caller's random state is untouched), and torch's deterministic algorithms are switched on (warn-only)
while training. On CUDA full bitwise determinism also needs CUBLAS_WORKSPACE_CONFIG=:4096:8 in the environment.

Multiple choice (SuperGLUE COPA): examples whose `num_choices` is K carry K segment pairs each; the classifier is
`AutoModelForMultipleChoice` (one score per pair from the pooled output, softmax over the K choices), built and
initialised exactly like the sequence classifier; logits have shape (n, K). transformers has no such class for
causal LMs (GPT-2, Llama): `multiple_choice_note` says so and the task is n/a for them.

Causal LMs (`subject.kind == "clm"`, SPEC-beyond §9.2): `AutoModelForSequenceClassification` of the causal config
(GPT2-/LlamaForSequenceClassification: the subject's base model, `transformer.*` / `model.*`, and a bias-free `score`
head seeded as above), pad = eos. The last real token, read from the attention mask (`last_real_positions`), is
pooled, and head and loss (cross-entropy; MSE for regression) are applied in `classifier_output`, not by the HF
forward, which finds that token from the pad id (transformers 5: the rightmost non-pad; 4.x: the first pad - 1) and
so misses a sequence that ends with eos = pad. Pairs are joined as the tokenizer does (GPT-2 back to back, as the
fork; Llama BOS between), without token type ids. Llama is fine-tuned like GPT-2; the fork scores it zero-shot
(lm-evaluation-harness): a deliberate difference, so that all rows of a table share one protocol.

Results (validation logits of every split) are cached per (subject identity, task, seed, configuration, data)
by `FinetuneJob`; the fine-tuned weights are stored too only when asked (`save_checkpoint`), since a bert-large
classifier is 1.3 GB per (task, seed).
"""
from __future__ import annotations

import contextlib
import copy
import json
import math
import time
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from bench.errors import BenchError, TrainingDiverged
from bench.files import source_hash, stable_hash
from bench.cache import Cache


@dataclass(frozen=True)
class FinetuneConfig:
    epochs: int = 3
    lr: float = 2e-5
    batch_size: int = 32
    max_seq_length: int = 128
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    adam_epsilon: float = 1e-8
    eval_batch_size: int = 128

    def __post_init__(self):
        for name in ("epochs", "batch_size", "max_seq_length", "eval_batch_size"):
            if int(getattr(self, name)) < 1:
                raise BenchError(f"fine-tuning {name} must be at least 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise BenchError(f"fine-tuning lr must be positive, got {self.lr}")


@dataclass
class Encoded:
    """Tokenised examples (unpadded id lists) and their labels. Multiple choice: `num_choices` K and K
    consecutive sequences per example (example i owns sequences i*K .. i*K+K-1)."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    labels: np.ndarray
    num_choices: int | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def sequences(self, rows: Sequence[int]) -> list[int]:
        """Sequence indices of the given examples."""
        k = self.num_choices
        return list(rows) if not k else [i * k + c for i in rows for c in range(k)]

    def length(self, i: int) -> int:
        """Longest sequence of example i."""
        return max(len(self.input_ids[j]) for j in self.sequences([i]))


def encode(tokenizer, examples, max_length: int) -> Encoded:
    """Tokenise `examples` (with `text_a`, `text_b` (None for single sentences) and `labels`) as run_glue does:
    truncation to max_length, longest segment first. With `num_choices` K, text_a/text_b hold one K-tuple
    per example (every choice one segment pair)."""
    k = getattr(examples, "num_choices", None)
    text_a, text_b = list(examples.text_a), None if examples.text_b is None else list(examples.text_b)
    if k:
        if any(len(t) != k for t in text_a) or (text_b is not None and any(len(t) != k for t in text_b)):
            raise BenchError(f"multiple-choice examples must have {k} choices each")
        text_a = [a for t in text_a for a in t]
        text_b = None if text_b is None else [b for t in text_b for b in t]
    enc = tokenizer(text_a, text_b, truncation=True, max_length=max_length)
    return Encoded(enc["input_ids"], enc.get("token_type_ids"), np.asarray(examples.labels), k or None)


def effective_max_length(subject, max_seq_length: int) -> int:
    """max_seq_length, lowered to what the model's position embeddings and the tokenizer allow (the synthetic
    model has 64 positions; RoBERTa's first two positions are reserved for padding offsets)."""
    limits = [int(max_seq_length)]
    positions = getattr(subject.model.config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        offset = subject.model.config.pad_token_id + 1 if subject.is_roberta_style and subject.model.config.pad_token_id is not None else 0
        limits.append(positions - offset)
    tokenizer_limit = getattr(subject.tokenizer, "model_max_length", None)
    if isinstance(tokenizer_limit, int) and 0 < tokenizer_limit < 100_000:  # "very large" means unset
        limits.append(tokenizer_limit)
    return min(limits)


def _collate(data: Encoded, rows: Sequence[int], pad_id: int, device, with_labels: bool, regression: bool) -> dict:
    seqs = data.sequences(rows)
    width = max(len(data.input_ids[i]) for i in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    types = torch.zeros((len(seqs), width), dtype=torch.long) if data.token_type_ids is not None else None
    for k, i in enumerate(seqs):
        n = len(data.input_ids[i])
        ids[k, :n] = torch.tensor(data.input_ids[i], dtype=torch.long)
        mask[k, :n] = 1
        if types is not None:
            types[k, :n] = torch.tensor(data.token_type_ids[i], dtype=torch.long)
    shape = (len(rows), data.num_choices, width) if data.num_choices else (len(rows), width)
    batch = {"input_ids": ids.view(shape).to(device), "attention_mask": mask.view(shape).to(device)}
    if types is not None:
        batch["token_type_ids"] = types.view(shape).to(device)
    if with_labels:
        lab = torch.as_tensor(data.labels[list(rows)])
        batch["labels"] = (lab.float() if regression else lab.long()).to(device)
    return batch


# ---- the classifier ----------------------------------------------------------------------------------------
def build_classifier(subject, num_labels: int, seed: int, label_names: Sequence[str] | None = None,
                     multiple_choice: bool = False):  # fmt: skip
    """A *ForSequenceClassification (or *ForMultipleChoice) with the subject's base-model weights and a
    seed-initialised head."""
    from transformers import AutoModelForMultipleChoice, AutoModelForSequenceClassification

    config = copy.deepcopy(subject.model.config)
    if multiple_choice and multiple_choice_note(subject):
        from bench.api import NotApplicable

        raise NotApplicable(multiple_choice_note(subject))
    if subject.kind == "clm" and getattr(config, "pad_token_id", None) is None:
        config.pad_token_id = subject.tokenizer.pad_token_id  # pad = eos (bench.models.causal.prepare_tokenizer)
    if not multiple_choice:
        config.num_labels = num_labels
        config.problem_type = "regression" if num_labels == 1 else "single_label_classification"
        if label_names is not None:
            config.id2label = dict(enumerate(label_names))
            config.label2id = {v: k for k, v in config.id2label.items()}
    auto = AutoModelForMultipleChoice if multiple_choice else AutoModelForSequenceClassification
    clf = auto.from_config(config)
    base_state = subject.model.base_model.state_dict()
    result = clf.base_model.load_state_dict(base_state, strict=False)
    unexpected = list(result.unexpected_keys)
    not_pooler = [k for k in result.missing_keys if not k.startswith("pooler.")]
    if unexpected or not_pooler:
        raise BenchError(
            f"cannot build a sequence classifier from {subject.name}: the encoder weights do not match "
            f"(missing {not_pooler[:5]}, unexpected {unexpected[:5]})"
        )
    prefix = clf.base_model_prefix
    loaded = {f"{prefix}.{k}" for k in base_state}
    init_head(clf, [n for n, _ in clf.named_parameters() if n not in loaded], seed)
    dtype = next(subject.model.parameters()).dtype
    return clf.to(device=subject.device, dtype=dtype)


def multiple_choice_note(subject) -> str:
    """Why the subject cannot get a multiple-choice head ("" when it can): transformers has none for its type."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_MULTIPLE_CHOICE_MAPPING_NAMES

    model_type = getattr(subject.model.config, "model_type", "")
    if model_type in MODEL_FOR_MULTIPLE_CHOICE_MAPPING_NAMES:
        return ""
    return (f"transformers has no multiple-choice head for {model_type!r} models (AutoModelForMultipleChoice), "
            f"so {subject.name} is not fine-tuned on multiple-choice tasks")  # fmt: skip


def last_real_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Column of each row's last attended token (right padding: its length - 1), whatever token it is."""
    cols = torch.arange(attention_mask.shape[-1], device=attention_mask.device)
    return (cols * (attention_mask != 0)).argmax(-1)


def classifier_output(clf, batch: dict, kind: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(logits, loss or None without labels) of a batch. Masked LMs: the HF forward. Causal LMs: the last hidden
    state at each row's last real token through the `score` head, and HF's losses (module docstring)."""
    if kind != "clm":
        out = clf(**batch)
        return out.logits, out.loss
    mask = batch["attention_mask"]
    h = clf.base_model(input_ids=batch["input_ids"], attention_mask=mask, use_cache=False)[0]
    logits = clf.score(h[torch.arange(h.shape[0], device=h.device), last_real_positions(mask)])
    labels = batch.get("labels")
    if labels is None:
        return logits, None
    if clf.config.num_labels == 1:
        return logits, torch.nn.functional.mse_loss(logits.squeeze(), labels.squeeze())
    return logits, torch.nn.functional.cross_entropy(logits.view(-1, clf.config.num_labels), labels.view(-1))


def init_head(model, names: Sequence[str], seed: int) -> None:
    """Initialise the named parameters from `seed` alone (HF convention: normal(0, initializer_range) weights,
    zero biases, LayerNorm weight 1), independent of the global random state and of the encoder's weights."""
    std = float(getattr(model.config, "initializer_range", 0.02))
    gen = torch.Generator().manual_seed(int(seed))
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name in sorted(names):
            p = params[name]
            if name.endswith("bias"):
                p.zero_()
            elif p.dim() == 1:  # a norm's scale
                p.fill_(1.0)
            else:
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float32) * std)


def head_parameter_names(clf) -> list[str]:
    """Parameters not taken from the masked LM (pooler and classification head)."""
    prefix = clf.base_model_prefix
    return [n for n, _ in clf.named_parameters() if not n.startswith(prefix + ".") or n.startswith(f"{prefix}.pooler.")]


@contextlib.contextmanager
def frozen(modules: Sequence[torch.nn.Module]):
    """Transforms stay fixed while the classifier trains: no gradients, eval mode; restored afterwards."""
    saved = [(p, p.requires_grad) for m in modules for p in m.parameters()]
    modes = [(m, m.training) for m in modules]
    try:
        for p, _ in saved:
            p.requires_grad_(False)
        for m, _ in modes:
            m.eval()
        yield
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)
        for m, mode in modes:
            m.train(mode)


@contextlib.contextmanager
def deterministic(seed: int, device: torch.device):
    devices = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    was = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(was, warn_only=warn_only)


@contextlib.contextmanager
def cpu_threads(n: int | None, device: torch.device):
    """Intra-op threads while fine-tuning on CPU (None: leave torch's setting); restored afterwards.

    Small models gain little from intra-op threads, and on a shared machine the threads spin against other
    processes: with two threads on two busy cores the quick GLUE suite took 5x the CPU time of one thread."""
    if n is None or device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ---- training and evaluation -------------------------------------------------------------------------------
@dataclass
class FinetuneResult:
    logits: dict[str, np.ndarray]  # validation split -> (n, num_labels) float32, in the split's order
    epoch_loss: list[float]  # mean training loss per epoch
    steps: int
    runtime_s: float
    model: object = field(default=None, repr=False)  # the fine-tuned classifier, only when asked for


def finetune(subject, train: Encoded, evals: dict[str, Encoded], num_labels: int, seed: int,
             config: FinetuneConfig = FinetuneConfig(), label_names: Sequence[str] | None = None,
             bar: Callable | None = None, keep_model: bool = False, threads: int | None = None) -> FinetuneResult:  # fmt: skip
    """Fine-tune a classifier on `train` (transforms active and frozen) and return validation logits."""
    from transformers import get_linear_schedule_with_warmup

    if len(train) == 0:
        raise BenchError("cannot fine-tune on an empty training set")
    t0 = time.perf_counter()
    device = subject.device
    choice = train.num_choices
    regression = num_labels == 1 and not choice
    pad_id = subject.tokenizer.pad_token_id if subject.tokenizer.pad_token_id is not None else 0
    n, bs = len(train), int(config.batch_size)
    steps_per_epoch = math.ceil(n / bs)
    total = steps_per_epoch * int(config.epochs)
    epoch_loss: list[float] = []
    progress = bar(total=total) if bar is not None else None
    with contextlib.ExitStack() as stack:
        if progress is not None:
            stack.callback(progress.close)
        stack.enter_context(frozen(subject.transforms))
        stack.enter_context(deterministic(seed, device))
        stack.enter_context(cpu_threads(threads, device))
        clf = build_classifier(subject, num_labels, seed, label_names, multiple_choice=bool(choice))
        params = [p for p in clf.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=config.lr, betas=(0.9, 0.999), eps=config.adam_epsilon,
                                weight_decay=config.weight_decay)  # fmt: skip
        schedule = get_linear_schedule_with_warmup(opt, num_warmup_steps=0, num_training_steps=total)
        order_gen = torch.Generator().manual_seed(int(seed))
        with subject.hooks(model=clf):
            clf.train()
            for epoch in range(int(config.epochs)):
                perm = torch.randperm(n, generator=order_gen).tolist()
                running = 0.0
                for step in range(steps_per_epoch):
                    batch = _collate(train, perm[step * bs : (step + 1) * bs], pad_id, device, True, regression)
                    loss = classifier_output(clf, batch, subject.kind)[1]
                    if not torch.isfinite(loss):
                        raise TrainingDiverged(f"fine-tuning loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}")
                    loss.backward()
                    if config.max_grad_norm:
                        torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
                    opt.step()
                    schedule.step()
                    opt.zero_grad(set_to_none=True)
                    running += loss.item()
                    if progress is not None:
                        progress.update(1)
                        progress.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.4f}", refresh=False)
                epoch_loss.append(running / steps_per_epoch)
            clf.eval()
            logits = {name: predict(clf, data, pad_id, device, config.eval_batch_size, subject.kind)
                      for name, data in evals.items()}
    return FinetuneResult(logits, epoch_loss, total, time.perf_counter() - t0, clf if keep_model else None)


def predict(clf, data: Encoded, pad_id: int, device, batch_size: int = 128, kind: str = "mlm") -> np.ndarray:
    """Logits of every example (batched, longest first to limit padding), in the data's order: (n, num_labels),
    or (n, num_choices) for multiple choice."""
    order = sorted(range(len(data)), key=lambda i: -data.length(i))
    out = np.empty((len(data), data.num_choices or clf.config.num_labels), dtype=np.float32)
    with torch.inference_mode():
        for a in range(0, len(order), batch_size):
            rows = order[a : a + batch_size]
            batch = _collate(data, rows, pad_id, device, False, False)
            out[rows] = classifier_output(clf, batch, kind)[0].float().cpu().numpy()
    return out


# ---- caching ------------------------------------------------------------------------------------------------
# The fine-tuning results depend on this module and on how subjects attach their transforms; not on the rest
# of the package (an edit to the CLI must not discard hours of GPU fine-tuning).
_CODE_FILES = (Path(__file__), Path(__file__).with_name("subject.py"))


class FinetuneJob:
    """Fine-tuning runs of one subject on one task, cached per seed (an interrupted run resumes per seed).

    `train` and each of `evals` have `text_a`, `text_b` and `labels`; `data_key` identifies the data (content
    fingerprint, caps). Tokenisation happens once, and only when some seed is not cached yet.
    """

    def __init__(self, subject, task: str, train, evals: dict, num_labels: int, config: FinetuneConfig,
                 cache: Cache, data_key: str, label_names: Sequence[str] | None = None,
                 save_checkpoint: bool = False, bar: Callable | None = None, threads: int | None = None):  # fmt: skip
        self.subject, self.task, self.train, self.evals = subject, task, train, evals
        self.num_labels, self.config, self.cache, self.data_key = num_labels, config, cache, data_key
        self.label_names, self.save_checkpoint, self.bar = label_names, save_checkpoint, bar
        self.threads = threads  # execution only: not part of the cache key

    def key(self, seed: int) -> str:
        return stable_hash({
            "subject": self.subject.identity, "task": self.task, "seed": int(seed), "config": asdict(self.config),
            "num_labels": self.num_labels, "data": self.data_key, "code": source_hash(*_CODE_FILES),
            "num_choices": getattr(self.train, "num_choices", None),
        })  # fmt: skip

    def path(self, seed: int) -> Path:
        return self.cache.path("finetune", self.task, self.key(seed))

    def is_cached(self, seed: int) -> bool:
        return (self.path(seed) / "done").is_file()

    @cached_property
    def encoded(self) -> tuple[Encoded, dict[str, Encoded]]:
        tok, m = self.subject.tokenizer, effective_max_length(self.subject, self.config.max_seq_length)
        return encode(tok, self.train, m), {name: encode(tok, ex, m) for name, ex in self.evals.items()}

    def result(self, seed: int) -> tuple[FinetuneResult, bool]:
        """(result, was_cached) for one seed."""

        def create():
            train, evals = self.encoded
            bar = (lambda total: self.bar(total=total, desc=f"{self.task} seed {seed}")) if self.bar else None
            return finetune(self.subject, train, evals, self.num_labels, seed, self.config, self.label_names,
                            bar=bar, keep_model=self.save_checkpoint, threads=self.threads)  # fmt: skip

        res, cached = self.cache.get_or_create("finetune", self.task, self.key(seed), create, _save, _load)
        res.model = None
        return res, cached


def _save(result: FinetuneResult, folder: Path) -> None:
    folder.mkdir()
    np.savez(folder / "logits.npz", **result.logits)
    meta = {"epoch_loss": result.epoch_loss, "steps": result.steps, "runtime_s": result.runtime_s,
            "splits": list(result.logits)}  # fmt: skip
    (folder / "result.json").write_text(json.dumps(meta, indent=2) + "\n")
    if result.model is not None:
        result.model.save_pretrained(folder / "model")


def _load(folder: Path) -> FinetuneResult:
    meta = json.loads((folder / "result.json").read_text())
    with np.load(folder / "logits.npz") as z:
        logits = {name: z[name] for name in meta["splits"]}
    return FinetuneResult(logits, meta["epoch_loss"], meta["steps"], meta["runtime_s"])
