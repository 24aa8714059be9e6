"""RELION's geometry conventions: the ONE home of Euler angles, rotation centres and origins.

Conventions (RELION ``euler.cpp``, ``projector.cpp``; see relion-contract.md §7):

- Euler angles ``(rot, tilt, psi)`` in degrees are ZYZ; the matrix is
  ``A = Rz(psi) @ Ry(tilt) @ Rz(rot)`` with ``Rz(a) = [[c, s, 0], [-s, c, 0], [0, 0, 1]]`` and
  ``Ry(b) = [[c, 0, -s], [0, 1, 0], [s, 0, c]]``.
- A particle image is the map rotated by ``A`` (a map point ``r`` appears at ``A @ r``) and
  projected along ``z``. In Fourier space the image is the central slice ``V^(A^T k)``.
- The rotation centre of a ``d``-pixel box is pixel ``d // 2`` on every axis (counting from 0).
- Origins: the particle's centre lies at ``image centre - origin``. The observed image is the centred
  projection shifted by ``-origin``; to centre an image, shift it by ``+origin``.
"""

from __future__ import annotations

import torch


def euler_angles_to_matrix(angles_deg: torch.Tensor) -> torch.Tensor:
    """RELION rotation matrices from Euler angles.

    Args:
        angles_deg: ``(..., 3)`` ``(rot, tilt, psi)`` in degrees.

    Returns:
        ``(..., 3, 3)`` matrices ``A`` that rotate map coordinates (xyz) into image coordinates.
    """
    rot, tilt, psi = torch.deg2rad(angles_deg).unbind(-1)
    ca, sa = torch.cos(rot), torch.sin(rot)
    cb, sb = torch.cos(tilt), torch.sin(tilt)
    cg, sg = torch.cos(psi), torch.sin(psi)
    cc, cs = cb * ca, cb * sa
    sc, ss = sb * ca, sb * sa
    rows = [
        torch.stack([cg * cc - sg * sa, cg * cs + sg * ca, -cg * sb], -1),
        torch.stack([-sg * cc - cg * sa, -sg * cs + cg * ca, sg * sb], -1),
        torch.stack([sc, ss, cb], -1),
    ]
    return torch.stack(rows, -2)


def matrix_to_euler_angles(matrix: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`euler_angles_to_matrix` (RELION's ``Euler_matrix2angles``).

    Args:
        matrix: ``(..., 3, 3)`` rotation matrices.

    Returns:
        ``(..., 3)`` ``(rot, tilt, psi)`` in degrees, tilt in ``[0, 180]``.
    """
    a = matrix
    sb = torch.sqrt(a[..., 0, 2] ** 2 + a[..., 1, 2] ** 2)
    tilt = torch.atan2(sb, a[..., 2, 2])
    regular = sb > 16 * torch.finfo(a.dtype).eps
    psi = torch.where(regular, torch.atan2(a[..., 1, 2], -a[..., 0, 2]), torch.zeros_like(sb))
    rot = torch.where(
        regular,
        torch.atan2(a[..., 2, 1], a[..., 2, 0]),
        torch.atan2(-a[..., 1, 0], a[..., 0, 0]),
    )
    return torch.rad2deg(torch.stack([rot, tilt, psi], -1))


def viewing_direction(angles_deg: torch.Tensor) -> torch.Tensor:
    """Unit viewing direction in map coordinates.

    Args:
        angles_deg: ``(..., 3)`` Euler angles in degrees.

    Returns:
        ``(..., 3)`` ``(sin tilt cos rot, sin tilt sin rot, cos tilt)``, i.e. the third row of ``A``.
    """
    return euler_angles_to_matrix(angles_deg)[..., 2, :]


def box_centre(box_px: int) -> int:
    """Index of the rotation centre of a ``box_px`` box on each axis (RELION: ``box // 2``)."""
    return box_px // 2


def grid_coordinates(box_px: int, ndim: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Pixel coordinates relative to the box centre.

    Returns:
        ``(d, d, 2)`` (``ndim=2``, ``[y, x]`` indexing) or ``(d, d, d, 3)`` (``ndim=3``,
        ``[z, y, x]`` indexing) coordinates in pixels; the last axis is ``xy`` / ``xyz``.
    """
    axis = torch.arange(box_px, device=device, dtype=dtype) - box_centre(box_px)
    grids = torch.meshgrid(*([axis] * ndim), indexing="ij")
    return torch.stack(grids[::-1], -1)


def centring_shift_px(origin_angstrom: torch.Tensor, pixel_size_angstrom: float | torch.Tensor) -> torch.Tensor:
    """Shift that moves the particle to the image centre (``+origin``), in pixels.

    Args:
        origin_angstrom: ``(..., 2)`` ``rlnOriginXAngst, rlnOriginYAngst``.
        pixel_size_angstrom: scalar or ``(...)`` image pixel size.

    Returns:
        ``(..., 2)`` shift in pixels, xy.
    """
    if isinstance(pixel_size_angstrom, torch.Tensor) and pixel_size_angstrom.ndim:
        pixel_size_angstrom = pixel_size_angstrom[..., None]
    return origin_angstrom / pixel_size_angstrom
