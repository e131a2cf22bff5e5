"""Declarative run definitions (TOML); `bench run --suite NAME` reads NAME.toml from this folder."""
