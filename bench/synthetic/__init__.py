"""The synthetic planted-bias world: templated English with known gender statistics, a tiny BERT MLM trained
on it, and evaluation sets in the real file formats. The embedded default model of the harness.

    load_subject("synthetic")                  # bias=0.8 (strong), seed=0, trained
    load_subject("synthetic:bias=0.2,seed=1")  # a weaker bias, another world
    load_subject("synthetic:init=random")      # same config/tokenizer/data, random weights
"""
from bench.synthetic.world import DEFAULTS, GENERATOR_VERSION, World, build_world, generate, load

__all__ = ["DEFAULTS", "GENERATOR_VERSION", "World", "build_world", "generate", "load"]
