"""The model under test: a Hugging Face masked or causal LM (`kind` "mlm" or "clm"), its tokenizer, and what
debiasers attached to it.

Debiasers never mutate a subject in place; they return a new one (`with_model`, `with_transform`,
`with_logits_transform`). Representation transforms (INLP, SentenceDebias) act on the last hidden states
feeding the MLM head, the SEAT pooling and GLUE; they are attached as forward hooks only while a subject
computes (`hooks()`), so subjects sharing one model object never see each other's transforms. For a causal LM the
last hidden states are the base model's output after its final norm (GPT-2 `ln_f`, Llama `norm`), the input of
the LM head.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import torch
from torch import nn

from bench.api import ALL_CAPABILITIES


def encoder_module(model: nn.Module) -> nn.Module:
    """The module whose first output is the last hidden state (BERT/RoBERTa `encoder`, DistilBERT `transformer`)."""
    base = getattr(model, "base_model", model)
    for attr in ("encoder", "transformer"):
        mod = getattr(base, attr, None)
        if isinstance(mod, nn.Module):
            return mod
    raise TypeError(f"cannot find the encoder of {type(model).__name__}")


def representation_module(model: nn.Module, kind: str) -> nn.Module:
    """The module whose first output is the last hidden state that feeds the LM head: the encoder of a masked LM,
    the whole base model of a causal LM (its output is after the final norm)."""
    return model.base_model if kind == "clm" else encoder_module(model)


def lm_head(model: nn.Module, kind: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """Hidden states -> vocabulary logits: the MLM head, or a causal LM's output projection (tied or not)."""
    if kind == "clm":
        return model.get_output_embeddings()
    return mlm_head(model)


def mlm_head(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """Hidden states -> vocabulary logits, so logits are computed only where they are needed."""
    if hasattr(model, "cls"):  # BERT
        return model.cls
    if hasattr(model, "lm_head"):  # RoBERTa
        return model.lm_head
    if hasattr(model, "vocab_projector"):  # DistilBERT
        act = model.activation

        def head(h):
            return model.vocab_projector(model.vocab_layer_norm(act(model.vocab_transform(h))))

        return head
    raise TypeError(f"cannot find the MLM head of {type(model).__name__}")


def last_layer_tail(model: nn.Module) -> nn.Module | None:
    """The first module of the last layer after which every operation is position-wise, or None.

    BERT/RoBERTa: the attention output block (`attention.output`: projection, residual, LayerNorm), after which
    come the feed-forward and its LayerNorm. DistilBERT: `sa_layer_norm` (its input is the attention output
    plus the residual), then the feed-forward and its LayerNorm. Rows that nobody reads need not go through
    this tail; only self-attention mixes positions, and it has already run. Unknown layouts (or a chunked
    feed-forward, which splits along the sequence) give None.
    """
    layers = getattr(encoder_module(model), "layer", None)
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        return None
    last = layers[-1]
    if getattr(last, "chunk_size_feed_forward", 0):
        return None
    attention_output = getattr(getattr(last, "attention", None), "output", None)
    if isinstance(attention_output, nn.Module) and hasattr(last, "intermediate") and hasattr(last, "output"):
        return attention_output
    if isinstance(getattr(last, "sa_layer_norm", None), nn.Module) and hasattr(last, "ffn"):
        return last.sa_layer_norm
    return None


@contextlib.contextmanager
def tail_only_at(model: nn.Module, rows: torch.Tensor, cols: torch.Tensor):
    """Run the last layer's position-wise tail only at (rows, cols): the model then returns last hidden states
    of shape (len(rows), d) in that order. Yields False (and changes nothing) where the layout is unknown."""
    tail = last_layer_tail(model)
    if tail is None:
        yield False
        return

    def pick(x):
        return x[rows, cols] if isinstance(x, torch.Tensor) and x.dim() == 3 else x

    def pre_hook(_module, args, kwargs):
        return tuple(pick(a) for a in args), {k: pick(v) for k, v in kwargs.items()}

    handle = tail.register_forward_pre_hook(pre_hook, with_kwargs=True)
    try:
        yield True
    finally:
        handle.remove()


def _replace_first_output(output, new_hidden):
    if isinstance(output, torch.Tensor):
        return new_hidden
    if isinstance(output, tuple):
        return (new_hidden,) + tuple(output[1:])
    output["last_hidden_state"] = new_hidden  # transformers ModelOutput
    return output


@dataclass(eq=False)
class Subject:
    model: Any  # transformers *ForMaskedLM, or *ForCausalLM when kind == "clm"
    tokenizer: Any
    name: str  # the base model's name as the user gave it (row group of the tables)
    method: str = "base"  # the method chain that produced this subject
    source: str = ""  # where the weights came from (HF id, directory, "synthetic:...")
    transforms: tuple = ()  # nn.Modules mapping hidden states (..., d) -> (..., d)
    logits_transform: Callable | None = None  # f(subject, input_ids, attention_mask, rows, cols, logits)
    capabilities: frozenset = ALL_CAPABILITIES
    data_dir: Any = None  # models that bring their own data (the synthetic world)
    lineage: tuple = ()  # (method, config-hash) pairs applied so far
    meta: dict = field(default_factory=dict)
    kind: str = "mlm"  # "mlm" (masked LM) or "clm" (causal LM): the head, the scoring and what methods apply

    # ---- identity -------------------------------------------------------------------------------------
    @property
    def identity(self) -> str:
        """A stable key for caches: the weights' source plus every method (with its config) applied."""
        blob = json.dumps({"source": self.source, "lineage": list(self.lineage)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def is_roberta_style(self) -> bool:
        """Byte-level BPE tokenizers encode a word with its leading space (SPEC §0.5)."""
        return getattr(self.model.config, "model_type", "") in {"roberta", "xlm-roberta", "camembert"}

    # ---- derived subjects ----------------------------------------------------------------------------
    def replace(self, **changes) -> "Subject":
        """A new subject with some fields changed (the runner records the method lineage)."""
        return replace(self, meta=dict(self.meta), **changes)

    def with_model(self, model) -> "Subject":
        return self.replace(model=model)

    def with_transform(self, transform: nn.Module) -> "Subject":
        return self.replace(transforms=self.transforms + (transform,))

    def with_logits_transform(self, fn: Callable, capabilities=frozenset({"mlm"})) -> "Subject":
        if self.logits_transform is not None:
            raise ValueError("this subject already has an output transform")
        return self.replace(logits_transform=fn, capabilities=self.capabilities & frozenset(capabilities))

    def stamped(self, method: str, config_hash: str) -> "Subject":
        chain = method if self.method == "base" else f"{self.method}+{method}"
        return replace(self, method=chain, lineage=self.lineage + ((method, config_hash),))

    # ---- computation ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def hooks(self, model: nn.Module | None = None):
        """Attach the representation transforms to `model` (default: this subject's model) while inside."""
        model = self.model if model is None else model
        if not self.transforms:
            yield
            return
        transforms = self.transforms

        def hook(_module, _inputs, output):
            h = output if isinstance(output, torch.Tensor) else output[0]
            for t in transforms:
                h = t(h)
            return _replace_first_output(output, h)

        for t in transforms:
            t.to(self.device)
        handle = representation_module(model, self.kind).register_forward_hook(hook)
        try:
            yield
        finally:
            handle.remove()

    def hidden_states(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, positions: tuple | None = None
    ) -> torch.Tensor:
        """Last hidden states (transforms applied), shape (batch, length, d); with positions=(rows, cols), only
        those, shape (len(rows), d), and the last layer's position-wise tail runs only there (exact: it is the
        same computation on fewer rows). Representation transforms must be position-wise (they are maps of
        one hidden vector), so they apply to the selected rows alike."""
        extra = {"use_cache": False} if self.kind == "clm" else {}  # no key/value cache: one pass, not generation
        if positions is None:
            with self.hooks():
                return self.model.base_model(input_ids=input_ids, attention_mask=attention_mask, **extra)[0]
        rows, cols = positions
        if self.kind == "clm":
            with self.hooks():
                return self.model.base_model(input_ids=input_ids, attention_mask=attention_mask, **extra)[0][rows, cols]
        with tail_only_at(self.model, rows, cols) as selected, self.hooks():
            h = self.model.base_model(input_ids=input_ids, attention_mask=attention_mask)[0]
        return h if selected else h[rows, cols]

    def mlm_logits(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor
    ) -> torch.Tensor:
        """Vocabulary logits at the positions (rows[i], cols[i]); shape (len(rows), vocab): of the masked token
        there (MLM), or of the token after it (CLM: the logits at column c predict column c + 1).

        Only those positions go through the LM head. An output transform (SelfDebias) may replace the
        logits by debiased log-probabilities; softmax/log_softmax of the result is what metrics use.
        """
        h = self.hidden_states(input_ids, attention_mask, positions=(rows, cols))
        logits = lm_head(self.model, self.kind)(h)
        if self.logits_transform is not None:
            logits = self.logits_transform(self, input_ids, attention_mask, rows, cols, logits)
        return logits

    def same_as(self, other: "Subject") -> bool:
        """True when `other` would compute exactly what this subject computes."""
        if self.transforms != other.transforms or self.logits_transform is not other.logits_transform:
            return False
        if self.model is other.model:
            return True
        a, b = dict(self.model.named_parameters()), dict(other.model.named_parameters())
        if a.keys() != b.keys():
            return False
        with torch.no_grad():
            return all(torch.equal(a[k].detach().cpu(), b[k].detach().cpu()) for k in a)
