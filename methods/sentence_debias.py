"""SentenceDebias (Liang et al. 2020) as bias-bench runs it (SPEC §2.4).

fit: counterfactual (male, female) sentence pairs from the corpus (one attribute pair swapped at a time,
methods.bias_sentences), both sides embedded (mean over the attention mask of the last hidden state,
max_length 128) and L2-normalised; each pair is centred on its own mean and PCA over all centred vectors
gives the bias subspace (the first principal component by default).

apply: every token's last hidden state h -> h - (h·v) v (v unit), a forward hook on the encoder output, so
the MLM head, the SEAT pooling and GLUE all see it.

Differences from bias-bench (documented): corpus = text_corpus/*.txt (WikiText-2 here, not Wikipedia-2.5),
split without nltk; bias-bench drops the last incomplete batch of 32 pairs, all pairs are used here.

Causal LMs (GPT-2, Llama; SPEC-beyond §9.3): the same, as the fork: attention-mask mean of the last hidden state
after the final norm (Llama's BOS included), the direction removed from every token's state before the LM head.

Race and religion (the run's `ctx.bias_type`), as bias-bench's `compute_race_subspace` /
`compute_religion_subspace`: for every sentence and attribute triple one of whose words occurs in it, the three
group versions of the sentence (`methods.bias_sentences.counterfactual_tuples`); each triple of embeddings is
centred on its own mean and the PCA runs on all centred vectors (3n of them); first component by default.
`max_pairs` caps the number of such tuples.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from bench.api import Debiaser
from bench.models.batching import optional_int
from bench.errors import DataError
from methods.bias_sentences import (corpus_data_files, corpus_sentences, counterfactual_pairs, counterfactual_tuples,
                                    load_group_swapper, load_swapper)
from methods.projection import SubspaceRemoval

MIN_PAIRS = 4


def bias_subspace(male: np.ndarray, female: np.ndarray, n_components: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Orthonormal basis (d, k) of the bias subspace and the PCA explained-variance ratios.

    male[i], female[i] are the embeddings of the two sides of pair i; each pair is centred on its mean
    (giving ±(male - female)/2) and PCA runs on all 2n centred vectors.
    """
    return group_bias_subspace([male, female], n_components)


def group_bias_subspace(versions, n_components: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """`bias_subspace` for k versions of each example (race / religion: k = 3): versions[g][i] is example i's
    embedding in group g's version; each example is centred on the mean of its k versions."""
    from sklearn.decomposition import PCA

    versions = [np.asarray(v, dtype=np.float64) for v in versions]
    if len({v.shape for v in versions}) != 1 or versions[0].ndim != 2:
        raise ValueError(f"grouped embeddings must have the same (n, d) shape, got {[v.shape for v in versions]}")
    mean = sum(versions) / float(len(versions))
    centred = np.concatenate([v - mean for v in versions], axis=0)
    pca = PCA(n_components=n_components, svd_solver="full").fit(centred)
    return pca.components_.T.copy(), pca.explained_variance_ratio_.copy()


class SentenceDebias(Debiaser):
    label = "SentenceDebias"
    group = 2
    changes = "representation"
    quick = {"max_pairs": 300}
    bias_types = frozenset({"gender", "race", "religion"})
    model_kinds = frozenset({"mlm", "clm"})
    bounds = {"n_components": (1, None), "max_pairs": (1, None), "batch_size": (1, None), "max_length": (1, None)}

    def __init__(
        self, n_components: int = 1, max_pairs: int | None = None, lowercase: bool = True, corpus: str | None = None,
        batch_size: int | None = None, max_length: int = 128,
    ):  # fmt: skip
        self.n_components = n_components
        self.max_pairs = max_pairs
        self.lowercase = lowercase
        self.corpus = corpus
        self.batch_size = optional_int(batch_size)
        self.max_length = max_length

    def data_files(self, ctx) -> list:
        return corpus_data_files(ctx, self.corpus)

    def pairs(self, ctx) -> list[tuple[str, ...]]:
        from bench.data.paths import text_corpus

        bias_type = ctx.bias_type
        sentences = corpus_sentences(text_corpus(ctx.data_dir, self.corpus))
        if bias_type == "gender":
            found = counterfactual_pairs(sentences, load_swapper(ctx.data_dir), lowercase=self.lowercase,
                                         max_pairs=self.max_pairs)  # fmt: skip
        else:
            found = counterfactual_tuples(sentences, load_group_swapper(ctx.data_dir, bias_type),
                                          lowercase=self.lowercase, max_tuples=self.max_pairs)  # fmt: skip
        if len(found) < MIN_PAIRS:
            raise DataError(
                f"SentenceDebias needs at least {MIN_PAIRS} sentences with a {bias_type} attribute word in "
                f"text_corpus/ of {ctx.data_dir}; found {len(found)}"
            )
        return found

    def fit(self, subject, ctx):
        from bench.models.embeddings import sentence_embeddings

        t0 = time.perf_counter()
        pairs = self.pairs(ctx)
        n, k = len(pairs), len(pairs[0])
        emb = sentence_embeddings(subject, [p[g] for g in range(k) for p in pairs],
                                  batch_size=self.batch_size, max_length=self.max_length, ctx=ctx)  # fmt: skip
        emb = torch.nn.functional.normalize(emb.double(), dim=-1).numpy()
        basis, ratio = group_bias_subspace([emb[g * n : (g + 1) * n] for g in range(k)], self.n_components)
        return {
            "basis": torch.tensor(basis, dtype=torch.float32),
            "explained_variance_ratio": ratio.tolist(),
            "n_pairs": n,
            "hidden_size": int(basis.shape[0]),
            "fit_seconds": time.perf_counter() - t0,
        }

    def apply(self, subject, artifact):
        return subject.with_transform(SubspaceRemoval(artifact["basis"]))
