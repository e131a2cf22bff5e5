"""Method plugins (one module or package per Debiaser), registered through the `bench.methods` entry points."""
