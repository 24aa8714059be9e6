"""Dense deformation fields from per-Gaussian displacements, evaluated on a coarse grid.

The forward deformation of a particle is known at the Gaussian centres ``c_j`` (displacements
``delta_j``). At any point ``x`` it is extended by normalised Gaussian-kernel interpolation,
``u(x) = sum_j w_j(x) delta_j / sum_j w_j(x)`` with ``w_j(x) = exp(-|x - c_j|^2 / (2 s^2))`` and
``s`` the mean neighbour spacing of the Gaussians, evaluated on a ``(d / downsample)^3`` grid and
trilinearly upsampled to the map's grid. Far from the model (where there is no density) the field
takes the nearest Gaussians' displacement.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.spatial import cKDTree

from ..data.geometry import grid_coordinates


QUERY_CHUNK = 1 << 20  # grid points per nearest-neighbour query (its float64 results: 256 MB)


def kernel_weights(grid_points: torch.Tensor, centres: torch.Tensor, width_angstrom: float,
                   top_k: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised interpolation weights of the ``top_k`` nearest centres of each grid point, found
    with a k-d tree (``scipy.spatial.cKDTree``: box 400's 200^3 coarse grid against 30,000 centres
    takes seconds, where all pairwise distances took many minutes).

    Args:
        grid_points: ``(m, 3)`` Å. centres: ``(n, 3)`` Å.

    Returns:
        ``(m, k)`` int32 indices into ``centres`` and ``(m, k)`` weights summing to 1 (nearest first).
    """
    k = min(top_k, centres.shape[0])
    tree = cKDTree(centres.detach().cpu().double().numpy())
    points = grid_points.detach().cpu().double().numpy()
    index = torch.empty((len(points), k), dtype=torch.int32)
    d2 = torch.empty((len(points), k), dtype=torch.float32)
    for start in range(0, len(points), QUERY_CHUNK):
        distance, nearest = tree.query(points[start:start + QUERY_CHUNK], k=k, workers=-1)
        distance, nearest = distance.reshape(-1, k), nearest.reshape(-1, k)  # k = 1 gives 1-D arrays
        index[start:start + QUERY_CHUNK] = torch.from_numpy(nearest.astype(np.int32))
        d2[start:start + QUERY_CHUNK] = torch.from_numpy(distance**2)
    logits = -(d2 - d2[:, :1]) / (2 * width_angstrom**2)  # relative to the nearest: no underflow far away
    return index.to(grid_points.device), torch.softmax(logits, dim=1).to(grid_points.device)


class FieldInterpolator:
    """Evaluates dense displacement fields of one consensus model on a map grid."""

    def __init__(self, centres: torch.Tensor, box_px: int, pixel_size_angstrom: float, downsample: int,
                 width_angstrom: float):
        self.box_px, self.pixel = box_px, pixel_size_angstrom
        self.coarse_px = max(2, box_px // downsample)
        step = (box_px - 1) / (self.coarse_px - 1)  # coarse points span the map's voxel centres exactly
        axis = (torch.arange(self.coarse_px, dtype=torch.float32, device=centres.device) * step - box_px // 2)
        grid = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij")[::-1], -1).reshape(-1, 3)
        self.index, self.weight = kernel_weights(grid * pixel_size_angstrom, centres, width_angstrom)

    def coarse(self, displacements: torch.Tensor) -> torch.Tensor:
        """``(b, n, 3)`` Å -> ``(b, 3, g, g, g)`` field on the coarse grid (xyz channels, Å)."""
        b = displacements.shape[0]
        field = displacements.new_zeros((b, self.index.shape[0], 3))
        for k in range(self.index.shape[1]):  # one neighbour at a time: no (b, g^3, k, 3) temporary
            field.addcmul_(displacements[:, self.index[:, k]], self.weight[None, :, k, None])
        g = self.coarse_px
        return field.reshape(b, g, g, g, 3).permute(0, 4, 1, 2, 3)

    def dense(self, displacements: torch.Tensor) -> torch.Tensor:
        """``(b, n, 3)`` Å -> ``(b, d, d, d, 3)`` field on the map grid (``[z, y, x]``, xyz, Å)."""
        field = self.coarse(displacements)
        if self.coarse_px != self.box_px:
            field = F.interpolate(field, size=(self.box_px,) * 3, mode="trilinear", align_corners=True)
        return field.permute(0, 2, 3, 4, 1)

    def grid_angstrom(self, device=None) -> torch.Tensor:
        """``(d, d, d, 3)`` consensus voxel positions (xyz, Å from the box centre)."""
        return grid_coordinates(self.box_px, 3, device=device) * self.pixel
