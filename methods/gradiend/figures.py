"""The figures' shared part: matplotlib without a display, and a figure titled, laid out and written."""
from __future__ import annotations

from pathlib import Path


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, title: str, path, dpi: int) -> Path:
    """`fig` with `title` as its title, laid out tight, written to `path` (folders made) at `dpi`, then closed."""
    plt = pyplot()
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
