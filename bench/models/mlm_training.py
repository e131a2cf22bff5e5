"""The language-model training loop: further training for CDA and Dropout (SPEC §2.1, §2.2, SPEC-beyond §9.3) and
the synthetic world.

One loop (`train_loop`) serves every language-model training in the project, masked and causal. What differs
between its users is data (a batch source: bench.models.mlm_data.CollatorBatches for run_mlm's recipe,
CausalBatches for run_clm's, the synthetic world's boosted batches in bench.synthetic.train), the loss of a
micro-batch (`masked_lm_loss`, or `causal_lm_loss` for causal LMs) and a few optimisation options (`LoopConfig`).

What the paper ran is bias-bench's `run_mlm.py` through the Hugging Face `Trainer`. `train_mlm` reproduces that
recipe with this plain torch loop instead of `Trainer`, because (a) `Trainer` needs `accelerate`, which is not a
dependency of this project, (b) the loop must raise `TrainingDiverged` on the first non-finite loss, report
through the harness's progress bars and run on the subject's device, and (c) resuming from a checkpoint has to be
bit-exact (data order, masks and dropout are all restored). The recipe itself (`MLMTrainingConfig`) is the
`Trainer` default the paper used:

- data: blocks of `max_seq_length` tokens of the concatenated lines, or one sequence per line with
  `line_by_line=True` (the synthetic world's model was trained on single sentences and has never seen
  concatenated ones); see bench.models.mlm_data;
- masking: `transformers.DataCollatorForLanguageModeling` (mlm_probability 0.15, 80/10/10), special tokens
  never masked, its own seeded generator;
- AdamW (lr 5e-5, betas 0.9/0.999, eps 1e-8, weight decay 0), linear decay to 0 over `max_steps`, no warmup,
  gradient clipping at norm 1.0, `grad_accum` micro-batches of `batch_size` sequences per optimizer step (the loss
  of each micro-batch is its mean over masked tokens, divided by `grad_accum`, as in transformers 4.43);
- data order: a fresh seeded permutation of the sequences per epoch, read as one endless stream.

`train_clm` is run_clm's recipe for causal LMs (`CLMTrainingConfig`: bias-bench's GPT-2 runs, 2,000 steps of
8 x 32 blocks of 1,024 tokens, lr 5e-5): the same loop, optimiser, schedule and clipping, with the mean next-token
cross-entropy over the real (non-padding) positions as the loss, as `model(..., labels=ids).loss` computes it.

Dropout is active (train mode) during training unless `LoopConfig.dropout` is off; the model is returned in eval
mode. The caller's random state is never touched (the loop runs inside `torch.random.fork_rng`).
"""
from __future__ import annotations

import contextlib
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from bench.errors import BenchError, TrainingDiverged
from bench.models.mlm_data import CausalBatches, CollatorBatches, TokenData, make_collator, mask_batch, special_ids


@dataclass(frozen=True)
class MLMTrainingConfig:
    """run_mlm's recipe (CDA, Dropout)."""

    max_steps: int = 2000
    batch_size: int = 32
    grad_accum: int = 16
    max_seq_length: int = 512
    lr: float = 5e-5
    mlm_probability: float = 0.15
    max_grad_norm: float = 1.0
    seed: int = 0
    precision: str = "fp32"  # or "bf16": autocast on CUDA (ignored on CPU); the paper trained in fp32
    checkpoint_every: int = 100  # optimizer steps between resumable checkpoints (0: never)
    line_by_line: bool = False  # one sequence per line instead of concatenated blocks

    def __post_init__(self):
        _check_recipe(self, "MLM training")
        if not 0 < self.mlm_probability < 1:
            raise BenchError(f"MLM training: mlm_probability must be in (0, 1), got {self.mlm_probability}")

    def loop(self) -> "LoopConfig":
        return _recipe_loop(self)


@dataclass(frozen=True)
class CLMTrainingConfig:
    """run_clm's recipe (CDA, Dropout on causal LMs: bias-bench's GPT-2 runs, SPEC-beyond §9.3)."""

    max_steps: int = 2000
    batch_size: int = 8
    grad_accum: int = 32
    max_seq_length: int = 1024  # run_clm's block_size
    lr: float = 5e-5
    max_grad_norm: float = 1.0
    seed: int = 0
    precision: str = "fp32"
    checkpoint_every: int = 100
    line_by_line: bool = False  # one sequence per line (the synthetic world) instead of concatenated blocks

    def __post_init__(self):
        _check_recipe(self, "causal LM training")

    def loop(self) -> "LoopConfig":
        return _recipe_loop(self)


def _check_recipe(cfg, what: str) -> None:
    for name in ("max_steps", "batch_size", "grad_accum"):
        if getattr(cfg, name) < 1:
            raise BenchError(f"{what}: {name} must be >= 1, got {getattr(cfg, name)}")
    if cfg.max_seq_length < 8:
        raise BenchError(f"{what}: max_seq_length must be >= 8, got {cfg.max_seq_length}")
    if cfg.precision not in ("fp32", "bf16"):
        raise BenchError(f"{what}: precision must be 'fp32' or 'bf16', got {cfg.precision!r}")


def _recipe_loop(cfg) -> "LoopConfig":
    return LoopConfig(max_steps=cfg.max_steps, lr=cfg.lr, seed=cfg.seed, grad_accum=cfg.grad_accum,
                      max_grad_norm=cfg.max_grad_norm, precision=cfg.precision,
                      checkpoint_every=cfg.checkpoint_every)  # fmt: skip


@dataclass(frozen=True)
class LoopConfig:
    """How the loop optimises: what run_mlm's recipe and the synthetic world's recipe both come down to."""

    max_steps: int
    lr: float
    seed: int = 0  # of the dropout randomness (the batch source seeds its own order and masks)
    grad_accum: int = 1
    max_grad_norm: float = 1.0  # 0: no clipping
    weight_decay: float = 0.0  # AdamW's, on weight matrices (ndim >= 2) only; biases and LayerNorms never decay
    warmup_steps: int = 0  # linear warmup, then linear decay to 0 at max_steps
    precision: str = "fp32"
    dropout: bool = True  # train mode while training
    deterministic: bool = False  # deterministic kernels on one CPU thread while training
    foreach: bool | None = None  # AdamW's implementation (None: torch's default for the device)
    checkpoint_every: int = 0  # optimizer steps between resumable checkpoints (0: never)


@dataclass
class TrainingHistory:
    """What happened during training (stored beside the fitted weights)."""

    config: dict
    n_sequences: int
    n_lines: int
    losses: list[float] = field(default_factory=list)  # mean micro-batch loss per optimizer step
    resumed_from: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def masked_lm_loss(model, inputs: torch.Tensor, labels: torch.Tensor,
                   attention_mask: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """Mean cross-entropy over the masked positions (labels != -100), as `model(..., labels=labels).loss`,
    but the vocabulary projection runs only at the masked positions (about 15 % of them)."""
    from bench.models.subject import mlm_head

    if attention_mask is None:
        attention_mask = torch.ones_like(inputs)
    try:
        head = mlm_head(model)
    except TypeError:  # an architecture without a known head: let the model compute its own loss
        return model(input_ids=inputs, attention_mask=attention_mask, labels=labels).loss
    hidden = model.base_model(input_ids=inputs, attention_mask=attention_mask)[0]
    rows, cols = (labels != -100).nonzero(as_tuple=True)
    logits = head(hidden[rows, cols])
    return torch.nn.functional.cross_entropy(logits.float(), labels[rows, cols])


def causal_lm_loss(model, inputs: torch.Tensor, labels: torch.Tensor,
                   attention_mask: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """Mean next-token cross-entropy: the logits at position p - 1 against labels[p] wherever labels[p] != -100,
    as `model(..., labels=labels).loss` (which shifts the labels itself), but the output projection runs only at
    the positions that predict a label (no key/value cache is built)."""
    if attention_mask is None:
        attention_mask = torch.ones_like(inputs)
    head = model.get_output_embeddings()
    if head is None:
        return model(input_ids=inputs, attention_mask=attention_mask, labels=labels, use_cache=False).loss
    hidden = model.base_model(input_ids=inputs, attention_mask=attention_mask, use_cache=False)[0]
    targets = labels[:, 1:]
    rows, cols = (targets != -100).nonzero(as_tuple=True)
    logits = head(hidden[rows, cols])
    return torch.nn.functional.cross_entropy(logits.float(), targets[rows, cols])


@contextlib.contextmanager
def deterministic():
    """Deterministic kernels on one CPU thread while inside.

    One thread: for tiny matrices a second thread barely helps on an idle machine and slows training down many
    times on a busy one; it also makes the weights independent of the machine's core count.
    """
    previous, threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(previous)


# ---- resumable checkpoints ---------------------------------------------------------------------------------


def _rng_state(device: torch.device) -> dict:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _save_checkpoint(path: Path, payload: dict) -> None:
    """Resumable training state as data (safetensors + JSON, bench.serialize), never a pickle."""
    from bench.files import atomic_dir
    from bench.serialize import save_data

    with atomic_dir(path) as tmp:
        save_data(payload, tmp)


def _load_checkpoint(path: Path, desc: str) -> dict | None:
    """The checkpoint at `path`, or None (reported and removed) when it cannot be read."""
    import logging

    from bench.files import remove_dir
    from bench.serialize import load_data

    try:
        state = load_data(path)
        if not isinstance(state, dict):
            raise ValueError("not a training state")
        return state
    except Exception as e:  # noqa: BLE001 - a damaged checkpoint: start over
        logging.getLogger("bench").warning(
            f"{desc}: damaged checkpoint {path} ({type(e).__name__}: {str(e)[:200]}); removed, training from the start"
        )
        remove_dir(path)
        return None


@dataclass
class _Run:
    """The state of one training run: what a checkpoint saves and restores."""

    model: torch.nn.Module
    batches: object  # micro_batches(step, grad_accum), get_state(), set_state(state)
    params: list
    optimizer: torch.optim.Optimizer
    scheduler: object
    history: TrainingHistory
    device: torch.device
    loss: Callable = masked_lm_loss  # (model, inputs, labels, attention_mask) -> mean loss of a micro-batch

    def save(self, path: Path, key: str, step: int) -> None:
        _save_checkpoint(path, {
            "data_key": key, "step": step, "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "mask_rng": self.batches.get_state(), "rng": _rng_state(self.device), "losses": self.history.losses,
        })  # fmt: skip

    def resume(self, path: Path | None, key: str, desc: str) -> int:
        """The step to start from: that of a checkpoint at `path` with the same `key`, else 0."""
        state = _load_checkpoint(path, desc) if path is not None and path.exists() else None
        if state is None or state.get("data_key") != key:
            return 0
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.batches.set_state(state["mask_rng"])
        _set_rng_state(state["rng"], self.device)
        self.history.losses = list(state["losses"])
        self.history.resumed_from = int(state["step"])
        return self.history.resumed_from


# ---- the loop ----------------------------------------------------------------------------------------------


def _optimizer(model: torch.nn.Module, loop: LoopConfig):
    from transformers import get_linear_schedule_with_warmup

    params = [p for p in model.parameters() if p.requires_grad]
    groups: list = params
    if loop.weight_decay:
        groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": loop.weight_decay},
                  {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]  # fmt: skip
    optimizer = torch.optim.AdamW(groups, lr=loop.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                                  foreach=loop.foreach)  # fmt: skip
    return params, optimizer, get_linear_schedule_with_warmup(optimizer, loop.warmup_steps, loop.max_steps)


def _optimizer_step(run: _Run, step: int, loop: LoopConfig, autocast, desc: str) -> float:
    """One optimizer step over `loop.grad_accum` micro-batches; returns the mean micro-batch loss."""
    hint = f"lower the learning rate (lr={loop.lr}) or use precision='fp32'"
    step_loss = 0.0
    for micro, (inputs, labels, attention) in enumerate(run.batches.micro_batches(step, loop.grad_accum)):
        if not bool((labels != -100).any()):
            continue  # no label in this micro-batch (nothing masked in tiny sequences): no loss to learn from
        with autocast:
            loss = run.loss(run.model, inputs.to(run.device), labels.to(run.device), attention.to(run.device)).float()
        if not torch.isfinite(loss):
            raise TrainingDiverged(
                f"{desc}: the training loss became {loss.item()} at step {step + 1} (micro-batch {micro + 1}); {hint}")
        (loss / loop.grad_accum).backward()
        step_loss += loss.item() / loop.grad_accum
    if loop.max_grad_norm and loop.max_grad_norm > 0:
        norm = torch.nn.utils.clip_grad_norm_(run.params, loop.max_grad_norm)
        if not torch.isfinite(norm):
            raise TrainingDiverged(f"{desc}: the gradient norm became {norm.item()} at step {step + 1}; {hint}")
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return step_loss


def train_loop(model: torch.nn.Module, batches, loop: LoopConfig, *, history: TrainingHistory | None = None,
               resume_key: str = "", checkpoint_dir: Path | None = None, bar: Callable | None = None,
               desc: str = "MLM training", on_step: Callable[[int, float], None] | None = None,
               loss: Callable = masked_lm_loss) -> TrainingHistory:  # fmt: skip
    """Train `model` (in place) for `loop.max_steps` optimizer steps of `loss` (masked-LM loss by default,
    `causal_lm_loss` for causal LMs) on `batches`.

    `batches.micro_batches(step, grad_accum)` yields (inputs, labels, attention_mask) per micro-batch.
    `checkpoint_dir`: if given, a checkpoint is written there every `loop.checkpoint_every` steps and one with the
    same `resume_key` is resumed from; it is deleted when training completes. `bar(total=, initial=, desc=)` makes
    a progress bar; `on_step(step, loss)` is called after every optimizer step (step counts from 1).
    """
    device = next(model.parameters()).device
    history = history if history is not None else TrainingHistory(config=asdict(loop), n_sequences=0, n_lines=0)
    params, optimizer, scheduler = _optimizer(model, loop)
    run = _Run(model, batches, params, optimizer, scheduler, history, device, loss)
    ckpt = Path(checkpoint_dir) / "checkpoint" if checkpoint_dir is not None else None
    bf16 = loop.precision == "bf16" and device.type == "cuda"
    autocast = torch.autocast(device_type="cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    fork_devices = [device] if device.type == "cuda" else []  # dropout randomness, the caller's RNG untouched
    with torch.random.fork_rng(devices=fork_devices), (deterministic() if loop.deterministic else contextlib.nullcontext()):
        torch.manual_seed(loop.seed)
        start = run.resume(ckpt, resume_key, desc)
        model.train(loop.dropout)
        progress = bar(total=loop.max_steps, initial=start, desc=desc) if bar is not None else None
        try:
            for step in range(start, loop.max_steps):
                step_loss = _optimizer_step(run, step, loop, autocast, desc)
                history.losses.append(step_loss)
                if progress is not None:
                    progress.update(1)
                    progress.set_postfix(loss=f"{step_loss:.3f}")
                if on_step is not None:
                    on_step(step + 1, step_loss)
                done = step + 1
                if ckpt is not None and loop.checkpoint_every and done % loop.checkpoint_every == 0 and done < loop.max_steps:
                    run.save(ckpt, resume_key, done)
        finally:
            if progress is not None:
                progress.close()
            model.eval()
            optimizer.zero_grad(set_to_none=True)
    if checkpoint_dir is not None:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    return history


# ---- run_mlm's recipe --------------------------------------------------------------------------------------


def train_mlm(model: torch.nn.Module, tokenizer, data: TokenData, cfg: MLMTrainingConfig, *, n_lines: int = 0,
              checkpoint_dir: Path | None = None, bar: Callable | None = None, desc: str = "MLM training",
              on_step: Callable[[int, float], None] | None = None) -> TrainingHistory:  # fmt: skip
    """Train `model` (in place) with run_mlm's recipe `cfg` on `data` (see `train_loop` for the other arguments);
    a checkpoint is resumed only when it was written for the same data and configuration."""
    batches = CollatorBatches(tokenizer, data, batch_size=cfg.batch_size, mlm_probability=cfg.mlm_probability,
                              seed=cfg.seed)  # fmt: skip
    history = TrainingHistory(config=asdict(cfg), n_sequences=len(data), n_lines=n_lines)
    return train_loop(model, batches, cfg.loop(), history=history, resume_key=_data_key(data, cfg),
                      checkpoint_dir=checkpoint_dir, bar=bar, desc=desc, on_step=on_step)  # fmt: skip


def train_clm(model: torch.nn.Module, data: TokenData, cfg: CLMTrainingConfig, *, n_lines: int = 0,
              checkpoint_dir: Path | None = None, bar: Callable | None = None, desc: str = "causal LM training",
              on_step: Callable[[int, float], None] | None = None) -> TrainingHistory:  # fmt: skip
    """Train the causal LM `model` (in place) with run_clm's recipe `cfg` on `data` (sequences of
    `mlm_data.training_data(..., kind="clm")`); the other arguments as `train_mlm`."""
    batches = CausalBatches(data, batch_size=cfg.batch_size, seed=cfg.seed)
    history = TrainingHistory(config=asdict(cfg), n_sequences=len(data), n_lines=n_lines)
    return train_loop(model, batches, cfg.loop(), history=history, resume_key=_data_key(data, cfg),
                      checkpoint_dir=checkpoint_dir, bar=bar, desc=desc, on_step=on_step,
                      loss=causal_lm_loss)  # fmt: skip


def _data_key(data: TokenData, cfg) -> str:
    import hashlib
    import json

    h = hashlib.sha256(data.ids.numpy().tobytes())
    h.update(data.lengths.numpy().tobytes())
    h.update(json.dumps({k: v for k, v in asdict(cfg).items() if k != "checkpoint_every"}, sort_keys=True).encode())
    return h.hexdigest()[:16]


def mlm_loss(model, tokenizer, data: TokenData, *, seed: int = 1234, batch_size: int = 32,
             mlm_probability: float = 0.15) -> float:
    """Mean masked-LM loss of `model` on `data` under a fixed seeded masking (for checks and tests)."""
    collator = make_collator(tokenizer, mlm_probability, seed)
    special = special_ids(tokenizer)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.inference_mode():
        for i in range(0, len(data), batch_size):
            ids, attention = data.batch(np.arange(i, min(i + batch_size, len(data))))
            inputs, labels = mask_batch(collator, ids, special, attention)
            n = int((labels != -100).sum())
            if n == 0:
                continue
            total += masked_lm_loss(model, inputs.to(device), labels.to(device), attention.to(device)).item() * n
            count += n
    model.train(was_training)
    return total / max(count, 1)
