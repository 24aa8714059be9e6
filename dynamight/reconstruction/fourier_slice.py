"""Fourier-slice projection and backprojection (trilinear, padded), as RELION's Projector and
BackProjector.

A volume of box ``d`` is zero-padded to ``D = pad * d`` (default ``pad = 2``). The 2D spectrum of a
``d``-box projection at frequency index ``j`` (units ``1 / d`` cycles per pixel) equals the 3D
spectrum of the padded volume at index ``pad * A^T (j, 0)``, read by trilinear interpolation.
Interpolating in Fourier space multiplies real space by ``sinc^2`` of the padded box, so the
projector divides the volume by it beforehand and the backprojector divides the reconstruction by
it afterwards (gridding correction). Frequencies beyond Nyquist (``|j| > d / 2``) are left out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..data.fourier import fft_centred, frequency_grid, irfft_centred
from .masking import soft_mask_outside_map


def sinc2_window(box_px: int, padded_px: int, device=None) -> torch.Tensor:
    """``(d, d, d)`` real-space transfer of trilinear interpolation on a ``padded_px`` Fourier grid."""
    x = (torch.arange(box_px, device=device, dtype=torch.float64) - box_px // 2) / padded_px
    s = torch.sinc(x) ** 2
    return (s[:, None, None] * s[None, :, None] * s[None, None, :]).float()


def pad_volume(volume: torch.Tensor, padded_px: int) -> torch.Tensor:
    """Zero-pad ``(d, d, d)`` to ``(D, D, D)`` keeping the centre ``d // 2`` at ``D // 2``."""
    d = volume.shape[-1]
    lo = padded_px // 2 - d // 2
    out = volume.new_zeros((padded_px,) * 3)
    out[lo:lo + d, lo:lo + d, lo:lo + d] = volume
    return out


def crop_volume(volume: torch.Tensor, box_px: int) -> torch.Tensor:
    """Inverse of :func:`pad_volume`: ``(D, D, D)`` -> central ``(d, d, d)``."""
    lo = volume.shape[-1] // 2 - box_px // 2
    return volume[lo:lo + box_px, lo:lo + box_px, lo:lo + box_px]


def mirrored_plane(plane: torch.Tensor) -> torch.Tensor:
    """``(D, D)`` plane of a centred grid -> the plane with voxel ``(y, z)`` moved to ``(-y, -z)``."""
    return torch.roll(torch.flip(plane, dims=(0, 1)), shifts=(1, 1), dims=(0, 1))


def slice_coordinates(rotations: torch.Tensor, box_px: int, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """3D sampling positions of the central slices of ``d``-box images.

    Args:
        rotations: ``(b, 3, 3)`` RELION matrices ``A``.
        box_px: image box ``d``.
        scale: padded-grid voxels per image frequency index (``pad`` times the ratio of pixel
            sizes when images and volume differ).

    Returns:
        ``(b, d, d, 3)`` positions (xyz, padded-grid voxels relative to the centre) and
        ``(d, d)`` bool mask of the frequencies inside Nyquist.
    """
    j = frequency_grid(box_px, 2, device=rotations.device) * box_px  # (d, d, 2) integer indices
    inside = j.norm(dim=-1) <= box_px // 2
    # position = A^T (jx, jy, 0): the first two rows of A, transposed
    coords = torch.einsum("hwi,bij->bhwj", j * scale, rotations[:, :2, :])
    return coords, inside


class FourierProjector:
    """Central-slice projector of one volume (the padded, gridding-corrected 3D spectrum is kept)."""

    def __init__(self, volume: torch.Tensor, pad: int = 2):
        """``volume``: ``(d, d, d)`` real map, ``[z, y, x]``."""
        self.box_px = volume.shape[-1]
        self.padded_px = pad * self.box_px
        corrected = volume.float() / sinc2_window(self.box_px, self.padded_px, device=volume.device)
        spectrum = fft_centred(pad_volume(corrected, self.padded_px), 3)
        self._spectrum = torch.view_as_real(spectrum).permute(3, 0, 1, 2)[None].contiguous()  # (1, 2, D, D, D)

    def project(self, rotations: torch.Tensor, box_px: int | None = None, scale: float | None = None) -> torch.Tensor:
        """Centred spectra of projections.

        Args:
            rotations: ``(b, 3, 3)`` RELION matrices.
            box_px: image box (default: the volume's).
            scale: padded voxels per image frequency index (default ``pad``).

        Returns:
            ``(b, d, d)`` complex64 centred spectra (see :func:`dynamight.data.fourier.fft_centred`).
        """
        box_px = box_px or self.box_px
        scale = scale if scale is not None else self.padded_px / self.box_px
        coords, inside = slice_coordinates(rotations, box_px, scale)
        half = self.padded_px // 2
        grid = (coords + half) / (self.padded_px - 1) * 2 - 1  # align_corners=True normalisation
        b = rotations.shape[0]
        sampled = F.grid_sample(self._spectrum.expand(1, -1, -1, -1, -1), grid.reshape(1, b, box_px, box_px, 3),
                                mode="bilinear", padding_mode="zeros", align_corners=True)[0]  # (2, b, d, d)
        out = torch.complex(sampled[0], sampled[1])
        return out * inside


class FourierBackprojector:
    """Accumulates CTF-weighted central slices and CTF^2 weights on the Hermitian half of a padded
    3D Fourier grid, as RELION's BackProjector: ``(D, D, D // 2 + 1)`` voxels ``[z, y, kx]``
    (``z``, ``y`` centred at ``D // 2``, ``kx >= 0``; see :func:`dynamight.data.fourier.rfft_centred`).

    Spectra of real images are Hermitian, so only the half-plane ``jx >= 0`` of each image is
    inserted (points on ``jx = 0`` at half weight); a point that lands at ``kx < 0`` is inserted at
    its mirror ``-k`` with the conjugate value, and :meth:`spectrum_and_weight` adds the mirror of
    the ``kx = 0`` plane onto itself. The result is the ``kx >= 0`` half of the whole grid with
    every image inserted whole. Single precision throughout, as RELION's GPU code.
    """

    _CORNERS = torch.tensor([[(c >> k) & 1 for k in range(3)] for c in range(8)])  # (8, 3) xyz offsets

    def __init__(self, box_px: int, pad: int = 2, device=None):
        self.box_px = box_px
        self.padded_px = pad * box_px
        self.shape = (self.padded_px, self.padded_px, self.padded_px // 2 + 1)
        n = self.shape[0] * self.shape[1] * self.shape[2]
        # (V, 2) real and imaginary parts (a complex64 view) and (V,) weights: box 400, 3.1 GB in all
        self.data = torch.zeros(n, 2, device=device, dtype=torch.float32)
        self.weight = torch.zeros(n, device=device, dtype=torch.float32)
        self.completed = False  # Hermitian planes completed (spectrum_and_weight): no more insertions

    def insert(self, spectra: torch.Tensor, weights: torch.Tensor, rotations: torch.Tensor,
               scale: float | None = None) -> None:
        """Add slices.

        Args:
            spectra: ``(b, d, d)`` complex centred spectra, already multiplied by the CTF.
            weights: ``(b, d, d)`` real weights (CTF^2, or ones without a CTF).
            rotations: ``(b, 3, 3)`` RELION matrices.
            scale: padded voxels per image frequency index (default ``pad``).
        """
        if self.completed:
            raise RuntimeError("insertion into an accumulator already read out (spectrum_and_weight): reset() it first")
        d = spectra.shape[-1]
        scale = scale if scale is not None else self.padded_px / self.box_px
        coords, inside = slice_coordinates(rotations, d, scale)
        jx = torch.arange(d, device=spectra.device) - d // 2
        inside = inside & (jx >= 0)[None, :]
        half_weight = torch.where(jx == 0, 0.5, 1.0)[None, :].expand(d, d)[inside]  # (m,)
        coords = coords[:, inside]  # (b, m, 3) xyz relative to the centre
        values = torch.stack([spectra.real, spectra.imag, weights.to(spectra.real.dtype)], -1)[:, inside]
        values = values * half_weight[None, :, None]
        mirror = coords[..., :1] < 0  # (b, m, 1): inserted at -k, conjugated
        coords = torch.where(mirror, -coords, coords)
        values[..., 1:2] = torch.where(mirror, -values[..., 1:2], values[..., 1:2])
        base = torch.floor(coords)
        frac = coords - base
        base = base.long()
        base[..., 1:] += self.padded_px // 2  # kx from 0; y and z relative to the centre
        depth, height, width = self.shape
        for corner in self._CORNERS.tolist():  # one trilinear corner at a time: temporaries of (b, m), not (b, m, 8)
            idx = base + torch.tensor(corner, device=base.device)
            w = torch.ones_like(frac[..., 0])
            for axis, offset in enumerate(corner):
                w = w * (frac[..., axis] if offset else 1 - frac[..., axis])
            valid = (idx[..., 0] < width) & (idx[..., 1:] >= 0).all(-1) & (idx[..., 1:] < depth).all(-1)
            flat = ((idx[..., 2] * height + idx[..., 1]) * width + idx[..., 0])[valid]
            contributions = (values * w[..., None])[valid].float()  # (valid, 3)
            self.data.index_add_(0, flat, contributions[:, :2])
            self.weight.index_add_(0, flat, contributions[:, 2])

    def add(self, other: "FourierBackprojector") -> None:
        """Merge another accumulator of the same size (e.g. the other half-set); both either still
        accumulating or both completed (:meth:`spectrum_and_weight`)."""
        if self.completed != other.completed:
            raise ValueError("adding an accumulator whose Hermitian planes are completed to one whose are not")
        self.data += other.data
        self.weight += other.weight

    def reset(self) -> None:
        """Empty the accumulator (for the next cluster of particles)."""
        self.data.zero_()
        self.weight.zero_()
        self.completed = False

    def spectrum_and_weight(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(D, D, D // 2 + 1)`` complex64 accumulated half spectrum and float32 weights: views of
        the accumulator itself (no copy; box 400: 3 GB each), whose ``kx = 0`` and ``kx = D / 2``
        planes are completed in place on the first call (each voxel ``k`` of them also receives the
        conjugate of voxel ``-k``). No insertion is possible after that until :meth:`reset`."""
        spectrum = torch.view_as_complex(self.data).reshape(self.shape)
        weight = self.weight.reshape(self.shape)
        if not self.completed:
            for plane in (0, self.shape[2] - 1):
                spectrum[..., plane] += mirrored_plane(spectrum[..., plane]).conj()
                weight[..., plane] += mirrored_plane(weight[..., plane])
            self.completed = True
        return spectrum, weight

    def reconstruct(self, regularisation: torch.Tensor | None = None) -> torch.Tensor:
        """Wiener-style division and gridding correction (see :meth:`divide`)."""
        return self.divide(self.box_px, self.padded_px, *self.spectrum_and_weight(), regularisation)

    @staticmethod
    def divide(box_px: int, padded_px: int, spectrum: torch.Tensor, weight: torch.Tensor,
               regularisation: torch.Tensor | None = None) -> torch.Tensor:
        """Map from an accumulated spectrum and weights.

        Args:
            spectrum: ``(D, D, D // 2 + 1)`` complex accumulated half spectrum (see
                :meth:`FourierBackprojector.spectrum_and_weight`); weight: the same shape, CTF^2 weights.
            regularisation: the same shape, the term added to the weights (``1 / tau^2``, see
                :mod:`dynamight.reconstruction.plain`); ``None`` adds only a floor of 1e-3 of the
                mean non-zero weight, against division by near-zero weights.

        Returns:
            ``(d, d, d)`` float32 map (cropped, masked outside the inscribed sphere as RELION's
            reconstructions are, then gridding-corrected; the inverse FFT in single precision).
        """
        n_positive = int((weight > 0).sum())
        floor = 1e-3 * float(weight.sum()) / n_positive if n_positive else 1.0
        denominator = (weight + regularisation if regularisation is not None else weight.clone()).clamp_(min=floor)
        quotient = spectrum.to(torch.complex64) / denominator  # single precision: box 400's grid is 2 GB
        del denominator
        padded = irfft_centred(quotient, overwrite_input=True)
        volume = soft_mask_outside_map(crop_volume(padded, box_px))
        return volume / sinc2_window(box_px, padded_px, device=volume.device)
