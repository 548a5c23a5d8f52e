"""Pictures without a display: matplotlib's pyplot on the Agg backend, and a figure saved as a PNG
atomically (a reader never sees half a picture).

matplotlib is imported on first use, so importing this module costs nothing::

    plt = pyplot()
    fig, ax = plt.subplots()
    ax.plot([1, 2, 3])
    save_figure(fig, "out/line.png")
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

from .files import atomic_write_bytes

__all__ = ["pyplot", "save_figure"]


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (renders to files; no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | os.PathLike, *, dpi: int = 100) -> Path:
    """Render ``fig`` as a PNG at ``dpi``, close it, and write it to ``path`` atomically (its folder is
    created if needed). Returns the path."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    pyplot().close(fig)
    return atomic_write_bytes(path, buffer.getvalue())
