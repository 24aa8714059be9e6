"""How far to warp each cluster: the amplitude of its deformation, fitted to its half-set's data.

A model trained against a consensus map whose moving parts are blurred learns motions that are
too small: the blurred Gaussians explain an image almost as well half-way to the true position.
On the 3HSY hinge (``benchmarks/real_structure.py``, 4,000 particles, SNR 0.1) the learnt
displacements of the moving domain follow the true ones with slope 0.70 / 0.74 (half 1 / 2),
and the images prefer the learnt amplitude to a larger one; warped by those displacements, each
cluster's density lands short of the others' and the moving domain stays blurred.

So each cluster's warp is corrected by the data: its mean displacement ``u_k`` is replaced by
``c + s_k (u_k - c)``, with ``c`` the half-set's mean displacement (the consensus frame is kept) and
``s_k`` the value in ``SCALES`` for which the cluster's density, warped, correlates best with
the sum of the other clusters' densities of the same half-set, warped (nothing from the other
half: the half-maps stay independent). The others are warped by their learnt displacements in a
first round, by their first-round scales in a second: against the unscaled others alone, the
clusters at the ends of a motion, whose others all lie on one side, overshoot (1.9 instead of
1 / 0.6 for a hinge model at 60% of the true motion). Densities are
compared at low resolution (``LOWPASS_ANGSTROM``, images Fourier-cropped to match) inside the
solvent mask. With the true deformations ``s_k`` stays at about 1; with no deformation every warp
is the identity whatever ``s_k``. On 3HSY the fitted ``s_k`` were 1.2-1.6 and the deformable map's
moving-domain band FSC rose from 0.783 to 0.809 (halves 0.717 / 0.733 -> 0.743 / 0.755): 69% of
the gap between the plain map (0.607) and the static twin's (0.901) closed, against 61%.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
import torch.nn.functional as F

from ..data.batches import group_batches, load_batch
from ..data.fourier import cropped_pixel_size, half_grid_shells, irfft_centred, radial_index
from ..data.images import ParticleImages
from ..data.particles import ParticleTable
from ..model.graph import mean_neighbour_distance
from .clusters import mean_displacement
from .deformable import ClusterWarper, local_spectrum
from .fourier_slice import FourierBackprojector, crop_volume
from .plain import insert_batch

log = logging.getLogger(__name__)
LOWPASS_ANGSTROM = 10.0
SCALES = tuple(float(s) for s in np.round(np.arange(0.7, 2.01, 0.1), 2))
ROUNDS = 2  # fits, each against the others' densities warped with the previous round's scales
KEEP_BYTES = 1 << 30  # low-resolution cluster densities kept in memory between the two passes


def scaled(centre: torch.Tensor, shift: torch.Tensor, scale: float) -> torch.Tensor:
    """``(n, 3)`` Å: the cluster's mean displacement ``shift`` scaled about the half's mean ``centre``."""
    return centre + scale * (shift - centre)


class LowResolutionClusters:
    """Clusters' densities at ``LOWPASS_ANGSTROM``, and their warps into the consensus frame."""

    def __init__(self, table: ParticleTable, images: ParticleImages, model, box_px: int, pixel_size_angstrom: float,
                 downsample: int, device, mask: torch.Tensor | None, insert_batch_size: int = 32):
        self.table, self.images, self.device, self.insert_batch_size = table, images, device, insert_batch_size
        self.box_px = min(box_px, 2 * math.ceil(box_px * pixel_size_angstrom / LOWPASS_ANGSTROM))
        self.pixel = cropped_pixel_size(pixel_size_angstrom, box_px, self.box_px)
        self.warper = ClusterWarper(model.positions, self.box_px, self.pixel, downsample,
                                    mean_neighbour_distance(model.positions))
        self.backprojector = FourierBackprojector(self.box_px, 2, device)
        self.shells = half_grid_shells(self.backprojector.padded_px, device=device)
        if mask is None:
            radius = radial_index(self.box_px, 3, device=device).float()
            self.mask = (radius < self.box_px / 2).float()
        else:
            self.mask = F.interpolate(mask.float().to(device)[None, None], size=(self.box_px,) * 3, mode="trilinear",
                                      align_corners=False)[0, 0]

    def density(self, indices: np.ndarray) -> torch.Tensor:
        """``(b, b, b)`` low-resolution density of these particles (their conformation's frame)."""
        for idx in group_batches(self.table, indices, self.insert_batch_size):
            insert_batch(self.backprojector, load_batch(self.table, self.images, idx, self.device, self.box_px),
                         self.pixel)
        spectrum, weight = self.backprojector.spectrum_and_weight()
        local = local_spectrum(spectrum, weight, self.shells)
        density = crop_volume(irfft_centred(local, overwrite_input=True), self.box_px).contiguous()
        self.backprojector.reset()
        return density

    def warps(self, density: torch.Tensor, centre: torch.Tensor, shift: torch.Tensor):
        """``scale -> (b, b, b)`` the density moved into the consensus frame by the displacements
        ``scaled(centre, shift, scale)`` (``(n, 3)`` Å), inside the mask; the field is linear in
        the displacements, so it and the upsampled density are computed once for every scale."""
        fine = self.warper.upsampled(density)
        at_centre, at_shift = self.warper.field.dense(torch.stack([centre, shift]))
        return lambda scale: self.warper.read(fine, at_centre + scale * (at_shift - at_centre)) * self.mask


def cluster_scales(low: LowResolutionClusters, model, codes: np.ndarray, labels: np.ndarray, indices: np.ndarray,
                   batch_size: int, device) -> tuple[np.ndarray, torch.Tensor]:
    """``(k,)`` the fitted scale of each cluster and the ``(n, 3)`` half-set's mean displacement
    (Å), for the half's particles ``indices`` with codes ``(m, l)`` and cluster ``labels`` ``(m,)``."""
    n_clusters = int(labels.max()) + 1
    sizes = np.bincount(labels, minlength=n_clusters)
    keep = n_clusters * (low.box_px**3 + model.positions.numel()) * 4 <= KEEP_BYTES
    kept: list = []

    def clusters():  # (k, low-resolution density, mean displacement) of every cluster, kept if small
        for k in range(n_clusters):
            if k < len(kept):
                yield k, *kept[k]
                continue
            density = low.density(indices[labels == k])
            shift = mean_displacement(model, codes[labels == k], batch_size, device)[0]
            if keep:
                kept.append((density, shift))
            yield k, density, shift

    centre = torch.zeros(model.positions.shape, device=device)
    for k, _, shift in clusters():
        centre += float(sizes[k] / len(labels)) * shift
    scales = np.ones(n_clusters)
    for _ in range(ROUNDS):
        total = sum(float(sizes[k]) * low.warps(density, centre, shift)(scales[k]) for k, density, shift in clusters())
        fitted = scales.copy()
        for k, density, shift in clusters():
            moved = low.warps(density, centre, shift)
            others = total - float(sizes[k]) * moved(scales[k])  # the cluster itself left out

            def score(s: float) -> float:
                volume = moved(s)
                return float((volume * others).sum() / volume.norm().clamp(min=1e-30))

            fitted[k] = max(SCALES, key=score)
        scales = fitted
    return scales, centre
