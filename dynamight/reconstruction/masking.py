"""RELION's treatment of reconstructed maps: the soft mask outside the inscribed sphere, and the
FSC of two half-maps corrected for the correlation a solvent mask adds (phase randomisation).

Both follow RELION 5's source:

- ``softMaskOutsideMap`` (``src/mask.cpp``), which ``BackProjector::reconstruct`` applies to every
  reconstruction before its gridding correction ("mask out corners to prevent aliasing
  artefacts"): voxels beyond radius ``d / 2`` from the centre (pixel ``d // 2``) blend, over a
  raised-cosine edge 3 pixels wide, into the mean of the region outside that radius (weighted by
  the edge). Without it the corners keep the noise of the unsampled frequencies, which lowers the
  half-map FSC and hence the Wiener term.
- ``Postprocessing::run`` and ``calculateFSCtrue`` (``src/postprocessing.cpp``): the FSC of the
  masked half-maps, and of the same maps with their phases randomised beyond the first shell where
  the unmasked FSC falls below 0.8 (then masked); the corrected FSC is the masked one up to two
  shells past that shell, and ``(masked - random) / (1 - random)`` beyond.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..data.fourier import fsc, rfft_radius
from ..data.geometry import grid_coordinates

COSINE_WIDTH_PX = 3.0
RANDOMISE_AT_FSC = 0.8


def soft_mask_outside_map(volume: torch.Tensor, radius_px: float | None = None,
                          cosine_width_px: float = COSINE_WIDTH_PX) -> torch.Tensor:
    """RELION's ``softMaskOutsideMap`` (background = the weighted mean outside the sphere).

    Args:
        volume: ``(d, d, d)`` real map, centre at pixel ``d // 2``.
        radius_px: radius (pixels) inside which nothing changes; ``d / 2`` by default.
        cosine_width_px: width of the raised-cosine edge beyond ``radius_px``.

    Returns:
        ``(d, d, d)`` masked map, same dtype.
    """
    d = volume.shape[-1]
    radius = d / 2 if radius_px is None else radius_px
    r = grid_coordinates(d, 3, device=volume.device, dtype=torch.float64).norm(dim=-1)
    outer = radius + cosine_width_px
    edge = 0.5 + 0.5 * torch.cos(math.pi * (outer - r) / max(cosine_width_px, 1e-12))
    weight = torch.where(r < radius, 0.0, torch.where(r > outer, 1.0, edge))  # share of the background
    total = weight.sum()
    if float(total) == 0:
        return volume
    background = float((weight * volume.double()).sum() / total)
    weight = weight.to(volume.dtype)
    return volume * (1 - weight) + background * weight


def randomise_phases_beyond(volume: torch.Tensor, shell: int, seed: int = 0) -> torch.Tensor:
    """``(d, d, d)`` map -> the same map with random phases at every frequency ``|k| >= shell``
    (``|k|`` in Fourier pixels), amplitudes kept (RELION's ``randomizePhasesBeyond``); seeded."""
    spectrum = torch.fft.rfftn(volume.double().cpu())
    beyond = rfft_radius(volume.shape[-1]) >= shell
    generator = torch.Generator().manual_seed(seed)
    phase = torch.rand(spectrum.shape, generator=generator, dtype=torch.float64) * (2 * math.pi)
    randomised = torch.where(beyond, torch.polar(spectrum.abs(), phase), spectrum)
    return torch.fft.irfftn(randomised, s=volume.shape).to(volume.dtype).to(volume.device)


@dataclass
class FscCurves:
    """Half-map FSC curves, each ``(d // 2 + 1,)``, as ``relion_postprocess`` writes them.

    Without a mask ``masked``, ``phase_randomised`` and ``randomise_from_shell`` are ``None`` and
    ``corrected`` is the unmasked curve (RELION's ``fsc_true`` then)."""

    unmasked: torch.Tensor
    corrected: torch.Tensor
    masked: torch.Tensor | None = None
    phase_randomised: torch.Tensor | None = None
    randomise_from_shell: int | None = None

    def columns(self) -> dict[str, torch.Tensor]:
        """RELION's ``data_fsc`` column names -> curves (the corrected one first)."""
        out = {"rlnFourierShellCorrelationCorrected": self.corrected,
               "rlnFourierShellCorrelationUnmaskedMaps": self.unmasked}
        if self.masked is not None:
            out["rlnFourierShellCorrelationMaskedMaps"] = self.masked
            out["rlnCorrectedFourierShellCorrelationPhaseRandomizedMaskedMaps"] = self.phase_randomised
        return out


def fsc_curves(half1: torch.Tensor, half2: torch.Tensor, mask: torch.Tensor | None = None, seed: int = 0,
               randomise_at_fsc: float = RANDOMISE_AT_FSC) -> FscCurves:
    """Unmasked, masked, phase-randomised-masked and corrected FSC of two ``(d, d, d)`` half-maps.

    Args:
        mask: ``(d, d, d)`` solvent mask in ``[0, 1]`` (``None``: the unmasked FSC only).
        seed: seed of the phase randomisation.
        randomise_at_fsc: phases are randomised from the first shell (> 0) where the unmasked FSC
            falls below this. Where it never does, nothing is randomised and ``corrected`` is
            the masked FSC.
    """
    unmasked = fsc(half1, half2)
    if mask is None:
        return FscCurves(unmasked, unmasked.clone())
    mask = mask.to(half1.device, half1.dtype)
    masked = fsc(half1, half2, mask)
    below = torch.nonzero(unmasked[1:] < randomise_at_fsc).flatten()
    if len(below) == 0:
        return FscCurves(unmasked, masked.clone(), masked, torch.zeros_like(masked), None)
    shell = int(below[0]) + 1
    random = fsc(randomise_phases_beyond(half1, shell, seed), randomise_phases_beyond(half2, shell, seed + 1), mask)
    corrected = masked.clone()
    beyond = torch.arange(len(masked), device=masked.device) >= shell + 2
    corrected[beyond] = (masked[beyond] - random[beyond]) / (1 - random[beyond]).clamp(min=1e-6)
    return FscCurves(unmasked, corrected, masked, random, shell)
