"""Deformable backprojection by latent-space neighbourhoods: reconstruct, warp, combine.

Algorithm (chosen for speed; upstream warps every particle in real space, O(d^3) with a 3D FFT per
particle, 0.84 s per particle at box 64 on two CPU cores):

1. Cluster a half-set's particles by their deformations (:mod:`.clusters`: k-means, about
   ``PARTICLES_PER_CLUSTER`` per cluster, ``--particles-per-cluster``). Particles of one cluster
   share (nearly) one conformation. The size is a trade-off: a cluster's density (step 3) is formed from its own
   particles, and with few of them its poorly sampled frequencies carry amplified noise that the
   warp moves about; with many, the conformations within a cluster spread. On the synthetic hinge
   benchmark (``benchmarks/deformable_backprojection.py``, 2,000 particles per half, unregularised
   maps, clusters of latent codes) 25 per cluster lost 1% of the fixed domain's band FSC and closed
   71% of the moving domain's gap to the static twin; 100-400 kept the fixed domain and closed
   86-89%; 1,000 closed 50%. On a real structure (3HSY hinge, clusters of deformations) 100, 200
   and 400 per cluster gave moving-domain band FSCs (merged) of 0.763, 0.783 and 0.779.
2. For each cluster, insert its particles' CTF-weighted slices into a padded Fourier half grid
   exactly as the plain reconstruction does (:class:`FourierBackprojector`), and transform its local
   density (the data over the weights plus a floor, :class:`DeformableAccumulator`) back to real
   space: ``D_k``, the cluster's conformation.
3. Warp ``D_k`` into the consensus frame: a consensus point ``x`` sits at ``x + u_k(x)`` in the
   cluster's conformation, where ``u_k`` is the cluster's mean forward displacement field evaluated
   on a coarse grid (:mod:`.deformation_field`, ``--downsample``; its amplitude first fitted to
   the half-set's data, :mod:`.cluster_scales`); the density is upsampled twice in Fourier space
   and read trilinearly at ``x + u_k(x)``.
4. Sum the clusters' data, each corrected by its warp's change re-weighted by the cluster's
   weights; sum the CTF^2 weights of all particles unwarped (a deformation of a few Å barely moves
   a particle's weights, which vary slowly in Fourier space); divide with RELION's FSC-based Wiener
   term and correct for gridding, as :mod:`.plain`.

Cost per particle is one slice insertion (as the plain reconstruction); per cluster one inverse FFT
and one trilinear warp of the twice-upsampled box. Errors: the spread of the deformation within a
cluster (logged: the RMS distance of the particles' displacements from their cluster's mean), the
coarse field's interpolation, trilinear reads between half-pixel samples (a slight low-pass near
Nyquist), and rigid weights.
With zero deformation every warp is the identity and the result equals the plain reconstruction.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..distributed import all_reduce_sum, current
from ..data.fourier import half_grid_shell_means, half_grid_shells, irfft_centred, rfft_centred
from .deformation_field import FieldInterpolator
from .fourier_slice import FourierBackprojector, crop_volume, pad_volume


class ClusterWarper:
    """Warps a cluster's density from its conformation into the consensus frame, inside the map's
    box (the padding around it holds no density and stays as it is)."""

    def __init__(self, centres: torch.Tensor, box_px: int, pixel_size_angstrom: float, downsample: int,
                 width_angstrom: float):
        self.box_px, self.pixel = box_px, pixel_size_angstrom
        self.field = FieldInterpolator(centres, box_px, pixel_size_angstrom, downsample, width_angstrom)

    def warp(self, volume: torch.Tensor, mean_displacement: torch.Tensor) -> torch.Tensor:
        """``(d, d, d)`` volume in the deformed frame, ``(n, 3)`` Å mean displacements -> ``(d, d, d)``
        the volume in the consensus frame: ``out(x) = volume(x + u(x))``.

        The box is first upsampled twice by Fourier zero-padding, then read trilinearly at
        ``x + u(x)``: trilinear reads at the map's own sampling would low-pass every fractional
        shift (to zero at Nyquist for half a pixel), at half the spacing much less; at ``u = 0``
        the reads fall on the original samples and the warp is the identity."""
        return self.read(self.upsampled(volume), self.field.dense(mean_displacement[None])[0])

    def upsampled(self, volume: torch.Tensor) -> torch.Tensor:
        """``(d, d, d)`` volume -> ``(2d, 2d, 2d)`` upsampled twice."""
        return upsample_twice(volume.real.float())

    def read(self, fine: torch.Tensor, field: torch.Tensor) -> torch.Tensor:
        """``(2d, 2d, 2d)`` upsampled volume, ``(d, d, d, 3)`` field (Å) -> ``(d, d, d)`` volume
        read at ``x + u(x)`` for every consensus voxel ``x``."""
        d = self.box_px
        # fine-grid voxel 2 (x + u) / pixel + d, normalised to [-1, 1]; in place (box 400: 0.8 GB per copy)
        sample = (field + self.field.grid_angstrom(fine.device)).float()
        sample.mul_(4 / (self.pixel * (2 * d - 1))).add_(4 * (d // 2) / (2 * d - 1) - 1)
        return F.grid_sample(fine[None, None], sample[None], mode="bilinear", padding_mode="zeros",
                             align_corners=True)[0, 0]


def upsample_twice(volume: torch.Tensor) -> torch.Tensor:
    """``(d, d, d)`` real -> ``(2d, 2d, 2d)`` real, band-limited interpolation (Fourier zero-padding;
    each Nyquist plane split evenly between ``+d/2`` and ``-d/2``); sample ``2i`` of the result is
    sample ``i`` of the input."""
    d = volume.shape[-1]
    half = rfft_centred(volume.float())  # (d, d, d/2 + 1)
    half[..., 0, :, :] *= 0.5
    half[..., :, 0, :] *= 0.5
    half[..., -1] *= 0.5  # kx = d/2: irfftn counts it twice (itself and its mirror)
    big = torch.zeros((2 * d, 2 * d, d + 1), dtype=half.dtype, device=volume.device)
    lo = d // 2
    big[lo:lo + d, lo:lo + d, :d // 2 + 1] = half
    big[lo + d, lo:lo + d, :d // 2 + 1] += half[0]  # the Nyquist planes' other halves, at +d/2
    big[lo:lo + d + 1, lo + d, :d // 2 + 1] += big[lo:lo + d + 1, lo, :d // 2 + 1]
    return irfft_centred(big, overwrite_input=True).mul_(8)


def shell_mean(weight: torch.Tensor, shells: torch.Tensor) -> torch.Tensor:
    """``(D, D, D // 2 + 1)`` weights of a half grid and their shell indices (the same shape) -> the
    same shape: each voxel's value replaced by its shell's mean non-zero value (as on the whole
    grid, :func:`~dynamight.data.fourier.half_grid_shell_means`)."""
    means = half_grid_shell_means(weight, shells, int(shells.max()) + 1, nonzero_only=True)
    return means.to(weight.dtype).index_select(0, shells.flatten()).reshape(weight.shape)


FLOOR = 0.1  # of the shell's mean weight, added to a cluster's weights before dividing


def local_spectrum(spectrum: torch.Tensor, weight: torch.Tensor, shells: torch.Tensor) -> torch.Tensor:
    """A cluster's local density spectrum ``S / (W + f)``, computed in place of ``spectrum``, with
    the floor ``f`` ``FLOOR`` times the shell's mean non-zero weight (so that barely sampled
    frequencies are not blown up); ``spectrum``, ``weight``: ``(D, D, D // 2 + 1)`` half grids;
    ``shells``: their shell indices."""
    return spectrum.div_(shell_mean(weight, shells).mul_(FLOOR).add_(weight).clamp_(min=1e-30))


class DeformableAccumulator:
    """Warped data and rigid CTF^2 weights of one half-set, on a padded Fourier half grid.

    A cluster's data ``S_k`` and weights ``W_k`` become a local density ``S_k / (W_k + f_k)``
    (``f_k``: a tenth of the shell's mean weight, so barely sampled frequencies are not blown up),
    whose box is warped in real space; the change the warp makes, re-weighted by ``W_k``, is added
    to ``S_k``: ``S_k + W_k FFT(warped - unwarped)``. With no deformation the sum is exactly ``S_k``;
    the part of ``S_k`` too poorly sampled to form a density (``S_k f_k / (W_k + f_k)``) and the
    padding around the box stay unwarped.
    """

    def __init__(self, box_px: int, pad: int = 2, device=None):
        self.box_px, self.padded_px = box_px, pad * box_px
        self.pad, self.device = pad, device
        # single precision, the Hermitian half grid as the plain accumulator: (2 box)^2 (box + 1)
        # voxels per half-set (box 400: 3.1 GB)
        shape = (self.padded_px, self.padded_px, self.padded_px // 2 + 1)
        self.spectrum = torch.zeros(shape, dtype=torch.complex64, device=device)
        self.weights = torch.zeros(shape, dtype=torch.float32, device=device)
        self._cluster: FourierBackprojector | None = None
        self._shells: torch.Tensor | None = None

    @property
    def cluster(self) -> FourierBackprojector:
        """The current cluster's accumulator (allocated when first needed, see :meth:`release_cluster`)."""
        if self._cluster is None:
            self._cluster = FourierBackprojector(self.box_px, self.pad, self.device)
            self._shells = half_grid_shells(self.padded_px, device=self.device)
        return self._cluster

    def release_cluster(self) -> None:
        """Free the cluster accumulator (after the half-set's last cluster)."""
        self._cluster = self._shells = None

    def finish_cluster(self, warper: ClusterWarper | None, mean_displacement: torch.Tensor | None) -> None:
        """Move the current cluster's data, warped, into the totals, and reset it."""
        spectrum, weight = self.cluster.spectrum_and_weight()
        self.spectrum += spectrum  # S: exactly the plain data; the warp adds W FFT(warped - unwarped)
        if warper is not None and mean_displacement is not None and bool(mean_displacement.abs().gt(1e-6).any()):
            # in place where possible: each temporary is a padded half grid (box 400: 1-2 GB)
            local = local_spectrum(spectrum, weight, self._shells)
            box = crop_volume(irfft_centred(local, overwrite_input=True), self.box_px).clone()
            del local, spectrum  # the padding around the box holds no density: only the box moves
            padded = pad_volume(warper.warp(box, mean_displacement).sub_(box), self.padded_px)
            del box
            self.spectrum += rfft_centred(padded, overwrite_input=True).mul_(weight)
        self.weights += weight
        self.cluster.reset()

    def add(self, other: "DeformableAccumulator") -> None:
        self.spectrum += other.spectrum
        self.weights += other.weights

    def summed_over_processes(self) -> "DeformableAccumulator":
        """A copy holding the totals of every process of a distributed run (itself in a run of one)."""
        if current().world == 1:
            return self
        total = DeformableAccumulator.__new__(DeformableAccumulator)
        total.__dict__.update(self.__dict__)
        total.spectrum = torch.view_as_complex(all_reduce_sum(torch.view_as_real(self.spectrum).clone()))
        total.weights = all_reduce_sum(self.weights.clone())
        return total

    def spectrum_and_weight(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Same interface as :meth:`FourierBackprojector.spectrum_and_weight`."""
        return self.spectrum, self.weights

    def reconstruct(self, regularisation: torch.Tensor | None = None) -> torch.Tensor:
        """``(d, d, d)`` map, as :meth:`FourierBackprojector.reconstruct`."""
        return FourierBackprojector.divide(self.box_px, self.padded_px, self.spectrum, self.weights, regularisation)

    def state_dict(self) -> dict:
        return {"spectrum": torch.view_as_real(self.spectrum).cpu(), "weights": self.weights.cpu()}

    def load_state_dict(self, state: dict) -> None:
        self.spectrum.copy_(torch.view_as_complex(state["spectrum"]))
        self.weights.copy_(state["weights"])
