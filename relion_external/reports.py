"""Report pieces shared by steps: the FSC of two half-maps, read back from ``fsc.star``."""

from __future__ import annotations

from pathlib import Path

import starfile

from dynamight.reconstruction.report import FSC_LEGEND, draw_fsc

from .logfile import Report


def fsc_report(fsc_star: Path) -> Report:
    """Resolution lines and an FSC plot from a ``fsc.star`` written by the engine
    (``data_general``: ``rlnFinalResolution``, ``rlnResolutionAtFsc05`` in Å; ``data_fsc``:
    ``rlnResolution`` in 1/Å and RELION's FSC columns)."""
    blocks = starfile.read(fsc_star, always_dict=True)
    general, table = blocks["general"], blocks["fsc"]
    lines = [f"resolution at FSC 0.143: {float(general['rlnFinalResolution']):.2f} Å",
             f"resolution at FSC 0.5: {float(general['rlnResolutionAtFsc05']):.2f} Å"]
    curves = {label: column for column, label in FSC_LEGEND.items() if column in table.columns}
    if "rlnRandomiseFrom" in general:
        lines.append("the resolutions are those of the masked FSC corrected by phase randomisation beyond "
                     f"{float(general['rlnRandomiseFrom']):.2f} Å (as relion_postprocess)")

    def draw(ax) -> None:
        draw_fsc(ax, table, curves)

    return Report(lines, [("Fourier shell correlation of the half-maps", draw)])
