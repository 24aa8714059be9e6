"""Centred FFTs, frequency grids, phase shifts, radial shells and the FSC.

"Centred" means the real-space origin is pixel ``d // 2`` (the RELION rotation centre) and the
zero frequency of the returned spectrum is also at index ``d // 2`` on every axis.
"""

from __future__ import annotations

import math

import torch


def _dims(ndim: int) -> tuple[int, ...]:
    return tuple(range(-ndim, 0))


def fft_centred(x: torch.Tensor, ndim: int) -> torch.Tensor:
    """Centred FFT over the last ``ndim`` axes. ``(..., d[, d], d)`` real -> same shape complex."""
    dims = _dims(ndim)
    return torch.fft.fftshift(torch.fft.fftn(torch.fft.ifftshift(x, dim=dims), dim=dims), dim=dims)


def ifft_centred(f: torch.Tensor, ndim: int) -> torch.Tensor:
    """Inverse of :func:`fft_centred`; returns the real part. ``(..., d[, d], d)``."""
    dims = _dims(ndim)
    return torch.fft.fftshift(torch.fft.ifftn(torch.fft.ifftshift(f, dim=dims), dim=dims), dim=dims).real


def _alternating(size: int, device, dtype) -> torch.Tensor:
    """``(size,)``: ``(-1)^i``."""
    return 1 - 2 * (torch.arange(size, device=device) % 2).to(dtype)


def _modulate(x: torch.Tensor, axes: str) -> torch.Tensor:
    """``x`` multiplied in place by ``(-1)^(i_z + i_y [+ i_x])`` (``axes``: ``"zy"`` or ``"zyx"``)."""
    real = x.real.dtype if x.is_complex() else x.dtype
    z, y, w = (_alternating(n, x.device, real) for n in x.shape[-3:])
    x.mul_(z[:, None, None]).mul_(y[None, :, None])
    return x.mul_(w) if axes == "zyx" else x


def rfft_centred(x: torch.Tensor, overwrite_input: bool = False) -> torch.Tensor:
    """Centred half spectrum of a real volume: ``(D, D, D)`` -> ``(D, D, D // 2 + 1)`` complex, the
    ``kx >= 0`` half of :func:`fft_centred` (``[z, y]`` centred, frequency 0 at ``D // 2``; ``kx``
    from 0 to ``D // 2``; the other half is the conjugate mirror ``F(-k) = F(k)*``).

    For even ``D`` the two centring shifts are sign alternations: no shifted copies (box 400's
    padded grid is 2 GB per copy), and with ``overwrite_input`` no copy of ``x`` at all (``x`` is
    then left sign-alternated)."""
    dims = (-3, -2, -1)
    if x.shape[-1] % 2:
        return torch.fft.fftshift(torch.fft.rfftn(torch.fft.ifftshift(x, dim=dims), dim=dims), dim=(-3, -2))
    return _modulate(torch.fft.rfftn(_modulate(x if overwrite_input else x.clone(), "zy"), dim=dims), "zyx")


def irfft_centred(f: torch.Tensor, overwrite_input: bool = False) -> torch.Tensor:
    """Inverse of :func:`rfft_centred`: ``(D, D, D // 2 + 1)`` Hermitian half spectrum -> ``(D, D, D)``
    real. For even ``D``, ``f`` (or, without ``overwrite_input``, a copy of it) is the work space:
    the ``z``, ``y`` transforms one ``kx`` plane at a time, in place, then the ``x`` transforms one
    ``z`` slab at a time into the output; with ``overwrite_input`` the only new memory is the output
    (box 400's padded grid: 2 GB, where ``irfftn`` needed a copy, the output and its work space)."""
    size, dims = f.shape[-3], (-3, -2, -1)
    if size % 2:
        real = torch.fft.irfftn(torch.fft.ifftshift(f, dim=(-3, -2)), s=(size,) * 3, dim=dims)
        return torch.fft.fftshift(real, dim=dims)
    f = _modulate(f if overwrite_input else f.clone(), "zyx")
    for x in range(f.shape[-1]):
        f[..., x] = torch.fft.ifft2(f[..., x])
    out = torch.empty(f.shape[:-1] + (size,), dtype=f.real.dtype, device=f.device)
    for z in range(size):
        out[z] = torch.fft.irfft(f[z], n=size, dim=-1)
    return _modulate(out, "zy")


def hermitian_multiplicity(box_px: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """``(box // 2 + 1,)``: how many voxels of the whole spectrum each ``kx`` column of a half
    spectrum stands for (1 at ``kx = 0`` and at ``kx = box / 2``, else 2: itself and its mirror)."""
    m = torch.full((box_px // 2 + 1,), 2.0, device=device, dtype=dtype)
    m[0] = m[-1] = 1.0
    return m


def frequency_grid(box_px: int, ndim: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Spatial frequencies of a centred spectrum in cycles per pixel.

    Returns:
        ``(d, d, 2)`` or ``(d, d, d, 3)``; the last axis is ``xy`` / ``xyz`` (array indexed
        ``[y, x]`` / ``[z, y, x]``), values in ``[-0.5, 0.5)``.
    """
    axis = (torch.arange(box_px, device=device, dtype=dtype) - box_px // 2) / box_px
    grids = torch.meshgrid(*([axis] * ndim), indexing="ij")
    return torch.stack(grids[::-1], -1)


def radial_index(box_px: int, ndim: int, device=None) -> torch.Tensor:
    """Shell index ``round(|k| * d)`` of every frequency of a centred ``d``-box spectrum.

    Returns:
        ``(d, d)`` or ``(d, d, d)`` int64; shell ``d // 2`` is Nyquist.
    """
    axis = (torch.arange(box_px, device=device, dtype=torch.int64) - box_px // 2).pow(2)
    squared = axis[:, None] + axis[None, :] if ndim == 2 else axis[:, None, None] + axis[None, :, None] + axis
    return squared.double().sqrt_().round_().long()  # integer |k| d: no half-way ties to round


def half_grid_shell_means(values: torch.Tensor, shells: torch.Tensor, n_shells: int,
                          nonzero_only: bool = False) -> torch.Tensor:
    """``(n_shells,)`` float64 mean of ``values`` over each shell of a centred half spectrum
    (``values``, ``shells``: ``(D, D, D // 2 + 1)``, shells below ``n_shells``), each ``kx > 0``
    voxel counted with its mirror (:func:`hermitian_multiplicity`) so that the means are those of
    the whole spectrum; ``nonzero_only``: over the non-zero values only. Summed one ``kx`` plane at
    a time: no full-grid float64 temporaries (box 400 padded twice: 2 GB each)."""
    multiplicity = hermitian_multiplicity(values.shape[0], values.device, torch.float64)
    total = torch.zeros(n_shells, dtype=torch.float64, device=values.device)
    count = torch.zeros(n_shells, dtype=torch.float64, device=values.device)
    for x in range(values.shape[-1]):
        plane, index = values[..., x].flatten().double(), shells[..., x].flatten()
        total.index_add_(0, index, plane * multiplicity[x])
        counted = (plane != 0).double() if nonzero_only else torch.ones_like(plane)
        count.index_add_(0, index, counted * multiplicity[x])
    return total / count.clamp(min=1)


def half_grid_shells(size: int, box_px: int | None = None, last: int | None = None, device=None) -> torch.Tensor:
    """Shell index ``round(|k| d / size)`` of every voxel of a centred half spectrum
    (:func:`rfft_centred`) of a ``size`` grid: ``(size, size, size // 2 + 1)`` int32, at most
    ``last``. ``box_px`` (``d``, default ``size``): the shells of a ``d`` box padded to ``size``.
    Built one ``kx`` plane at a time (box 400 padded twice: 1 GB, no float64 grid)."""
    box_px = box_px or size
    axis = (torch.arange(size, device=device, dtype=torch.float64) - size // 2) ** 2
    plane = axis[:, None] + axis[None, :]
    shells = torch.empty((size, size, size // 2 + 1), dtype=torch.int32, device=device)
    for x in range(shells.shape[-1]):
        shell = torch.round(torch.sqrt(plane + x * x) * (box_px / size))
        shells[..., x] = shell if last is None else shell.clamp_(max=last)
    return shells


def phase_shift_2d(spectrum: torch.Tensor, shift_px: torch.Tensor) -> torch.Tensor:
    """Translate centred 2D spectra by a real-space shift.

    Args:
        spectrum: ``(b, d, d)`` complex centred spectra.
        shift_px: ``(b, 2)`` shift in pixels, xy; positive moves the content towards larger x, y.

    Returns:
        ``(b, d, d)`` the spectra of ``f(x - shift)``.
    """
    k = frequency_grid(spectrum.shape[-1], 2, device=spectrum.device, dtype=shift_px.dtype)
    phase = -2 * math.pi * (k[None] * shift_px[:, None, None, :]).sum(-1)
    return spectrum * torch.polar(torch.ones_like(phase), phase)


def fourier_crop(images: torch.Tensor, box_px: int) -> torch.Tensor:
    """Downsample images by cropping their spectra (no aliasing, no interpolation).

    Args:
        images: ``(b, d, d)`` real images, centre at pixel ``d // 2``.
        box_px: the new box ``d' <= d`` (even when ``d`` is); the pixel becomes ``d / d'`` times larger.

    Returns:
        ``(b, d', d')`` real images, centre at ``d' // 2``, pixel values on the original scale
        (a constant image keeps its value).
    """
    d = images.shape[-1]
    if box_px == d:
        return images
    start = d // 2 - box_px // 2
    spectra = fft_centred(images, 2)[..., start:start + box_px, start:start + box_px]
    return ifft_centred(spectra, 2) * (box_px / d) ** 2


def cropped_pixel_size(pixel_size_angstrom: float, box_px: int, cropped_box_px: int) -> float:
    """Pixel size (Å) of a ``box_px`` grid Fourier-cropped to ``cropped_box_px`` (same field of view)."""
    return pixel_size_angstrom * box_px / cropped_box_px


def rfft_radius(box_px: int, device=None) -> torch.Tensor:
    """``|k|`` (Fourier pixels) of every frequency of ``torch.fft.rfftn`` of a ``(d, d, d)`` map:
    ``(d, d, d // 2 + 1)`` float64 (the half spectrum ``kx >= 0``, uncentred, as RELION's FFTW arrays)."""
    k = torch.fft.fftfreq(box_px, dtype=torch.float64, device=device) * box_px
    kx = torch.fft.rfftfreq(box_px, dtype=torch.float64, device=device) * box_px
    return torch.sqrt(k[:, None, None] ** 2 + k[None, :, None] ** 2 + kx[None, None, :] ** 2)


def shell_average(values: torch.Tensor, shells: torch.Tensor, n_shells: int) -> torch.Tensor:
    """Mean of ``values`` over each shell. ``values``, ``shells``: same shape -> ``(n_shells,)``."""
    flat = shells.flatten()
    keep = flat < n_shells
    total = torch.zeros(n_shells, dtype=values.dtype, device=values.device)
    count = torch.zeros(n_shells, dtype=values.dtype, device=values.device)
    total.index_add_(0, flat[keep], values.flatten()[keep])
    count.index_add_(0, flat[keep], torch.ones_like(values.flatten()[keep]))
    return total / count.clamp(min=1)


def fsc(map1: torch.Tensor, map2: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Fourier shell correlation between two maps, summed over the half spectrum ``kx >= 0`` as
    RELION's ``getFSC`` (the ``kx = 0`` plane then counts once per voxel, its Hermitian mirror not
    at all); shell ``round(|k|)``.

    Args:
        map1, map2: ``(d, d, d)`` real maps on the same grid.
        mask: optional ``(d, d, d)`` real-space mask applied to both.

    Returns:
        ``(d // 2 + 1,)`` FSC per shell, shell ``i`` at ``i / (d * pixel_size)`` 1/Å.
    """
    if mask is not None:
        map1, map2 = map1 * mask, map2 * mask
    d = map1.shape[-1]
    f1 = torch.fft.rfftn(map1.double())
    f2 = torch.fft.rfftn(map2.double())
    shells = torch.round(rfft_radius(d, device=map1.device)).long()
    n = d // 2 + 1
    cross = shell_average((f1 * f2.conj()).real, shells, n)
    p1 = shell_average(f1.abs() ** 2, shells, n)
    p2 = shell_average(f2.abs() ** 2, shells, n)
    return (cross / torch.sqrt(p1 * p2).clamp(min=1e-30)).float()


def resolution_at(fsc_curve: torch.Tensor, box_px: int, pixel_size_angstrom: float, threshold: float) -> float:
    """Resolution (Å) where the FSC first drops below ``threshold`` (interpolated); Nyquist if never."""
    values = fsc_curve.tolist()
    for i in range(1, len(values)):
        if values[i] < threshold:
            prev = values[i - 1]
            frac = (prev - threshold) / (prev - values[i]) if prev != values[i] else 0.0
            shell = i - 1 + frac
            return box_px * pixel_size_angstrom / max(shell, 1e-6)
    return 2 * pixel_size_angstrom
