"""How the benchmark reports draw: ``plt`` (pyplot on the file-only backend, chosen here once), ``save_plot``, and
``markdown_table`` for their tables."""

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


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """The lines of a Markdown table with ``header`` and ``rows`` (cells already formatted)."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]
