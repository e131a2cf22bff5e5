"""Renderers: Markdown and LaTeX leaderboards, plots."""
