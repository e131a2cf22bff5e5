"""Results rows shaped like the ones `bench run` writes (every field, the sub-metrics of StereoSet, SEAT and
CrowS-Pairs as the ci suite stores them, n/a rows, aggregates over seeds), in any number, for the table and
results-file tests and the report benchmark."""
from __future__ import annotations

import random

# (metric, sub-metric, n or None for an extra without CI), per metric in the runner's order
DOMAINS, WEAT = ("gender", "profession", "race", "religion", "overall"), ("6", "6b", "7", "7b", "8", "8b")
SUBMETRICS = (
    [("stereoset", f"{k}_{d}", 264) for d in DOMAINS for k in ("ss", "lms", "icat")]
    + [("stereoset", "lms", 642), ("stereoset", "icat", 642), ("seat", "seat", 1234)]
    + [("seat", f"{k}:sent-weat{t}", 232 if k == "d" else None) for k in ("d", "p") for t in WEAT]
    + [("crows", "crows", 200), ("crows", "crows_stereo", 200), ("crows", "crows_antistereo", 200),
       ("crows", "skipped", None), ("crows", "neutral", None)]
)  # fmt: skip
METHODS = (("base", "Base", 0), ("gradiend-bpi", "GRADIEND-BPI", 1), ("inlp", "INLP", 2), ("cda", "CDA", 2),
           ("dropout", "Dropout", 2), ("sentence-debias", "SentenceDebias", 2), ("leace", "LEACE", 2),
           ("self-debias", "SelfDebias", 2), ("gradiend-bpi+inlp", "GRADIEND-BPI + INLP", 3),
           ("cda+inlp", "CDA + INLP", 3))  # fmt: skip
VERSIONS = {"bench": "0.1.0", "python": "3.11.7", "torch": "2.13.0+cpu", "transformers": "5.25.0"}
CENTRE = {"ss": 60.0, "lms": 95.0, "icat": 70.0, "seat": 0.8, "d": 0.8, "p": 0.01, "crows": 60.0, "skipped": 0.0,
          "neutral": 1.0}  # fmt: skip


def row(model: str, method: str, label: str, group: int, metric: str, sub: str | None, n: int | None,
        value: float | None, seed: int | None = 0, **extra) -> dict:
    base = dict(model=model, method=method, label=label, group=group, metric=metric, submetric=sub, seed=seed,
                bias_type="gender", status="ok", value=value, ci_low=None, ci_high=None, n=None, resamples=None,
                delta=None, delta_low=None, delta_high=None, significant=None, runtime_s=0.2,
                config_hash="44136fa355b3678a", note="", versions=VERSIONS)  # fmt: skip
    if n is not None and value is not None:
        w = 2.0 if value > 5 else 0.05
        base.update(ci_low=value - w, ci_high=value + w, n=n, resamples=200)
        if method != "base":
            base.update(delta=value - 1.0, delta_low=value - 1.0 - w, delta_high=value - 1.0 + w,
                        significant=abs(value - 1.0) > w)  # fmt: skip
    return {**base, **extra}


def unit_rows(model: str, method: str, label: str, group: int, rng: random.Random, seed: int | None = 0,
              **extra) -> list[dict]:
    """The rows of one (model, method, seed): every sub-metric, or n/a rows for SelfDebias's SEAT/CrowS."""
    out = []
    for metric, sub, n in SUBMETRICS:
        if method == "self-debias" and metric != "stereoset":
            if not any(r["metric"] == metric for r in out):
                out.append(row(model, method, label, group, metric, None, None, None, seed, status="n/a",
                               note="self-debias has no embeddings", **extra))  # fmt: skip
            continue
        centre = CENTRE[sub.split("_")[0].split(":")[0]]
        out.append(row(model, method, label, group, metric, sub, n, centre + rng.uniform(-5, 5) * (centre > 5), seed,
                       **extra))  # fmt: skip
    return out


def make_rows(target: int, seed: int = 0) -> list[dict]:
    """At least `target` rows: models `m0000`, `m0001`, ... each with every method of METHODS."""
    rng = random.Random(seed)
    rows: list[dict] = []
    i = 0
    while len(rows) < target:
        for method, label, group in METHODS:
            rows += unit_rows(f"m{i:04d}", method, label, group, rng)
        i += 1
    return rows


def seed_rows(model: str = "m", seeds=(0, 1)) -> list[dict]:
    """Per-seed rows and their aggregate rows (seed null, `seeds`, `aggregate`) of a few methods."""
    rng = random.Random(1)
    rows = []
    for method, label, group in METHODS[:3]:
        for s in seeds:
            rows += unit_rows(model, method, label, group, rng, seed=s)
        rows += unit_rows(model, method, label, group, rng, seed=None, seeds=list(seeds), aggregate=True)
    return rows
