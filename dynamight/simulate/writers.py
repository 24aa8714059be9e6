"""The files of a simulated project besides the images and the ground truth: ``particles.star``,
the consensus map and the masks."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import starfile
import torch

from ..data.files import atomic_path
from ..data.volumes import soft_mask, write_map
from ..model.render import render_volume
from .molecule import Molecule

#: the drawn per-particle columns that are not RELION's (:func:`dynamight.simulate.dataset.draw_particles`)
MOTION_VARIABLES = ["hinge", "fraction", "hinge2", "bend"]


def write_star(out: Path, rows: pd.DataFrame, names: list[str], box_px: int, pixel: float, optics: dict) -> None:
    """``particles.star`` (RELION 3.1+): one optics group, the drawn rows less the motion variables."""
    optics_table = pd.DataFrame({
        "rlnOpticsGroup": [1], "rlnOpticsGroupName": ["opticsGroup1"], "rlnAmplitudeContrast": [optics["q0"]],
        "rlnSphericalAberration": [optics["cs_mm"]], "rlnVoltage": [optics["voltage_kv"]],
        "rlnImagePixelSize": [pixel], "rlnImageSize": [box_px], "rlnImageDimensionality": [2],
        "rlnCtfDataAreCtfPremultiplied": [0],
    })
    particles = rows.drop(columns=MOTION_VARIABLES).copy()
    particles.insert(0, "rlnImageName", names)
    with atomic_path(out / "particles.star") as tmp:
        starfile.write({"optics": optics_table, "particles": particles}, tmp, overwrite=True)


def write_maps(out: Path, molecule: Molecule, box_px: int, pixel: float, sigma_angstrom: float) -> None:
    """``map.mrc`` (the consensus conformation), ``mask.mrc``, ``masks/{fixed,moving}_domain.mrc`` and,
    with several moving parts, ``masks/domain_K.mrc``."""
    n = len(molecule.moving)
    amplitudes, sigma = molecule.amplitudes, torch.full((n,), sigma_angstrom)
    consensus = render_volume(molecule.positions_angstrom, amplitudes, sigma, box_px, pixel)
    write_map(out / "map.mrc", consensus, pixel)
    threshold = 0.1 * float(consensus.max())
    write_map(out / "mask.mrc", soft_mask(consensus, threshold, extend_px=2, soft_edge_px=4), pixel)
    for name, keep in (("fixed_domain", ~molecule.moving), ("moving_domain", molecule.moving)):
        part = render_volume(molecule.positions_angstrom[keep], amplitudes[keep], sigma[keep], box_px, pixel)
        write_map(out / "masks" / f"{name}.mrc", soft_mask(part, threshold, extend_px=2, soft_edge_px=3), pixel)
    if int(molecule.domain.max()) > 1:
        for k in range(1, int(molecule.domain.max()) + 1):
            keep = molecule.domain == k
            part = render_volume(molecule.positions_angstrom[keep], amplitudes[keep], sigma[keep], box_px, pixel)
            write_map(out / "masks" / f"domain_{k}.mrc", soft_mask(part, threshold, extend_px=2, soft_edge_px=3), pixel)
