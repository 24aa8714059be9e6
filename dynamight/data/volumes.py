"""Maps and masks: MRC reading and writing with voxel sizes, and soft masks."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import mrcfile
import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from .files import atomic_path


@dataclass
class Volume:
    """A cubic map. ``data``: ``(d, d, d)`` float32 indexed ``[z, y, x]``; ``pixel_size_angstrom``."""

    data: torch.Tensor
    pixel_size_angstrom: float

    @property
    def box_px(self) -> int:
        return self.data.shape[-1]


def read_map(path: str | os.PathLike, what: str = "map") -> Volume:
    """Read a cubic 3D MRC map; raise :class:`InputError` naming the file on any problem."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {what} file not found (expected a cubic 3D MRC map)")
    try:
        with mrcfile.open(path, permissive=True, mode="r") as mrc:
            if mrc.data is None:
                raise InputError(f"{path}: not a readable MRC file (expected a cubic 3D {what})")
            data = np.asarray(mrc.data, dtype=np.float32).copy()
            voxel = float(mrc.voxel_size.x)
    except ValueError as exc:
        raise InputError(f"{path}: not a readable MRC file ({exc}); expected a cubic 3D {what}") from exc
    if data.ndim != 3 or len(set(data.shape)) != 1:
        raise InputError(f"{path}: {what} has shape {data.shape}; expected a cubic 3D map (d, d, d)")
    if not np.isfinite(data).all():
        raise InputError(f"{path}: {what} contains NaN or infinite values")
    return Volume(torch.from_numpy(data), voxel)


def write_map(path: str | os.PathLike, volume: torch.Tensor, pixel_size_angstrom: float) -> None:
    """Write ``(d, d, d)`` ``volume`` as float32 MRC with its voxel size, atomically."""
    with atomic_path(path) as tmp:
        with mrcfile.new(tmp, overwrite=True) as mrc:
            mrc.set_data(volume.detach().cpu().numpy().astype(np.float32))
            mrc.voxel_size = pixel_size_angstrom


def check_same_grid(volume: Volume, path, box_px: int, pixel_size_angstrom: float, what: str) -> None:
    """Raise :class:`InputError` unless ``volume`` has the given box and pixel size (1% tolerance)."""
    if volume.box_px != box_px or abs(volume.pixel_size_angstrom - pixel_size_angstrom) > 0.01 * pixel_size_angstrom:
        raise InputError(
            f"{path}: {what} has box {volume.box_px} px at {volume.pixel_size_angstrom:.4f} Å/px; expected "
            f"box {box_px} px at {pixel_size_angstrom:.4f} Å/px to match the particles"
        )


def read_mask(path, box_px: int, pixel_size_angstrom: float, what: str = "mask") -> torch.Tensor | None:
    """``(d, d, d)`` mask of ``path`` (``None`` when no path), checked against the particles' grid."""
    if path is None:
        return None
    volume = read_map(path, what=what)
    check_same_grid(volume, path, box_px, pixel_size_angstrom, what)
    return volume.data


def soft_mask(volume: torch.Tensor, threshold: float, extend_px: int = 2, soft_edge_px: int = 4) -> torch.Tensor:
    """A soft mask around the density above ``threshold`` (as ``relion_mask_create``).

    Args:
        volume: ``(d, d, d)`` map.
        threshold: binarisation threshold.
        extend_px: binary dilation in pixels.
        soft_edge_px: width of the raised-cosine edge in pixels.

    Returns:
        ``(d, d, d)`` mask in ``[0, 1]``.
    """
    def dilate(m: torch.Tensor) -> torch.Tensor:
        return F.max_pool3d(m[None, None], 3, stride=1, padding=1)[0, 0]

    mask = (volume > threshold).float()
    for _ in range(extend_px):
        mask = dilate(mask)
    reached = mask.clone()
    for step in range(1, soft_edge_px + 1):
        grown = dilate(reached)
        value = 0.5 + 0.5 * math.cos(math.pi * step / (soft_edge_px + 1))
        mask = torch.where((grown > 0) & (reached == 0), torch.full_like(mask, value), mask)
        reached = grown
    return mask
