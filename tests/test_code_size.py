"""Small modules and functions in the installed packages (issue 18): no module over 450 lines, no function over 60
lines. Read with ast, nothing imported."""
from __future__ import annotations

import ast

from import_graph import modules

MAX_MODULE, MAX_FUNCTION = 450, 60


def test_no_module_or_function_over_its_limit():
    found = []
    for name, path in modules().items():
        source = path.read_text(encoding="utf-8")
        if len(source.splitlines()) > MAX_MODULE:
            found.append(f"{name}: {len(source.splitlines())} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION:
                    found.append(f"{name}.{node.name}: {length} lines")
    assert not found, "\n".join(found)
