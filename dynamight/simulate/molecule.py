"""A synthetic two-domain molecule of helical pseudo-atoms, and its motions.

The fixed domain is a bundle of six helices, the moving domain a bundle of four; they meet at a
hinge point at the box centre. Atoms sit at C-alpha spacing (1.5 Å rise, 100° per residue on a
2.3 Å radius). Motions:

- ``hinge``: the moving domain rotates about the ``y`` axis through the hinge point by a
  per-particle angle.
- ``interpolate``: every atom moves linearly from conformation A (the consensus) to conformation B
  (the moving domain rotated by 25° about ``x`` and shifted 4 Å) with a per-particle fraction.
- ``none``: every particle is in the consensus conformation (the static twin of a dataset).

:func:`branched_molecule` adds a long arm (for ``bend`` and ``two-hinges``). The motions
themselves are in :mod:`dynamight.simulate.motions`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .motions import axis_angle_matrix, rotate_about  # noqa: F401  (axis_angle_matrix: for callers)

HINGE_AXIS = (0.0, 1.0, 0.0)


@dataclass
class Molecule:
    """``positions_angstrom``: ``(n, 3)`` consensus atoms (xyz, Å from the box centre);
    ``moving``: ``(n,)`` bool, atoms that move; ``hinge_point_angstrom``: ``(3,)`` the (first)
    hinge point; ``domain``: ``(n,)`` int, 0 for the fixed part, ``k`` for the ``k``-th moving part
    (default: ``moving``); ``amplitudes``: ``(n,)`` peak densities (default 1)."""

    positions_angstrom: torch.Tensor
    moving: torch.Tensor
    hinge_point_angstrom: torch.Tensor
    domain: torch.Tensor | None = None
    amplitudes: torch.Tensor | None = None

    def __post_init__(self):
        if self.domain is None:
            self.domain = self.moving.long()
        if self.amplitudes is None:
            self.amplitudes = torch.ones(len(self.moving))


def _helix(start: torch.Tensor, direction: torch.Tensor, n_residues: int, phase: float) -> torch.Tensor:
    """``(n_residues, 3)`` C-alpha positions of an ideal alpha helix along ``direction``."""
    direction = direction / direction.norm()
    helper = torch.tensor([0.0, 0.0, 1.0]) if abs(direction[2]) < 0.9 else torch.tensor([1.0, 0.0, 0.0])
    u = torch.linalg.cross(direction, helper)
    u = u / u.norm()
    v = torch.linalg.cross(direction, u)
    k = torch.arange(n_residues, dtype=torch.float32)
    angle = torch.deg2rad(100.0 * k) + phase
    return start + 1.5 * k[:, None] * direction + 2.3 * (torch.cos(angle)[:, None] * u + torch.sin(angle)[:, None] * v)


def _bundle(centre, axis, n_helices: int, radius: float, n_residues: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    axis = torch.tensor(axis, dtype=torch.float32)
    axis = axis / axis.norm()
    helper = torch.tensor([0.0, 0.0, 1.0]) if abs(axis[2]) < 0.9 else torch.tensor([1.0, 0.0, 0.0])
    u = torch.linalg.cross(axis, helper)
    u = u / u.norm()
    v = torch.linalg.cross(axis, u)
    length = 1.5 * (n_residues - 1)
    helices = []
    for h in range(n_helices):
        a = 2 * math.pi * h / n_helices
        offset = radius * (math.cos(a) * u + math.sin(a) * v)
        sign = 1 if h % 2 == 0 else -1  # antiparallel neighbours
        start = torch.tensor(centre) + offset - sign * axis * length / 2
        helices.append(_helix(start, sign * axis, n_residues, float(torch.rand(1, generator=g)) * 2 * math.pi))
    return torch.cat(helices)


def branched_molecule() -> Molecule:
    """The molecule of the ``bend`` and ``two-hinges`` motions: the two-domain molecule's core and
    swinging domain (domain 1) and a long three-helix arm (domain 2, about 56 Å) leaving the core
    along ``y``; 322 atoms, centred (centroid at the box centre); about 80 Å long, fitting a
    32-pixel box at 4 Å/px."""
    base = two_domain_molecule()
    arm = _bundle((-12.0, 40.0, 0.0), (0.0, 1.0, 0.0), 3, 5.0, 38, seed=3)
    positions = torch.cat([base.positions_angstrom, arm])
    domain = torch.cat([base.moving.long(), torch.full((len(arm),), 2)])
    centre = positions.mean(0)
    return Molecule(positions - centre, domain > 0, base.hinge_point_angstrom - centre, domain)


def two_domain_molecule() -> Molecule:
    """The default molecule: about 60 Å across, 220 atoms, fitting a 64-pixel box at 2 Å/px."""
    fixed = _bundle((-12.0, 0.0, 0.0), (0.0, 0.0, 1.0), 6, 9.0, 24, seed=1)
    moving = _bundle((17.0, 0.0, 4.0), (1.0, 0.0, 0.3), 4, 6.5, 16, seed=2)
    positions = torch.cat([fixed, moving])
    mask = torch.cat([torch.zeros(len(fixed), dtype=torch.bool), torch.ones(len(moving), dtype=torch.bool)])
    return Molecule(positions, mask, torch.tensor([3.0, 0.0, 2.0]))


def hinge_positions(molecule: Molecule, angle_deg: torch.Tensor) -> torch.Tensor:
    """``(b,)`` hinge angles (degrees) about ``y`` through the hinge point -> ``(b, n, 3)`` atom
    positions (the moving domain rotated)."""
    rotated = rotate_about(molecule.positions_angstrom, molecule.hinge_point_angstrom, HINGE_AXIS, angle_deg)
    return torch.where(molecule.moving[None, :, None], rotated, molecule.positions_angstrom[None])
