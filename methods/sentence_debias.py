"""SentenceDebias (Liang et al. 2020) as bias-bench runs it (SPEC §2.4).

fit: counterfactual (male, female) sentence pairs from the corpus (one attribute pair swapped at a time,
methods.bias_sentences), both sides embedded (mean over the attention mask of the last hidden state,
max_length 128) and L2-normalised; each pair is centred on its own mean and PCA over all centred vectors
gives the bias subspace (the first principal component by default).

apply: every token's last hidden state h -> h - (h·v) v (v unit), a forward hook on the encoder output, so
the MLM head, the SEAT pooling and GLUE all see it.

Differences from bias-bench (documented): corpus = text_corpus/*.txt (WikiText-2 here, not Wikipedia-2.5),
split without nltk; bias-bench drops the last incomplete batch of 32 pairs, all pairs are used here.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from bench.api import Debiaser
from bench.batching import optional_int
from bench.errors import DataError
from methods.bias_sentences import corpus_data_files, corpus_sentences, counterfactual_pairs, load_swapper
from methods.projection import SubspaceRemoval

MIN_PAIRS = 4


def bias_subspace(male: np.ndarray, female: np.ndarray, n_components: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Orthonormal basis (d, k) of the bias subspace and the PCA explained-variance ratios.

    male[i], female[i] are the embeddings of the two sides of pair i; each pair is centred on its mean
    (giving ±(male - female)/2) and PCA runs on all 2n centred vectors.
    """
    from sklearn.decomposition import PCA

    male = np.asarray(male, dtype=np.float64)
    female = np.asarray(female, dtype=np.float64)
    if male.shape != female.shape or male.ndim != 2:
        raise ValueError(f"paired embeddings must have the same (n, d) shape, got {male.shape} and {female.shape}")
    mean = (male + female) / 2.0
    centred = np.concatenate([male - mean, female - mean], axis=0)
    pca = PCA(n_components=n_components, svd_solver="full").fit(centred)
    return pca.components_.T.copy(), pca.explained_variance_ratio_.copy()


class SentenceDebias(Debiaser):
    label = "SentenceDebias"
    group = 2
    changes = "representation"
    quick = {"max_pairs": 300}
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

    def pairs(self, ctx) -> list[tuple[str, str]]:
        from bench.data import text_corpus

        swapper = load_swapper(ctx.data_dir)
        sentences = corpus_sentences(text_corpus(ctx.data_dir, self.corpus))
        pairs = counterfactual_pairs(sentences, swapper, lowercase=self.lowercase, max_pairs=self.max_pairs)
        if len(pairs) < MIN_PAIRS:
            raise DataError(
                f"SentenceDebias needs at least {MIN_PAIRS} sentences with a gender attribute word in "
                f"text_corpus/ of {ctx.data_dir}; found {len(pairs)}"
            )
        return pairs

    def fit(self, subject, ctx):
        from bench.embeddings import sentence_embeddings

        t0 = time.perf_counter()
        pairs = self.pairs(ctx)
        n = len(pairs)
        emb = sentence_embeddings(subject, [m for m, _ in pairs] + [f for _, f in pairs],
                                  batch_size=self.batch_size, max_length=self.max_length, ctx=ctx)  # fmt: skip
        emb = torch.nn.functional.normalize(emb.double(), dim=-1).numpy()
        basis, ratio = bias_subspace(emb[:n], emb[n:], self.n_components)
        return {
            "basis": torch.tensor(basis, dtype=torch.float32),
            "explained_variance_ratio": ratio.tolist(),
            "n_pairs": n,
            "hidden_size": int(basis.shape[0]),
            "fit_seconds": time.perf_counter() - t0,
        }

    def apply(self, subject, artifact):
        return subject.with_transform(SubspaceRemoval(artifact["basis"]))
