"""Real tokenizers and tiny random-init masked LMs for equality tests against reference computations.

- BERT-style: the real bert-base-uncased tokenizer from <data>/models/bert-base-uncased-tokenizer.
- RoBERTa-style: no RoBERTa tokenizer is on disk, so a small byte-level BPE is trained with `tokenizers` on
  <data>/text_corpus and wrapped as RobertaTokenizerFast (RoBERTa's special tokens, `Ġ` leading spaces,
  <s> ... </s> framing), which exercises the same code paths as roberta-base/large.

Import the fixtures into a test module with `from tests.tokenizers_fixture import bert_tokenizer, ...`
or call the plain functions.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

ROBERTA_SPECIAL = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # ids 0..4 as in roberta-base


def load_bert_tokenizer(data_dir: Path):
    from transformers import BertTokenizerFast

    folder = Path(data_dir) / "models" / "bert-base-uncased-tokenizer"
    if not (folder / "vocab.txt").is_file():
        pytest.skip(f"bert-base-uncased tokenizer not found in {folder}")
    return BertTokenizerFast.from_pretrained(folder)


def train_roberta_tokenizer(data_dir: Path, out_dir: Path, vocab_size: int = 3000, max_lines: int = 4000):
    """Train a byte-level BPE on the text corpus and return it as a RobertaTokenizerFast."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaTokenizerFast

    from bench.data.paths import text_corpus

    lines = text_corpus(data_dir, max_lines=max_lines)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(lines, vocab_size=vocab_size, min_frequency=2, special_tokens=ROBERTA_SPECIAL,
                            show_progress=False)  # fmt: skip
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    bpe.save_model(str(out_dir))
    return RobertaTokenizerFast.from_pretrained(out_dir, model_max_length=128)


def tiny_bert(tokenizer, hidden: int = 64, layers: int = 2, seed: int = 0):
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=2, intermediate_size=2 * hidden, max_position_embeddings=512)  # fmt: skip
    return BertForMaskedLM(config).eval()


def tiny_roberta(tokenizer, hidden: int = 64, layers: int = 2, seed: int = 0):
    from transformers import RobertaConfig, RobertaForMaskedLM

    torch.manual_seed(seed)
    config = RobertaConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers,
                           num_attention_heads=2, intermediate_size=2 * hidden, max_position_embeddings=130,
                           pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                           eos_token_id=tokenizer.eos_token_id, type_vocab_size=1)  # fmt: skip
    return RobertaForMaskedLM(config).eval()


@pytest.fixture(scope="session")
def bert_tokenizer(data_dir):
    return load_bert_tokenizer(data_dir)


@pytest.fixture(scope="session")
def roberta_tokenizer(data_dir, tmp_path_factory):
    return train_roberta_tokenizer(data_dir, tmp_path_factory.mktemp("roberta-bpe"))


@pytest.fixture(scope="session")
def bert_subject(bert_tokenizer):
    from bench.models.subject import Subject

    return Subject(model=tiny_bert(bert_tokenizer), tokenizer=bert_tokenizer, name="tiny-bert", source="test:tiny-bert")


@pytest.fixture(scope="session")
def roberta_subject(roberta_tokenizer):
    from bench.models.subject import Subject

    return Subject(model=tiny_roberta(roberta_tokenizer), tokenizer=roberta_tokenizer, name="tiny-roberta",
                   source="test:tiny-roberta")  # fmt: skip


@pytest.fixture
def single_thread():
    """One intra-op torch thread for the duration of a test, restored afterwards.

    Tiny models gain nothing from a second thread, and on the shared 2-core test machine a second thread per
    forward pass oversubscribes the cores: measured 3 ms vs 200 ms per tiny-BERT forward under load.
    Use with `pytestmark = pytest.mark.usefixtures("single_thread")`.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class RemoveDirection(torch.nn.Module):
    """A representation transform for tests: removes one direction from every hidden state (INLP-style)."""

    def __init__(self, direction: torch.Tensor):
        super().__init__()
        u = direction / direction.norm()
        self.register_buffer("P", torch.eye(len(u)) - torch.outer(u, u))

    def forward(self, h):
        return h @ self.P.to(h.dtype)  # float64 models in the equality tests
