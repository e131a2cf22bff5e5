"""The synthetic planted-bias world: templated English with known gender statistics, a tiny BERT MLM trained
on it, and evaluation sets in the real file formats. The embedded default model of the harness.

    load_subject("synthetic")                  # bias=0.8 (strong), seed=0, trained
    load_subject("synthetic:bias=0.2,seed=1")  # a weaker bias, another world
    load_subject("synthetic:init=random")      # same config/tokenizer/data, random weights

`synthetic-clm` (bench.synthetic.clm) is the same world's causal LM: a tiny GPT-2 of the masked model's size,
trained with next-token cross-entropy on the same corpus, with the same tokenizer ([CLS] as its start token) and
the same data sets (its `data_dir` is the world's); same options, pinned the same way (`pinned_clm/`).

    load_subject("synthetic-clm")              # the pinned causal LM of the default world
    load_subject("synthetic-clm:init=random")  # its random-weight control
"""
from bench.synthetic.world import DEFAULTS, GENERATOR_VERSION, World, build_world, generate, load

__all__ = ["DEFAULTS", "GENERATOR_VERSION", "World", "build_world", "generate", "load"]
