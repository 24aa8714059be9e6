"""Plain (rigid) reconstruction of two half-maps and a merged map, with a gold-standard FSC.

Each half-set's particles are centred (shifted by ``+origin``), multiplied by their CTF in Fourier
space and inserted as central slices with CTF^2 weights (:class:`FourierBackprojector`). The
division is Wiener-regularised as in RELION: per shell, ``weight + <weight> / SNR`` with
``SNR = FSC / (1 - FSC)`` from the unregularised half-maps (for the merged map, which has twice the
data, the FSC first becomes ``sqrt(2 FSC / (FSC + 1))``, as RELION's). Every map is masked outside
its inscribed sphere as RELION's are (:mod:`.masking`), before that FSC is measured; with a solvent
mask, the FSC behind the Wiener term is the masked one corrected by phase randomisation (as
RELION's refinement uses its solvent-flattened FSC). The reconstruction's box
and pixel size are those of the first optics group (as ``relion_reconstruct``); other groups are
inserted at their own frequency scale.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..data.batches import ParticleBatch, group_batches, load_batch
from ..data.fourier import fsc as fourier_shell_correlation, half_grid_shell_means, half_grid_shells
from ..data.images import ParticleImages
from ..data.particles import ParticleTable
from .fourier_slice import FourierBackprojector
from .imaging import batch_ctf, centred_spectra
from .masking import fsc_curves

log = logging.getLogger(__name__)


@dataclass
class HalfMaps:
    """``half1``, ``half2``, ``merged``: ``(d, d, d)`` maps; ``fsc``: ``(d // 2 + 1,)`` between the halves."""

    half1: torch.Tensor
    half2: torch.Tensor
    merged: torch.Tensor
    fsc: torch.Tensor
    pixel_size_angstrom: float


def insertion_scale(batch: ParticleBatch, box_px: int, pixel_size_angstrom: float, pad: int) -> float:
    """Padded voxels per image frequency index for a batch inserted into a ``box_px`` volume."""
    return pad * box_px * pixel_size_angstrom / (batch.box_px * batch.pixel_size_angstrom)


def insert_batch(backprojector: FourierBackprojector, batch: ParticleBatch, pixel_size_angstrom: float) -> None:
    """Insert one batch of particle images (centred, CTF-multiplied, CTF^2-weighted)."""
    ctf = batch_ctf(batch)
    pad = backprojector.padded_px // backprojector.box_px
    backprojector.insert(centred_spectra(batch) * ctf, ctf**2, batch.rotations,
                         insertion_scale(batch, backprojector.box_px, pixel_size_angstrom, pad))


def wiener_regularisation(weight: torch.Tensor, fsc: torch.Tensor, box_px: int, whole: bool = False) -> torch.Tensor:
    """RELION's ``1 / tau^2`` term (``BackProjector::updateSSNRarrays``) for every voxel of a padded grid.

    Per shell: ``<W> / SNR``, with ``<W>`` the mean CTF^2 weight over all of the shell's voxels and
    ``SNR = f / (1 - f)`` from the half-map FSC ``f`` clamped to ``[0.001, 0.999]``; for the merged
    map (``whole``) ``f`` first becomes ``sqrt(2 f / (f + 1))`` (twice the data). Beyond the Nyquist
    shell the term is huge: nothing is kept there. (RELION's Nyquist shell stops at radius box / 2,
    ours at box / 2 + 1/2, as our FSC's shells.)

    Args:
        weight: ``(D, D, D // 2 + 1)`` accumulated CTF^2 weights, a half grid (as
            :meth:`FourierBackprojector.spectrum_and_weight`; each ``kx > 0`` voxel stands for
            itself and its mirror in the shell means).
        fsc: ``(d // 2 + 1,)`` half-map FSC.
        box_px: the unpadded box ``d``.
        whole: the term for the merged map rather than a half-map.

    Returns:
        ``(D, D, D // 2 + 1)`` values to add to ``weight`` before dividing.
    """
    padded = weight.shape[0]
    n = fsc.shape[0] + 1
    shells = half_grid_shells(padded, box_px, n - 1, weight.device)
    mean_weight = half_grid_shell_means(weight, shells, n)
    f = fsc.double().to(weight.device).clamp(min=1e-3)
    if whole:
        f = torch.sqrt(2 * f / (f + 1))
    f = f.clamp(max=0.999)
    per_shell = torch.cat([mean_weight[:-1] * (1 - f) / f, mean_weight.new_tensor([1e30])])
    return per_shell.to(weight.dtype).index_select(0, shells.flatten()).reshape(weight.shape)


def reconstruct_half_maps(
    table: ParticleTable,
    images: ParticleImages,
    device: torch.device,
    batch_size: int = 64,
    insert: Callable[[FourierBackprojector, ParticleBatch, float], None] = insert_batch,
    on_batch: Callable[[int], None] | None = None,
    regularise: bool = True,
    mask: torch.Tensor | None = None,
) -> HalfMaps:
    """Reconstruct both half-maps (``rlnRandomSubset`` 1 and 2) and the merged map.

    Args:
        insert: how a batch enters an accumulator (plain insertion by default; the deformable
            backprojection passes its own).
        on_batch: called with the number of particles after every batch (progress, abort checks).
        regularise: the FSC-based Wiener term (``False``: plain weight division, as
            ``relion_reconstruct`` without ``--fsc``; for comparisons).
        mask: ``(d, d, d)`` solvent mask: the Wiener term then comes from the mask-corrected FSC.
    """
    box = table.optics_groups[0].box_px
    pixel = table.optics_groups[0].pixel_size_angstrom
    halves = []
    for half in (1, 2):
        bp = FourierBackprojector(box, device=device)
        for idx in group_batches(table, np.flatnonzero(table.half_set == half), batch_size):
            insert(bp, load_batch(table, images, idx, device), pixel)
            if on_batch is not None:
                on_batch(len(idx))
        halves.append(bp)
    return half_maps_from(halves[0], halves[1], box, pixel, regularise, mask)


def half_maps_from(half1, half2, box_px: int, pixel_size_angstrom: float, regularise: bool = True,
                   mask: torch.Tensor | None = None) -> HalfMaps:
    """Regularised (or, ``regularise=False``, unregularised) half-maps and merged map from two
    accumulators (plain or deformable: anything with ``reconstruct(regularisation)``,
    ``spectrum_and_weight()`` and ``add(other)``). ``half1`` holds both halves' data afterwards.
    The Wiener term comes from the FSC of the unregularised half-maps: with ``mask`` (``(d, d, d)``),
    the mask-corrected one."""
    raw_fsc = fsc_curves(half1.reconstruct(), half2.reconstruct(), mask).corrected if regularise else None

    def term(acc, whole: bool):
        return wiener_regularisation(acc.spectrum_and_weight()[1], raw_fsc, box_px, whole) if regularise else None

    maps = [acc.reconstruct(term(acc, False)) for acc in (half1, half2)]
    half1.add(half2)
    merged = half1.reconstruct(term(half1, True))
    return HalfMaps(maps[0], maps[1], merged, fourier_shell_correlation(maps[0], maps[1]), pixel_size_angstrom)
