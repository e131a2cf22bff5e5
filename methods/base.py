"""The identity method: the base row of every table."""
from bench.api import Debiaser


class Base(Debiaser):
    label = "Base"
    group = 0
    changes = "nothing"
    bias_types = None
    model_kinds = frozenset({"mlm", "clm"})

    def fit(self, subject, ctx):
        return None

    def apply(self, subject, artifact):
        return subject
