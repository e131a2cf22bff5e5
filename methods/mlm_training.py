"""The Debiaser base of further language-model training, shared by CDA and Dropout (SPEC §2.1, §2.2, SPEC-beyond
§9.3).

The training itself is the core's (bench.models.mlm_training: run_mlm's recipe for masked LMs and run_clm's for
causal LMs in one torch loop, checkpoints that resume bit-exactly). This module holds what the two methods share
as methods: their training options (one dataclass, `MLMTrainingDebiaser`, whose fields are the constructor's
keyword arguments: `-o cda.max_steps=500`), the paper's and the synthetic worlds' defaults per model kind, the
corpus, the fit and the artifact.

Causal LMs (`subject.kind == "clm"`) get continued causal-LM training: bias-bench's GPT-2 recipe (run_clm.py,
2,000 steps of 8 x 32 accumulated blocks of 1,024 tokens, lr 5e-5), every line written after the start token
(bench.models.mlm_data). The artifact is saved with the subject's model class and loaded back as the same kind
(read from the saved config's architecture), always from safetensors.
"""
from __future__ import annotations

import contextlib
import copy
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from bench.api import EVERY_CAPABILITY, Debiaser
from bench.errors import BenchError
from bench.models.mlm_data import training_data
from bench.models.mlm_training import CLMTrainingConfig, MLMTrainingConfig, train_clm, train_mlm

# The paper's recipe for real models (SPEC §2.1): 2,000 steps of 32 x 16 = 512 blocks of 512 tokens.
PAPER_TRAINING = dict(max_steps=2000, batch_size=32, grad_accum=16, max_seq_length=512, lr=5e-5, line_by_line=False)
# The synthetic world (tiny BERT trained on single templated sentences): ~15 s of CPU time per fit. 400 steps at
# lr 1e-3 take CDA from SS 83 to 53 on the default world (300 steps at 5e-4: 61; 600 at 1e-3: 52).
SYNTHETIC_TRAINING = dict(max_steps=400, batch_size=32, grad_accum=1, max_seq_length=64, lr=1e-3, line_by_line=True)
# bias-bench's causal recipe (GPT-2, run_clm.py; SPEC-beyond §9.3): 2,000 steps of 8 x 32 = 256 blocks of 1,024 tokens.
CAUSAL_PAPER_TRAINING = dict(max_steps=2000, batch_size=8, grad_accum=32, max_seq_length=1024, lr=5e-5,
                             line_by_line=False)  # fmt: skip
# The synthetic causal world (synthetic-clm: a tiny GPT-2 trained on the same single sentences), a fit as long as
# the masked one's: 200 steps of 16 lines at lr 3e-3 take CDA from gender SS 100 to ~55-58 (seeds 0, 1; 400 steps
# of 32 at 1e-3: 75; 300 of 16 at 2e-3: 65), while Dropout's plain further training leaves it at ~81.
CAUSAL_SYNTHETIC_TRAINING = dict(max_steps=200, batch_size=16, grad_accum=1, max_seq_length=64, lr=3e-3,
                                 line_by_line=True)  # fmt: skip
DEFAULTS = {("mlm", False): PAPER_TRAINING, ("mlm", True): SYNTHETIC_TRAINING,
            ("clm", False): CAUSAL_PAPER_TRAINING, ("clm", True): CAUSAL_SYNTHETIC_TRAINING}  # fmt: skip

_TRAINING_KEYS = tuple(PAPER_TRAINING)


@dataclass
class FittedWeights:
    """The artifact of CDA / Dropout: the further-trained language model and its training history."""

    model: torch.nn.Module
    history: dict


def max_positions(model) -> int:
    """The longest block the model accepts (RoBERTa reserves padding_idx + 1 positions)."""
    cfg = model.config
    n = getattr(cfg, "max_position_embeddings", None) or 512
    if getattr(cfg, "model_type", "") in {"roberta", "xlm-roberta", "camembert"}:
        n -= (getattr(cfg, "pad_token_id", 1) or 1) + 1
    return int(n)


@dataclass(eq=False, repr=False, kw_only=True)
class MLMTrainingDebiaser(Debiaser):
    """Further language-model training (masked or causal, the subject's kind) of a copy of the subject's model
    on a corpus from the data directory.

    The training options below are keyword-only constructor arguments of every subclass (a subclass is a
    dataclass too, `@dataclass(eq=False, repr=False)`, whose own fields come first in its constructor).
    Training hyperparameters left as None take the paper's values for real models (`PAPER_TRAINING`, causal
    `CAUSAL_PAPER_TRAINING`) and small ones for the synthetic worlds (`SYNTHETIC_TRAINING`,
    `CAUSAL_SYNTHETIC_TRAINING`, chosen when `subject.meta["synthetic"]` is set).
    Subclasses provide `training_lines` and may wrap the training in `training_setup`.
    """

    max_steps: int | None = None
    batch_size: int | None = None
    grad_accum: int | None = None
    max_seq_length: int | None = None
    lr: float | None = None
    line_by_line: bool | None = None
    seed: int | None = None
    precision: str = "fp32"
    checkpoint_every: int = 100
    corpus: str | None = None
    max_lines: int | None = None

    changes = "weights"
    model_kinds = frozenset({"mlm", "clm"})
    serves = EVERY_CAPABILITY  # new weights: everything the model kind offers
    bounds = {"max_steps": (1, None), "batch_size": (1, None), "grad_accum": (1, None), "max_seq_length": (1, None), "lr": (0.0, None),
              "checkpoint_every": (1, None), "max_lines": (1, None)}  # fmt: skip

    # ---- what subclasses change ------------------------------------------------------------------------
    def training_lines(self, subject, ctx) -> list[str]:
        raise NotImplementedError

    @contextlib.contextmanager
    def training_setup(self, model):
        """Context around training (Dropout raises the dropout rates here)."""
        yield

    # ---- shared machinery ------------------------------------------------------------------------------
    def corpus_lines(self, ctx) -> list[str]:
        from bench.data.paths import text_corpus

        return text_corpus(ctx.data_dir, self.corpus, self.max_lines)

    def corpus_files(self, ctx) -> list[Path]:
        from bench.data.paths import DataError, require_file

        if self.corpus is not None:
            return [require_file(ctx.data_dir, f"text_corpus/{self.corpus}", "text corpus")]
        files = sorted((Path(ctx.data_dir or "") / "text_corpus").glob("*.txt")) if ctx.data_dir else []
        if not files:
            raise DataError(f"no text corpus: expected *.txt files in {Path(ctx.data_dir or '') / 'text_corpus'}")
        return files

    def data_files(self, ctx) -> list:
        # The shared training and swapping code is listed too, so that changing it invalidates fitted weights.
        import bench.models.mlm_data
        import bench.models.mlm_training

        here = Path(__file__).resolve().parent
        core = [Path(m.__file__).resolve() for m in (bench.models.mlm_training, bench.models.mlm_data)]
        return self.corpus_files(ctx) + [here / "mlm_training.py", here / "counterfactual.py", *core]

    def training_config(self, subject, ctx) -> MLMTrainingConfig | CLMTrainingConfig:
        kind = subject.kind
        defaults = DEFAULTS[kind, bool(subject.meta.get("synthetic"))]
        values = {k: getattr(self, k) if getattr(self, k) is not None else defaults[k] for k in _TRAINING_KEYS}
        limit = max_positions(subject.model)
        if values["max_seq_length"] > limit:
            values["max_seq_length"] = limit
        recipe = CLMTrainingConfig if kind == "clm" else MLMTrainingConfig
        return recipe(
            **values, seed=ctx.seed if self.seed is None else self.seed, precision=self.precision,
            checkpoint_every=self.checkpoint_every,
        )  # fmt: skip

    def fit(self, subject, ctx) -> FittedWeights:
        from bench.files import stable_hash

        name = self.name or type(self).__name__
        cfg = self.training_config(subject, ctx)
        lines = self.training_lines(subject, ctx)
        if not lines:
            raise BenchError(f"{name}: no training lines in the corpus of {ctx.data_dir}")
        causal = isinstance(cfg, CLMTrainingConfig)
        data = training_data(subject.tokenizer, lines, cfg, kind="clm" if causal else "mlm")
        model = copy.deepcopy(subject.model)  # never train the subject's own model
        key = stable_hash({"method": type(self).__name__, "config": self.config(), "subject": subject.identity,
                           "training": asdict(cfg), "bias_type": ctx.bias_type})  # fmt: skip
        checkpoint_dir = Path(ctx.cache_dir) / "checkpoints" / name / key if ctx.cache_dir else None
        where = dict(n_lines=len(lines), checkpoint_dir=checkpoint_dir, bar=ctx.bar)
        with self.training_setup(model):
            if causal:
                history = train_clm(model, data, cfg, **where, desc=f"{name}: causal LM training")
            else:
                history = train_mlm(model, subject.tokenizer, data, cfg, **where, desc=f"{name}: MLM training")
        model.eval()
        return FittedWeights(model=model, history=history.to_dict())

    def apply(self, subject, artifact: FittedWeights):
        model = artifact.model.to(subject.device).eval()
        return subject.with_model(model)

    def save_artifact(self, artifact: FittedWeights, path) -> None:
        import json

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        artifact.model.save_pretrained(path)
        (path / "training_history.json").write_text(json.dumps(artifact.history, indent=1), encoding="utf-8")

    def load_artifact(self, path) -> FittedWeights:
        import json

        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM

        from bench.models.causal import model_kind

        path = Path(path)
        # the class that was saved (its config names the architecture): a masked or a causal LM
        auto = AutoModelForCausalLM if model_kind(AutoConfig.from_pretrained(path)) == "clm" else AutoModelForMaskedLM
        model = auto.from_pretrained(path, use_safetensors=True).eval()  # never a pickled .bin
        history = json.loads((path / "training_history.json").read_text(encoding="utf-8"))
        return FittedWeights(model=model, history=history)
