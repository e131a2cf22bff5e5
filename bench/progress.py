"""Progress that reads well in a terminal and in a log.

On a terminal: tqdm bars. When stderr is not a terminal (a redirected log, a cluster job): one line per stage,
written when the stage ends, instead of thousands of redrawn bar frames.
"""
from __future__ import annotations

import sys
import time


class StageLine:
    """The tqdm calls bench uses (update, set_postfix, set_description, iteration, context manager, close),
    printing one line when the stage is done."""

    def __init__(self, iterable=None, total=None, desc: str = "", initial: int = 0, stream=None, **_ignored):
        self.iterable, self.desc, self.n = iterable, desc, initial
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total, self.postfix, self.stream = total, "", stream or sys.stderr
        self.start, self.closed = time.perf_counter(), False

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.n += 1
        self.close()

    def __len__(self):
        return self.total or 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix(self, ordered_dict=None, refresh=True, **kwargs) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def set_postfix_str(self, s: str = "", refresh=True) -> None:
        self.postfix = s

    def set_description(self, desc=None, refresh=True) -> None:
        self.desc = desc or ""

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        count = f"{self.n}/{self.total}" if self.total else str(self.n)
        tail = f", {self.postfix}" if self.postfix else ""
        print(f"{self.desc or 'progress'}: {count} in {time.perf_counter() - self.start:.1f}s{tail}",
              file=self.stream, flush=True)


def bar(iterable=None, *, enabled: bool = True, **kwargs):
    """A tqdm bar on a terminal, a `StageLine` in a log, nothing when disabled."""
    from tqdm.auto import tqdm

    if not enabled:
        return tqdm(iterable, disable=True, **kwargs)
    if sys.stderr.isatty():
        kwargs.setdefault("dynamic_ncols", True)
        return tqdm(iterable, **kwargs)
    return StageLine(iterable, **kwargs)
