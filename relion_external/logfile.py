"""``logfile.pdf``: what a step did, for RELION's PDF viewer (node type ``LogFile.pdf.relion``).

Page 1 (and more if needed) is text: the command line, the inputs, every parameter, the outputs, the
step's own summary lines and timing. Each figure of the step's :class:`Report` follows on its own
page. Figures are drawn with matplotlib's object API (no pyplot, no global backend switch).
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from dynamight.data.files import atomic_path

LINES_PER_PAGE = 64
WRAP_COLUMNS = 100


@dataclass
class Report:
    """What a step tells the user.

    Attributes:
        lines: summary lines (results first, e.g. "resolution at FSC 0.143: 7.9 Å").
        figures: ``(title, draw)`` pairs; ``draw(ax)`` plots on a fresh matplotlib ``Axes``.
    """

    lines: list[str] = field(default_factory=list)
    figures: list[tuple[str, Callable]] = field(default_factory=list)


def write_logfile(path: Path, title: str, header: list[str], report: Report) -> None:
    """Write the PDF atomically: ``title``, then ``report.lines`` and ``header`` (the record of the run)
    as text pages, then one page per figure."""
    from matplotlib.backends.backend_pdf import PdfPages
    from matplotlib.figure import Figure

    text = ([title, "=" * len(title), "", "Results", "-------"] + _wrap(report.lines)
            + ["", "Run", "---"] + _wrap(header))
    with atomic_path(path) as tmp:
        with PdfPages(tmp) as pdf:
            for start in range(0, len(text), LINES_PER_PAGE):
                fig = Figure(figsize=(8.27, 11.69))  # A4 portrait
                fig.text(0.06, 0.96, "\n".join(text[start:start + LINES_PER_PAGE]), va="top", ha="left",
                         family="monospace", fontsize=7.5)
                pdf.savefig(fig)
            for name, draw in report.figures:
                fig = Figure(figsize=(8.27, 5.8))
                ax = fig.add_subplot()
                draw(ax)
                ax.set_title(name)
                fig.tight_layout()
                pdf.savefig(fig)


def _wrap(lines: list[str]) -> list[str]:
    out: list[str] = []
    for line in lines:
        out += textwrap.wrap(line, WRAP_COLUMNS, subsequent_indent="    ") or [""]
    return out
