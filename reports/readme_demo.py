"""The README's demo figures, written from a demo run's stored rows (never typed by hand).

    bench run --suite demo --out runs/demo
    python -m reports.readme_demo runs/demo            # rewrite the block in README.md
    python -m reports.readme_demo runs/demo --check    # exit 1 if README.md shows something else

The block between the two markers is exactly the table `bench run --suite demo` prints. A test runs the demo
and checks the README against it, so the README shows what a new user gets on any machine.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.files import write_text
from bench.run.schema import read_rows
from reports.leaderboard import render_markdown

BEGIN = "<!-- demo-table: written by `python -m reports.readme_demo runs/demo`; do not edit -->"
END = "<!-- /demo-table -->"
README = Path(__file__).resolve().parents[1] / "README.md"


def block(rows: list[dict]) -> str:
    return f"{BEGIN}\n{render_markdown(rows)}\n{END}"


def current_block(text: str) -> str:
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"README has no demo-table block (markers {BEGIN!r} ... {END!r})")
    return text[start : end + len(END)]


def update(readme: Path, rows: list[dict]) -> bool:
    """Rewrite the block; returns whether it changed."""
    text = Path(readme).read_text(encoding="utf-8")
    old, new = current_block(text), block(rows)
    if old != new:
        write_text(Path(readme), text.replace(old, new))
    return old != new


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reports.readme_demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="the demo run's --out directory")
    parser.add_argument("--readme", type=Path, default=README)
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when the README differs")
    args = parser.parse_args(argv)
    rows = read_rows(args.run_dir)
    if args.check:
        same = current_block(args.readme.read_text(encoding="utf-8")) == block(rows)
        print("README shows the demo run" if same else "README differs from the demo run", file=sys.stderr)
        return 0 if same else 1
    changed = update(args.readme, rows)
    print(f"{args.readme}: demo table {'updated' if changed else 'already current'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
