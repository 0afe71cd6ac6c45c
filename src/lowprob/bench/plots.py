"""The benchmark reports' figures: ``plt`` (pyplot on the file-only backend, chosen here once) and ``save_plot``."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display is needed, or opened
import matplotlib.pyplot as plt


def save_plot(fig: plt.Figure, path: Path) -> Path:
    """Lay out, write and close ``fig``. The saved area grows to hold what sticks out of the figure (a
    legend below the axes, a long title), so nothing is clipped."""
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path
