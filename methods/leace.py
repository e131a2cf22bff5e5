"""LEACE: least-squares concept erasure (Belrose et al. 2023), applied like INLP (SPEC §2.6, §2.3).

The eraser is EleutherAI's `concept-erasure` package (`concept_erasure.LeaceFitter`, default settings:
affine, shrinkage of the covariance, the covariance-trace constraint, svd_tol 0.01), fitted in float64; it is
not reimplemented here. LEACE gives the affine map x -> x - L R (x - b) (L = `proj_left` (d, k),
R = `proj_right` (k, d), b = the fitting data's mean) with the least squared change after which no linear
classifier can predict the concept better than a constant one.

fit: the sentences INLP uses (methods.bias_sentences: male / female / neutral sentences of the corpus, randomly
truncated), their mean-pooled last hidden states (bench.models.embeddings.sentence_embeddings, as INLP.fit), then
one LEACE fit.

Concept classes: **gender is binary, male vs female**; z is one column, 1 for female (the fork's label,
"female vs. not", on Bias-in-Bios, where everyone is M or F). Neutral sentences are not used by default: as a
third class they would also erase "mentions a gendered word at all" (a second direction, rank 2), which is
not the concept. `neutral_class=True` makes them a third class (one-hot z, rank 2), the closest analogue of
INLP's 3-class classifiers.

apply: every token's last hidden state h -> h - L R (h - b) (methods.projection.AffineErasure, a forward hook
on the encoder like INLP's), so the MLM head, the SEAT pooling and GLUE all see erased states. The map is
affine, so the mean of erased token states is the erased mean: sentence embeddings are erased exactly.

Bias-in-Bios (`bios_file`): the paper's fork fits LEACE on the first 100,000 Bias-in-Bios biographies. That
data set is not shipped (and cannot be downloaded here). Give your copy as `bios_file`, relative to the data
directory or an absolute path, in one of two formats:
  - JSON Lines (`.jsonl` / `.json`): one object per line, fields "text" and "gender" in {"M", "F"} (any case);
  - CSV (`.csv`, with a header row): columns "text" and "gender", same values.
The first `max_bios` rows are used (default 100,000, as the fork; `per_class`, `min_tokens`, `balance`
and `corpus` apply to the corpus sentences only). From the fork's `data/rlace/train.pickle`
(a list of dicts with "hard_text" and "g" in {"m", "f"}):
    with open("bios.jsonl", "w") as f:
        for d in pickle.load(open("train.pickle", "rb")):
            f.write(json.dumps({"text": d["hard_text"], "gender": d["g"].upper()}) + "\\n")

Differences from the fork (documented, deliberate):
- representation: mean-pooled last hidden state over all tokens (the space the hook erases, the same as
  INLP's), not `pooler_output` / the [CLS] state: the eraser is applied to every token's last hidden state,
  so it is fitted on (means of) those.
- causal LMs (GPT-2, Llama; SPEC-beyond §9.3): the fork embeds a right-padded batch and takes its last position,
  which is a pad for every sentence but the longest (a bug, not reproduced); here the mean-pooled last hidden
  state after the final norm, the LM head's input, where the eraser is applied to every token.
- without `bios_file`: the corpus sentences above instead of Bias-in-Bios (text_corpus/*.txt of the data
  directory; WikiText-2 on the shared data, the synthetic corpus in the synthetic world).

Race and religion (the run's `ctx.bias_type`; beyond the fork, whose LEACE is gender only): the concept is the
group, a multi-class one: the corpus sentences with attribute words of exactly one group of the type's triples
(`methods.bias_sentences.concept_examples`), z one-hot over the k groups (k = 3: rank k - 1 = 2 erased, after
which no linear classifier tells the groups apart better than a constant); `neutral_class=True` adds the
neutral sentences as one more class. `bios_file` is gender-only.

The artifact also reports what a logistic-regression probe (sklearn defaults, 70/30 stratified split,
random_state 0) reads from held-out embeddings before and after erasure (`probe_test_accuracy_before`,
`probe_test_accuracy`, `chance`); for the latter an eraser is fitted on the 70 % part only (an eraser fitted
on the held-out examples too makes a probe score them below chance).
"""
from __future__ import annotations

import time

import numpy as np
import torch

from bench.api import Debiaser
from bench.models.batching import optional_int
from bench.errors import DataError
from methods.bias_sentences import FEMALE, MALE, NEUTRAL, concept_data_files, concept_examples
from methods.projection import AffineErasure

FORK_BIOS = 100_000  # the fork fits on the first 100,000 biographies


def concept_matrix(labels: np.ndarray, neutral_class: bool = False) -> np.ndarray:
    """z for the fitter: one column, 1 for female (binary), or one-hot over (male, female, neutral)."""
    labels = np.asarray(labels)
    if not neutral_class:
        if np.any(labels == NEUTRAL):
            raise ValueError("neutral labels given to a binary (male vs female) concept")
        return (labels == FEMALE).astype(np.float64)[:, None]
    return np.stack([labels == c for c in (MALE, FEMALE, NEUTRAL)], axis=1).astype(np.float64)


def group_concept_matrix(labels: np.ndarray) -> np.ndarray:
    """z for a multi-class concept (race / religion groups, maybe NEUTRAL): one-hot over the sorted labels."""
    labels = np.asarray(labels)
    return np.stack([labels == c for c in np.unique(labels)], axis=1).astype(np.float64)


def fit_eraser(x: np.ndarray, labels: np.ndarray, neutral_class: bool = False, multi_class: bool = False):
    """concept_erasure.LeaceEraser fitted in float64 on embeddings x (n, d) and class labels (gender labels, or
    with `multi_class` any labels, one-hot)."""
    from concept_erasure import LeaceFitter

    x = torch.as_tensor(np.asarray(x, dtype=np.float64))
    z = torch.as_tensor(group_concept_matrix(labels) if multi_class else concept_matrix(labels, neutral_class))
    return LeaceFitter.fit(x, z).eraser


def eraser_transform(artifact: dict) -> AffineErasure:
    return AffineErasure(artifact["proj_left"], artifact["proj_right"], artifact["bias"])


def probe_accuracy(x_train, y_train, x_test, y_test) -> float:
    from sklearn.linear_model import LogisticRegression

    return float(LogisticRegression(max_iter=5000).fit(x_train, y_train).score(x_test, y_test))


class LEACE(Debiaser):
    label = "LEACE"
    group = 2
    changes = "representation"
    quick = {"per_class": 150}
    bias_types = frozenset({"gender", "race", "religion"})
    model_kinds = frozenset({"mlm", "clm"})
    bounds = {"per_class": (1, None), "min_tokens": (0, None), "batch_size": (1, None), "max_length": (1, None),
              "max_bios": (1, None)}  # fmt: skip

    def __init__(
        self, per_class: int = 10000, min_tokens: int = 5, balance: bool = True, corpus: str | None = None,
        neutral_class: bool = False, bios_file: str | None = None, max_bios: int | None = FORK_BIOS,
        batch_size: int | None = None, max_length: int | None = None,
    ):  # fmt: skip
        self.per_class = per_class
        self.min_tokens = min_tokens
        self.balance = balance
        self.corpus = corpus
        self.neutral_class = neutral_class
        self.bios_file = bios_file
        self.max_bios = optional_int(max_bios)
        self.batch_size = optional_int(batch_size)
        self.max_length = max_length

    def data_files(self, ctx) -> list:
        return concept_data_files(ctx, self.bios_file, self.corpus)

    def examples(self, ctx) -> tuple[list[str], np.ndarray, dict]:
        """The texts, their labels (MALE / FEMALE / NEUTRAL) and the class counts the eraser is fitted on."""
        return concept_examples(ctx, "LEACE", bios_file=self.bios_file, max_bios=self.max_bios, corpus=self.corpus,
                                per_class=self.per_class, min_tokens=self.min_tokens, balance=self.balance,
                                neutral=self.neutral_class)  # fmt: skip

    def fit(self, subject, ctx):
        from sklearn.model_selection import train_test_split

        from bench.models.embeddings import sentence_embeddings

        t0 = time.perf_counter()
        texts, labels, counts = self.examples(ctx)
        x = sentence_embeddings(subject, texts, batch_size=self.batch_size, max_length=self.max_length, ctx=ctx)
        x = x.numpy().astype(np.float64)
        t_embed = time.perf_counter() - t0

        multi = ctx.bias_type != "gender"
        eraser = fit_eraser(x, labels, self.neutral_class, multi)
        left, right = eraser.proj_left.to(torch.float64), eraser.proj_right.to(torch.float64)
        if not bool(torch.any(left != 0)):
            raise DataError(f"LEACE found no linear {getattr(ctx, 'bias_type', 'gender')} information to erase in "
                            f"the embeddings ({counts})")
        bias = eraser.bias.to(torch.float64)
        x_erased = eraser(torch.as_tensor(x)).numpy()

        # What a fresh linear probe reads on held-out examples before and after erasure. The eraser for this
        # is refitted on the training part only: held-out examples inside the eraser's own fit would be scored
        # below chance (it makes the class means equal over all examples, so those of the training part
        # become the mirror image of those of the held-out part).
        tr, te = train_test_split(np.arange(len(labels)), test_size=0.3, random_state=0, stratify=labels)
        held_out = fit_eraser(x[tr], labels[tr], self.neutral_class, multi)
        x_tr, x_te = (held_out(torch.as_tensor(x[i])).numpy() for i in (tr, te))
        chance = float(np.bincount(labels[te] - labels.min()).max() / len(te))
        return {
            "proj_left": left.contiguous(),
            "proj_right": right.contiguous(),
            "bias": bias.contiguous(),
            "probe_test_accuracy_before": probe_accuracy(x[tr], labels[tr], x[te], labels[te]),
            "probe_test_accuracy": probe_accuracy(x_tr, labels[tr], x_te, labels[te]),
            "chance": chance,
            "counts": counts,
            "source": "bios_file" if self.bios_file is not None else "corpus",
            "rank": int(torch.linalg.matrix_rank(left @ right).item()),
            "hidden_size": int(x.shape[1]),
            "mean_squared_change": float(np.mean(np.sum((x_erased - x) ** 2, axis=1))),
            "embed_seconds": t_embed,
            "fit_seconds": time.perf_counter() - t0,
        }

    def apply(self, subject, artifact):
        return subject.with_transform(eraser_transform(artifact))
