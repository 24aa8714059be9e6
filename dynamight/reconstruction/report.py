"""Write half-maps, the merged map, and the FSC as a RELION STAR table and a plot in Ångström."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import starfile
import torch

from ..data.files import atomic_path
from ..data.fourier import resolution_at
from ..data.volumes import write_map
from .masking import FscCurves, fsc_curves
from .plain import HalfMaps

log = logging.getLogger(__name__)
FSC_LEGEND = {"rlnFourierShellCorrelationCorrected": "FSC (corrected)",
              "rlnFourierShellCorrelationUnmaskedMaps": "FSC (unmasked)",
              "rlnFourierShellCorrelationMaskedMaps": "FSC (masked)",
              "rlnCorrectedFourierShellCorrelationPhaseRandomizedMaskedMaps": "FSC (phase-randomised, masked)"}


def fsc_table(curves: dict[str, torch.Tensor], box_px: int, pixel_size_angstrom: float) -> pd.DataFrame:
    """``data_fsc`` rows: shell index, resolution (1/Å and Å) and one column per curve."""
    n = len(next(iter(curves.values())))
    shells = np.arange(n)
    resolution = shells / (box_px * pixel_size_angstrom)
    table = {
        "rlnSpectralIndex": shells,
        "rlnResolution": resolution,
        "rlnAngstromResolution": np.where(shells > 0, 1 / np.maximum(resolution, 1e-12), 999.0),
    }
    table.update({label: curve.cpu().numpy().astype(np.float64) for label, curve in curves.items()})
    return pd.DataFrame(table)


def write_fsc(path: Path, curves: FscCurves, box_px: int, pixel_size_angstrom: float) -> dict:
    """Write ``path`` (``data_general`` + ``data_fsc``, RELION's column names) and a PDF plot beside
    it; return ``data_general``: the resolutions at FSC 0.143 and 0.5 of the corrected curve (and,
    with a mask, ``rlnRandomiseFrom``, Å)."""
    main = curves.corrected
    general = {"rlnFinalResolution": resolution_at(main, box_px, pixel_size_angstrom, 0.143),
               "rlnResolutionAtFsc05": resolution_at(main, box_px, pixel_size_angstrom, 0.5)}
    if curves.randomise_from_shell is not None:
        general["rlnRandomiseFrom"] = box_px * pixel_size_angstrom / curves.randomise_from_shell
    columns = curves.columns()
    table = fsc_table(columns, box_px, pixel_size_angstrom)
    with atomic_path(path) as tmp:
        starfile.write({"general": general, "fsc": table}, tmp, overwrite=True)
    plot_fsc(path.with_suffix(".pdf"), table, list(columns))
    return general


def draw_fsc(ax, table: pd.DataFrame, curves: dict[str, str]) -> None:
    """Draw ``{legend label: column}`` FSC curves of a ``data_fsc`` table on a matplotlib axis,
    against spatial frequency labelled in Å, with the 0.143 and 0.5 thresholds."""
    frequency = table["rlnResolution"].to_numpy()
    for label, column in curves.items():
        ax.plot(frequency, table[column].to_numpy(), label=label)
    for threshold in (0.143, 0.5):
        ax.axhline(threshold, color="grey", lw=0.8, ls="--")
    ticks = np.linspace(0, frequency.max(), 6)[1:]
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{1 / t:.1f}" for t in ticks])
    ax.set_xlabel("resolution (Å)")
    ax.set_ylabel("FSC")
    ax.set_ylim(-0.1, 1.05)
    ax.legend(fontsize=8)


def plot_fsc(path: Path, table: pd.DataFrame, labels: list[str]) -> None:
    """FSC against spatial frequency, labelled in Å, with the 0.143 and 0.5 thresholds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    draw_fsc(ax, table, {FSC_LEGEND.get(label, label): label for label in labels})
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip("."))
    plt.close(fig)


def write_half_maps(directory: Path, maps: HalfMaps, names: tuple[str, str, str], mask: torch.Tensor | None) -> dict:
    """Write the two half-maps and the merged map under ``names``, and ``fsc.star`` / ``fsc.pdf``:
    the curves ``relion_postprocess`` would give for these half-maps and ``mask`` (without a mask,
    the corrected curve is the unmasked one)."""
    pixel = maps.pixel_size_angstrom
    for name, volume in zip(names, (maps.half1, maps.half2, maps.merged)):
        write_map(directory / name, volume, pixel)
    curves = fsc_curves(maps.half1, maps.half2, mask)
    general = write_fsc(directory / "fsc.star", curves, maps.half1.shape[-1], pixel)
    log.info("resolution at FSC 0.143: %.2f Å, at FSC 0.5: %.2f Å", general["rlnFinalResolution"],
             general["rlnResolutionAtFsc05"])
    return general
