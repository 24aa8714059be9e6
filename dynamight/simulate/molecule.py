"""A synthetic two-domain molecule of helical pseudo-atoms, and its motions.

The fixed domain is a bundle of six helices, the moving domain a bundle of four; they meet at a
hinge point at the box centre. Atoms sit at C-alpha spacing (1.5 Å rise, 100° per residue on a
2.3 Å radius). Motions:

- ``hinge``: the moving domain rotates about the ``y`` axis through the hinge point by a
  per-particle angle.
- ``interpolate``: every atom moves linearly from conformation A (the consensus) to conformation B
  (the moving domain rotated by 25° about ``x`` and shifted 4 Å) with a per-particle fraction.
- ``none``: every particle is in the consensus conformation (the static twin of a dataset).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

HINGE_AXIS = (0.0, 1.0, 0.0)


@dataclass
class Molecule:
    """``positions_angstrom``: ``(n, 3)`` consensus atoms (xyz, Å from the box centre);
    ``moving``: ``(n,)`` bool, atoms of the moving domain; ``hinge_point_angstrom``: ``(3,)``."""

    positions_angstrom: torch.Tensor
    moving: torch.Tensor
    hinge_point_angstrom: torch.Tensor


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


def two_domain_molecule() -> Molecule:
    """The default molecule: about 60 Å across, 220 atoms, fitting a 64-pixel box at 2 Å/px."""
    fixed = _bundle((-12.0, 0.0, 0.0), (0.0, 0.0, 1.0), 6, 9.0, 24, seed=1)
    moving = _bundle((17.0, 0.0, 4.0), (1.0, 0.0, 0.3), 4, 6.5, 16, seed=2)
    positions = torch.cat([fixed, moving])
    mask = torch.cat([torch.zeros(len(fixed), dtype=torch.bool), torch.ones(len(moving), dtype=torch.bool)])
    return Molecule(positions, mask, torch.tensor([3.0, 0.0, 2.0]))


def axis_angle_matrix(axis, angle_rad: torch.Tensor) -> torch.Tensor:
    """``(b,)`` angles about a fixed unit ``axis`` -> ``(b, 3, 3)`` rotation matrices (Rodrigues)."""
    k = torch.tensor(axis, dtype=torch.float32)
    k = k / k.norm()
    kx = torch.tensor([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    s, c = torch.sin(angle_rad)[:, None, None], torch.cos(angle_rad)[:, None, None]
    return torch.eye(3) + s * kx + (1 - c) * (kx @ kx)


def hinge_positions(molecule: Molecule, angle_deg: torch.Tensor) -> torch.Tensor:
    """``(b,)`` hinge angles (degrees) -> ``(b, n, 3)`` atom positions."""
    rot = axis_angle_matrix(HINGE_AXIS, torch.deg2rad(angle_deg.float()))
    p = molecule.positions_angstrom - molecule.hinge_point_angstrom
    rotated = torch.einsum("bij,nj->bni", rot, p) + molecule.hinge_point_angstrom
    return torch.where(molecule.moving[None, :, None], rotated, molecule.positions_angstrom[None])


def conformation_b(molecule: Molecule) -> torch.Tensor:
    """``(n, 3)`` the second conformation of the ``interpolate`` motion."""
    rot = axis_angle_matrix((1.0, 0.0, 0.0), torch.tensor([math.radians(25.0)]))[0]
    p = molecule.positions_angstrom - molecule.hinge_point_angstrom
    moved = p @ rot.T + molecule.hinge_point_angstrom + torch.tensor([0.0, 4.0, 0.0])
    return torch.where(molecule.moving[:, None], moved, molecule.positions_angstrom)


def interpolated_positions(molecule: Molecule, fraction: torch.Tensor) -> torch.Tensor:
    """``(b,)`` fractions in ``[0, 1]`` -> ``(b, n, 3)`` positions between conformations A and B."""
    a, b = molecule.positions_angstrom, conformation_b(molecule)
    f = fraction.float()[:, None, None]
    return (1 - f) * a[None] + f * b[None]
