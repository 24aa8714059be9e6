"""What a simulation moves: the molecule (synthetic or a real structure) and its motion's parts.

The geometry of a real structure's parts comes from the atoms (all positions ``(n, 3)``, Å, from
the box centre):

- a hinge goes through the atom of the moving part closest to the centroid of the fixed atoms; its
  axis is perpendicular to the line joining the two centroids and to the moving part's longest
  principal axis (the part swings like a lever);
- a bending arm runs along the moving part's longest principal axis, away from the fixed atoms'
  centroid, from its first atom to its last along that axis, and bends towards its second
  principal axis.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import torch

from ..errors import InputError
from .molecule import HINGE_AXIS, Molecule, branched_molecule, two_domain_molecule
from .motions import Part
from .structures import read_structure, resolve_atomic_model

Motion = Literal["hinge", "interpolate", "bend", "two-hinges", "none"]
SyntheticMolecule = Literal["two-domain", "branched"]
#: the ground-truth columns written for each motion (the factors that drive it are its parts'
#: ``factor`` s; the hinge, interpolate and none datasets keep both of the first columns, as before)
COLUMNS = {
    "hinge": ["dmTrueHingeAngleDeg", "dmTrueInterpolationFraction"],
    "interpolate": ["dmTrueHingeAngleDeg", "dmTrueInterpolationFraction"],
    "none": ["dmTrueHingeAngleDeg", "dmTrueInterpolationFraction"],
    "bend": ["dmTrueBendAngleDeg", "dmTrueBendCurvature"], "two-hinges": ["dmTrueHingeAngleDeg", "dmTrueHinge2AngleDeg"],
}


def _principal_axes(points: torch.Tensor) -> torch.Tensor:
    """``(m, 3)`` -> ``(3, 3)`` rows: principal axes, longest first, largest component positive."""
    centred = points - points.mean(0)
    _, vectors = torch.linalg.eigh(centred.T @ centred)
    axes = vectors.T.flip(0)
    signs = torch.sign(axes.gather(1, axes.abs().argmax(1, keepdim=True)))
    return axes * signs


def _tuple(v: torch.Tensor) -> tuple[float, float, float]:
    return tuple(float(x) for x in v)


def interface_hinge(positions: torch.Tensor, domain: torch.Tensor, label: int, factor: str) -> Part:
    """The hinge of domain ``label`` against the fixed atoms (domain 0) (module docstring)."""
    part, rest = positions[domain == label], positions[domain == 0]
    rest_centre = rest.mean(0)
    d = part.mean(0) - rest_centre
    d = d / d.norm()
    axes = _principal_axes(part)
    lever = axes[0] if abs(float(axes[0] @ d)) < 0.9 else axes[1]
    axis = torch.linalg.cross(d, lever)
    point = part[(part - rest_centre).norm(dim=1).argmin()]
    return Part(kind="hinge", factor=factor, domain=label, point=_tuple(point), axis=_tuple(axis / axis.norm()))


def arm_bend(positions: torch.Tensor, domain: torch.Tensor, label: int, factor: str) -> Part:
    """The bending arm of domain ``label`` (module docstring)."""
    part, rest = positions[domain == label], positions[domain == 0]
    centre = part.mean(0)
    axes = _principal_axes(part)
    a = axes[0] if float(axes[0] @ (centre - rest.mean(0))) >= 0 else -axes[0]
    e = axes[1] - (axes[1] @ a) * a
    s = (part - centre) @ a
    return Part(kind="bend", factor=factor, domain=label, point=_tuple(centre + s.min() * a), axis=_tuple(a),
                direction=_tuple(e / e.norm()), length_angstrom=float(s.max() - s.min()))


def _synthetic(motion: Motion, name: SyntheticMolecule | None) -> Molecule:
    if name is None:
        name = "branched" if motion in ("bend", "two-hinges") else "two-domain"
    return branched_molecule() if name == "branched" else two_domain_molecule()


def build(motion: Motion, atomic_model: Path | None = None, moving_chain: str | None = None,
          second_moving_chain: str | None = None, molecule: SyntheticMolecule | None = None) -> tuple[Molecule, list[Part]]:
    """The molecule and the parts of ``motion``: on the synthetic molecule (``molecule``, default
    two-domain for hinge/interpolate/none and branched for bend/two-hinges), or on the atoms of
    ``atomic_model`` with ``moving_chain`` (and, for two-hinges, ``second_moving_chain``) moving."""
    if atomic_model is None:
        m = _synthetic(motion, molecule)
        hinge1 = Part(kind="hinge", factor="dmTrueHingeAngleDeg", domain=1,
                      point=_tuple(m.hinge_point_angstrom), axis=HINGE_AXIS)
        arm = 2 if int(m.domain.max()) == 2 else 1
    else:
        if motion != "none" and moving_chain is None:
            raise InputError(f"--atomic-model {atomic_model}: --moving-chain is needed (the part that moves)")
        if motion == "two-hinges" and second_moving_chain is None:
            raise InputError("--motion two-hinges with --atomic-model: --second-moving-chain is needed")
        selections = [s for s in (moving_chain, second_moving_chain) if s is not None]
        positions, amplitudes, domain = read_structure(resolve_atomic_model(atomic_model), selections)
        hinge1 = interface_hinge(positions, domain, 1, "dmTrueHingeAngleDeg") if selections else None
        point = hinge1.point if hinge1 else (0.0, 0.0, 0.0)
        m = Molecule(positions, domain > 0, torch.tensor(point), domain, amplitudes)
        arm = 1
    if motion == "two-hinges" and int(m.domain.max()) < 2:
        raise InputError("--motion two-hinges: the molecule has one moving part (use --molecule branched, "
                         "or --second-moving-chain with --atomic-model)")
    parts = {
        "hinge": lambda: [hinge1],
        "interpolate": lambda: [Part(kind="interpolate", factor="dmTrueInterpolationFraction", domain=1,
                                     point=hinge1.point)],
        "bend": lambda: [arm_bend(m.positions_angstrom, m.domain, arm, "dmTrueBendAngleDeg")],
        "two-hinges": lambda: [hinge1, interface_hinge(m.positions_angstrom, m.domain, 2, "dmTrueHinge2AngleDeg")],
        "none": lambda: [],
    }[motion]()
    if parts:
        moved = torch.zeros_like(m.moving)
        for p in parts:
            moved |= m.domain == p.domain
        m.moving = moved
    return m, parts


def check_fits(molecule: Molecule, box_px: int, pixel_size_angstrom: float, sigma_angstrom: float) -> None:
    """Refuse a molecule that does not fit the box (an atom within 2 widths of its edge)."""
    radius = float(molecule.positions_angstrom.norm(dim=1).max())
    half = box_px // 2 * pixel_size_angstrom
    if radius + 2 * sigma_angstrom > half:
        raise InputError(f"the molecule reaches {radius:.0f} Å from its centre: it does not fit a {box_px}-pixel box at "
                         f"{pixel_size_angstrom} Å/px (half-width {half:.0f} Å); use a larger box or pixel size")


def arm_length(parts: list[Part]) -> float:
    """The bending arm's length, Å (NaN without one)."""
    arms = [p.length_angstrom for p in parts if p.kind == "bend"]
    return arms[0] if arms else math.nan
