"""Training the world's tiny BERT masked LM.

Standard BERT masking (15 % of tokens; of those 80 % [MASK], 10 % random, 10 % kept) plus extra masking of
the pronouns, so the gender signal gets enough training signal in a budget of a few CPU minutes. The
vocabulary logits are computed only at the masked positions. Dropout is off.
Deterministic for a seed: all randomness comes from one torch.Generator (and a forked global RNG), on one
thread, with deterministic algorithms switched on for the duration of training.

The loop is the core's masked-LM loop (bench.models.mlm_training.train_loop, the one CDA and Dropout train with);
this module gives it the world's batches (`BoostedBatches`) and optimisation (`TrainConfig.loop`: AdamW with weight
decay on the weight matrices, linear warmup and decay, dropout off, deterministic kernels on one thread).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import torch

from bench.models.mlm_training import LoopConfig, train_loop


@dataclass(frozen=True)
class ModelSize:
    hidden: int = 96
    layers: int = 3
    heads: int = 4
    intermediate: int = 256
    max_position: int = 128  # room for GLUE-style inputs (max_seq_length 128); training lines are short


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 1500
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 0.01
    warmup: float = 0.05
    mlm_probability: float = 0.15
    boost_mask_probability: float = 0.4  # masking rate of the boosted words (pronouns)

    def loop(self, seed: int) -> LoopConfig:
        """The core loop's options for this recipe (AdamW's foreach implementation, as the world was trained)."""
        return LoopConfig(max_steps=self.steps, lr=self.lr, seed=seed, weight_decay=self.weight_decay,
                          warmup_steps=int(self.warmup * self.steps), dropout=False, deterministic=True,
                          foreach=True)  # fmt: skip


def bert_config(vocab_size: int, tokenizer, size: ModelSize = ModelSize()):
    from transformers import BertConfig

    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=size.hidden,
        num_hidden_layers=size.layers,
        num_attention_heads=size.heads,
        intermediate_size=size.intermediate,
        max_position_embeddings=size.max_position,
        type_vocab_size=2,
        pad_token_id=tokenizer.pad_token_id,
    )


def new_model(config, seed: int):
    """A BertForMaskedLM with transformers' random initialisation, the starting point of a world's training;
    the global RNG is left untouched. torch's CPU `normal_` takes a vectorised path whose values depend on the
    CPU capability, so this start (like the float32 training after it) differs between CPU kinds: the default
    world is pinned for that reason (bench.synthetic.pinned)."""
    from transformers import BertForMaskedLM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BertForMaskedLM(config)
    return model.eval()


def random_model(config, seed: int):
    """The random-weight control (`synthetic:init=random`), the same on every machine.

    BERT's initialisation (weight matrices and embeddings ~ N(0, initializer_range), biases 0, LayerNorm 1/0,
    padding embedding 0), with the normal draws taken from numpy's PCG64 generator in float64 and rounded to
    float32 instead of torch's CPU-capability-dependent `normal_`.
    """
    import numpy as np

    model = new_model(config, seed)
    rng = np.random.default_rng([seed, 0x5EED])
    std = config.initializer_range
    with torch.no_grad():
        for name, p in model.named_parameters():  # tied weights are listed once
            if p.ndim >= 2:
                p.copy_(torch.from_numpy(rng.standard_normal(tuple(p.shape)) * std))
            elif name.endswith("LayerNorm.weight"):
                p.fill_(1.0)
            else:
                p.zero_()
        if config.pad_token_id is not None:
            model.get_input_embeddings().weight[config.pad_token_id].zero_()
    return model.eval()


def encode_lines(tokenizer, lines: list[str], max_length: int) -> list[list[int]]:
    enc = tokenizer(lines, add_special_tokens=True, truncation=True, max_length=max_length)
    return enc["input_ids"]


def pad_batch(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return ids, (ids != pad_id).long()


def mask_tokens(ids: torch.Tensor, attention: torch.Tensor, special: torch.Tensor, boosted: torch.Tensor,
                cfg: TrainConfig, mask_id: int, vocab_size: int, gen: torch.Generator):
    """BERT masking; returns (masked input ids, bool tensor of positions to predict)."""
    prob = torch.full(ids.shape, cfg.mlm_probability)
    prob[boosted[ids]] = cfg.boost_mask_probability
    candidates = attention.bool() & ~special[ids]
    chosen = (torch.rand(ids.shape, generator=gen) < prob) & candidates
    # at least one prediction per sequence keeps every sentence contributing
    none = ~chosen.any(dim=1)
    if none.any():
        scores = torch.rand(ids.shape, generator=gen).masked_fill(~candidates, -1.0)
        pick = scores.argmax(dim=1)
        rows = torch.nonzero(none).squeeze(1)
        chosen[rows, pick[rows]] = True
    inputs = ids.clone()
    action = torch.rand(ids.shape, generator=gen)
    inputs[chosen & (action < 0.8)] = mask_id
    randomise = chosen & (action >= 0.8) & (action < 0.9)
    random_ids = torch.randint(int(special.sum()), vocab_size, ids.shape, generator=gen)  # specials come first
    inputs[randomise] = random_ids[randomise]
    return inputs, chosen


def length_bucketed_batches(lengths: list[int], batch_size: int, gen: torch.Generator) -> list[list[int]]:
    """One epoch of batches: random order, but each batch holds sequences of similar length (less padding)."""
    order = torch.randperm(len(lengths), generator=gen).tolist()
    chunk = batch_size * 50
    batches = []
    for start in range(0, len(order) - batch_size + 1, chunk):
        part = sorted(order[start : start + chunk], key=lengths.__getitem__)
        batches += [part[i : i + batch_size] for i in range(0, len(part) - batch_size + 1, batch_size)]
    perm = torch.randperm(len(batches), generator=gen).tolist()
    return [batches[i] for i in perm]


class BoostedBatches:
    """The world's training batches for the core loop: length-bucketed epochs of `lines`, BERT masking with the
    tokens of `boost_words` (their first sub-token) masked at `cfg.boost_mask_probability`; all randomness from
    one generator seeded by `seed`."""

    def __init__(self, tokenizer, lines: list[str], cfg: TrainConfig, seed: int, model_config,
                 boost_words: Iterable[str] = ()):  # fmt: skip
        self.tokenizer, self.cfg = tokenizer, cfg
        self.vocab_size = model_config.vocab_size
        self.rows = encode_lines(tokenizer, lines, model_config.max_position_embeddings)
        self.special = torch.zeros(self.vocab_size, dtype=torch.bool)
        self.special[tokenizer.all_special_ids] = True
        self.boosted = torch.zeros(self.vocab_size, dtype=torch.bool)
        for word in boost_words:
            first = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(word)[:1])
            if first and first[0] != tokenizer.unk_token_id:
                self.boosted[first[0]] = True
        self.gen = torch.Generator().manual_seed(seed)
        self.pending: list[list[int]] = []

    def micro_batches(self, step: int, grad_accum: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """(inputs, labels, attention_mask) of the next `grad_accum` batches (labels -100 where not masked)."""
        for _ in range(grad_accum):
            if not self.pending:
                self.pending = length_bucketed_batches([len(r) for r in self.rows], self.cfg.batch_size, self.gen)
            ids, attention = pad_batch([self.rows[i] for i in self.pending.pop()], self.tokenizer.pad_token_id)
            inputs, chosen = mask_tokens(ids, attention, self.special, self.boosted, self.cfg,
                                         self.tokenizer.mask_token_id, self.vocab_size, self.gen)  # fmt: skip
            yield inputs, torch.where(chosen, ids, -100), attention

    def get_state(self):
        raise NotImplementedError("the synthetic world trains without checkpoints")

    set_state = get_state


def train_mlm(model, tokenizer, lines: list[str], cfg: TrainConfig, seed: int, bar: Callable | None = None,
              boost_words: Iterable[str] = (), desc: str = "synthetic world: training") -> list[float]:
    """Train `model` in place on `lines`; returns the loss per step. `bar(total=, initial=, desc=)`: an optional
    progress-bar factory.

    Tokens of `boost_words` (their first sub-token) are masked with `cfg.boost_mask_probability` instead of
    `cfg.mlm_probability`."""
    batches = BoostedBatches(tokenizer, lines, cfg, seed, model.config, boost_words)
    return train_loop(model, batches, cfg.loop(seed), bar=bar, desc=desc).losses
