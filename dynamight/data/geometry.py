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

cryoSPARC's conventions (``.cs`` files; read by :mod:`dynamight.data.cryosparc`), as pyem's
``csparc2star`` and cryoDRGN's ``parse_pose_csparc`` read them, and checked in
``tests/test_cryosparc_input.py`` by projecting the same map with both metadata:

- ``alignments3D/pose`` (radians) is the rotation vector (axis times angle, right-handed) of
  ``A^T``: the rotation that takes image coordinates back into map coordinates. So
  ``A = R(pose)^T`` with ``R`` Rodrigues' formula.
- ``alignments3D/shift`` (pixels of ``alignments3D/psize_A``) is RELION's origin, same sign:
  ``rlnOriginXAngst, rlnOriginYAngst = shift * alignments3D/psize_A``.
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


def rotation_vector_to_matrix(rotation_vector: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula: ``R = I + sin(t) K + (1 - cos(t)) K^2`` for the unit axis's cross-product matrix ``K``.

    Args:
        rotation_vector: ``(..., 3)`` axis times angle, radians (right-handed).

    Returns:
        ``(..., 3, 3)`` rotation matrices (``R @ r`` rotates a column vector ``r``).
    """
    v = rotation_vector
    angle = v.norm(dim=-1)[..., None, None]
    small = angle < 1e-8
    safe = torch.where(small, torch.ones_like(angle), angle)
    first = torch.where(small, 1 - angle ** 2 / 6, torch.sin(safe) / safe)
    second = torch.where(small, 0.5 - angle ** 2 / 24, (1 - torch.cos(safe)) / safe ** 2)
    x, y, z = v.unbind(-1)
    zero = torch.zeros_like(x)
    k = torch.stack([torch.stack([zero, -z, y], -1), torch.stack([z, zero, -x], -1),
                     torch.stack([-y, x, zero], -1)], -2)
    eye = torch.eye(3, dtype=v.dtype, device=v.device).expand(k.shape)
    return eye + first * k + second * (k @ k)


def cryosparc_pose_to_euler_angles(pose_rad: torch.Tensor) -> torch.Tensor:
    """RELION Euler angles of cryoSPARC poses (``A = R(pose)^T``, see the module docstring).

    Args:
        pose_rad: ``(..., 3)`` ``alignments3D/pose`` rotation vectors, radians.

    Returns:
        ``(..., 3)`` ``(rot, tilt, psi)`` in degrees.
    """
    return matrix_to_euler_angles(rotation_vector_to_matrix(pose_rad).transpose(-1, -2))


def cryosparc_shift_to_origin_angstrom(shift_px: torch.Tensor, alignment_pixel_size_angstrom: torch.Tensor) -> torch.Tensor:
    """RELION origins of cryoSPARC shifts (same sign; cryoSPARC counts them in alignment pixels).

    Args:
        shift_px: ``(..., 2)`` ``alignments3D/shift``, xy, in pixels of ``alignments3D/psize_A``.
        alignment_pixel_size_angstrom: ``(...)`` ``alignments3D/psize_A`` (else ``blob/psize_A``).

    Returns:
        ``(..., 2)`` ``rlnOriginXAngst, rlnOriginYAngst``.
    """
    return shift_px * alignment_pixel_size_angstrom[..., None]
