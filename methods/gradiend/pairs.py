"""Pair GRADIENDs for race and religion (SPEC-beyond §8): one 1-D GRADIEND per unordered pair of groups, trained,
evaluated and edited with GRADIEND's shared code; a pair is data (pairs_data.py, pairs_examples.py) and this module.

- Training (§8.3): `train.train_task` with `pair_task`: batches of one direction, directions alternating; validation
  rows = the pair's two classes' validation sentences (factual), r = Pearson(h, [class = the pair's first]); the
  sign normalisation makes the first class positive.
- Encoder evaluation (§8.4), on the test split: type 1 = each class's test sentences with its factual word masked
  (label +1 first class, -1 second, 0 third; the third class is its own kind), type 2 = the pair's test sentences
  with one random other token masked, type 3 = neutral corpus sentences (no class word of the type), one random
  token masked. Metrics: Cor_pair = Pearson(h, +-1) and Acc_pair = the fraction of the pair's rows on the right
  side of 0 (sign fixed by training: first class positive, no max over signs), Cor_Enc = Pearson(h, label) over
  all rows (third class, types 2, 3: 0), Acc_Enc = balanced accuracy of the three classes h >= 0.5 / <= -0.5 /
  between (y_true = labels), mean |h| per kind and the third group's signed mean h.
- Decoder grid (§8.5): the 15 x 16 grid + base; per point LMS_Dec (top-1 accuracy on the pair's test sentences,
  15 % of the tokens masked with seed 42, the group word never masked) and, per test sentence of the pair (both
  directions, at most `max_rows` per direction), P_g = sum over group g's words w (in the factual word's casing) of
  prod_j P(w_j at mask j) with [MASK] expanded to w's tokens; BalancedBS = LMS_Dec * mean_rows (1 - |P_a - P_b|)
  * min(P_a, P_b). The edit = argmax over grid and base (ties: the base, first in the table).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bench.data.paths import fingerprint
from bench.errors import DataError
from bench.files import atomic_dir, stable_hash
from methods.gradiend import figures
from methods.gradiend.decoder_eval import DecoderEvaluator, normalised_ids, run_grid
from methods.gradiend.encoder_eval import EncoderReport
from methods.gradiend.examples import collate, length_batches, length_cap
from methods.gradiend.model import Gradiend
from methods.gradiend.pairs_data import GroupData
from methods.gradiend.pairs_examples import PairTrainBatches, class_rows, group_items, lms_items, neutral_rows
from methods.gradiend.params import ParamSet
from methods.gradiend.train import TrainConfig, TrainTask, encode_batches, pearson, row_batches, train_task

PAIR_METRICS = ("Acc_pair", "Cor_pair", "Acc_Enc", "Cor_Enc", "mean|h| first", "mean|h| second", "mean|h| third",
                "mean h third", "mean|h| masked-neutral", "mean|h| neutral")  # fmt: skip


def pair_name(pair: tuple[str, str]) -> str:
    return f"{pair[0]}-{pair[1]}"


def describe(data: GroupData, pair: tuple[str, str]) -> str:
    sizes = ", ".join(f"{s} {len(data.pair_rows(pair, s))}" for s in ("train", "validation", "test"))
    return f"{data.bias_type} pair {pair_name(pair)} ({sizes}; {data.source})"


def pair_task(subject, data: GroupData, pair: tuple[str, str], cfg: TrainConfig) -> TrainTask:
    tok, roberta = subject.tokenizer, subject.is_roberta_style
    max_length = length_cap(subject, cfg.max_length)
    batches = PairTrainBatches(data.pair_rows(pair, "train"), tok, roberta=roberta, batch_size=cfg.batch_size,
                               max_length=max_length)  # fmt: skip
    rows = [r for r in class_rows(data, "validation", tok, roberta=roberta, max_length=max_length) if r.kind in pair]
    if cfg.eval_max_size is not None:
        per_class = int(cfg.eval_max_size) // 2
        rows = [r for c in pair for r in [r for r in rows if r.kind == c][:per_class]]
    if not {r.kind for r in rows} >= set(pair):
        raise DataError(f"pair GRADIEND {pair_name(pair)}: a class has no validation sentence")
    return TrainTask(batches, rows, pair[0], describe(data, pair))


def train_pair(subject, data: GroupData, pair: tuple[str, str], cfg: TrainConfig, ctx, out_dir=None, code=""):
    """(GRADIEND, summary, folder): trained once per subject, pair, data, configuration and code."""
    if subject.kind != "mlm":
        raise DataError("pair GRADIENDs are defined for masked LMs")
    if out_dir is None:
        key = stable_hash({"subject": subject.identity, "pair": list(pair), "train": cfg.result_key(),
                           "data": fingerprint(data.files), "code": code})  # fmt: skip
        out_dir = Path(ctx.cache_dir) / "gradiend" / "pair-train" / key
    gradiend, summary = train_task(subject, lambda: pair_task(subject, data, pair, cfg), describe(data, pair), cfg,
                                   out_dir, ctx)  # fmt: skip
    return gradiend, summary, Path(out_dir)


# ---- encoder evaluation ---------------------------------------------------------------------------------------
def encoder_rows(subject, data: GroupData, pair, split: str = "test", neutral_max: int = 1000, max_length: int = 48):
    tok, roberta = subject.tokenizer, subject.is_roberta_style
    max_length = length_cap(subject, max_length)
    rows = class_rows(data, split, tok, roberta=roberta, max_length=max_length)
    rows += neutral_rows(data.pair_rows(pair, split), data.neutral[:neutral_max], tok, max_length=max_length,
                         neutral_max_length=length_cap(subject, 128))  # fmt: skip
    return rows


def pair_metrics(frame: pd.DataFrame, pair) -> dict[str, float]:
    from sklearn.metrics import balanced_accuracy_score

    h, kind = frame["h"].to_numpy(float), frame["kind"].to_numpy()
    label = np.where(kind == pair[0], 1, np.where(kind == pair[1], -1, 0))
    in_pair = label != 0
    out = {"Acc_pair": float(((h[in_pair] >= 0) == (label[in_pair] > 0)).mean()) if in_pair.any() else float("nan"),
           "Cor_pair": pearson(h[in_pair], label[in_pair]),
           "Acc_Enc": float(balanced_accuracy_score(label, np.where(h >= 0.5, 1, np.where(h <= -0.5, -1, 0)))),
           "Cor_Enc": pearson(h, label)}  # fmt: skip
    third = [c for c in sorted(set(kind)) if c not in pair and c not in ("masked-neutral", "neutral")]
    for name, kinds in (("first", [pair[0]]), ("second", [pair[1]]), ("third", third),
                        ("masked-neutral", ["masked-neutral"]), ("neutral", ["neutral"])):  # fmt: skip
        sel = np.isin(kind, kinds)
        if sel.any():
            out[f"mean|h| {name}"] = float(np.abs(h[sel]).mean())
            if name == "third":
                out["mean h third"] = float(h[sel].mean())  # which side the third group leans to
    return out


def analyse_pair(subject, gradiend: Gradiend, data: GroupData, pair, *, split: str = "test", neutral_max: int = 1000,
                 batch_size: int = 32, exclude=None, bar=None) -> EncoderReport:  # fmt: skip
    from methods.gradiend.params import DEFAULT_EXCLUDE

    params = ParamSet.select(subject.model, DEFAULT_EXCLUDE if exclude is None else exclude)
    rows = encoder_rows(subject, data, pair, split, neutral_max)
    batches, order = row_batches(rows, subject.tokenizer.pad_token_id, batch_size, subject.device)
    progress = None if bar is None else (lambda it: bar(it, desc=f"encoder analysis {pair_name(pair)} ({split})"))
    h = encode_batches(subject, params, gradiend, batches, order, progress)
    frame = pd.DataFrame({"text": [r.text for r in rows], "kind": [r.kind for r in rows],
                          "type": [r.type for r in rows], "h": h})  # fmt: skip
    report = EncoderReport(frame, pair_metrics(frame, pair))
    return report


def encoder_table(report: EncoderReport, fmt: str = "github") -> str:
    from tabulate import tabulate

    rows = [[k, report.metrics[k]] for k in PAIR_METRICS if k in report.metrics]
    return tabulate(rows, headers=["metric", "value"], tablefmt=fmt, floatfmt=".3f")


# ---- decoder grid ---------------------------------------------------------------------------------------------
def balanced_bs(lms: float, p_a: np.ndarray, p_b: np.ndarray) -> float:
    return float(lms * np.mean((1 - np.abs(p_a - p_b)) * np.minimum(p_a, p_b)))


class PairEvaluator:
    """LMS_Dec, P(first), P(second) and BalancedBS of the subject's model as it is now (batched, inference mode)."""

    def __init__(self, subject, data: GroupData, pair, *, max_rows: int = 500, batch_size: int = 128, seed: int = 42):
        tok, roberta, device = subject.tokenizer, subject.is_roberta_style, subject.device
        rows = data.pair_rows(pair, "test")
        per_direction = [[r for r in rows if r.label == s][:max_rows] for s in (1, -1)]
        self.rows = per_direction[0] + per_direction[1]
        if not self.rows:
            raise DataError(f"pair GRADIEND {pair_name(pair)}: no test sentences for the decoder grid")
        self.subject, self.pair = subject, pair
        words = {c: data.class_words[c] for c in pair}
        max_length = length_cap(subject, 128)
        items, self.terms = group_items(self.rows, words, tok, roberta=roberta, max_length=max_length)
        groups = length_batches(items, batch_size)
        self.batches = [collate([items[i] for i in g], tok.pad_token_id, device) for g in groups]
        # where each item's masks land in the concatenated logits of all batches
        starts, offset = {}, 0
        for g in groups:
            for i in g:
                starts[i] = offset
                offset += len(items[i].positions)
        self.index = [(r, g, [starts[e] + j for j in range(len(ids))], ids) for r, g, e, ids in self.terms]
        self.lms_items = lms_items(self.rows, tok, seed=seed, max_length=max_length)
        self.lms_batches = [collate([self.lms_items[i] for i in g], tok.pad_token_id, device)
                            for g in length_batches(self.lms_items, batch_size)]  # fmt: skip
        self.norm = normalised_ids(tok).to(device)
        self.n_masked = sum(len(e.positions) for e in self.lms_items)

    lms = DecoderEvaluator.lms

    @property
    def causal(self) -> bool:
        return False

    @torch.inference_mode()
    def group_probabilities(self) -> np.ndarray:
        """(rows, 2) P_g per test sentence."""
        logp = torch.cat([torch.log_softmax(self.subject.mlm_logits(b.input_ids, b.attention_mask, b.rows, b.cols)
                                            .double(), -1) for b in self.batches]).cpu()  # fmt: skip
        p = np.zeros((len(self.rows), 2))
        for r, g, places, ids in self.index:
            p[r, g] += float(torch.exp(logp[places, ids].sum()))
        return p

    def evaluate(self) -> dict[str, float]:
        p = self.group_probabilities()
        lms = self.lms()
        a, b = self.pair
        return {f"P({a})": float(p[:, 0].mean()), f"P({b})": float(p[:, 1].mean()), "LMS_Dec": float(lms),
                "BalancedBS": balanced_bs(lms, p[:, 0], p[:, 1])}  # fmt: skip


def pair_grid(subject, gradiend: Gradiend, data: GroupData, pair, ctx, train_folder: Path, *, h_values, alpha_values,
              max_rows: int = 500, batch_size: int = 128, exclude=None, code: str = "") -> tuple[pd.DataFrame, Path]:  # fmt: skip
    """The grid table (cached per trained GRADIEND, grid and code) and its folder (grid.csv, heatmap.png)."""
    key = stable_hash({"train": Path(train_folder).name, "h": [float(h) for h in h_values],
                       "alpha": [float(a) for a in alpha_values], "max_rows": int(max_rows), "code": code})  # fmt: skip
    folder = Path(ctx.cache_dir) / "gradiend" / "pair-grid" / key
    if not (folder / "grid.csv").is_file():
        evaluator = PairEvaluator(subject, data, pair, max_rows=max_rows, batch_size=batch_size)
        result = run_grid(subject, gradiend, evaluator, h_values=h_values, alpha_values=alpha_values, exclude=exclude,
                          bar=ctx.bar)  # fmt: skip
        with atomic_dir(folder) as tmp:
            result.table.to_csv(tmp / "grid.csv", index=False)
            (tmp / "timings.json").write_text(json.dumps(result.timings, indent=2) + "\n")
            heatmap(result.table, tmp / "heatmap.png", title=f"GRADIEND {pair_name(pair)} - {subject.name}")
    return pd.read_csv(folder / "grid.csv"), folder


def select_point(table: pd.DataFrame) -> pd.Series:
    """The row with the largest BalancedBS (the base first in the table wins ties)."""
    return table.loc[table["BalancedBS"].idxmax()]


def heatmap(table: pd.DataFrame, path, title: str) -> Path:
    plt = figures.pyplot()
    grid = table[table["kind"] == "grid"]
    hs, alphas = sorted(grid["h"].unique()), sorted(grid["alpha"].unique())
    mat = grid.pivot_table(index="h", columns="alpha", values="BalancedBS").reindex(index=hs, columns=alphas).to_numpy()
    fig, ax = plt.subplots(figsize=(7, 5.2))
    im = ax.imshow(mat, aspect="auto", origin="lower", cmap="viridis")
    ax.set_xticks(range(len(alphas)), [f"{a:g}" for a in alphas], rotation=90, fontsize=7)
    ax.set_yticks(range(len(hs)), [f"{h:g}" for h in hs], fontsize=7)
    ax.set_xlabel("alpha")
    ax.set_ylabel("h")
    best = select_point(table)
    if best["kind"] == "grid":
        ax.scatter([alphas.index(best["alpha"])], [hs.index(best["h"])], s=120, facecolors="none", edgecolors="red")
    base = table[table["kind"] == "base"].iloc[0]
    ax.set_title(f"BalancedBS (base {base['BalancedBS']:.3g}, best {best['BalancedBS']:.3g})")
    fig.colorbar(im, ax=ax, fraction=0.046)
    return figures.save(fig, title, path, dpi=110)
