"""Self-Debias (Schick et al. 2021), masked-LM and causal-LM variants as bias-bench runs them (SPEC §2.5,
SPEC-beyond §9.3).

No training: at every scored mask position the model's distribution p is compared with its distribution p_b
on the same input prefixed by a debiasing prompt (max over prompts); tokens the prompt makes more likely are
decayed: Δ = max(p_b - p, 0), α = max(exp(-λΔ), ε), p' = pα / Σ pα, and log p' replaces the logits.
It changes only MLM (or next-token) scores: SEAT and GLUE get n/a cells.

The prefixed input is `[CLS] prompt tokens` followed by the original sequence without its leading special
token (as bias-bench builds it). bias-bench left-pads the prefixed batch and recomputes position ids; here
each row's real tokens are taken from its attention mask (any padding side) and the prefixed rows are
right-padded, so every row starts at position 0 with the model's default position ids — the same
computation, and it needs no architecture-specific position-id code (DistilBERT has none).

Bias types: without `prompts`, the prompt is the run's type's (`PROMPTS`, bias-bench's `DEBIASING_PREFIXES`):
"... because of their gender: ", "... because of their race/color: ", "... because of their religion: ".
Given `prompts` are used for every type.

Causal LMs (bias-bench's generative variant, SPEC-beyond §9.3): the same decay on the next-token distribution at
every scored position (`Subject.mlm_logits` of a causal subject: the logits at column c predict token c + 1), so
`bench.models.causal_scoring.token_log_probs` and the StereoSet and CrowS scores built on it are debiased.
- p is the model's next-token distribution after the row's tokens, p_b the one after the prompt and the same
  tokens. The prompt is encoded as the tokenizer begins a text (Llama: its BOS, then the prompt; GPT-2: the prompt
  alone, as bias-bench encodes it, trailing space token included) and takes the place of the row's leading
  start token (`bench.models.causal.start_id`) where the row has one, else stands in front of the row. So on
  GPT-2 p_b(t_1) = P(t_1 | prompt) and p_b(t_i) = P(t_i | prompt, t_<i), bias-bench's prefixed rows.
- Where the prompt ends is counted from its tokens. bias-bench hard-codes the prompt lengths (13 / 15 / 13
  tokens for gender / race / religion, right for GPT-2's tokenizer) and uses them for Llama too, whose encoding
  of each prompt is one token longer (its BOS): there it reads every position one token early.
- bias-bench's unprefixed p for a sentence's first token comes from a padding position that attends to nothing
  (its regular row is left-padded to the prompt's length and the first-token logits are read at the last padding
  column); here p is whatever the scorer conditions the first token on (the start token).
- It serves the causal capability only: embeddings and fine-tuning are not debiased (as the masked variant
  serves masked-token scores only).
"""
from __future__ import annotations

import torch

from bench.api import CLM, MLM, Debiaser
from bench.errors import BenchError
from bench.models.causal import adds_bos, start_id
from bench.models.subject import lm_head

GENDER_PROMPT = "The following text discriminates against people because of their gender: "
RACE_PROMPT = "The following text discriminates against people because of their race/color: "
RELIGION_PROMPT = "The following text discriminates against people because of their religion: "
PROMPTS = {"gender": (GENDER_PROMPT,), "race": (RACE_PROMPT,), "religion": (RELIGION_PROMPT,)}


def self_debias_log_probs(
    logits: torch.Tensor, prompted_logits: torch.Tensor, decay_constant: float, epsilon: float
) -> torch.Tensor:
    """log p' from regular logits (n, V) and prompted logits (n_prompts, n, V); computed in log space."""
    dtype = torch.promote_types(logits.dtype, torch.float32)
    logits = logits.to(dtype)
    p = logits.softmax(-1)
    p_b = prompted_logits.to(dtype).softmax(-1).amax(dim=0)
    delta = (p_b - p).clamp_min(0.0)
    log_alpha = torch.clamp(-decay_constant * delta, min=float(torch.log(torch.tensor(epsilon))))
    log_q = logits.log_softmax(-1) + log_alpha
    return log_q - log_q.logsumexp(-1, keepdim=True)


def _max_positions(model) -> int | None:
    config = model.config
    n = getattr(config, "max_position_embeddings", None)
    if n is None:
        return None
    if getattr(config, "model_type", "") in {"roberta", "xlm-roberta", "camembert"}:
        n -= (config.pad_token_id or 0) + 1  # positions start after the padding index
    return int(n)


def prefixed_batch(input_ids: torch.Tensor, attention_mask: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor,
                   prompt_ids: list[list[int]], pad_id: int, max_positions: int | None = None,
                   causal_start: int | None = None):  # fmt: skip
    """The prefixed copies of the rows that are scored, one per (prompt, distinct row), right-padded.

    Masked LMs (`causal_start` None): `t[0] prompt t[1:]` ([CLS] prompt rest). Causal LMs: `prompt t`, the row's
    leading token dropped where it is `causal_start` (the prompt then stands where the text starts).
    Returns (ids, mask, batch_rows, batch_cols): the logits for scored position i under prompt j are at
    (batch_rows[j, i], batch_cols[j, i]) of the prefixed batch.
    """
    uniq, inverse = torch.unique(rows, return_inverse=True)
    mask = attention_mask[uniq].bool()
    real = [input_ids[r][m] for r, m in zip(uniq, mask)]
    starts = mask.int().argmax(dim=1)  # first real token of each row (left or right padding)
    if not torch.equal(mask.sum(dim=1), torch.tensor([len(t) for t in real], device=mask.device)) or any(
        not bool(m[s : s + len(t)].all()) for m, s, t in zip(mask, starts, real)
    ):
        raise BenchError("SelfDebias needs contiguous attention masks (padding on one side only)")
    # tokens of each row dropped in front of the prompt: a causal row's leading start token
    drop = [int(causal_start is not None and len(t) > 0 and int(t[0]) == causal_start) for t in real]
    seqs = []
    for prompt in prompt_ids:
        p = torch.tensor(prompt, dtype=input_ids.dtype, device=input_ids.device)
        for t, d in zip(real, drop):
            seqs.append(torch.cat([t[:1], p, t[1:]]) if causal_start is None else torch.cat([p, t[d:]]))
    width = max(len(s) for s in seqs)
    if max_positions is not None and width > max_positions:
        raise BenchError(f"SelfDebias: prompt + sentence is {width} tokens, more than the model's {max_positions}")
    ids = torch.full((len(seqs), width), pad_id, dtype=input_ids.dtype, device=input_ids.device)
    new_mask = torch.zeros((len(seqs), width), dtype=attention_mask.dtype, device=attention_mask.device)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = s
        new_mask[i, : len(s)] = 1
    n_unique = len(uniq)
    col_in_row = cols - starts[inverse] - torch.tensor(drop, dtype=cols.dtype, device=cols.device)[inverse]
    batch_rows = torch.stack([j * n_unique + inverse for j in range(len(prompt_ids))])
    batch_cols = torch.stack([col_in_row + len(prompt) for prompt in prompt_ids])
    return ids, new_mask, batch_rows, batch_cols


class SelfDebiasLogits:
    """The output transform attached to a subject (picklable: token ids and two numbers)."""

    def __init__(self, prompt_ids: list[list[int]], decay_constant: float, epsilon: float):
        self.prompt_ids = [list(map(int, p)) for p in prompt_ids]
        self.decay_constant = float(decay_constant)
        self.epsilon = float(epsilon)

    def __call__(self, subject, input_ids, attention_mask, rows, cols, logits):
        if len(rows) == 0:
            return logits
        pad_id = subject.tokenizer.pad_token_id
        causal_start = start_id(subject.tokenizer) if subject.kind == "clm" else None
        ids, mask, brows, bcols = prefixed_batch(
            input_ids, attention_mask, rows, cols, self.prompt_ids, 0 if pad_id is None else pad_id,
            _max_positions(subject.model), causal_start,
        )  # fmt: skip
        # the subject's representation transforms, not this output transform
        hidden = subject.hidden_states(ids, mask, positions=(brows.reshape(-1), bcols.reshape(-1)))
        prompted = lm_head(subject.model, subject.kind)(hidden)
        prompted = prompted.reshape(len(self.prompt_ids), len(rows), -1)
        return self_debias_log_probs(logits, prompted, self.decay_constant, self.epsilon)


class SelfDebias(Debiaser):
    label = "SelfDebias"
    group = 2
    changes = "output"
    serves = frozenset({MLM, CLM})  # masked-token or next-token scores only, whichever the model kind gives
    model_kinds = frozenset({"mlm", "clm"})
    quick: dict = {}
    bounds = {"decay_constant": (0.0, None), "epsilon": (0.0, None)}
    bias_types = frozenset(PROMPTS)

    def __init__(self, prompts: tuple[str, ...] | list[str] | str | None = None, decay_constant: float = 50.0,
                 epsilon: float = 0.01):  # fmt: skip
        self.prompts = (prompts,) if isinstance(prompts, str) else (None if prompts is None else tuple(prompts))
        self.decay_constant = decay_constant
        self.epsilon = epsilon
        if self.prompts is not None and (
                not self.prompts or not all(isinstance(p, str) and p.strip() for p in self.prompts)):
            raise BenchError("SelfDebias needs at least one non-empty debiasing prompt")
        if not 0.0 < float(epsilon) <= 1.0:
            raise BenchError(f"SelfDebias epsilon must be in (0, 1], got {epsilon}")
        if float(decay_constant) < 0:
            raise BenchError(f"SelfDebias decay_constant must be >= 0, got {decay_constant}")

    def prompts_for(self, bias_type: str = "gender") -> tuple[str, ...]:
        """The given prompts, else the bias type's (PROMPTS)."""
        return self.prompts if self.prompts is not None else PROMPTS[bias_type]

    def prompt_ids(self, subject, bias_type: str = "gender") -> list[list[int]]:
        """Prompt token ids. Masked LMs: byte-level BPE models get the leading-space form of the first word (SPEC
        §0.5). Causal LMs: the prompt as written, after the start token where the tokenizer begins a text with
        one (module docstring)."""
        tokenizer = subject.tokenizer
        if subject.kind == "clm":
            start = [start_id(tokenizer)] if adds_bos(tokenizer) else []
            return [start + tokenizer(p, add_special_tokens=False)["input_ids"] for p in self.prompts_for(bias_type)]
        lead = " " if subject.is_roberta_style else ""
        return [tokenizer(lead + p.strip(), add_special_tokens=False)["input_ids"] for p in self.prompts_for(bias_type)]

    def fit(self, subject, ctx):
        bias_type = ctx.bias_type
        return {"prompt_ids": self.prompt_ids(subject, bias_type), "prompts": list(self.prompts_for(bias_type))}

    def apply(self, subject, artifact):
        if subject.logits_transform is not None:
            raise BenchError(f"{subject.method} already changes the MLM output; SelfDebias cannot be stacked on it")
        fn = SelfDebiasLogits(artifact["prompt_ids"], self.decay_constant, self.epsilon)
        return subject.with_logits_transform(fn, capabilities=self.serves)
