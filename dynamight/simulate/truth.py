"""``ground_truth.star``: what a simulation did, and every particle's true atom positions from it.

Tables: ``general`` (motion, SNR, seed, noise sigma, atom width, first hinge point), ``particles``
(``rlnImageName`` and one column per true factor: ``dmTrueHingeAngleDeg``,
``dmTrueInterpolationFraction``, ``dmTrueHinge2AngleDeg``, ``dmTrueBendAngleDeg`` (the bending
arm's tip angle, degrees) and ``dmTrueBendCurvature`` (the same as a curvature, 1/Å)),
``atoms`` (consensus ``dmAtomX/Y/Z`` in Å from the box centre, ``dmAtomMoving``, ``dmAtomDomain``,
``dmAtomAmplitude``) and, for a moving dataset, ``motions`` (one row per part:
:func:`dynamight.simulate.motions.parts_table`). The true displacements of every atom of every
particle follow from these (:class:`GroundTruth`), so they are never stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import starfile
import torch

from ..data.files import atomic_path
from .molecule import Molecule
from .motions import Part, apply_parts, parts_from_table, parts_table


def write_ground_truth(out: Path, factors: pd.DataFrame, names: list[str], molecule: Molecule, parts: list[Part],
                       general: dict) -> None:
    """``factors``: one row per particle, the motion's factor columns; ``general``: run values."""
    truth = pd.DataFrame({"rlnImageName": names})
    for column in factors.columns:
        truth[column] = factors[column].to_numpy()
    p = molecule.positions_angstrom.numpy()
    atoms = pd.DataFrame({"dmAtomX": p[:, 0], "dmAtomY": p[:, 1], "dmAtomZ": p[:, 2],
                          "dmAtomMoving": molecule.moving.numpy().astype(int),
                          "dmAtomDomain": molecule.domain.numpy().astype(int),
                          "dmAtomAmplitude": molecule.amplitudes.numpy()})
    hinge = molecule.hinge_point_angstrom
    general = {**general, "dmHingePointX": float(hinge[0]), "dmHingePointY": float(hinge[1]),
               "dmHingePointZ": float(hinge[2])}
    blocks = {"general": general, "particles": truth, "atoms": atoms}
    if parts:
        blocks["motions"] = parts_table(parts)
    with atomic_path(out / "ground_truth.star") as tmp:
        starfile.write(blocks, tmp, overwrite=True)


@dataclass
class GroundTruth:
    """A simulation's truth. ``atoms``: ``(n, 3)`` consensus positions, Å; ``domain``: ``(n,)``;
    ``moving``: ``(n,)`` bool; ``amplitudes``: ``(n,)``; ``parts``: the motion; ``factors``: one
    row per particle (in the order of ``particles.star``), the true factor columns; ``general``:
    the run values."""

    atoms: torch.Tensor
    domain: torch.Tensor
    moving: torch.Tensor
    amplitudes: torch.Tensor
    parts: list[Part]
    factors: pd.DataFrame
    general: dict

    @classmethod
    def read(cls, project: Path) -> "GroundTruth":
        blocks = starfile.read(Path(project) / "ground_truth.star", always_dict=True)
        atoms = blocks["atoms"]
        xyz = torch.tensor(atoms[["dmAtomX", "dmAtomY", "dmAtomZ"]].to_numpy(), dtype=torch.float32)
        moving = torch.tensor(atoms["dmAtomMoving"].to_numpy().astype(bool))
        domain = torch.tensor(atoms["dmAtomDomain"].to_numpy()) if "dmAtomDomain" in atoms else moving.long()
        amplitudes = torch.tensor(atoms["dmAtomAmplitude"].to_numpy(), dtype=torch.float32) \
            if "dmAtomAmplitude" in atoms else torch.ones(len(xyz))
        parts = parts_from_table(blocks["motions"]) if "motions" in blocks else []
        factors = blocks["particles"].drop(columns=["rlnImageName"])
        return cls(xyz, domain, moving, amplitudes, parts, factors, dict(blocks["general"]))

    def molecule(self) -> Molecule:
        """The consensus molecule."""
        point = torch.tensor([float(self.general[f"dmHingePoint{c}"]) for c in "XYZ"])
        return Molecule(self.atoms, self.moving, point, self.domain, self.amplitudes)

    @property
    def factor_names(self) -> list[str]:
        """The columns that drive the motion (none for a static dataset)."""
        return [p.factor for p in self.parts]

    def positions(self, particles: np.ndarray) -> torch.Tensor:
        """``(b,)`` particle indices -> ``(b, n, 3)`` their true atom positions, Å."""
        factors = {p.factor: torch.as_tensor(self.factors[p.factor].to_numpy()[particles]) for p in self.parts}
        if not factors:
            return self.atoms[None].expand(len(particles), -1, -1)
        return apply_parts(self.atoms, self.domain, self.parts, factors)

    def displacements(self, particles: np.ndarray) -> torch.Tensor:
        """``(b,)`` particle indices -> ``(b, n, 3)`` true displacements from the consensus, Å."""
        return self.positions(particles) - self.atoms[None]
