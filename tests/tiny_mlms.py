"""Tiny seeded random-init masked LMs with real tokenizers, for the scoring and metric tests.

- BERT / DistilBERT: the real bert-base-uncased WordPiece tokenizer from <data>/models.
- RoBERTa: no byte-level BPE tokenizer is on disk, so one is trained here with `tokenizers` on the data
  directory's text corpus and wrapped as a RobertaTokenizerFast (leading-space `Ġ` tokens, `<mask>` with lstrip).

Weights use a large initializer range so the random models give peaked, varied distributions (a near-uniform
softmax would make probability comparisons meaningless). Built once per process and per data directory.

The models are float64: the tests that use them state equalities (batched scoring == one sentence per forward
pass), and in float32 the two summation orders differ by rounding that depends on the CPU's vector width and
the thread count. In float64 such differences are ~1e-13 relative or less, far below any real error.
"""
from __future__ import annotations

import functools
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

from bench.models.subject import Subject

HIDDEN, LAYERS, HEADS, FFN = 64, 2, 2, 128
INIT_RANGE = 0.25


def _seeded(build, seed: int):
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return build().double().eval()
    finally:
        torch.random.set_rng_state(state)


@functools.lru_cache(maxsize=None)
def bert_subject(data_dir: str, seed: int = 0) -> Subject:
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    tokenizer = AutoTokenizer.from_pretrained(Path(data_dir) / "models" / "bert-base-uncased-tokenizer")
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
        intermediate_size=FFN, initializer_range=INIT_RANGE, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    model = _seeded(lambda: BertForMaskedLM(config), seed)
    return Subject(model=model, tokenizer=tokenizer, name="tiny-bert", source=f"test:tiny-bert:{seed}")


@functools.lru_cache(maxsize=None)
def distilbert_subject(data_dir: str, seed: int = 0) -> Subject:
    from transformers import AutoTokenizer, DistilBertConfig, DistilBertForMaskedLM

    tokenizer = AutoTokenizer.from_pretrained(Path(data_dir) / "models" / "bert-base-uncased-tokenizer")
    config = DistilBertConfig(
        vocab_size=tokenizer.vocab_size, dim=HIDDEN, n_layers=LAYERS, n_heads=HEADS, hidden_dim=FFN,
        initializer_range=INIT_RANGE, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    model = _seeded(lambda: DistilBertForMaskedLM(config), seed)
    return Subject(model=model, tokenizer=tokenizer, name="tiny-distilbert", source=f"test:tiny-distilbert:{seed}")


def train_byte_level_tokenizer(data_dir: str, vocab_size: int = 3000):
    """A RoBERTa-style byte-level BPE tokenizer trained on the data directory's text corpus."""
    from tokenizers import AddedToken, ByteLevelBPETokenizer
    from transformers import RobertaTokenizerFast

    corpus = sorted((Path(data_dir) / "text_corpus").glob("*.txt"))[:1]
    lines = [line.strip() for line in corpus[0].read_text(encoding="utf-8").splitlines() if line.strip()]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        lines, vocab_size=vocab_size, min_frequency=2, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    )
    folder = tempfile.mkdtemp(prefix="tiny-roberta-tok-")
    try:
        bpe.save_model(folder)
        # as in roberta-base's own tokenizer files, <mask> absorbs the space before it
        mask = AddedToken("<mask>", lstrip=True, rstrip=False, normalized=False, special=True)
        return RobertaTokenizerFast.from_pretrained(folder, mask_token=mask)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@functools.lru_cache(maxsize=None)
def roberta_subject(data_dir: str, seed: int = 0) -> Subject:
    from transformers import RobertaConfig, RobertaForMaskedLM

    tokenizer = train_byte_level_tokenizer(data_dir)
    config = RobertaConfig(
        vocab_size=len(tokenizer), hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
        intermediate_size=FFN, initializer_range=INIT_RANGE, max_position_embeddings=256, type_vocab_size=1,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    model = _seeded(lambda: RobertaForMaskedLM(config), seed)
    return Subject(model=model, tokenizer=tokenizer, name="tiny-roberta", source=f"test:tiny-roberta:{seed}")


SUBJECTS = {"bert": bert_subject, "roberta": roberta_subject, "distilbert": distilbert_subject}


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """One intra-op thread while a module's tests run, restored afterwards. The references make hundreds of
    single-sentence forward passes of a hidden-64 model; on the shared 2-core machine two threads per pass
    oversubscribe the cores and make each pass tens of times slower, with nothing to gain at this size."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
