"""Further masked-language-model training, shared by CDA and Dropout (SPEC §2.1, §2.2).

What the paper ran is bias-bench's `run_mlm.py` through the Hugging Face `Trainer`. This module reproduces
that recipe with a plain torch loop instead of `Trainer`, because (a) `Trainer` needs `accelerate`, which is not
a dependency of this project, (b) the loop must raise `TrainingDiverged` on the first non-finite loss, report
through the harness's progress bars and run on the subject's device, and (c) resuming from a checkpoint has to be
bit-exact (data order, masks and dropout are all restored). The recipe itself is the `Trainer` default the paper
used:

- data: every line tokenised with its special tokens ([CLS] line [SEP]), all lines concatenated and cut into
  blocks of `max_seq_length` tokens, remainder dropped (run_mlm's `group_texts`); a corpus shorter than one
  block becomes a single shorter block. `line_by_line=True` is run_mlm's `--line_by_line` instead: one sequence
  per line (truncated to `max_seq_length`), padded per micro-batch; the synthetic world uses it because its
  model was trained on single sentences and has never seen concatenated ones;
- masking: `transformers.DataCollatorForLanguageModeling` (mlm_probability 0.15, 80/10/10), special tokens
  never masked, its own seeded generator;
- AdamW (lr 5e-5, betas 0.9/0.999, eps 1e-8, weight decay 0), linear decay to 0 over `max_steps`, no warmup,
  gradient clipping at norm 1.0, `grad_accum` micro-batches of `batch_size` sequences per optimizer step (the loss
  of each micro-batch is its mean over masked tokens, divided by `grad_accum`, as in transformers 4.43);
- data order: a fresh seeded permutation of the sequences per epoch, read as one endless stream.

Dropout is active (train mode) during training; the model is returned in eval mode.
"""
from __future__ import annotations

import contextlib
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from bench.api import Debiaser
from bench.errors import BenchError, TrainingDiverged


@dataclass(frozen=True)
class MLMTrainingConfig:
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
        for name in ("max_steps", "batch_size", "grad_accum"):
            if getattr(self, name) < 1:
                raise BenchError(f"MLM training: {name} must be >= 1, got {getattr(self, name)}")
        if self.max_seq_length < 8:
            raise BenchError(f"MLM training: max_seq_length must be >= 8, got {self.max_seq_length}")
        if not 0 < self.mlm_probability < 1:
            raise BenchError(f"MLM training: mlm_probability must be in (0, 1), got {self.mlm_probability}")
        if self.precision not in ("fp32", "bf16"):
            raise BenchError(f"MLM training: precision must be 'fp32' or 'bf16', got {self.precision!r}")


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


@dataclass
class TokenData:
    """Training sequences: `ids` (n, L) right-padded with `pad_id`, true lengths in `lengths`."""

    ids: torch.Tensor
    lengths: torch.Tensor
    pad_id: int = 0

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def batch(self, idx) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids, attention_mask) of the sequences `idx`, cut to the longest of them."""
        lengths = self.lengths[idx]
        width = int(lengths.max())
        attention = (torch.arange(width)[None, :] < lengths[:, None]).long()
        return self.ids[idx, :width], attention


def _encode(tokenizer, lines: Sequence[str], batch: int, **kwargs) -> list[list[int]]:
    if not lines:
        raise BenchError("MLM training: the training corpus is empty")
    out: list[list[int]] = []
    for i in range(0, len(lines), batch):
        out.extend(tokenizer(list(lines[i : i + batch]), add_special_tokens=True, verbose=False, **kwargs)["input_ids"])
    return out


def _pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


def group_into_blocks(tokenizer, lines: Sequence[str], max_seq_length: int, batch: int = 1000) -> TokenData:
    """Blocks of `max_seq_length` tokens of the concatenated lines (run_mlm's `group_texts`)."""
    ids = [t for seq in _encode(tokenizer, lines, batch, truncation=False) for t in seq]
    n = len(ids) // max_seq_length
    if n == 0:
        return TokenData(torch.tensor([ids], dtype=torch.long), torch.tensor([len(ids)]), _pad_id(tokenizer))
    blocks = torch.tensor(ids[: n * max_seq_length], dtype=torch.long).view(n, max_seq_length)
    return TokenData(blocks, torch.full((n,), max_seq_length), _pad_id(tokenizer))


def encode_line_by_line(tokenizer, lines: Sequence[str], max_seq_length: int, batch: int = 1000) -> TokenData:
    """One sequence per line, truncated to `max_seq_length` (run_mlm's `--line_by_line`)."""
    seqs = _encode(tokenizer, lines, batch, truncation=True, max_length=max_seq_length)
    lengths = torch.tensor([len(s) for s in seqs])
    ids = torch.full((len(seqs), int(lengths.max())), _pad_id(tokenizer), dtype=torch.long)
    for i, seq in enumerate(seqs):
        ids[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
    return TokenData(ids, lengths, _pad_id(tokenizer))


def training_data(tokenizer, lines: Sequence[str], cfg: "MLMTrainingConfig") -> TokenData:
    if cfg.line_by_line:
        return encode_line_by_line(tokenizer, lines, cfg.max_seq_length)
    return group_into_blocks(tokenizer, lines, cfg.max_seq_length)


def block_order(n_blocks: int, seed: int, start: int, count: int) -> np.ndarray:
    """Indices `start .. start+count` of the endless stream of per-epoch permutations (resumable by position)."""
    out = np.empty(count, dtype=np.int64)
    pos = start
    filled = 0
    while filled < count:
        epoch, offset = divmod(pos, n_blocks)
        perm = np.random.default_rng([seed, epoch]).permutation(n_blocks)
        take = min(count - filled, n_blocks - offset)
        out[filled : filled + take] = perm[offset : offset + take]
        filled += take
        pos += take
    return out


def make_collator(tokenizer, cfg: MLMTrainingConfig):
    from transformers import DataCollatorForLanguageModeling

    collator = DataCollatorForLanguageModeling(tokenizer=tokenizer, mlm_probability=cfg.mlm_probability, seed=cfg.seed)
    collator.create_rng()
    return collator


def _special_ids(tokenizer) -> torch.Tensor:
    return torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long)


def mask_batch(collator, ids: torch.Tensor, special_ids: torch.Tensor,
               attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """(inputs, labels) for MLM: the collator's 80/10/10 masking; special tokens and padding never masked."""
    special = torch.isin(ids, special_ids)
    if attention_mask is not None:
        special |= attention_mask == 0
    return collator.torch_mask_tokens(ids.clone(), special_tokens_mask=special)


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
    from bench.serialize import save_data
    from bench.files import atomic_dir

    with atomic_dir(path) as tmp:
        save_data(payload, tmp)


def _load_checkpoint(path: Path, desc: str) -> dict | None:
    """The checkpoint at `path`, or None (reported and removed) when it cannot be read."""
    import logging

    from bench.serialize import load_data
    from bench.files import remove_dir

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


def train_mlm(
    model: torch.nn.Module,
    tokenizer,
    data: TokenData,
    cfg: MLMTrainingConfig,
    *,
    n_lines: int = 0,
    checkpoint_dir: Path | None = None,
    bar: Callable | None = None,
    desc: str = "MLM training",
    on_step: Callable[[int, float], None] | None = None,
) -> TrainingHistory:
    """Train `model` (in place) for `cfg.max_steps` optimizer steps of masked-LM loss on `data`.

    `checkpoint_dir`: if given, a checkpoint is written there every `cfg.checkpoint_every` steps and a matching
    one (same config and data) is resumed from; it is deleted when training completes.
    `on_step(step, loss)` is called after every optimizer step (step counts from 1).
    """
    from transformers import get_linear_schedule_with_warmup

    device = next(model.parameters()).device
    history = TrainingHistory(config=asdict(cfg), n_sequences=len(data), n_lines=n_lines)
    collator = make_collator(tokenizer, cfg)
    special_ids = _special_ids(tokenizer)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    scheduler = get_linear_schedule_with_warmup(optimizer, num_warmup_steps=0, num_training_steps=cfg.max_steps)
    data_key = _data_key(data, cfg)
    ckpt = Path(checkpoint_dir) / "checkpoint" if checkpoint_dir is not None else None
    per_step = cfg.batch_size * cfg.grad_accum
    autocast = (
        torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        if cfg.precision == "bf16" and device.type == "cuda"
        else contextlib.nullcontext()
    )

    fork_devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices):  # dropout randomness, without touching the caller's RNG
        torch.manual_seed(cfg.seed)
        start = 0
        state = _load_checkpoint(ckpt, desc) if ckpt is not None and ckpt.exists() else None
        if state is not None:
            if state.get("data_key") == data_key:
                model.load_state_dict(state["model"])
                optimizer.load_state_dict(state["optimizer"])
                scheduler.load_state_dict(state["scheduler"])
                collator.generator.set_state(state["mask_rng"])
                _set_rng_state(state["rng"], device)
                history.losses = list(state["losses"])
                start = history.resumed_from = int(state["step"])

        model.train()
        progress = bar(total=cfg.max_steps, initial=start, desc=desc) if bar is not None else None
        try:
            for step in range(start, cfg.max_steps):
                order = block_order(len(data), cfg.seed, step * per_step, per_step)
                step_loss = 0.0
                for micro in range(cfg.grad_accum):
                    ids, attention = data.batch(order[micro * cfg.batch_size : (micro + 1) * cfg.batch_size])
                    inputs, labels = mask_batch(collator, ids, special_ids, attention)
                    if not bool((labels != -100).any()):
                        continue  # nothing masked in this micro-batch (tiny sequences): no loss to learn from
                    with autocast:
                        loss = masked_lm_loss(model, inputs.to(device), labels.to(device), attention.to(device)).float()
                    if not torch.isfinite(loss):
                        raise TrainingDiverged(
                            f"{desc}: the MLM loss became {loss.item()} at step {step + 1} (micro-batch {micro + 1}); "
                            f"lower the learning rate (lr={cfg.lr}) or use precision='fp32'"
                        )
                    (loss / cfg.grad_accum).backward()
                    step_loss += loss.item() / cfg.grad_accum
                if cfg.max_grad_norm and cfg.max_grad_norm > 0:
                    norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                    if not torch.isfinite(norm):
                        raise TrainingDiverged(
                            f"{desc}: the gradient norm became {norm.item()} at step {step + 1}; "
                            f"lower the learning rate (lr={cfg.lr}) or use precision='fp32'"
                        )
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                history.losses.append(step_loss)
                if progress is not None:
                    progress.update(1)
                    progress.set_postfix(loss=f"{step_loss:.3f}")
                if on_step is not None:
                    on_step(step + 1, step_loss)
                done = step + 1
                if ckpt is not None and cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < cfg.max_steps:
                    _save_checkpoint(ckpt, {
                        "data_key": data_key, "step": done, "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                        "mask_rng": collator.generator.get_state(), "rng": _rng_state(device),
                        "losses": history.losses,
                    })  # fmt: skip
        finally:
            if progress is not None:
                progress.close()
            model.eval()
            optimizer.zero_grad(set_to_none=True)
    if checkpoint_dir is not None:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    return history


def _data_key(data: TokenData, cfg: MLMTrainingConfig) -> str:
    import hashlib
    import json

    h = hashlib.sha256(data.ids.numpy().tobytes())
    h.update(data.lengths.numpy().tobytes())
    h.update(json.dumps({k: v for k, v in asdict(cfg).items() if k != "checkpoint_every"}, sort_keys=True).encode())
    return h.hexdigest()[:16]


def mlm_loss(model, tokenizer, data: TokenData, *, seed: int = 1234, batch_size: int = 32,
             mlm_probability: float = 0.15) -> float:
    """Mean masked-LM loss of `model` on `data` under a fixed seeded masking (for checks and tests)."""
    collator = make_collator(tokenizer, MLMTrainingConfig(seed=seed, mlm_probability=mlm_probability))
    special_ids = _special_ids(tokenizer)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.inference_mode():
        for i in range(0, len(data), batch_size):
            ids, attention = data.batch(np.arange(i, min(i + batch_size, len(data))))
            inputs, labels = mask_batch(collator, ids, special_ids, attention)
            n = int((labels != -100).sum())
            if n == 0:
                continue
            total += masked_lm_loss(model, inputs.to(device), labels.to(device), attention.to(device)).item() * n
            count += n
    model.train(was_training)
    return total / max(count, 1)


# ---- the Debiaser base shared by CDA and Dropout -----------------------------------------------------------

# The paper's recipe for real models (SPEC §2.1): 2,000 steps of 32 x 16 = 512 blocks of 512 tokens.
PAPER_TRAINING = dict(max_steps=2000, batch_size=32, grad_accum=16, max_seq_length=512, lr=5e-5, line_by_line=False)
# The synthetic world (tiny BERT trained on single templated sentences): ~15 s of CPU time per fit. 400 steps at
# lr 1e-3 take CDA from SS 83 to 53 on the default world (300 steps at 5e-4: 61; 600 at 1e-3: 52).
SYNTHETIC_TRAINING = dict(max_steps=400, batch_size=32, grad_accum=1, max_seq_length=64, lr=1e-3, line_by_line=True)

_TRAINING_KEYS = tuple(PAPER_TRAINING)


@dataclass
class FittedWeights:
    """The artifact of CDA / Dropout: the further-trained masked LM and its training history."""

    model: torch.nn.Module
    history: dict


def max_positions(model) -> int:
    """The longest block the model accepts (RoBERTa reserves padding_idx + 1 positions)."""
    cfg = model.config
    n = getattr(cfg, "max_position_embeddings", None) or 512
    if getattr(cfg, "model_type", "") in {"roberta", "xlm-roberta", "camembert"}:
        n -= (getattr(cfg, "pad_token_id", 1) or 1) + 1
    return int(n)


class MLMTrainingDebiaser(Debiaser):
    """Further MLM training of a copy of the subject's model on a corpus from the data directory.

    Training hyperparameters left as None take the paper's values for real models (`PAPER_TRAINING`) and small
    ones for the synthetic world (`SYNTHETIC_TRAINING`, chosen when `subject.meta["synthetic"]` is set).
    Subclasses provide `training_lines` and may wrap the training in `training_setup`.
    """

    changes = "weights"
    bounds = {"max_steps": (1, None), "batch_size": (1, None), "grad_accum": (1, None), "max_seq_length": (1, None), "lr": (0.0, None),
              "checkpoint_every": (1, None), "max_lines": (1, None)}  # fmt: skip

    # Subclasses list every constructor argument explicitly (they are the method's config) and call this.
    def _init_training(self, *, max_steps, batch_size, grad_accum, max_seq_length, lr, line_by_line, seed, precision,
                       checkpoint_every, corpus, max_lines):  # fmt: skip
        self.max_steps, self.batch_size, self.grad_accum = max_steps, batch_size, grad_accum
        self.max_seq_length, self.lr, self.line_by_line, self.seed = max_seq_length, lr, line_by_line, seed
        self.precision, self.checkpoint_every = precision, checkpoint_every
        self.corpus, self.max_lines = corpus, max_lines

    # ---- what subclasses change ------------------------------------------------------------------------
    def training_lines(self, subject, ctx) -> list[str]:
        raise NotImplementedError

    @contextlib.contextmanager
    def training_setup(self, model):
        """Context around training (Dropout raises the dropout rates here)."""
        yield

    # ---- shared machinery ------------------------------------------------------------------------------
    def corpus_lines(self, ctx) -> list[str]:
        from bench.data.paths import text_corpus

        return text_corpus(ctx.data_dir, self.corpus, self.max_lines)

    def corpus_files(self, ctx) -> list[Path]:
        from bench.data.paths import DataError, require_file

        if self.corpus is not None:
            return [require_file(ctx.data_dir, f"text_corpus/{self.corpus}", "text corpus")]
        files = sorted((Path(ctx.data_dir or "") / "text_corpus").glob("*.txt")) if ctx.data_dir else []
        if not files:
            raise DataError(f"no text corpus: expected *.txt files in {Path(ctx.data_dir or '') / 'text_corpus'}")
        return files

    def data_files(self, ctx) -> list:
        # The shared training and swapping code is listed too, so that changing it invalidates fitted weights.
        here = Path(__file__).resolve().parent
        return self.corpus_files(ctx) + [here / "mlm_training.py", here / "counterfactual.py"]

    def training_config(self, subject, ctx) -> MLMTrainingConfig:
        defaults = SYNTHETIC_TRAINING if subject.meta.get("synthetic") else PAPER_TRAINING
        values = {k: getattr(self, k) if getattr(self, k) is not None else defaults[k] for k in _TRAINING_KEYS}
        limit = max_positions(subject.model)
        if values["max_seq_length"] > limit:
            values["max_seq_length"] = limit
        return MLMTrainingConfig(
            **values, seed=ctx.seed if self.seed is None else self.seed, precision=self.precision,
            checkpoint_every=self.checkpoint_every,
        )  # fmt: skip

    def fit(self, subject, ctx) -> FittedWeights:
        import copy

        from bench.files import stable_hash

        cfg = self.training_config(subject, ctx)
        lines = self.training_lines(subject, ctx)
        if not lines:
            raise BenchError(f"{self.name or type(self).__name__}: no training lines in the corpus of {ctx.data_dir}")
        data = training_data(subject.tokenizer, lines, cfg)
        model = copy.deepcopy(subject.model)  # never train the subject's own model
        key = stable_hash({"method": type(self).__name__, "config": self.config(), "subject": subject.identity,
                           "training": asdict(cfg), "bias_type": ctx.bias_type})  # fmt: skip
        checkpoint_dir = Path(ctx.cache_dir) / "checkpoints" / (self.name or type(self).__name__) / key if ctx.cache_dir else None
        with self.training_setup(model):
            history = train_mlm(
                model, subject.tokenizer, data, cfg, n_lines=len(lines), checkpoint_dir=checkpoint_dir,
                bar=ctx.bar, desc=f"{self.name or type(self).__name__}: MLM training",
            )  # fmt: skip
        model.eval()
        return FittedWeights(model=model, history=history.to_dict())

    def apply(self, subject, artifact: FittedWeights):
        model = artifact.model.to(subject.device).eval()
        return subject.with_model(model)

    def save_artifact(self, artifact: FittedWeights, path) -> None:
        import json

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        artifact.model.save_pretrained(path)
        (path / "training_history.json").write_text(json.dumps(artifact.history, indent=1), encoding="utf-8")

    def load_artifact(self, path) -> FittedWeights:
        import json

        from transformers import AutoModelForMaskedLM

        path = Path(path)
        model = AutoModelForMaskedLM.from_pretrained(path, use_safetensors=True).eval()  # never a pickled .bin
        history = json.loads((path / "training_history.json").read_text(encoding="utf-8"))
        return FittedWeights(model=model, history=history)
