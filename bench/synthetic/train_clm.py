"""Training the world's tiny causal LM (`synthetic-clm`): next-token cross-entropy on the world's corpus.

The model is a GPT-2 (GPT2LMHeadModel) of the masked model's size: 3 layers, hidden 96, 4 heads, feed-forward
256, 128 learned positions, input and output embeddings tied. GPT-2 rather than Llama because its blocks are the
tiny BERT's (learned absolute positions, LayerNorm, GELU feed-forward, tied embeddings), so the two models of a
world differ in little but the attention's direction and the objective; it is also the causal model bias-bench
scores, and its initialisation (normal draws, one scaled group) is simple to reproduce machine-independently.

Its tokenizer is the world's word-level one (bench.synthetic.tokenizer.load_causal_tokenizer): [CLS] is its BOS
and [SEP] its EOS, so a training sequence is [CLS] line [SEP] (what the tokenizer writes with special tokens),
right-padded with [PAD] and labels -100 there. Every real token after [CLS] is a prediction target.

The loop is the core's (bench.models.mlm_training.train_loop) with the masked world's optimisation
(`TrainConfig.loop`: AdamW, weight decay on the weight matrices, linear warmup and decay, dropout off,
deterministic kernels on one thread); its batches are the masked world's length-bucketed epochs
(bench.synthetic.train), unmasked, and its loss the core's next-token cross-entropy (`causal_lm_loss`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from bench.models.mlm_training import causal_lm_loss, train_loop
from bench.synthetic.train import ModelSize, TrainConfig, encode_lines, length_bucketed_batches, pad_batch


@dataclass(frozen=True)
class CausalTrainConfig:
    steps: int = 1000
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 0.01
    warmup: float = 0.05

    loop = TrainConfig.loop  # the masked world's optimisation, from these fields


def gpt2_config(tokenizer, size: ModelSize = ModelSize()):
    """GPT-2 of the masked model's size over the world's vocabulary; BOS [CLS], EOS [SEP], pad [PAD]."""
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=size.hidden,
        n_layer=size.layers,
        n_head=size.heads,
        n_inner=size.intermediate,
        n_positions=size.max_position,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        architectures=["GPT2LMHeadModel"],
        dtype="float32",  # what a saved model's config records: the random control's config equals the trained one's
    )


def new_causal_model(config, seed: int):
    """A GPT2LMHeadModel with transformers' random initialisation (CPU-dependent, like the masked world's start:
    trained worlds are pinned for that reason); the global RNG is left untouched."""
    from transformers import GPT2LMHeadModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(config)
    return model.eval()


def random_causal_model(config, seed: int):
    """The random-weight control (`synthetic-clm:init=random`), the same on every machine.

    GPT-2's initialisation (weight matrices and embeddings ~ N(0, initializer_range), the residual output
    projections `c_proj` ~ N(0, initializer_range / sqrt(2 n_layer)), biases 0, LayerNorm 1/0), with the normal
    draws taken from numpy's PCG64 generator in float64 and rounded to float32 (as train.random_model does)."""
    import math

    import numpy as np

    model = new_causal_model(config, seed)
    rng = np.random.default_rng([seed, 0xC1A5])
    std = config.initializer_range
    with torch.no_grad():
        for name, p in model.named_parameters():  # the tied output embedding is listed once
            if p.ndim >= 2:
                scale = std / math.sqrt(2 * config.n_layer) if name.endswith("c_proj.weight") else std
                p.copy_(torch.from_numpy(rng.standard_normal(tuple(p.shape)) * scale))
            elif ".ln_" in f".{name}" and name.endswith(".weight"):
                p.fill_(1.0)
            else:
                p.zero_()
    return model.eval()


class CausalLineBatches:
    """The world's training batches for the core loop: length-bucketed epochs of `lines` as [CLS] line [SEP],
    right-padded, labels = the ids (-100 at padding); the order from one generator seeded by `seed`."""

    def __init__(self, tokenizer, lines: list[str], cfg: CausalTrainConfig, seed: int, model_config):
        self.tokenizer, self.cfg = tokenizer, cfg
        self.rows = encode_lines(tokenizer, lines, model_config.n_positions)
        self.gen = torch.Generator().manual_seed(seed)
        self.pending: list[list[int]] = []

    def micro_batches(self, step: int, grad_accum: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        for _ in range(grad_accum):
            if not self.pending:
                self.pending = length_bucketed_batches([len(r) for r in self.rows], self.cfg.batch_size, self.gen)
            ids, attention = pad_batch([self.rows[i] for i in self.pending.pop()], self.tokenizer.pad_token_id)
            yield ids, ids.masked_fill(attention == 0, -100), attention

    def get_state(self):
        raise NotImplementedError("the synthetic world trains without checkpoints")

    set_state = get_state


def train_clm(model, tokenizer, lines: list[str], cfg: CausalTrainConfig, seed: int, bar: Callable | None = None,
              desc: str = "synthetic world: training the causal LM") -> list[float]:
    """Train the causal LM `model` in place on `lines`; returns the loss per step. `bar(total=, initial=, desc=)`:
    an optional progress-bar factory."""
    batches = CausalLineBatches(tokenizer, lines, cfg, seed, model.config)
    return train_loop(model, batches, cfg.loop(seed), bar=bar, desc=desc, loss=causal_lm_loss).losses
