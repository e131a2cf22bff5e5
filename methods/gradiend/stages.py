"""GRADIEND's three stages, one function each (SPEC §1): training, the decoder grid, the selection of an edit.

- `train_stage`: train the GRADIEND for every seed and keep the run with the best validation correlation
  (methods.gradiend.train), into a folder of the caller's or the cache's `gradiend/train/<key>` (keyed by the
  subject's identity, the data files, the training configuration and the code). Resumable.
- `grid_stage`: the (h, alpha) grid of weight edits (methods.gradiend.decoder_eval), evaluated once per trained
  GRADIEND and grid configuration into the cache's `gradiend/grid/<key>`; `evaluate_grid` and `write_grid` are
  its two halves for a folder of the caller's.
- `select_edit`: the grid point with the largest BPI / FPI / MPI and its edit alpha * dec(h).

`GradiendDebiaser.fit` runs the three in turn (the three variants share one training and one grid through the
cache); `bench gradiend train|decoder` (methods.gradiend.cli) runs the first two one at a time.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from bench.data.paths import fingerprint
from bench.files import atomic_dir, stable_hash
from methods.gradiend.data import GradiendData
from methods.gradiend.decoder_eval import (ALPHA_VALUES, H_VALUES, DecoderEvaluator, GridResult, edit_delta, heatmap,
                                           run_grid, select, selection_table)  # fmt: skip
from methods.gradiend.model import Gradiend
from methods.gradiend.params import DEFAULT_EXCLUDE, ParamSet
from methods.gradiend.train import TrainConfig, train

_RESULT_MODULES = ("data", "examples", "examples_causal", "example_sets", "gradients", "model", "params", "train",
                   "decoder_eval")  # fmt: skip


PAIR_MODULES = _RESULT_MODULES + ("pairs_data", "pairs_examples", "pairs")  # a race / religion pair GRADIEND


def code_version(modules: tuple[str, ...] = _RESULT_MODULES) -> str:
    """Hash of the modules whose code decides a trained GRADIEND or a grid (part of the cache keys)."""
    h = hashlib.sha256()
    folder = Path(__file__).parent
    for name in modules:
        h.update((folder / f"{name}.py").read_bytes())
    return h.hexdigest()[:12]


@dataclass(frozen=True)
class GridConfig:
    h_values: tuple[float, ...] = H_VALUES
    alpha_values: tuple[float, ...] = ALPHA_VALUES
    lms_max_sentences: int = 10_000
    batch_size: int = 128  # models evaluated per forward pass: speed only
    exclude: tuple[str, ...] = DEFAULT_EXCLUDE  # decided by the trained GRADIEND (its training key has it)
    layers: tuple[int, ...] | None = None  # likewise
    name_prompt: str = "person"  # causal LMs: the GENTYPES prompt style (examples_causal.name_prompt)

    def result_key(self) -> dict:
        """What decides the grid's numbers besides the trained GRADIEND (part of the grid's cache key)."""
        key = {"h": [float(h) for h in self.h_values], "alpha": [float(a) for a in self.alpha_values],
               "lms_max_sentences": int(self.lms_max_sentences)}  # fmt: skip
        if self.name_prompt != "person":
            key["name_prompt"] = self.name_prompt
        return key


@dataclass(frozen=True)
class Edit:
    """The selected grid point and its weight edit alpha * dec(h) (flat, on the CPU)."""

    h: float
    alpha: float
    delta: torch.Tensor
    signature: list  # [name, shape] of the edited tensors


# ---- 1. training ---------------------------------------------------------------------------------------------


def train_stage(subject, data: GradiendData, cfg: TrainConfig, ctx, out_dir=None) -> tuple[Gradiend, dict, Path]:
    """(GRADIEND, training summary, folder): trained into `out_dir`, or once per subject, data, configuration and
    code into the cache; a finished training there is reused, an interrupted one resumed."""
    if out_dir is None:
        key = stable_hash({"subject": subject.identity, "train": cfg.result_key(), "data": fingerprint(data.files),
                           "code": code_version()})  # fmt: skip
        out_dir = Path(ctx.cache_dir) / "gradiend" / "train" / key
    gradiend, summary = train(subject, data, cfg, Path(out_dir), ctx)
    return gradiend, summary, Path(out_dir)


# ---- 2. the decoder grid -------------------------------------------------------------------------------------


def evaluate_grid(subject, gradiend: Gradiend, data: GradiendData, grid: GridConfig, bar=None) -> GridResult:
    """Every (h, alpha) edit of `grid` (and the base model) evaluated on `data`."""
    evaluator = DecoderEvaluator(subject, data, lms_max_sentences=grid.lms_max_sentences, batch_size=grid.batch_size,
                                 name_prompt=grid.name_prompt)  # fmt: skip
    return run_grid(subject, gradiend, evaluator, h_values=grid.h_values, alpha_values=grid.alpha_values,
                    exclude=grid.exclude, layers=grid.layers, bar=bar)  # fmt: skip


def write_grid(result: GridResult, folder: Path, title: str) -> None:
    """grid.csv, selection.md, timings.json and heatmap.png of `result` into `folder` (which exists)."""
    folder = Path(folder)
    result.table.to_csv(folder / "grid.csv", index=False)
    (folder / "selection.md").write_text(selection_table(result.table) + "\n")
    (folder / "timings.json").write_text(json.dumps(result.timings, indent=2) + "\n")
    heatmap(result.table, folder / "heatmap.png", title=title)


def grid_stage(subject, gradiend: Gradiend, data: GradiendData, grid: GridConfig, ctx,
               train_folder: Path) -> tuple[pd.DataFrame, Path]:  # fmt: skip
    """(grid table as stored, folder): evaluated once per trained GRADIEND (`train_folder`), grid and code."""
    key = stable_hash({"train": Path(train_folder).name, "grid": grid.result_key(), "code": code_version()})
    folder = Path(ctx.cache_dir) / "gradiend" / "grid" / key
    if not (folder / "grid.csv").is_file():
        result = evaluate_grid(subject, gradiend, data, grid, ctx.bar)
        with atomic_dir(folder) as tmp:
            write_grid(result, tmp, title=f"GRADIEND decoder grid - {subject.name}")
    return pd.read_csv(folder / "grid.csv"), folder


# ---- 3. selection --------------------------------------------------------------------------------------------


def select_edit(subject, gradiend: Gradiend, table: pd.DataFrame, criterion: str,
                exclude=DEFAULT_EXCLUDE, layers=None) -> Edit:  # fmt: skip
    """The grid point of `table` with the largest `criterion` (bpi, fpi or mpi) and its edit."""
    chosen = select(table)[criterion]
    h, alpha = float(chosen["h"]), float(chosen["alpha"])
    params = ParamSet.select(subject.model, exclude, layers)
    return Edit(h, alpha, edit_delta(gradiend, h, alpha).cpu(), params.signature())
