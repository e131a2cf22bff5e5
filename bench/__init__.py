"""bench: a benchmark harness for debiasing masked language models."""

__version__ = "0.1.0"
