"""A small cased WordPiece vocabulary built from the world's corpus, wrapped as a BERT tokenizer.

Cased, because capitalisation matters to GRADIEND ("He"/"She" at a sentence start) and the paper's models are
cased. Every word of the corpus is one token, except the designated `vocab.SPLIT_WORDS`, which are split into
the given sub-tokens (so metric code meets multi-token names and candidates); single characters (and their
"##" continuation forms) cover anything else. Pronouns are whole tokens.

The vocabulary is derived directly from the corpus' words, not with `tokenizers`' WordPieceTrainer: that
trainer breaks ties between equally frequent merges in hash-map order, so its intermediate sub-word pieces
(and the token ids) change from run to run, and the world must be byte-for-byte reproducible for a seed.
The tokenizer itself is the standard `tokenizers` BERT WordPiece pipeline (BertTokenizerFast).
"""
from __future__ import annotations

import re
import string
from collections import Counter
from pathlib import Path
from typing import Iterable

# BERT pre-tokenization (split on whitespace, every punctuation character alone) for the corpus' ASCII text
WORD = re.compile(r"\w+|[^\w\s]")
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
MAX_LENGTH = 128  # = the model's max_position_embeddings


def build_vocab(lines: Iterable[str], split_words: dict | None = None) -> list[str]:
    """Special tokens, characters, "##"+characters, corpus words (most frequent first), designated pieces."""
    split_words = split_words or {}
    counts = Counter(WORD.findall("\n".join(lines)))
    # all printable ASCII, so any English text tokenizes without [UNK]
    chars = sorted({c for w in counts for c in w} | set(string.ascii_letters + string.digits + string.punctuation))
    words = sorted((w for w in counts if w not in split_words and len(w) > 1), key=lambda w: (-counts[w], w))
    pieces = [p if i == 0 else "##" + p for parts in split_words.values() for i, p in enumerate(parts)]
    tokens = SPECIAL_TOKENS + chars + ["##" + c for c in chars] + words
    seen = set(tokens)
    tokens += [p for p in dict.fromkeys(pieces) if p not in seen]
    return tokens


def tokenizer_for(vocab: list[str], **special):
    from transformers import BertTokenizerFast

    return BertTokenizerFast(vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=False, strip_accents=False,
                             model_max_length=MAX_LENGTH, **special)  # fmt: skip


def write_tokenizer(vocab: list[str], folder: Path):
    """Save a BertTokenizerFast for `vocab` into `folder` (vocab.txt, tokenizer.json, configs); returns it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab_file = folder / "vocab.txt"
    vocab_file.write_text("".join(t + "\n" for t in vocab), encoding="utf-8")
    tokenizer = tokenizer_for(vocab)
    tokenizer.save_pretrained(str(folder))
    return tokenizer


def load_tokenizer(folder: Path):
    """The world's tokenizer, built from `vocab.txt` alone (which the pinned world's hash covers), so that the
    other tokenizer files in a shared cache cannot change how text is split."""
    vocab = (Path(folder) / "vocab.txt").read_text(encoding="utf-8").splitlines()
    return tokenizer_for(vocab)


def load_causal_tokenizer(folder: Path):
    """The same tokenizer for the world's causal LM: [CLS] is also its BOS (`bench.models.causal.start_id`: the
    token a scored text starts after) and [SEP] its EOS; with special tokens a text is still [CLS] text [SEP],
    the causal LM's training sequence."""
    vocab = (Path(folder) / "vocab.txt").read_text(encoding="utf-8").splitlines()
    return tokenizer_for(vocab, bos_token="[CLS]", eos_token="[SEP]")

