"""The code's structure as a test: no import cycle between modules, and every import points down the layers
below (the core never imports a plugin or a report; reports import no plugin). Imports inside functions count.
The graph is read from the source with ast, nothing is imported (tests/import_graph.py)."""
from __future__ import annotations

import pytest

from import_graph import REPO, cycles, edges, modules

# Lower layers first; a module may import its own layer (without a cycle) and any layer below.
LAYERS = [
    ("bench.errors", "bench.hints", "bench.storable", "bench.progress", "bench.files", "bench"),  # foundations
    ("bench.data",),  # data directories, the manifest, downloads
    ("bench.serialize", "bench.stats", "bench.api", "bench.registry", "bench.cache"),  # contracts, the cache
    ("bench.models",),  # the model under test: subject, loading, scoring, embeddings, fine-tuning
    ("bench.synthetic",),  # the planted-bias world (a model kind of its own)
    ("bench.engines",),  # where units run
    ("bench.run",),  # a run: request, plan, unit worker, rows, store, cache, collector, driver
    ("methods", "metrics"),  # plugins: they may use the whole core, not each other
    ("reports",),  # renderers of stored rows: the core's contracts and registry, no plugin
    ("bench.cli",),  # the command line on top
]
# Imports that leave the layer order on purpose: none today.
ALLOWED: set[tuple[str, str]] = set()
FORBIDDEN_PAIRS = [("methods", "metrics"), ("metrics", "methods"), ("reports", "methods"), ("reports", "metrics")]


def layer(module: str) -> int:
    best = None
    for i, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and (best is None or len(name) > best[1]):
                best = (i, len(name))
    if best is None:
        raise AssertionError(f"{module} is in no layer of tests/test_import_graph.py: add it")
    return best[0]


def violations(graph) -> list[str]:
    found = []
    for a, b in sorted(graph):
        top_a, top_b = a.split(".")[0], b.split(".")[0]
        if (top_a, top_b) in FORBIDDEN_PAIRS:
            found.append(f"{a} -> {b}: {top_a} may not import {top_b}")
        elif layer(b) > layer(a) and (a, b) not in ALLOWED:
            found.append(f"{a} -> {b}: an import up the layers")
    return found


def test_no_import_cycle():
    found = cycles(edges())
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_every_import_points_down():
    found = violations(edges())
    assert not found, "\n".join(found)


def test_every_module_is_in_a_layer():
    for module in modules():
        layer(module)


@pytest.mark.parametrize("edge", [("bench.run.plan", "bench.run.runner"), ("bench.api", "bench.run.unit"),
                                  ("reports.leaderboard", "metrics.crows"), ("bench.models.scoring", "methods.inlp")])
def test_the_checks_catch_a_cycle_or_an_upward_import(edge):
    """The two checks fail when a cycle or an upward import is added (runner imports plan: plan -> runner closes
    a cycle; the contracts importing the run, a report importing a plugin, the core importing a plugin)."""
    graph = edges() | {edge}
    assert violations(graph) or cycles(graph)
    assert any(edge[0] in v for v in violations(graph)) or any(edge[0] in c and edge[1] in c for c in cycles(graph))


def test_the_graph_sees_function_level_imports():
    graph = edges()
    assert ("bench.api", "bench.serialize") in graph  # only imported inside Debiaser.save_artifact
    assert REPO.joinpath("bench", "api.py").is_file()
