"""Causal (decoder-only) language models: which configs are causal, their tokenizer quirks, and the built-in
random configurations of Llama's architecture.

A model's kind is read from its config (`model_kind`): an architecture named `*ForMaskedLM` is masked, one named
`*ForCausalLM` / `*LMHeadModel` is causal; without architectures (a config written by hand, `random:`), a model
type that has a masked-LM class is masked (BERT has both), any other one with a causal-LM class is causal.

Tokenizer quirks (SPEC-beyond §9.4), handled once in `prepare_tokenizer`: GPT-2 and Llama have no pad token, so
pad = eos (batches are right-padded and every read position is a real token, so the pad id never matters);
GPT-2 adds no BOS, Llama-3 adds `<|begin_of_text|>`; byte-level BPE keeps a word's leading space in its token.

No Llama tokenizer ships with this project's data, so the Llama-style configurations (`random:llama-small`,
`random:llama-3.2-3b`) get a Llama-3-style tokenizer made from the GPT-2 one: the same byte-level BPE plus a
`<|begin_of_text|>` token that is added in front of every text (what makes Llama's scoring differ from GPT-2's).
"""
from __future__ import annotations

import json
from pathlib import Path

from bench.errors import ModelUnavailable

CAUSAL_ALIASES = {
    "gpt2": "gpt2",
    "llama-3.2-3b": "meta-llama/Llama-3.2-3B",
    "llama-3.2-3b-instruct": "meta-llama/Llama-3.2-3B-Instruct",
}
CONFIG_FOLDER = Path(__file__).resolve().parent / "configs"
BOS = "<|begin_of_text|>"


def builtin_configs() -> list[str]:
    return sorted(p.stem for p in CONFIG_FOLDER.glob("*.json"))


def model_kind(config) -> str:
    """ "mlm" or "clm" for a transformers config (see the module docstring)."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    for arch in getattr(config, "architectures", None) or ():
        if arch.endswith("ForMaskedLM"):
            return "mlm"
        if arch.endswith("ForCausalLM") or arch.endswith("LMHeadModel"):
            return "clm"
    model_type = getattr(config, "model_type", "")
    if model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return "mlm"
    if model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return "clm"
    raise ModelUnavailable(f"model type {model_type!r} has neither a masked-LM nor a causal-LM head in transformers")


def prepare_tokenizer(tokenizer, model=None):
    """pad = eos where the tokenizer has no pad token (GPT-2, Llama), and the model's config told the same (the
    sequence-classification head finds the last real token by the pad id)."""
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    if model is not None and getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return tokenizer


def start_id(tokenizer) -> int:
    """The token a text starts after: BOS where the tokenizer has one (Llama `<|begin_of_text|>`; GPT-2's BOS is
    `<|endoftext|>`, the token bias-bench conditions on), else EOS."""
    for token_id in (tokenizer.bos_token_id, tokenizer.eos_token_id, getattr(tokenizer, "cls_token_id", None)):
        if token_id is not None:
            return int(token_id)
    raise ValueError(f"{type(tokenizer).__name__} has no BOS, EOS or CLS token to start a text with")


def adds_bos(tokenizer) -> bool:
    """Whether the tokenizer puts a start token in front of a text by itself (Llama: yes; GPT-2: no)."""
    probe = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bool(probe) and tokenizer.bos_token_id is not None and probe[0] == tokenizer.bos_token_id


def llama_style_tokenizer(gpt2_folder: Path):
    """GPT-2's byte-level BPE with a `<|begin_of_text|>` BOS added in front of every text, pad = eos (Llama 3)."""
    from tokenizers import Tokenizer
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer.from_file(str(Path(gpt2_folder) / "tokenizer.json"))
    backend.add_special_tokens([BOS])
    bos_id = backend.token_to_id(BOS)
    backend.post_processor = TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=BOS, eos_token="<|endoftext|>", unk_token="<|endoftext|>"
    )
    return prepare_tokenizer(tokenizer)


def builtin_random(target: str, data_dir, options: dict):
    """(config, tokenizer) of a built-in Llama-style configuration, or None when `target` is not one."""
    from transformers import AutoConfig

    path = CONFIG_FOLDER / f"{target}.json"
    if not path.is_file():
        return None
    folder = Path(data_dir or "") / "models" / "gpt2-tokenizer"
    if data_dir is None or not (folder / "tokenizer.json").is_file():
        raise ModelUnavailable(f"random:{target} builds its tokenizer from {folder}/tokenizer.json, which is missing")
    tokenizer = llama_style_tokenizer(folder)
    values = json.loads(path.read_text(encoding="utf-8"))
    values.update(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                  pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    config = AutoConfig.for_model(**values)
    return config, tokenizer
