"""GRADIEND training (SPEC §1.5): AdamW on the MSE of (g+, g+ - g-) pairs, evaluation by validation
correlation, in-place sign normalisation, best checkpoint per run, several seeds, best run selected.

- One step = one GENTER batch (`TrainBatches`, SPEC §1.2) -> (x, t) by one forward and two backward passes
  (`GradientPair`) -> closed-form GRADIEND gradient -> one AdamW step. One epoch = N_train steps unless
  `max_steps` says otherwise.
- Every `eval_every` steps and after the last one: Pearson r between h and the gender (F = 1, M = 0) over the
  validation rows (each val template filled with one female and one male name of the NAMExact validation
  split, SPEC §1.5 G1 variant; `eval_max_size` limits the templates). h of each row is computed from the
  batch-size-1 gradient exactly (forward-mode directional derivative, see gradients.py). If r < 0 the
  encoder sign is flipped in place, with Adam's first moments (§0.3), so every kept model encodes
  female as positive. The checkpoint with the largest |r| is kept (ties: the later one).
- Runs for several seeds (the seed only changes the initialisation); the run whose best checkpoint has the
  highest signed Cor_GENTER on the whole validation split is selected.
- Resumable: every `checkpoint_every` steps the run state (parameters, both AdamW moments and its step,
  best checkpoint, history, RNG states) is written atomically to <out>/seed-<s>/checkpoint; an interrupted
  training continues from there and ends bit-identical to an uninterrupted one. Finished runs are kept in
  <out>/seed-<s>/best, the selected GRADIEND in <out>/gradiend (safetensors + config.json).
- A NaN or infinite loss raises bench.errors.TrainingDiverged.
"""
from __future__ import annotations

import json
import math
import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from bench.errors import BenchError, TrainingDiverged
from bench.files import atomic_dir, stable_hash, write_json
from methods.gradiend.data import GradiendData
from methods.gradiend import example_sets
from methods.gradiend.examples import EncoderRow, MaskedBatch, TrainBatches, collate, length_batches, length_cap
from methods.gradiend.gradients import GradientPair, directional_derivatives
from methods.gradiend.model import Gradiend
from methods.gradiend.params import DEFAULT_EXCLUDE, ParamSet, gradiend_dtype

SELECTED = "gradiend"


@dataclass(frozen=True)
class TrainConfig:
    seeds: tuple[int, ...] = (0, 1, 2)
    lr: float = 1e-5
    weight_decay: float = 1e-2
    eps: float = 1e-8
    betas: tuple[float, float] = (0.9, 0.999)
    batch_size: int = 32
    max_length: int = 48
    max_steps: int | None = None  # None: one epoch = number of GENTER train templates
    eval_every: int = 250
    eval_max_size: float | int | None = None  # None: all val templates; float: fraction; int: count
    eval_batch_size: int = 32
    checkpoint_every: int | None = None  # None: every eval
    exclude: tuple[str, ...] = DEFAULT_EXCLUDE
    fused: bool | None = None  # fused AdamW kernel (None: where PyTorch has one)
    layers: tuple[int, ...] | None = None  # only these transformer blocks (params.py; None: all parameters)
    dtype: str | None = None  # the GRADIEND's dtype (params.DTYPES; None: the model's)

    def result_key(self) -> dict:
        """What the trained GRADIEND depends on (not how often it is checkpointed). The memory options appear only
        when set, so the key of a default configuration is what it was before they existed."""
        d = asdict(self)
        d.pop("checkpoint_every")
        d["seeds"], d["betas"], d["exclude"] = list(self.seeds), list(self.betas), list(self.exclude)
        for k in ("layers", "dtype"):
            if d[k] is None:
                d.pop(k)
        if self.layers is not None:
            d["layers"] = [int(i) for i in self.layers]
        return d


@dataclass
class RunResult:
    seed: int
    gradiend: Gradiend | None
    best_score: float  # |r| of the kept checkpoint on the training-time val rows
    best_step: int
    history: list[dict] = field(default_factory=list)
    val_cor: float = float("nan")  # signed Cor_GENTER on the whole val split (run selection)


# ---- encoding many rows ---------------------------------------------------------------------------------
def row_batches(rows: list[EncoderRow], pad_id: int, batch_size: int, device) -> tuple[list[MaskedBatch], np.ndarray]:
    """Pre-collated batches (similar lengths together) and the row order they produce."""
    examples = [r.example for r in rows]
    groups = length_batches(examples, batch_size)
    batches = [collate([examples[i] for i in g], pad_id, device) for g in groups]
    order = np.array([i for g in groups for i in g], dtype=int)
    return batches, order


def encode_batches(subject, params: ParamSet, gradiend: Gradiend, batches: list[MaskedBatch], order: np.ndarray,
                   progress=None) -> np.ndarray:  # fmt: skip
    """h for every row (in the rows' original order); `progress` wraps the batch loop (e.g. ctx.bar)."""
    if not batches:
        return np.zeros(0)
    loop = batches if progress is None else progress(batches)
    direction = gradiend.W_e.to(params.dtype)  # the model's dtype (a copy only for a GRADIEND of another dtype)
    parts = [gradiend.encode_dots(directional_derivatives(subject, params, direction, b)) for b in loop]
    h = torch.cat(parts).double().cpu().numpy()
    out = np.empty_like(h)
    out[order] = h
    return out


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


class ValSet:
    """Validation rows as device batches, encoded as often as training evaluates."""

    def __init__(self, subject, params: ParamSet, rows: list[EncoderRow], batch_size: int, positive: str = "F"):
        self.subject, self.params, self.rows = subject, params, rows
        self.female = np.array([r.kind == positive for r in rows], dtype=float)  # the class encoded as positive
        self.batches, self.order = row_batches(rows, subject.tokenizer.pad_token_id, batch_size, subject.device)

    def correlation(self, gradiend: Gradiend) -> float:
        return pearson(encode_batches(self.subject, self.params, gradiend, self.batches, self.order), self.female)


def val_templates(data: GradiendData, size):
    templates = data.genter["val"]
    if size is None:
        return templates
    if isinstance(size, float) and size <= 1:  # a fraction (the paper's eval_max_size=0.5)
        return templates[: max(1, int(len(templates) * size))]
    return templates[: int(size)]


# ---- checkpoints ----------------------------------------------------------------------------------------
def _save_checkpoint(folder: Path, gradiend: Gradiend, opt, best: torch.Tensor | None, meta: dict) -> None:
    from bench.serialize import save_tensor_file

    tensors = {"params": gradiend.flat.cpu().contiguous(), "torch_rng": torch.get_rng_state()}
    steps = {}
    for i, s in opt.state_dict()["state"].items():
        tensors[f"exp_avg.{i}"] = s["exp_avg"].detach().cpu().contiguous()
        tensors[f"exp_avg_sq.{i}"] = s["exp_avg_sq"].detach().cpu().contiguous()
        steps[str(i)] = float(s["step"])
    if best is not None:
        tensors["best"] = best.detach().cpu().contiguous()
    meta = dict(meta, opt_steps=steps, python_rng=random.getstate())
    with atomic_dir(folder) as tmp:
        save_tensor_file(tensors, tmp / "state.safetensors")
        (tmp / "state.json").write_text(json.dumps(meta, default=list))


def _load_checkpoint(folder: Path, gradiend: Gradiend, opt, device):
    from safetensors.torch import load_file

    tensors = load_file(str(folder / "state.safetensors"))
    meta = json.loads((folder / "state.json").read_text())
    gradiend.flat.copy_(tensors["params"])
    if meta["opt_steps"]:
        sd = opt.state_dict()
        sd["state"] = {int(i): {"step": torch.tensor(step), "exp_avg": tensors[f"exp_avg.{i}"],
                                "exp_avg_sq": tensors[f"exp_avg_sq.{i}"]} for i, step in meta["opt_steps"].items()}  # fmt: skip
        opt.load_state_dict(sd)
    torch.set_rng_state(tensors["torch_rng"])
    version, internal, gauss = meta["python_rng"]
    random.setstate((version, tuple(internal), gauss))
    best = tensors["best"].to(device) if "best" in tensors else None
    return meta, best


# ---- one run --------------------------------------------------------------------------------------------
def train_run(subject, params: ParamSet, batches: TrainBatches, val: ValSet, cfg: TrainConfig, seed: int,
              run_dir: Path, ctx) -> RunResult:  # fmt: skip
    device = params.device
    total = cfg.max_steps if cfg.max_steps is not None else len(batches)
    if total < 1:
        raise BenchError(f"GRADIEND: max_steps must be >= 1, got {total}")
    every_ckpt = cfg.checkpoint_every or cfg.eval_every
    dtype = gradiend_dtype(cfg.dtype, params)
    gradiend = Gradiend.initialised(params.n, seed, device=device, dtype=dtype)
    opt = gradiend.optimizer(cfg.lr, cfg.weight_decay, cfg.eps, cfg.betas, cfg.fused)
    start, best, best_score, best_step, history = 0, None, -math.inf, 0, []
    ckpt = run_dir / "checkpoint"
    if (ckpt / "state.json").is_file():
        meta, best = _load_checkpoint(ckpt, gradiend, opt, device)
        start, best_score, best_step, history = meta["step"], meta["best_score"], meta["best_step"], meta["history"]
    pair = GradientPair(subject, params, dtype)
    bar = ctx.bar(total=total, initial=start, desc=f"GRADIEND seed {seed}")
    try:
        for k in range(start, total):
            x, t = pair(batches.batch(k, device))
            loss = float(gradiend.loss_and_grad(x, t, reuse_inputs=True))
            if not math.isfinite(loss):
                raise TrainingDiverged(
                    f"GRADIEND training diverged at step {k + 1} (seed {seed}): the loss is {loss}. "
                    f"Lower the learning rate (lr={cfg.lr}) or check the base model for NaN/inf gradients."
                )
            opt.step()
            step = k + 1
            bar.update(1)
            if step % cfg.eval_every == 0 or step == total:
                r = val.correlation(gradiend)
                flipped = r < 0
                if flipped:
                    gradiend.flip_(opt)
                    r = -r
                history.append({"step": step, "r": r, "loss": loss, "flipped": flipped})
                bar.set_postfix(loss=f"{loss:.3g}", r=f"{r:.3f}")
                if r >= best_score:
                    if best is None:
                        best = torch.empty_like(gradiend.flat)
                    best.copy_(gradiend.flat)
                    best_score, best_step = r, step
            if step % every_ckpt == 0 and step < total:
                _save_checkpoint(ckpt, gradiend, opt, best, {"step": step, "best_score": best_score,
                                                             "best_step": best_step, "history": history, "seed": seed})  # fmt: skip
    finally:
        bar.close()
    del pair, opt
    kept = Gradiend(params.n, device=device, dtype=dtype)
    with torch.no_grad():
        kept.flat.copy_(best)
    return RunResult(seed, kept, best_score, best_step, history)


# ---- several runs ---------------------------------------------------------------------------------------
def _run_config(subject, params: ParamSet, cfg: TrainConfig, extra: dict | None = None) -> dict:
    return {"model": subject.name, "subject": subject.identity, "params": params.signature(), "train": cfg.result_key(),
            **(extra or {})}  # fmt: skip


@dataclass
class TrainTask:
    """What a training needs besides the model and the configuration: the batches (`batch(k, device)`, `len`), the
    validation rows (training-time evaluation; `full_val_rows` for the run selection when those are a subset), the
    row kind encoded as positive, and a description of the data (part of the key). Gender (GENTER + names) and a
    race / religion group pair (pairs.py) are two tasks of the one trainer."""

    batches: object
    val_rows: list[EncoderRow]
    positive: str
    describe: str
    full_val_rows: list[EncoderRow] | None = None


def gender_task(subject, data: GradiendData, cfg: TrainConfig) -> TrainTask:
    max_length = length_cap(subject, cfg.max_length)
    batches = example_sets.train_batches(subject, data.genter["train"], data.names["train"], batch_size=cfg.batch_size,
                                         max_length=max_length)  # fmt: skip
    val_rows = example_sets.gender_rows(subject, val_templates(data, cfg.eval_max_size), data.names["val"],
                                        max_length=max_length)  # fmt: skip
    full = None
    if len(val_rows) != 2 * len(data.genter["val"]):
        full = example_sets.gender_rows(subject, data.genter["val"], data.names["val"], max_length=max_length)
    return TrainTask(batches, val_rows, "F", data.describe(), full)


def train(subject, data: GradiendData, cfg: TrainConfig, out_dir, ctx) -> tuple[Gradiend, dict]:
    """The gender GRADIEND: `train_task` on GENTER with NAMExact names."""
    return train_task(subject, lambda: gender_task(subject, data, cfg), data.describe(), cfg, out_dir, ctx)


def train_task(subject, make_task, describe: str, cfg: TrainConfig, out_dir, ctx) -> tuple[Gradiend, dict]:
    """Train every seed (resuming or reusing finished runs in `out_dir`), select the best run, save it to
    `out_dir/gradiend` and return it with a summary. `make_task()` builds the TrainTask (only when needed)."""
    out_dir = Path(out_dir)
    params = ParamSet.select(subject.model, cfg.exclude, cfg.layers)
    key = stable_hash({"subject": subject.identity, "train": cfg.result_key(), "data": describe})
    stamp = out_dir / "train.json"
    if stamp.is_file() and json.loads(stamp.read_text()).get("key") != key:
        raise BenchError(f"{out_dir} holds a GRADIEND training with another model, data or configuration; "
                         "choose another output directory")  # fmt: skip
    if (out_dir / SELECTED / "config.json").is_file():
        gradiend, config = Gradiend.load(out_dir / SELECTED, device=params.device)
        params.check_signature(config["params"])
        return gradiend, config["summary"]
    write_json(stamp, {"key": key, "config": cfg.result_key(), "model": subject.name, "data": describe})
    task = make_task()
    val = ValSet(subject, params, task.val_rows, cfg.eval_batch_size, task.positive)
    full_val = val if task.full_val_rows is None else ValSet(subject, params, task.full_val_rows,
                                                             cfg.eval_batch_size, task.positive)  # fmt: skip
    return _train_seeds(subject, params, task.batches, val, full_val, cfg, out_dir, ctx, describe)


def _train_seeds(subject, params, batches, val, full_val, cfg, out_dir, ctx, describe) -> tuple[Gradiend, dict]:
    selected, runs = None, []
    for seed in cfg.seeds:
        run_dir = out_dir / f"seed-{seed}"
        if (run_dir / "best" / "config.json").is_file():
            gradiend, conf = Gradiend.load(run_dir / "best", device=params.device)
            run = RunResult(seed, gradiend, conf["best_score"], conf["best_step"], conf["history"], conf["val_cor"])
        else:
            run = train_run(subject, params, batches, val, cfg, seed, run_dir, ctx)
            run.val_cor = run.best_score if full_val is val else full_val.correlation(run.gradiend)
            run.gradiend.save(run_dir / "best", _run_config(subject, params, cfg, {
                "seed": seed, "best_score": run.best_score, "best_step": run.best_step, "history": run.history,
                "val_cor": run.val_cor}))  # fmt: skip
            shutil.rmtree(run_dir / "checkpoint", ignore_errors=True)
        runs.append({"seed": seed, "val_cor": run.val_cor, "best_step": run.best_step, "best_score": run.best_score,
                     "history": run.history})  # fmt: skip
        if selected is None or run.val_cor > selected.val_cor:
            selected = run
        else:
            run.gradiend = None  # free the memory of runs that lost
    summary = {"selected_seed": selected.seed, "val_cor": selected.val_cor, "runs": runs,
               "steps": cfg.max_steps if cfg.max_steps is not None else len(batches), "data": describe}  # fmt: skip
    selected.gradiend.save(out_dir / SELECTED, _run_config(subject, params, cfg, {"summary": summary}))
    return selected.gradiend, summary
