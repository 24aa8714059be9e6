"""Report pieces shared by steps: the FSC of two half-maps, read back from ``fsc.star``."""

from __future__ import annotations

from pathlib import Path

import starfile

from dynamight.reconstruction.report import draw_fsc

from .logfile import Report


def fsc_report(fsc_star: Path) -> Report:
    """Resolution lines and an FSC plot from a ``fsc.star`` written by the engine
    (``data_general``: ``rlnFinalResolution``, ``rlnResolutionAtFsc05`` in Å; ``data_fsc``:
    ``rlnResolution`` in 1/Å and one ``rlnFourierShellCorrelation*`` column per curve)."""
    blocks = starfile.read(fsc_star, always_dict=True)
    general, table = blocks["general"], blocks["fsc"]
    lines = [f"resolution at FSC 0.143: {float(general['rlnFinalResolution']):.2f} Å",
             f"resolution at FSC 0.5: {float(general['rlnResolutionAtFsc05']):.2f} Å"]
    curves = {"FSC": "rlnFourierShellCorrelation"}
    if "rlnFourierShellCorrelationMaskedMaps" in table.columns:
        lines.append("the FSC is that of the masked half-maps (the unmasked one is plotted too)")
        curves = {"FSC (masked)": "rlnFourierShellCorrelationMaskedMaps",
                  "FSC (unmasked)": "rlnFourierShellCorrelationUnmaskedMaps"}

    def draw(ax) -> None:
        draw_fsc(ax, table, curves)

    return Report(lines, [("Fourier shell correlation of the half-maps", draw)])
