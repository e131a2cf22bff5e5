"""Metric plugins (one module per benchmark), registered through the `bench.metrics` entry points."""
