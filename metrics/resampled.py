"""Task metrics on every bootstrap resample at once, from per-resample sums (GLUE and SuperGLUE, SPEC §3.4).

Each metric is written as per-item features whose sums over a resample determine it (confusion counts,
moments), so 1,000 resamples of a whole validation set cost a few array reductions (one matrix product of the
features with the resamples' draw counts) instead of 1,000 scikit-learn calls; the tests check them against
scikit-learn and scipy. Metrics: accuracy, F1 of the positive class, Matthews correlation, Pearson correlation,
macro-F1 and "accuracy + macro-F1" (SuperGLUE CB), and the grouped MultiRC metrics F1a / EM over questions
(`groups`: an item is a question with all its answer rows).
"""
from __future__ import annotations

import numpy as np

GROUPED_METRICS = ("f1a", "em", "f1a_em")  # need `groups` (MultiRC: one group per question)


def _class_counts(y: np.ndarray, pred: np.ndarray, num_labels: int) -> np.ndarray:
    """Per class c: [pred == c and y == c], [pred == c], [y == c]. Shape (3K, n)."""
    classes = np.arange(num_labels)[:, None]
    p, t = pred[None] == classes, y[None] == classes
    return np.concatenate([p & t, p, t]).astype(np.float64)


def _features(metric: str, y: np.ndarray, pred: np.ndarray, num_labels: int, groups: np.ndarray | None = None) -> np.ndarray:
    """Per-item quantities whose sums over a resample determine the metric. Shape (F, n_items); an item is an
    example, or a group of rows (MultiRC: a question with its answers) for the grouped metrics."""
    if metric in GROUPED_METRICS:
        if groups is None:
            raise ValueError(f"metric {metric!r} needs groups")
        g = int(groups.max()) + 1 if len(groups) else 0
        p, t = pred == 1, y == 1
        per_group = lambda w: np.bincount(groups, weights=w.astype(np.float64), minlength=g)  # noqa: E731
        wrong = per_group(pred != y)
        return np.stack([per_group(p & t), per_group(p), per_group(t), (wrong == 0).astype(np.float64)])
    if metric == "accuracy":
        return (pred == y)[None].astype(np.float64)
    if metric == "f1":
        p, t = pred == 1, y == 1
        return np.stack([p & t, p, t]).astype(np.float64)
    if metric == "macro_f1":
        return _class_counts(y, pred, num_labels)
    if metric == "acc_macro_f1":
        return np.concatenate([(pred == y)[None].astype(np.float64), _class_counts(y, pred, num_labels)])
    if metric == "mcc":
        classes = np.arange(num_labels)
        return np.concatenate([(pred == y)[None], y[None] == classes[:, None], pred[None] == classes[:, None]]).astype(np.float64)
    if metric == "pearson":
        x, t = pred.astype(np.float64), y.astype(np.float64)
        x, t = x - x.mean(), t - t.mean()  # shift invariance; keeps the moment formula well conditioned
        return np.stack([x, t, x * x, t * t, x * t])
    raise ValueError(f"unknown task metric {metric!r}")


def _binary_f1(tp: np.ndarray, p: np.ndarray, t: np.ndarray) -> np.ndarray:
    """scikit-learn's F1 2TP / (2TP + FP + FN) = 2TP / (P + T); 0 when there are no positive labels or predictions."""
    denom = p + t
    return np.where(denom > 0, 2.0 * tp / np.where(denom > 0, denom, 1.0), 0.0)


def _macro_f1(s: np.ndarray) -> np.ndarray:
    """scikit-learn's f1_score(average="macro"): the mean of per-class F1 over the classes that occur in the labels
    or the predictions of the resample (a class absent from both is not averaged)."""
    k = s.shape[0] // 3
    tp, p, t = s[:k], s[k : 2 * k], s[2 * k :]
    present = (p + t) > 0
    f1 = _binary_f1(tp, p, t)
    return np.where(present.any(0), (f1 * present).sum(0) / np.maximum(present.sum(0), 1), 0.0)


def _from_sums(metric: str, s: np.ndarray, n: int) -> np.ndarray:
    """The metric from the sums over each resample (s has shape (F, R)); n items drawn per resample."""
    with np.errstate(divide="ignore", invalid="ignore"):
        if metric == "accuracy":
            return s[0] / n
        if metric == "f1":  # scikit-learn: 0 when there are no positive labels or predictions
            return _binary_f1(s[0], s[1], s[2])
        if metric == "macro_f1":
            return _macro_f1(s)
        if metric == "acc_macro_f1":  # SuperGLUE CB: mean of accuracy and macro-F1
            return (s[0] / n + _macro_f1(s[1:])) / 2.0
        if metric == "f1a":  # MultiRC: binary F1 over all answer rows of the drawn questions
            return _binary_f1(s[0], s[1], s[2])
        if metric == "em":  # MultiRC: share of questions with every answer right
            return s[3] / n
        if metric == "f1a_em":
            return (_binary_f1(s[0], s[1], s[2]) + s[3] / n) / 2.0
        if metric == "mcc":  # scikit-learn's K-class formula; 0 when either marginal is constant
            k = (s.shape[0] - 1) // 2
            correct, t, p = s[0], s[1 : 1 + k], s[1 + k :]
            cov_ytyp = correct * n - (t * p).sum(0)
            cov_ypyp = n * n - (p * p).sum(0)
            cov_ytyt = n * n - (t * t).sum(0)
            prod = cov_ypyp * cov_ytyt
            return np.where(prod > 0, cov_ytyp / np.sqrt(np.where(prod > 0, prod, 1.0)), 0.0)
        if metric == "pearson":  # nan for a constant prediction, as scipy
            sx, sy, sxx, syy, sxy = s
            cov = sxy - sx * sy / n
            var = (sxx - sx * sx / n) * (syy - sy * sy / n)
            return np.where(var > 0, cov / np.sqrt(np.where(var > 0, var, 1.0)), np.nan)
    raise ValueError(f"unknown task metric {metric!r}")


_CHUNK = 1 << 23  # resample x item counts held at once (64 MB of float64)


def sums_over_resamples(flat: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Sums of every feature row over every resample: flat (F, n), idx (R, draws) -> (F, R).

    A resample is summarised by how often it draws each item (a row of counts), so all sums are one matrix
    product features (F, n) @ counts (n, R), in chunks of resamples."""
    f, n = flat.shape
    idx = np.asarray(idx)
    resamples = idx.shape[0]
    sums = np.empty((f, resamples))
    step = max(1, _CHUNK // max(1, n))
    for a in range(0, resamples, step):
        block = idx[a : a + step]
        r = block.shape[0]
        cells = (np.arange(r)[:, None] * n + block).ravel()
        counts = np.bincount(cells, minlength=r * n).reshape(r, n).astype(np.float64)
        sums[:, a : a + r] = flat @ counts.T
    return sums


def metric_over_resamples(metric: str, y: np.ndarray, preds: np.ndarray, idx: np.ndarray, num_labels: int = 2,
                          groups: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """Metric of every seed's predictions on every resample: preds (S, rows), idx (R, items) -> (S, R).
    Items are rows, or groups of rows (`groups`, for the grouped metrics)."""
    preds = np.atleast_2d(preds)
    feats = np.stack([_features(metric, y, p, num_labels, groups) for p in preds])  # (S, F, n)
    seeds, f, n = feats.shape
    idx = np.asarray(idx)
    sums = sums_over_resamples(feats.reshape(seeds * f, n), idx).reshape(seeds, f, -1)
    return np.stack([_from_sums(metric, sums[s], idx.shape[1]) for s in range(seeds)])
