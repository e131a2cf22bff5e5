"""CDA: two-sided counterfactual data augmentation, then further MLM training (SPEC §2.1), or further causal-LM
training for causal LMs (SPEC-beyond §9.3).

1. Corpus: every line of the data directory's `text_corpus/*.txt` (or the file named by `corpus`). The paper
   used Wikipedia-10 (10 % of an English Wikipedia dump), which is not available here; the shared data holds
   WikiText-2 validation + test (~4k paragraphs, ~2.4 MB, about 1/100 of it), so real-model runs see the same
   text many times over. The synthetic world brings its own `text_corpus/synthetic.txt`.
2. Augmentation with the 57 gender pairs of `bias_attribute_words.json`: every attribute word is swapped with its
   partner in both directions at once; a line with at least one swap contributes its counterfactual and itself
   (two-sided); a line without attribute words is dropped (see `methods.counterfactual`).
   - Default: words are found with their punctuation and capitalisation ("He" -> "She", "him," -> "her,",
     "man's" -> "woman's"), which the paper's whitespace split misses.
   - `exact_paper_swap=True`: bias-bench's swap (text decoded by the tokenizer, whitespace split, exact
     case-sensitive match against the 399 pairs-with-punctuation, pieces joined by single spaces).
   - Words in two pairs take the pair listed last, as in bias-bench: "her" -> "his", "girl" -> "guy".
   - One difference in order: bias-bench augments the 512-token blocks after grouping; this augments lines
     (paragraphs in WikiText), the unit CDA is defined on, before grouping them into blocks.
   - Race and religion (the run's `ctx.bias_type`; bias-bench `run_mlm.py --counterfactual_augmentation race`):
     the type's attribute triples of the same file (race: black/white/asian ..., religion: jewish/christian/
     muslim ...), bias-bench's *ternary* augmentation (`ternary_counterfactual_augmentation`): per line, each
     group is mapped to one other group drawn at random (seeded by the run's seed), every attribute word is
     replaced by its triple's word of that group, and the line is kept two-sided as for gender (counterfactual
     then original; lines without an attribute word dropped). Matching as for gender (default: punctuation,
     capitalisation and possessives handled; `exact_paper_swap`: bias-bench's whitespace split against the
     triples and their punctuation copies). A word in several triples takes the last one, as in bias-bench.
3. Further MLM training of a copy of the model (`methods.mlm_training`, the loop of `bench.models.mlm_training`):
   defaults are the paper's for real models (2,000 steps x batch 32 x gradient accumulation 16, blocks of 512
   tokens, AdamW lr 5e-5, linear decay) and small for the synthetic world (400 steps x 32 single sentences, lr
   1e-3: well under a minute on a CPU, and enough to take the default world's gender SS from ~83 to ~53). Every
   hyperparameter is a constructor argument (`-o cda.max_steps=500`).
4. Causal LMs (GPT-2, Llama; bias-bench ran GPT-2 only): the same augmented lines, then continued causal-LM
   training (bias-bench's `run_clm.py`: 2,000 steps x batch 8 x gradient accumulation 32, blocks of 1,024
   tokens, lr 5e-5, seed 0; next-token loss on every real token), each line written after the model's start
   token (bench.models.mlm_data); small defaults for the synthetic causal world (`synthetic-clm`, see
   `methods.mlm_training.CAUSAL_SYNTHETIC_TRAINING`).

Training checkpoints (for resuming) are kept under the cache's `checkpoints/CDA/<key>`; the key includes the
run's bias type (methods.mlm_training), so a race fit never resumes from a gender fit's checkpoints.

Artifact: the trained weights (`save_pretrained` into the cache); `apply` returns the subject with them.
"""
from __future__ import annotations

from dataclasses import dataclass

from bench.data.paths import attribute_words
from methods.counterfactual import (CounterfactualSwapper, GroupSwapper, augment_multi_group, augment_two_sided,
                                    paper_roundtrip)
from methods.mlm_training import MLMTrainingDebiaser


@dataclass(eq=False, repr=False)
class CDA(MLMTrainingDebiaser):
    """Constructor: `exact_paper_swap`, then the training options of `MLMTrainingDebiaser` (keyword-only)."""

    label = "CDA"
    group = 2
    quick = {"max_steps": 20}  # conformance suite: a short fit on the synthetic world
    bias_types = frozenset({"gender", "race", "religion"})

    exact_paper_swap: bool = False

    def data_files(self, ctx) -> list:
        return super().data_files(ctx) + [ctx.data_path("bias_attribute_words/bias_attribute_words.json")]

    def swapper(self, ctx) -> CounterfactualSwapper | GroupSwapper:
        words = attribute_words(ctx.data_dir, ctx.bias_type)
        if ctx.bias_type == "gender":
            return CounterfactualSwapper(words, exact=self.exact_paper_swap)
        return GroupSwapper(words, exact=self.exact_paper_swap)

    def training_lines(self, subject, ctx) -> list[str]:
        lines = self.corpus_lines(ctx)
        if self.exact_paper_swap:
            lines = paper_roundtrip(lines, subject.tokenizer)
        swapper = self.swapper(ctx)
        if isinstance(swapper, GroupSwapper):
            return augment_multi_group(lines, swapper, seed=ctx.seed if self.seed is None else self.seed)
        return augment_two_sided(lines, swapper)
