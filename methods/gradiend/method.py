"""GRADIEND-BPI / -FPI / -MPI as `Debiaser`s (SPEC §1).

fit = train the GRADIEND (several seeds, best run) + evaluate the (h, alpha) decoder grid + pick the point with
the largest BPI / FPI / MPI, the three stages of methods.gradiend.stages; apply = a copy of the model with theta + alpha * dec(h) written into the selected
parameters. The trained GRADIEND and the grid results are cached in `<cache_dir>/gradiend/{train,grid}/<key>`,
keyed by the subject's identity, the data files, the training (resp. grid) configuration and the code, so the
three variants share one training and one grid, and a second run reuses both. An interrupted training
resumes from its last checkpoint there. The artifact is self-contained: the selected edit alpha * dec(h) as
one flat vector (safetensors) plus (h, alpha), the grid table and the training summary (JSON/CSV).

Defaults follow the paper (3 seeds, AdamW lr 1e-5 and eps 1e-8, one epoch, evaluation every 250 steps, the
15 x 16 grid, 10,000 GENEUTRAL sentences for LMS_Dec). On the synthetic world (`subject.meta["synthetic"]`)
the parameters left at None take `SYNTHETIC_DEFAULTS` instead (explicit arguments always win):
- AdamW eps 1e-4 with lr 1e-2. The GRADIEND gradients scale with 1/n; for full-size models (n ~ 1e8) they
  are all orders of magnitude below eps = 1e-8, so AdamW acts as momentum SGD with step lr/eps = 1000. On the
  tiny synthetic model (n ~ 3.5e5) the decoder-bias gradients (~3e-7) exceed 1e-8 and Adam's per-coordinate
  normalisation lets the encoder saturate on the gender-independent part of g+ before the decoder has
  learnt anything (measured: most seeds end with |r| < 0.1). eps = 1e-4 puts the tiny model back in the
  paper's regime (every gradient far below eps) with step lr/eps = 100.
- evaluation every 100 steps and 2,000 GENEUTRAL sentences for LMS_Dec, so that a fit (3 seeds x one epoch
  of 2,000 steps + 241 grid evaluations) takes a few minutes on 2 CPU cores.
- causal LMs: P(F)/P(M) after each GENTYPES template's text before [NAME] (`name_prompt="before"`), not after
  "The person, who X, has the first name" (`"person"`, SPEC-beyond §9.1, the default elsewhere): "who", "has" and
  "first" are not words of the synthetic world, whose causal LM gives names a probability of ~2e-6 after that
  prompt (measured), against ~0.06 after "My friend,".
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
import torch

from bench.api import Debiaser
from bench.errors import BenchError
from methods.gradiend.decoder_eval import ALPHA_VALUES, H_VALUES, selection_table
from methods.gradiend.examples_causal import NAME_PROMPTS
from methods.gradiend.params import DEFAULT_EXCLUDE, DTYPES, ParamSet
from methods.gradiend.stages import GridConfig, grid_stage, select_edit, train_stage
from methods.gradiend.train import TrainConfig

PAPER_DEFAULTS = {"seeds": (0, 1, 2), "lr": 1e-5, "eps": 1e-8, "eval_every": 250, "lms_max_sentences": 10_000,
                  "max_steps": None, "name_prompt": "person"}  # fmt: skip
SYNTHETIC_DEFAULTS = {"seeds": (0, 1, 2), "lr": 1e-2, "eps": 1e-4, "eval_every": 100, "lms_max_sentences": 2_000,
                      "max_steps": None, "name_prompt": "before"}  # fmt: skip

@dataclass
class GradiendArtifact:
    criterion: str
    h: float
    alpha: float
    signature: list  # [name, shape] of the edited tensors
    delta: torch.Tensor  # alpha * dec(h), flat
    grid: pd.DataFrame
    summary: dict = field(default_factory=dict)  # training summary, selection table, cache folders


class GradiendDebiaser(Debiaser):
    """Shared implementation; the subclasses only differ in the selection criterion."""

    criterion: ClassVar[str] = "bpi"
    model_kinds = frozenset({"mlm", "clm"})  # causal LMs: next-token examples (SPEC-beyond §9.1)
    fit_family = "gradiend"  # the three variants share the training and the grid: fit one after another
    group = 1
    changes = "weights"
    quick: ClassVar[dict] = {
        "seeds": [0], "max_steps": 60, "eval_every": 20, "lr": 1e-2, "eps": 1e-4, "lms_max_sentences": 200,
        "h_values": [-1.0, 1.0], "alpha_values": [-0.05, -0.01, 0.01, 0.05],
    }  # fmt: skip
    bounds: ClassVar[dict] = {
        "lr": (0.0, None), "eps": (0.0, None), "weight_decay": (0.0, None), "batch_size": (1, None), "max_length": (1, None),
        "max_steps": (1, None), "eval_every": (1, None), "eval_max_size": (1, None), "eval_batch_size": (1, None), "lms_max_sentences": (1, None),
        "grid_batch_size": (1, None),
    }  # fmt: skip

    def __init__(self, seeds=None, lr=None, eps=None, weight_decay=1e-2, batch_size=32, max_length=48, max_steps=None,
                 eval_every=None, eval_max_size=None, eval_batch_size=32, exclude=DEFAULT_EXCLUDE,
                 h_values=H_VALUES, alpha_values=ALPHA_VALUES, lms_max_sentences=None, grid_batch_size=128,
                 fused=None, layers=None, dtype=None, name_prompt=None):  # fmt: skip
        self.seeds = seeds
        self.lr = lr
        self.eps = eps
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_length = max_length
        self.max_steps = max_steps
        self.eval_every = eval_every
        self.eval_max_size = eval_max_size
        self.eval_batch_size = eval_batch_size
        self.exclude = exclude
        self.h_values = h_values
        self.alpha_values = alpha_values
        self.lms_max_sentences = lms_max_sentences
        self.grid_batch_size = grid_batch_size
        self.fused = fused
        self.layers = None if layers is None else tuple(int(i) for i in layers)  # memory options (README "Memory")
        if dtype is not None and dtype not in DTYPES:
            raise BenchError(f"gradiend: dtype={dtype!r} is not one of {', '.join(DTYPES)}")
        self.dtype = dtype
        if name_prompt is not None and name_prompt not in NAME_PROMPTS:
            raise BenchError(f"gradiend: name_prompt={name_prompt!r} is not one of {', '.join(NAME_PROMPTS)}")
        self.name_prompt = name_prompt

    # ---- configuration -------------------------------------------------------------------------------
    def resolved(self, subject) -> dict[str, Any]:
        """Constructor values with None replaced by the paper's defaults (or the synthetic world's)."""
        defaults = SYNTHETIC_DEFAULTS if subject.meta.get("synthetic") else PAPER_DEFAULTS
        return {k: (defaults[k] if getattr(self, k) is None else getattr(self, k)) for k in defaults}

    def train_config(self, subject) -> TrainConfig:
        r = self.resolved(subject)
        return TrainConfig(
            seeds=tuple(int(s) for s in r["seeds"]), lr=float(r["lr"]), eps=float(r["eps"]), weight_decay=float(self.weight_decay),
            batch_size=int(self.batch_size), max_length=int(self.max_length), max_steps=r["max_steps"],
            eval_every=int(r["eval_every"]), eval_max_size=self.eval_max_size, eval_batch_size=int(self.eval_batch_size),
            exclude=tuple(self.exclude), fused=self.fused, layers=self.layers, dtype=self.dtype,
        )  # fmt: skip

    def grid_config(self, subject) -> GridConfig:
        r = self.resolved(subject)
        prompt = r["name_prompt"] if subject.kind == "clm" else "person"  # masked LMs: no prompt (their keys unchanged)
        return GridConfig(h_values=self.h_values, alpha_values=self.alpha_values, batch_size=self.grid_batch_size,
                          lms_max_sentences=int(r["lms_max_sentences"]), exclude=self.exclude, layers=self.layers,
                          name_prompt=prompt)  # fmt: skip

    def data_files(self, ctx) -> list:
        from methods.gradiend.data import gradiend_files

        return gradiend_files(ctx.data_dir) if ctx.data_dir else []

    # ---- the stages (methods.gradiend.stages) ------------------------------------------------------------
    def trained(self, subject, ctx, data=None):
        """(GRADIEND, training summary, training folder), trained once per subject/data/config/code."""
        from methods.gradiend.data import load

        return train_stage(subject, data or load(ctx.data_dir), self.train_config(subject), ctx)

    def fit(self, subject, ctx) -> GradiendArtifact:
        from methods.gradiend.data import load

        data = load(ctx.data_dir)
        gradiend, summary, train_folder = train_stage(subject, data, self.train_config(subject), ctx)
        table, grid_folder = grid_stage(subject, gradiend, data, self.grid_config(subject), ctx, train_folder)
        edit = select_edit(subject, gradiend, table, self.criterion, self.exclude, self.layers)
        info = {"train": summary, "selection": selection_table(table), "train_folder": str(train_folder),
                "grid_folder": str(grid_folder)}  # fmt: skip
        return GradiendArtifact(self.criterion, edit.h, edit.alpha, edit.signature, edit.delta, table, info)

    def apply(self, subject, artifact: GradiendArtifact):
        model = copy.deepcopy(subject.model)
        params = ParamSet.select(model, self.exclude, self.layers)
        params.check_signature(artifact.signature, f"this GRADIEND-{artifact.criterion.upper()} edit")
        delta = artifact.delta.to(device=params.device, dtype=params.dtype)
        with torch.no_grad():
            for p, d in zip(params.params, params.views(delta)):
                p.add_(d)
        return subject.with_model(model)

    def save_artifact(self, artifact: GradiendArtifact, path) -> None:
        from bench.serialize import save_tensors_and_json

        meta = {"criterion": artifact.criterion, "h": artifact.h, "alpha": artifact.alpha,
                "signature": artifact.signature, "summary": json.loads(json.dumps(artifact.summary, default=str))}  # fmt: skip
        save_tensors_and_json(path, {"delta": artifact.delta}, meta)
        artifact.grid.to_csv(Path(path) / "grid.csv", index=False)

    def load_artifact(self, path) -> GradiendArtifact:
        from bench.serialize import load_tensors_and_json

        tensors, meta = load_tensors_and_json(path)
        return GradiendArtifact(meta["criterion"], meta["h"], meta["alpha"], meta["signature"], tensors["delta"],
                                pd.read_csv(Path(path) / "grid.csv"), meta["summary"])  # fmt: skip


class GradiendBPI(GradiendDebiaser):
    """GRADIEND edit with the best balance of female and male name probabilities (BPI)."""

    criterion = "bpi"
    label = "GRADIEND-BPI"
    aliases = ("gradiend",)

    @classmethod
    def stands_for(cls, bias_type: str) -> tuple[str, ...]:
        """In a race or religion run, `gradiend` / `gradiend-bpi` are the type's three pair GRADIENDs (their
        BalancedBS is the pairs' counterpart of BPI; pair_method.py)."""
        from methods.gradiend.pairs_data import pair_plugins

        return pair_plugins(bias_type)


class GradiendFPI(GradiendDebiaser):
    """GRADIEND edit towards female names (FPI)."""

    criterion = "fpi"
    label = "GRADIEND-FPI"


class GradiendMPI(GradiendDebiaser):
    """GRADIEND edit towards male names (MPI)."""

    criterion = "mpi"
    label = "GRADIEND-MPI"
