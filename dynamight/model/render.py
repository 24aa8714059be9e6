"""Rendering of isotropic Gaussians into maps and projection images, without interpolation.

A Gaussian ``j`` is the density ``a_j exp(-|r - c_j|^2 / (2 s_j^2))`` (peak ``a_j``, width ``s_j`` in
Å). A Gaussian is separable, so a map is a sum of outer products of 1D profiles: ``O(n d^3)`` as one
matrix product, exact; or, where the Gaussians are narrow against the box, each on the voxels within
:data:`TRUNCATE_WIDTHS` of it (below 4e-6 of its peak beyond). Its projection along ``z`` (a line integral in pixel
units, as :class:`dynamight.reconstruction.fourier_slice.FourierProjector`) is the 2D Gaussian
``a_j sqrt(2 pi) (s_j / p) exp(-|xy - (A c_j)_xy|^2 / (2 s_j^2))``.
"""

from __future__ import annotations

import math

import torch

EXPONENT_FLOOR = 72.0  # exp(-72) ~ 5e-32: products of a few profiles stay clear of float32 denormals (1e-38)


def _profile_terms(coordinate: torch.Tensor, sigma: torch.Tensor, axis: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``u = (axis - c) / s`` and the profile ``exp(-u^2 / 2)``, both ``(..., n, d)``. Beyond 12 widths
    the profile is below 1e-31: the exponent is floored there, which keeps ``exp`` off its slow path
    for underflowing arguments (10x slower on CPUs) at no visible cost."""
    u = (axis - coordinate[..., None]) * sigma.reciprocal()[..., None]
    return u, torch.exp((-0.5 * u * u).clamp(min=-EXPONENT_FLOOR))


class _GaussianProfiles(torch.autograd.Function):
    """:func:`_profile_terms`'s profile with a hand-written backward: two passes over the
    ``(..., n, d)`` tensors instead of autograd's dozen (the rendering is memory-bound on CPUs).
    Under ``create_graph`` (exact Hessians of the training objective, as a test takes them) the
    backward recomputes the terms with differentiable operations instead."""

    @staticmethod
    def forward(ctx, coordinate, sigma, axis):
        u, g = _profile_terms(coordinate, sigma, axis)
        ctx.save_for_backward(coordinate, sigma, axis, u, g)
        return g

    @staticmethod
    def backward(ctx, grad):
        coordinate, sigma, axis, u, g = ctx.saved_tensors
        if torch.is_grad_enabled():
            u, g = _profile_terms(coordinate, sigma, axis)
        t = grad * g * u  # d g / d c = g u / s, d g / d s = g u^2 / s
        inverse = sigma.reciprocal()
        grad_c = t.sum(-1) * inverse if ctx.needs_input_grad[0] else None
        grad_s = None
        if ctx.needs_input_grad[1]:
            grad_s = (t * u).sum(-1).reshape(-1, sigma.shape[-1]).sum(0) * inverse
        return grad_c, grad_s, None


def _profiles(coordinate_angstrom: torch.Tensor, sigma_angstrom: torch.Tensor, box_px: int,
              pixel_size_angstrom: float) -> torch.Tensor:
    """``(..., n)`` coordinates (Å from the box centre), ``(n,)`` widths (Å) -> ``(..., n, d)`` 1D
    Gaussian profiles on the box's pixel axis."""
    axis = (torch.arange(box_px, device=coordinate_angstrom.device, dtype=coordinate_angstrom.dtype)
            - box_px // 2) * pixel_size_angstrom
    return _GaussianProfiles.apply(coordinate_angstrom, sigma_angstrom, axis)


def render_volume(positions_angstrom: torch.Tensor, amplitudes: torch.Tensor, sigma_angstrom: torch.Tensor,
                  box_px: int, pixel_size_angstrom: float) -> torch.Tensor:
    """Map of a set of Gaussians.

    Args:
        positions_angstrom: ``(n, 3)`` centres, xyz, Å relative to the box centre (pixel ``d // 2``).
        amplitudes: ``(n,)`` peak densities.
        sigma_angstrom: ``(n,)`` widths, Å.
        box_px: box ``d``.
        pixel_size_angstrom: voxel size.

    Returns:
        ``(d, d, d)`` map, ``[z, y, x]``.
    """
    gx = _profiles(positions_angstrom[:, 0], sigma_angstrom, box_px, pixel_size_angstrom)
    gy = _profiles(positions_angstrom[:, 1], sigma_angstrom, box_px, pixel_size_angstrom)
    gz = _profiles(positions_angstrom[:, 2], sigma_angstrom, box_px, pixel_size_angstrom) * amplitudes[:, None]
    zy = (gz[:, :, None] * gy[:, None, :]).reshape(len(amplitudes), box_px * box_px)
    return (zy.T @ gx).reshape(box_px, box_px, box_px)


def project_gaussians(positions_angstrom: torch.Tensor, amplitudes: torch.Tensor, sigma_angstrom: torch.Tensor,
                      rotations: torch.Tensor, box_px: int, pixel_size_angstrom: float) -> torch.Tensor:
    """Centred projections of Gaussians (no CTF, no shift).

    Gaussians narrow against the box (``window^2 <= 2 d``, :func:`local_window`) are drawn each on
    its window of pixels around its nearest pixel (:data:`TRUNCATE_WIDTHS`), the others as the
    exact outer-product sum of their full profiles: the crossover measured on a CPU (one thread,
    32 particles, 1,500 Gaussians, forward and backward): box 64, window 7: 0.038 s against 0.068 s
    for the full profiles; box 256, window 21: 0.31 s against 0.56 s; box 64, window 13: 0.12 s
    against 0.055 s.

    Args:
        positions_angstrom: ``(n, 3)`` or ``(b, n, 3)`` centres (xyz, Å from the box centre).
        amplitudes: ``(n,)`` peak densities.
        sigma_angstrom: ``(n,)`` widths, Å.
        rotations: ``(b, 3, 3)`` RELION matrices ``A``.
        box_px, pixel_size_angstrom: the image grid.

    Returns:
        ``(b, d, d)`` images, ``[y, x]``, in the units of a voxel-sum projection.
    """
    if positions_angstrom.ndim == 2:
        positions_angstrom = positions_angstrom.expand(rotations.shape[0], -1, -1)
    rotated = torch.einsum("bij,bnj->bni", rotations[:, :2, :], positions_angstrom)  # (b, n, 2)
    scale = amplitudes * math.sqrt(2 * math.pi) * sigma_angstrom / pixel_size_angstrom
    window = projection_window(sigma_angstrom, pixel_size_angstrom, box_px)
    if window is not None:
        return _project_local(rotated, scale, sigma_angstrom, box_px, pixel_size_angstrom, window)
    gx = _profiles(rotated[..., 0], sigma_angstrom, box_px, pixel_size_angstrom)  # (b, n, d)
    gy = _profiles(rotated[..., 1], sigma_angstrom, box_px, pixel_size_angstrom) * scale[:, None]
    return torch.bmm(gy.transpose(1, 2), gx)


def projection_window(sigma_angstrom: torch.Tensor, pixel_size_angstrom: float, box_px: int) -> int | None:
    """Side of the pixel patch :func:`project_gaussians` draws each Gaussian on (its
    :func:`local_window`), or ``None`` where the full profiles are faster (``window^2 > 2 d``)."""
    window = local_window(sigma_angstrom, pixel_size_angstrom, box_px)
    return window if window * window <= 2 * box_px else None


def _project_local(rotated: torch.Tensor, scale: torch.Tensor, sigma_angstrom: torch.Tensor, box_px: int,
                   pixel_size_angstrom: float, window: int) -> torch.Tensor:
    """``(b, d, d)`` images of Gaussians at ``(b, n, 2)`` projected centres (xy, Å), ``(n,)`` peak
    scales and widths: each a ``window^2`` patch (two windowed profiles) added at its nearest pixel,
    ``O(b n window^2)`` work instead of the full profiles' ``O(b n d^2)``."""
    b = rotated.shape[0]
    ix, gx = _window_profiles(rotated[..., 0], sigma_angstrom, box_px, pixel_size_angstrom, window)  # (b, n, w)
    iy, gy = _window_profiles(rotated[..., 1], sigma_angstrom, box_px, pixel_size_angstrom, window)
    index = iy[..., :, None] * box_px + ix[..., None, :]  # (b, n, w, w), [y, x]
    patches = (gy * scale[:, None])[..., :, None] * gx[..., None, :]
    images = torch.zeros((b, box_px * box_px), device=rotated.device, dtype=rotated.dtype)
    return images.scatter_add(1, index.reshape(b, -1), patches.reshape(b, -1)).reshape(b, box_px, box_px)


def _window_profiles(coordinate_angstrom: torch.Tensor, sigma_angstrom: torch.Tensor, box_px: int,
                     pixel_size_angstrom: float, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One axis of a local rendering: ``(..., n)`` coordinates (Å from the box centre), ``(n,)``
    widths -> ``(..., n, window)`` int64 grid indices of the window around each nearest grid point
    (clamped into the box) and the 1D profiles on them (differentiable; 0 outside the box)."""
    offsets = torch.arange(window, device=coordinate_angstrom.device) - window // 2
    nearest = torch.round(coordinate_angstrom.detach() / pixel_size_angstrom).long()
    indices = nearest[..., None] + offsets + box_px // 2
    axis = ((indices - box_px // 2) * pixel_size_angstrom).to(coordinate_angstrom.dtype)
    inside = ((indices >= 0) & (indices < box_px)).to(coordinate_angstrom.dtype)
    profiles = _GaussianProfiles.apply(coordinate_angstrom, sigma_angstrom, axis) * inside
    return indices.clamp(0, box_px - 1), profiles


TRUNCATE_WIDTHS = 5.0  # local rendering: a Gaussian beyond 5 widths is below 4e-6 of its peak
LOCAL_VALUES_PER_CHUNK = 1 << 24  # (Gaussians x window voxels) per chunk: ~200 MB with its indices


def local_window(sigma_angstrom: torch.Tensor, pixel_size_angstrom: float, box_px: int) -> int:
    """Side ``k`` (voxels, odd) of the cube that holds every Gaussian to :data:`TRUNCATE_WIDTHS`
    (at most ``2 box + 1``: from any voxel of the box, the whole box)."""
    return min(2 * math.ceil(TRUNCATE_WIDTHS * float(sigma_angstrom.max()) / pixel_size_angstrom), 2 * box_px) + 1


def local_chunks(n: int, window: int) -> list[slice]:
    """The chunks of Gaussians rendered together (:data:`LOCAL_VALUES_PER_CHUNK` values each)."""
    size = max(1, LOCAL_VALUES_PER_CHUNK // window**3)
    return [slice(start, start + size) for start in range(0, n, size)]


def splat(positions_angstrom: torch.Tensor, amplitudes: torch.Tensor, sigma_angstrom: torch.Tensor, box_px: int,
          pixel_size_angstrom: float, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each Gaussian on the ``window^3`` voxels around its nearest voxel (differentiable in its
    centre, amplitude and width).

    Args:
        positions_angstrom: ``(n, 3)`` xyz, Å from the box centre; amplitudes, sigma_angstrom: ``(n,)``.
        window: odd cube side in voxels (:func:`local_window`).

    Returns:
        ``(n, window^3)`` values and ``(n, window^3)`` int64 flat voxel indices into the
        ``(d, d, d)`` map (``[z, y, x]``); voxels outside the box have value 0 (and an index
        clamped into the box).
    """
    (ix, gx), (iy, gy), (iz, gz) = (_window_profiles(positions_angstrom[:, i], sigma_angstrom, box_px,
                                                     pixel_size_angstrom, window) for i in range(3))  # (n, k) each
    values = amplitudes[:, None, None, None] * gz[:, :, None, None] * gy[:, None, :, None] * gx[:, None, None, :]
    flat = (iz[:, :, None, None] * box_px + iy[:, None, :, None]) * box_px + ix[:, None, None, :]
    n = len(amplitudes)
    return values.reshape(n, -1), flat.reshape(n, -1)


def render_volume_local(positions_angstrom: torch.Tensor, amplitudes: torch.Tensor, sigma_angstrom: torch.Tensor,
                        box_px: int, pixel_size_angstrom: float) -> torch.Tensor:
    """:func:`render_volume` with each Gaussian truncated at :data:`TRUNCATE_WIDTHS` widths: ``O(n
    window^3)`` work and bounded memory, where the exact product needs an ``(n, d^2)`` matrix
    (box 400, 30,000 Gaussians: 19 GB). Not differentiable (see :func:`splat`). ``(d, d, d)``."""
    window = local_window(sigma_angstrom, pixel_size_angstrom, box_px)
    volume = torch.zeros(box_px**3, device=positions_angstrom.device, dtype=positions_angstrom.dtype)
    with torch.no_grad():
        for part in local_chunks(len(amplitudes), window):
            values, index = splat(positions_angstrom[part], amplitudes[part], sigma_angstrom[part], box_px,
                                  pixel_size_angstrom, window)
            volume.index_add_(0, index.flatten(), values.flatten())
    return volume.reshape(box_px, box_px, box_px)
