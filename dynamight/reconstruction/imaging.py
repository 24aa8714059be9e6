"""Image formation: spectra of projections -> observed particle images (shift, CTF), and back."""

from __future__ import annotations

import torch

from ..data.batches import ParticleBatch
from ..data.ctf import ctf_image
from ..data.fourier import fft_centred, ifft_centred, phase_shift_2d


def batch_ctf(batch: ParticleBatch) -> torch.Tensor:
    """``(b, d, d)`` centred CTF images of a batch (ones when the data carry no CTF)."""
    if batch.ctf is None:
        return torch.ones(batch.images.shape, device=batch.images.device)
    return ctf_image(batch.ctf, batch.box_px, batch.pixel_size_angstrom)


def observe(projection_spectra: torch.Tensor, ctf: torch.Tensor, centring_shift_px: torch.Tensor) -> torch.Tensor:
    """Observed images from centred projection spectra.

    Args:
        projection_spectra: ``(b, d, d)`` complex spectra of centred projections.
        ctf: ``(b, d, d)`` CTF.
        centring_shift_px: ``(b, 2)`` the particles' ``+origin`` shifts (pixels, xy).

    Returns:
        ``(b, d, d)`` real images: CTF applied, then shifted by ``-origin`` (RELION convention).
    """
    return ifft_centred(phase_shift_2d(projection_spectra * ctf, -centring_shift_px), 2)


def centred_spectra(batch: ParticleBatch) -> torch.Tensor:
    """``(b, d, d)`` complex spectra of the batch's images, centred (shifted by ``+origin``)."""
    return phase_shift_2d(fft_centred(batch.images, 2), batch.centring_shift_px)
