"""Report pieces shared by steps: the FSC of two half-maps, read back from ``fsc.star``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import starfile

from .logfile import Report

FSC_THRESHOLDS = (0.143, 0.5)


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
        frequency = table["rlnResolution"].to_numpy()
        for label, column in curves.items():
            ax.plot(frequency, table[column].to_numpy(), label=label)
        for threshold in FSC_THRESHOLDS:
            ax.axhline(threshold, color="grey", lw=0.8, ls="--")
        ticks = np.linspace(0, frequency.max(), 6)[1:]
        ax.set_xticks(ticks)
        ax.set_xticklabels([f"{1 / t:.1f}" for t in ticks])
        ax.set_xlabel("resolution (Å)")
        ax.set_ylabel("FSC")
        ax.set_ylim(-0.1, 1.05)
        ax.legend(fontsize=8)

    return Report(lines, [("Fourier shell correlation of the half-maps", draw)])
