"""Pair GRADIENDs (race, religion; SPEC-beyond §8) as `Debiaser`s: one plugin per unordered pair of groups.

| plugin | alias | label | pair (first class encoded positive) |
|---|---|---|---|
| gradiend-race-white-black | gradiend-race1 | GRADIEND RACE1 white/black | white, black |
| gradiend-race-white-asian | gradiend-race2 | GRADIEND RACE2 white/asian | white, asian |
| gradiend-race-black-asian | gradiend-race3 | GRADIEND RACE3 black/asian | black, asian |
| gradiend-religion-christian-muslim | gradiend-religion1 | GRADIEND RELIGION1 christian/muslim | christian, muslim |
| gradiend-religion-christian-jewish | gradiend-religion2 | GRADIEND RELIGION2 christian/jewish | christian, jewish |
| gradiend-religion-muslim-jewish | gradiend-religion3 | GRADIEND RELIGION3 muslim/jewish | muslim, jewish |

fit = train the pair's GRADIEND (methods.gradiend.pairs, the shared trainer) + its decoder grid + the argmax of
BalancedBS over grid and base; apply = the model with alpha * dec(h) added, as GRADIEND-BPI. The pairs of a type
share nothing but code (each its own data rows, training, grid and cache folders). Masked LMs only: a causal LM
gets an n/a cell (the paper trains its causal pair models with a filter that is a regex bug, SPEC-beyond §8.2,
and the race/religion causal targets have not been decided here). `gradiend` (= gradiend-bpi) in a race or
religion run stands for the type's three pairs (`GradiendBPI.stands_for`).
"""
from __future__ import annotations

from typing import ClassVar

import pandas as pd

from methods.gradiend.decoder_eval import ALPHA_VALUES, H_VALUES
from methods.gradiend.method import GradiendArtifact, GradiendDebiaser
from methods.gradiend.pairs_data import PAIRS, pair_plugins, plugin_name  # noqa: F401 - pair_plugins re-exported
from methods.gradiend.params import DEFAULT_EXCLUDE

# pair defaults on the synthetic world (SYNTHETIC_DEFAULTS of method.py, with the pairs' own step count: the
# reference trains at most 2,500 steps; its one seed per pair is kept for real models, 3 on the synthetic world)
PAIR_PAPER_DEFAULTS = {"seeds": (0,), "lr": 1e-5, "eps": 1e-8, "eval_every": 250, "max_steps": 2500}
PAIR_SYNTHETIC_DEFAULTS = {"seeds": (0, 1, 2), "lr": 1e-2, "eps": 1e-4, "eval_every": 50, "max_steps": 300}


class GradiendPair(GradiendDebiaser):
    """Shared implementation; a subclass names its bias type and pair."""

    bias_type: ClassVar[str] = ""
    pair: ClassVar[tuple[str, str]] = ("", "")
    criterion = "balancedbs"
    model_kinds = frozenset({"mlm"})
    fit_family = ""
    quick: ClassVar[dict] = {
        "seeds": [0], "max_steps": 20, "eval_every": 10, "lr": 1e-2, "eps": 1e-4, "max_rows": 40,
        "h_values": [-1.0, 1.0], "alpha_values": [-0.05, 0.05],
    }  # fmt: skip
    bounds: ClassVar[dict] = {**GradiendDebiaser.bounds, "max_rows": (1, None)}

    def __init__(self, seeds=None, lr=None, eps=None, weight_decay=1e-2, batch_size=32, max_length=48, max_steps=None,
                 eval_every=None, eval_max_size=500, eval_batch_size=32, exclude=DEFAULT_EXCLUDE,
                 h_values=H_VALUES, alpha_values=ALPHA_VALUES, max_rows=500, grid_batch_size=128, fused=None):  # fmt: skip
        self.seeds, self.lr, self.eps, self.weight_decay = seeds, lr, eps, weight_decay
        self.batch_size, self.max_length, self.max_steps, self.eval_every = batch_size, max_length, max_steps, eval_every
        self.eval_max_size, self.eval_batch_size, self.exclude = eval_max_size, eval_batch_size, exclude
        self.h_values, self.alpha_values, self.max_rows = h_values, alpha_values, max_rows
        self.grid_batch_size, self.fused = grid_batch_size, fused
        # not options of a pair GRADIEND (the full default parameter set, the model's dtype, masked LMs only)
        self.layers = self.dtype = self.name_prompt = self.lms_max_sentences = None

    def resolved(self, subject) -> dict:
        defaults = PAIR_SYNTHETIC_DEFAULTS if subject.meta.get("synthetic") else PAIR_PAPER_DEFAULTS
        return {k: (defaults[k] if getattr(self, k) is None else getattr(self, k)) for k in defaults}

    def data_files(self, ctx) -> list:
        from methods.gradiend.pairs_data import data_files

        return data_files(ctx.data_dir, self.bias_type) if ctx.data_dir else []

    def trained(self, subject, ctx, data=None):
        from methods.gradiend.pairs import train_pair
        from methods.gradiend.pairs_data import load
        from methods.gradiend.stages import PAIR_MODULES, code_version

        data = data or load(ctx.data_dir, self.bias_type)
        return train_pair(subject, data, self.pair, self.train_config(subject), ctx, code=code_version(PAIR_MODULES))

    def grid(self, subject, gradiend, data, ctx, train_folder):
        from methods.gradiend.pairs import pair_grid
        from methods.gradiend.stages import PAIR_MODULES, code_version

        return pair_grid(subject, gradiend, data, self.pair, ctx, train_folder, h_values=self.h_values,
                         alpha_values=self.alpha_values, max_rows=int(self.max_rows),
                         batch_size=int(self.grid_batch_size), exclude=self.exclude, code=code_version(PAIR_MODULES))  # fmt: skip

    def fit(self, subject, ctx) -> GradiendArtifact:
        from methods.gradiend.decoder_eval import edit_delta
        from methods.gradiend.pairs import select_point
        from methods.gradiend.pairs_data import load
        from methods.gradiend.params import ParamSet

        data = load(ctx.data_dir, self.bias_type)
        gradiend, summary, train_folder = self.trained(subject, ctx, data)
        table, grid_folder = self.grid(subject, gradiend, data, ctx, train_folder)
        chosen = select_point(table)
        h, alpha = float(chosen["h"]), float(chosen["alpha"])
        params = ParamSet.select(subject.model, self.exclude)
        info = {"train": summary, "selected": {k: (v if isinstance(v, str) else float(v)) for k, v in chosen.items()},
                "train_folder": str(train_folder), "grid_folder": str(grid_folder)}  # fmt: skip
        return GradiendArtifact(self.criterion, h, alpha, params.signature(), edit_delta(gradiend, h, alpha).cpu(),
                                pd.DataFrame(table), info)  # fmt: skip


def _pair_class(bias_type: str, index: int) -> type:
    a, b = PAIRS[bias_type][index]
    tag = f"{bias_type.upper()}{index + 1}"
    doc = f"GRADIEND of the {bias_type} pair {a}/{b} ({tag}): the BalancedBS-selected edit of its decoder grid."
    return type(f"Gradiend{bias_type.capitalize()}{a.capitalize()}{b.capitalize()}", (GradiendPair,), {
        "__doc__": doc, "__module__": __name__, "bias_type": bias_type, "pair": (a, b),
        "bias_types": frozenset({bias_type}), "label": f"GRADIEND {tag} {a}/{b}",
        "aliases": (f"gradiend-{bias_type}{index + 1}",),
    })  # fmt: skip


GradiendRaceWhiteBlack = _pair_class("race", 0)
GradiendRaceWhiteAsian = _pair_class("race", 1)
GradiendRaceBlackAsian = _pair_class("race", 2)
GradiendReligionChristianMuslim = _pair_class("religion", 0)
GradiendReligionChristianJewish = _pair_class("religion", 1)
GradiendReligionMuslimJewish = _pair_class("religion", 2)
PAIR_PLUGINS = {plugin_name(c.bias_type, c.pair): c for c in (
    GradiendRaceWhiteBlack, GradiendRaceWhiteAsian, GradiendRaceBlackAsian, GradiendReligionChristianMuslim,
    GradiendReligionChristianJewish, GradiendReligionMuslimJewish)}  # fmt: skip
