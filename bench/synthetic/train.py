"""Training the world's tiny BERT masked LM.

Standard BERT masking (15 % of tokens; of those 80 % [MASK], 10 % random, 10 % kept) plus extra masking of
the pronouns, so the gender signal gets enough training signal in a budget of a few CPU minutes. The
vocabulary logits are computed only at the masked positions. Dropout is off.
Deterministic for a seed: all randomness comes from one torch.Generator (and a forked global RNG), on one
thread, with deterministic algorithms switched on for the duration of training.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Iterable

import torch
from torch import nn

from bench.errors import TrainingDiverged


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


@contextlib.contextmanager
def deterministic():
    """Deterministic kernels on one CPU thread while inside.

    One thread: the matrices are tiny, so a second thread barely helps on an idle machine and slows training
    down many times on a busy one; it also makes the weights independent of the machine's core count.
    """
    previous, threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(previous)


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


def train_mlm(model, tokenizer, lines: list[str], cfg: TrainConfig, seed: int, bar=None,
              boost_words: Iterable[str] = ()) -> list[float]:
    """Train `model` in place on `lines`; returns the loss per step. `bar`: optional tqdm to update.

    Tokens of `boost_words` (their first sub-token) are masked with `cfg.boost_mask_probability` instead of
    `cfg.mlm_probability`."""
    from transformers import get_linear_schedule_with_warmup

    from bench.models.subject import mlm_head

    vocab_size = model.config.vocab_size
    rows = encode_lines(tokenizer, lines, model.config.max_position_embeddings)
    special = torch.zeros(vocab_size, dtype=torch.bool)
    special[tokenizer.all_special_ids] = True
    boosted = torch.zeros(vocab_size, dtype=torch.bool)
    for word in boost_words:
        first = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(word)[:1])
        if first and first[0] != tokenizer.unk_token_id:
            boosted[first[0]] = True

    gen = torch.Generator().manual_seed(seed)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr,
        foreach=True,
    )
    sched = get_linear_schedule_with_warmup(opt, int(cfg.warmup * cfg.steps), cfg.steps)
    head = mlm_head(model)
    loss_fn = nn.CrossEntropyLoss()
    losses = []
    batches: list[list[int]] = []
    model.eval()  # dropout stays off: the corpus is noise-free and the budget is small
    with torch.random.fork_rng(devices=[]), deterministic():
        torch.manual_seed(seed)
        for step in range(cfg.steps):
            if not batches:
                batches = length_bucketed_batches([len(r) for r in rows], cfg.batch_size, gen)
            batch = [rows[i] for i in batches.pop()]
            ids, attention = pad_batch(batch, tokenizer.pad_token_id)
            inputs, chosen = mask_tokens(ids, attention, special, boosted, cfg, tokenizer.mask_token_id,
                                         vocab_size, gen)
            hidden = model.bert(input_ids=inputs, attention_mask=attention)[0]
            logits = head(hidden[chosen])
            loss = loss_fn(logits, ids[chosen])
            if not math.isfinite(loss.item()):
                raise TrainingDiverged(f"synthetic world: MLM loss became {loss.item()} at step {step}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(loss.item())
            if bar is not None:
                bar.update(1)
                if step % 50 == 0:
                    bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.3f}")
    return losses
