"""Running the `bench` command line inside a test."""
from __future__ import annotations

from bench.cli import main


def run_bench(args, capsys) -> tuple[int, str, str]:
    """`bench ARGS` in this process: (exit status, stdout, stderr)."""
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err
