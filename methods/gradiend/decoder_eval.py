"""Decoder-side evaluation (SPEC §1.7): the (h, alpha) grid of weight edits theta' = theta + alpha * dec(h).

Per edited model (and the unedited base, reported as h = alpha = 0):
  LMS_Dec    MLM top-1 accuracy on the first `lms_max_sentences` GENEUTRAL sentences, each with
             max(1, floor(0.15 L)) of its L non-special tokens masked (one seeded draw for all models;
             special tokens are never masked, SPEC §0.6); a prediction counts when its decoded string equals
             the original's, ignoring case. Micro-average over masked tokens.
  P(M), P(F) on GENTYPES ([NAME] -> mask): sum over vocabulary tokens that are single-token NAMExtend
             names (lower-cased, without a leading `Ġ`) of softmax * prob_M (names of gender M) / prob_F
             (names of gender F); mean over templates.
  BPI = LMS_Dec * mean_t (1 - |P_M - P_F|)(P_M + P_F);  FPI = LMS_Dec * mean_t (1 - P_M) P_F;
  MPI = LMS_Dec * mean_t (1 - P_F) P_M.
GRADIEND-BPI/-FPI/-MPI = the argmax of BPI/FPI/MPI over {base} and the grid.

Causal LMs (SPEC-beyond §9.1; the items come from examples_causal.py):
  LMS_Dec    1 / (1 + NLL), NLL = the mean next-token cross-entropy over every token of the first
             `lms_max_sentences` GENEUTRAL texts that has a token before it (the tokenizer's front tokens, e.g.
             Llama's BOS, included as context; GPT-2's first text token has none and is not scored): the logits at
             position p are scored against the token at p + 1. The reference (G2 and the gradiend package) scores
             them against the token at p itself (labels not shifted): a bug, not reproduced.
  P(M), P(F) the next-token softmax after "The person, who X, has the first name" for a GENTYPES template
             "My friend, [NAME], X." (any other template: its text before [NAME]; with name_prompt="before"
             every template's text before [NAME]), weighted as above (`ĠMary` and `Mary` both count).

The grid never copies the model: one flat copy of the original selected parameters is kept, every point
writes theta0 + alpha * dec(h) into the model's own tensors (one pass per tensor), and the end restores
theta0 bit for bit. Evaluation sets are tokenised, sorted by length and collated once.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from methods.gradiend import figures
from methods.gradiend.data import GradiendData
from methods.gradiend import example_sets
from methods.gradiend.examples import MaskedExample, collate, length_batches, length_cap
from methods.gradiend.model import Gradiend
from methods.gradiend.params import ParamSet

H_VALUES = (-10.0, -2.0, -1.0, -0.8, -0.6, -0.4, -0.2, 0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 2.0, 10.0)
ALPHA_VALUES = (-0.5, -0.1, -0.05, -0.01, -0.005, -0.001, -5e-4, -1e-4, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2, 0.1, 0.5)
CRITERIA = ("bpi", "fpi", "mpi")
COLUMNS = ["h", "alpha", "P(F)", "P(M)", "LMS_Dec", "BPI", "FPI", "MPI"]
LOGITS_PER_PASS = 1 << 26  # vocabulary logits one causal LMS_Dec pass holds (256 MB in float32)


def bounded(groups: list[list[int]], items: list[MaskedExample], max_positions: int) -> list[list[int]]:
    """`groups` split (in order) so that no group has more than `max_positions` positions (at least one item)."""
    out = []
    for group in groups:
        current, count = [], 0
        for i in group:
            size = len(items[i].positions)
            if current and count + size > max_positions:
                out.append(current)
                current, count = [], 0
            current.append(i)
            count += size
        out.append(current)
    return out


def vocab_strings(tokenizer) -> list[str]:
    return tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))


def normalised_ids(tokenizer) -> torch.Tensor:
    """Per vocabulary id, an id shared by all tokens that decode to the same string ignoring case (special
    tokens decode to nothing and get ids of their own, so they never match)."""
    texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))], skip_special_tokens=True)
    special = set(tokenizer.all_special_ids)
    seen: dict[str, int] = {}
    out = []
    for i, t in enumerate(texts):
        key = t.strip().lower()
        out.append(-1 - i if i in special or not key else seen.setdefault(key, i))
    return torch.tensor(out, dtype=torch.long)


def name_weights(tokenizer, data: GradiendData) -> torch.Tensor:
    """(vocab, 2) weights: column 0 prob_F of female NAMExtend names, column 1 prob_M of male ones."""
    by_name = {}
    for info in data.namextend:
        by_name.setdefault(info.name.lower(), info)
    w = torch.zeros(len(tokenizer), 2, dtype=torch.float64)
    for i, tok in enumerate(vocab_strings(tokenizer)):
        info = by_name.get(tok.lstrip("Ġ▁").lower()) if tok else None
        if info is None or i in tokenizer.all_special_ids:
            continue
        if info.gender == "F":
            w[i, 0] = info.prob_F
        else:
            w[i, 1] = info.prob_M
    return w


def point_metrics(lms: float, p_f: np.ndarray, p_m: np.ndarray) -> dict[str, float]:
    return {
        "P(F)": float(p_f.mean()), "P(M)": float(p_m.mean()), "LMS_Dec": float(lms),
        "BPI": float(lms * np.mean((1 - np.abs(p_m - p_f)) * (p_m + p_f))),
        "FPI": float(lms * np.mean((1 - p_m) * p_f)),
        "MPI": float(lms * np.mean((1 - p_f) * p_m)),
    }  # fmt: skip


class DecoderEvaluator:
    """LMS_Dec, P(F), P(M), BPI, FPI, MPI of the subject's model as it is now (batched, inference mode)."""

    def __init__(self, subject, data: GradiendData, *, lms_max_sentences: int = 10_000, batch_size: int = 128,
                 seed: int = 42, name_prompt: str = "person"):  # fmt: skip
        tok = subject.tokenizer
        self.subject, self.causal = subject, example_sets.is_causal(subject)
        device = subject.device
        self.lms_items = example_sets.lms_items(subject, data.geneutral[:lms_max_sentences], seed=seed,
                                                max_length=length_cap(subject, 512))  # fmt: skip
        self.type_items = example_sets.gentypes_items(subject, data.gentypes, max_length=length_cap(subject, 128),
                                                      prompt=name_prompt)  # fmt: skip
        lms_groups = length_batches(self.lms_items, batch_size)
        if self.causal:  # every token is a target: bound the logits a pass holds
            lms_groups = bounded(lms_groups, self.lms_items, LOGITS_PER_PASS // len(tok))
        self.lms_batches = [collate([self.lms_items[i] for i in g], tok.pad_token_id, device) for g in lms_groups]
        type_groups = length_batches(self.type_items, batch_size)
        self.type_batches = [collate([self.type_items[i] for i in g], tok.pad_token_id, device) for g in type_groups]
        self.type_order = np.array([i for g in type_groups for i in g], dtype=int)
        self.norm = None if self.causal else normalised_ids(tok).to(device)
        self.weights = name_weights(tok, data).to(device)
        if not bool((self.weights > 0).any()):
            from bench.errors import DataError

            raise DataError("no vocabulary token of this tokenizer is a NAMExtend name: P(F)/P(M) cannot be measured")
        self.n_masked = sum(len(e.positions) for e in self.lms_items)

    @torch.inference_mode()
    def lms(self) -> float:
        if self.causal:
            return 1.0 / (1.0 + self.nll())
        correct = 0
        for b in self.lms_batches:
            pred = self.subject.mlm_logits(b.input_ids, b.attention_mask, b.rows, b.cols).argmax(-1)
            correct += int((self.norm[pred] == self.norm[b.labels]).sum())
        return correct / max(1, self.n_masked)

    @torch.inference_mode()
    def nll(self) -> float:
        """Mean next-token cross-entropy over every target token of the LMS_Dec texts (causal LM)."""
        total = torch.zeros((), dtype=torch.float64, device=self.subject.device)
        for b in self.lms_batches:
            logits = self.subject.mlm_logits(b.input_ids, b.attention_mask, b.rows, b.cols)
            logits = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
            total += torch.nn.functional.cross_entropy(logits, b.labels, reduction="sum").double()
        return float(total) / max(1, self.n_masked)

    @torch.inference_mode()
    def name_probabilities(self) -> tuple[np.ndarray, np.ndarray]:
        """P(F) and P(M) per GENTYPES template (template order)."""
        parts = []
        for b in self.type_batches:
            logits = self.subject.mlm_logits(b.input_ids, b.attention_mask, b.rows, b.cols)
            parts.append(torch.softmax(logits.double(), -1) @ self.weights)
        p = torch.cat(parts).cpu().numpy()
        out = np.empty_like(p)
        out[self.type_order] = p
        return out[:, 0], out[:, 1]

    def evaluate(self) -> dict[str, float]:
        p_f, p_m = self.name_probabilities()
        return point_metrics(self.lms(), p_f, p_m)


class WeightEdit:
    """theta0 + alpha * dec(h) written into the model's selected tensors in place; `restore` puts theta0 back
    exactly (from a flat copy, not by subtracting). dec(h) is kept between calls with the same h (the grid
    runs 16 alphas per h), so an edit is two passes over n numbers instead of three, with the arithmetic of
    `edit_delta` unchanged (one more length-n buffer). dec(h) and the delta are in the GRADIEND's dtype (the
    model's, unless a lower-precision GRADIEND was trained), the sum in the model's."""

    def __init__(self, params: ParamSet):
        self.params = params
        self.original = params.flatten()
        self.delta, self.decoded, self.decoded_h = None, None, None

    def apply(self, gradiend: Gradiend, h: float, alpha: float) -> None:
        if self.decoded is None or self.decoded.dtype != gradiend.b_d.dtype:
            self.decoded, self.delta = torch.empty_like(gradiend.b_d), torch.empty_like(gradiend.b_d)
        if self.decoded_h != (id(gradiend), float(h)):
            self.decoded = gradiend.decode(h, out=self.decoded)
            self.decoded_h = (id(gradiend), float(h))
        torch.mul(self.decoded, float(alpha), out=self.delta)  # = edit_delta(gradiend, h, alpha)
        self.params.write_sum(self.original, self.delta)

    def restore(self) -> None:
        self.params.write(self.original)


def edit_delta(gradiend: Gradiend, h: float, alpha: float, out: torch.Tensor | None = None) -> torch.Tensor:
    """alpha * dec(h) as a flat vector (the same arithmetic for the grid and for `apply`)."""
    return gradiend.decode(h, out=out).mul_(float(alpha))


@dataclass
class GridResult:
    table: pd.DataFrame  # one row per point: kind ("base"/"grid"), h, alpha, P(F), P(M), LMS_Dec, BPI, FPI, MPI
    timings: dict[str, float] = field(default_factory=dict)  # seconds: "evaluate", "edit", "total"


def run_grid(subject, gradiend: Gradiend, evaluator: DecoderEvaluator, *, h_values=H_VALUES, alpha_values=ALPHA_VALUES,
             exclude=None, layers=None, bar=None) -> GridResult:  # fmt: skip
    from methods.gradiend.params import DEFAULT_EXCLUDE

    params = ParamSet.select(subject.model, DEFAULT_EXCLUDE if exclude is None else exclude, layers)
    if params.n != gradiend.n:
        raise ValueError(f"the GRADIEND has n={gradiend.n}, the model's parameter set n={params.n}")
    t_start = time.perf_counter()
    t_eval = t_edit = 0.0
    rows = []
    t0 = time.perf_counter()
    rows.append({"kind": "base", "h": 0.0, "alpha": 0.0, **evaluator.evaluate()})
    t_eval += time.perf_counter() - t0
    points = [(float(h), float(a)) for h in h_values for a in alpha_values]
    loop = points if bar is None else bar(points, desc="GRADIEND decoder grid")
    edit = WeightEdit(params)
    try:
        for h, a in loop:
            t0 = time.perf_counter()
            edit.apply(gradiend, h, a)
            t1 = time.perf_counter()
            rows.append({"kind": "grid", "h": h, "alpha": a, **evaluator.evaluate()})
            t_edit += t1 - t0
            t_eval += time.perf_counter() - t1
    finally:
        t0 = time.perf_counter()
        edit.restore()
        t_edit += time.perf_counter() - t0
    timings = {"evaluate": t_eval, "edit": t_edit, "total": time.perf_counter() - t_start}
    return GridResult(pd.DataFrame(rows), timings)


def select(table: pd.DataFrame) -> dict[str, pd.Series]:
    """The row with the largest BPI, FPI and MPI (base included; the first of equal values)."""
    return {c: table.loc[table[c.upper()].idxmax()] for c in CRITERIA}


def selection_table(table: pd.DataFrame, fmt: str = "github") -> str:
    """The paper's decoder table: base and the BPI/FPI/MPI selections with h, alpha, P(F), P(M), LMS_Dec,
    BPI, FPI, MPI."""
    from tabulate import tabulate

    chosen = select(table)
    base = table[table["kind"] == "base"].iloc[0]
    body = [["base"] + [base[c] for c in COLUMNS]]
    body += [[f"GRADIEND-{c.upper()}"] + [chosen[c][col] for col in COLUMNS] for c in CRITERIA]
    return tabulate(body, headers=["model"] + COLUMNS, tablefmt=fmt, floatfmt=".4g")


def heatmap(table: pd.DataFrame, path, title: str = "GRADIEND decoder grid") -> Path:
    """BPI, FPI and MPI over the (h, alpha) grid; the selected point of each is circled."""
    plt = figures.pyplot()
    grid = table[table["kind"] == "grid"]
    base = table[table["kind"] == "base"].iloc[0]
    hs = sorted(grid["h"].unique())
    alphas = sorted(grid["alpha"].unique())
    fig, axes = plt.subplots(1, 3, figsize=(17, 5.2))
    chosen = select(table)
    for ax, crit in zip(axes, CRITERIA):
        col = crit.upper()
        mat = grid.pivot_table(index="h", columns="alpha", values=col).reindex(index=hs, columns=alphas).to_numpy()
        im = ax.imshow(mat, aspect="auto", origin="lower", cmap="viridis")
        ax.set_xticks(range(len(alphas)), [f"{a:g}" for a in alphas], rotation=90, fontsize=7)
        ax.set_yticks(range(len(hs)), [f"{h:g}" for h in hs], fontsize=7)
        ax.set_xlabel("alpha")
        ax.set_ylabel("h")
        best = chosen[crit]
        if best["kind"] == "grid":
            ax.scatter([alphas.index(best["alpha"])], [hs.index(best["h"])], s=120, facecolors="none", edgecolors="red")
        ax.set_title(f"{col} (base {base[col]:.3g}, best {best[col]:.3g})")
        fig.colorbar(im, ax=ax, fraction=0.046)
    return figures.save(fig, title, path, dpi=110)
