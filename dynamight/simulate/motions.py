"""The motions of a simulated molecule: rigid hinges, bending arms, interpolation between two states.

A motion is a list of :class:`Part` s. Each part moves the atoms of one domain (a label of
:attr:`~dynamight.simulate.molecule.Molecule.domain`) by one per-particle factor, a column of
``ground_truth.star``:

- ``hinge``: rotation by the factor (degrees) about ``axis`` through ``point``.
- ``bend``: the domain is an arm that starts at ``point`` and runs along ``axis`` for
  ``length_angstrom``; it bends in the plane of ``axis`` and ``direction`` along a circular arc whose
  tangent turns by the factor (degrees) from base to tip: curvature ``radians(factor) / length``
  (1/Å; positive bends towards ``direction``). Cross-sections stay
  perpendicular to the bent centre line, so an atom's displacement grows with its distance along the
  arm (about ``curvature * s^2 / 2`` for small curvature): not a rigid motion.
- ``interpolate``: linear move, by the factor in ``[0, 1]``, towards the domain rotated 25° about
  ``x`` through ``point`` and shifted 4 Å along ``y``.

Positions are ``(n, 3)`` xyz in Å from the box centre. Parts move disjoint domains, so their order
does not matter.
"""

from __future__ import annotations

import math
from typing import Literal

import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict

Vector = tuple[float, float, float]


class Part(BaseModel):
    """One independent motion of one domain (see the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["hinge", "bend", "interpolate"]
    factor: str  # the ground-truth column that holds the per-particle amount
    domain: int  # the atoms with this domain label move
    point: Vector  # Å: the hinge point, or the base of a bending arm
    axis: Vector = (0.0, 1.0, 0.0)  # unit: the hinge axis, or the arm's direction
    direction: Vector = (1.0, 0.0, 0.0)  # unit, perpendicular to axis: the arm bends towards it
    length_angstrom: float = 0.0  # the arm's length (bend)


def axis_angle_matrix(axis, angle_rad: torch.Tensor) -> torch.Tensor:
    """``(b,)`` angles about a fixed unit ``axis`` (3 numbers) -> ``(b, 3, 3)`` rotation matrices (Rodrigues)."""
    k = torch.as_tensor(axis, dtype=torch.float32)
    k = k / k.norm()
    kx = torch.tensor([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    s, c = torch.sin(angle_rad)[:, None, None], torch.cos(angle_rad)[:, None, None]
    return torch.eye(3) + s * kx + (1 - c) * (kx @ kx)


def rotate_about(points: torch.Tensor, point, axis, angle_deg: torch.Tensor) -> torch.Tensor:
    """``(n, 3)`` points, ``(b,)`` angles (degrees) about ``axis`` through ``point`` -> ``(b, n, 3)``."""
    point = torch.as_tensor(point, dtype=points.dtype)
    rot = axis_angle_matrix(axis, torch.deg2rad(angle_deg.float()))
    return torch.einsum("bij,nj->bni", rot, points - point) + point


def bend_arm(points: torch.Tensor, part: Part, curvature: torch.Tensor) -> torch.Tensor:
    """``(n, 3)`` points, ``(b,)`` curvatures (1/Å) -> ``(b, n, 3)`` the points of the bent arm.

    A point at arc length ``s`` along the axis (clamped to ``[0, length]``; beyond the tip the arm
    continues straight along the bent tangent) with lateral offset ``u`` along ``direction`` goes
    to ``c(s) + u N(s)``: ``c`` the circular centre line, ``N`` its rotated normal."""
    base, a, e = (torch.as_tensor(v, dtype=points.dtype) for v in (part.point, part.axis, part.direction))
    rel = points - base
    s = rel @ a  # (n,)
    u = rel @ e
    rest = rel - s[:, None] * a - u[:, None] * e  # out-of-plane part, unchanged
    s_arc = s.clamp(0.0, part.length_angstrom)
    beyond = s - s_arc  # < 0 before the base, > 0 beyond the tip
    theta = curvature.float()[:, None] * s_arc[None]  # (b, n) the tangent's turn
    along = s_arc * torch.sinc(theta / math.pi)  # sin(theta) / curvature, safe at 0
    across = s_arc * (theta / 2) * torch.sinc(theta / (2 * math.pi)) ** 2  # (1 - cos theta) / curvature
    tangent = torch.cos(theta)[..., None] * a + torch.sin(theta)[..., None] * e  # (b, n, 3)
    normal = -torch.sin(theta)[..., None] * a + torch.cos(theta)[..., None] * e
    centre = along[..., None] * a + across[..., None] * e
    return base + centre + beyond[None, :, None] * tangent + u[None, :, None] * normal + rest[None]


def interpolation_target(points: torch.Tensor, point) -> torch.Tensor:
    """``(n, 3)`` -> ``(n, 3)`` the ``interpolate`` motion's second state of the points."""
    point = torch.as_tensor(point, dtype=points.dtype)
    rot = axis_angle_matrix((1.0, 0.0, 0.0), torch.tensor([math.radians(25.0)]))[0]
    return (points - point) @ rot.T + point + torch.tensor([0.0, 4.0, 0.0])


def move_part(points: torch.Tensor, part: Part, factor: torch.Tensor) -> torch.Tensor:
    """``(n, 3)`` points of the part's domain, ``(b,)`` factors -> ``(b, n, 3)`` moved points."""
    if part.kind == "hinge":
        return rotate_about(points, part.point, part.axis, factor)
    if part.kind == "bend":
        return bend_arm(points, part, torch.deg2rad(factor.double()).float() / part.length_angstrom)
    f = factor.float()[:, None, None]
    return (1 - f) * points[None] + f * interpolation_target(points, part.point)[None]


def apply_parts(positions: torch.Tensor, domain: torch.Tensor, parts: list[Part],
                factors: dict[str, torch.Tensor]) -> torch.Tensor:
    """``(n, 3)`` consensus atoms, ``(n,)`` domain labels, each part's ``(b,)`` factors ->
    ``(b, n, 3)`` the atoms of ``b`` particles."""
    b = len(next(iter(factors.values()))) if factors else 1
    out = positions[None].expand(b, -1, -1)
    for part in parts:
        moved = move_part(positions, part, factors[part.factor])
        out = torch.where((domain == part.domain)[None, :, None], moved, out)
    return out


def parts_table(parts: list[Part]) -> pd.DataFrame:
    """The parts as a STAR table (``data_motions`` of ``ground_truth.star``)."""
    rows = []
    for p in parts:
        row = {"dmPartKind": p.kind, "dmPartFactor": p.factor, "dmPartDomain": p.domain,
               "dmPartLengthAngstrom": p.length_angstrom}
        for name in ("point", "axis", "direction"):
            row.update({f"dmPart{name.title()}{c}": float(v) for c, v in zip("XYZ", getattr(p, name))})
        rows.append(row)
    return pd.DataFrame(rows)


def parts_from_table(table: pd.DataFrame) -> list[Part]:
    """Inverse of :func:`parts_table`."""
    parts = []
    for _, row in table.iterrows():
        vectors = {name: tuple(float(row[f"dmPart{name.title()}{c}"]) for c in "XYZ")
                   for name in ("point", "axis", "direction")}
        parts.append(Part(kind=row["dmPartKind"], factor=row["dmPartFactor"], domain=int(row["dmPartDomain"]),
                          length_angstrom=float(row["dmPartLengthAngstrom"]), **vectors))
    return parts
