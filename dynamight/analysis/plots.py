"""The latent embedding coloured by each property: one PNG per property and one PDF of them all.

Drawn with matplotlib's object API (no pyplot, no global backend), so it runs without a display.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from ..data.files import atomic_path
from .properties import PROPERTIES

MAX_POINTS = 100_000  # a seeded subsample beyond this, to keep files small and the explorer's plot quick


def colour_map(key: str) -> str:
    """The matplotlib colour map for property ``key``: cyclic for angles, qualitative for labels."""
    info = PROPERTIES[key]
    return "twilight" if info.cyclic else "tab10" if info.categorical else "viridis"


def colour_limits(key: str, values: np.ndarray) -> tuple[float, float]:
    """Robust limits (1st to 99th percentile; the full circle for angles) of the finite values."""
    finite = values[np.isfinite(values)]
    if PROPERTIES[key].cyclic:
        return -180.0, 180.0
    if PROPERTIES[key].categorical:
        return 0.5, 10.5
    if finite.size == 0:
        return 0.0, 1.0
    low, high = np.percentile(finite, [1, 99])
    return (float(low), float(high)) if high > low else (float(low) - 0.5, float(high) + 0.5)


def shown_points(m: int) -> np.ndarray:
    """Which of ``m`` particles a plot draws: all, or a seeded sample of ``MAX_POINTS`` (sorted)."""
    if m <= MAX_POINTS:
        return np.arange(m)
    return np.sort(np.random.default_rng(0).choice(m, MAX_POINTS, replace=False))


def point_size(n: int) -> float:
    """Marker area (points^2) for ``n`` drawn points: large for a few, small for many."""
    return float(np.clip(3000 / max(n, 1), 1, 20))


def draw_embedding(ax, coords: np.ndarray, values: np.ndarray, key: str, method: str,
                   highlight: np.ndarray | None = None) -> None:
    """Scatter ``(m, 2)`` ``coords`` coloured by ``(m,)`` ``values`` of property ``key`` on ``ax``
    (NaN values grey, underneath), with a colour bar; ``highlight``: ``(p, 2)`` points marked as crosses."""
    index = shown_points(len(coords))
    size = point_size(len(index))
    missing = index[~np.isfinite(values[index])]
    present = index[np.isfinite(values[index])]
    if len(missing):
        ax.scatter(coords[missing, 0], coords[missing, 1], s=size, c="0.8", linewidths=0, label="no value",
                   rasterized=True)
    low, high = colour_limits(key, values)
    points = ax.scatter(coords[present, 0], coords[present, 1], s=size, c=values[present], cmap=colour_map(key),
                        vmin=low, vmax=high, linewidths=0, rasterized=True)  # a PDF page of points as an image
    if highlight is not None and len(highlight):
        ax.scatter(highlight[:, 0], highlight[:, 1], marker="x", s=60, c="red", linewidths=1.5)
    ax.figure.colorbar(points, ax=ax, label=PROPERTIES[key].label)
    ax.set_xlabel(f"{method} 1")
    ax.set_ylabel(f"{method} 2")
    ax.set_aspect("equal", adjustable="datalim")


def embedding_figures(coords: np.ndarray, properties: dict[str, np.ndarray], method: str,
                      highlight: np.ndarray | None = None) -> list[tuple[str, Callable]]:
    """``(title, draw(ax))`` per property: the figures of a RELION logfile report."""
    def drawer(key: str) -> Callable:
        return lambda ax: draw_embedding(ax, coords, properties[key], key, method, highlight)

    return [(f"latent space ({method}) coloured by {PROPERTIES[key].label}", drawer(key)) for key in properties]


def write_embedding_plots(directory: Path, coords: np.ndarray, properties: dict[str, np.ndarray], method: str,
                          highlight: np.ndarray | None = None) -> tuple[list[Path], Path]:
    """``directory/embedding_<property>.png`` for each property and ``directory/embedding.pdf``
    (one page each). Returns the PNG paths and the PDF path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.backends.backend_pdf import PdfPages
    from matplotlib.figure import Figure

    directory.mkdir(parents=True, exist_ok=True)
    pngs = []
    pdf_path = directory / "embedding.pdf"
    with atomic_path(pdf_path) as tmp, PdfPages(tmp) as pdf:
        for (title, draw), key in zip(embedding_figures(coords, properties, method, highlight), properties):
            fig = Figure(figsize=(6.5, 5.0))
            FigureCanvasAgg(fig)
            ax = fig.add_subplot()
            draw(ax)
            ax.set_title(title, fontsize=9)
            fig.tight_layout()
            path = directory / f"embedding_{key}.png"
            with atomic_path(path) as png:
                fig.savefig(png, dpi=110, format="png")
            pngs.append(path)
            pdf.savefig(fig)
    return pngs, pdf_path
