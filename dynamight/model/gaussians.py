"""The consensus Gaussian pseudo-atom model and its fit to a map (or an atomic model).

Fit: Gaussian centres start at voxels above a threshold (drawn with probability proportional to
the density, seeded), with widths from the volume each covers and amplitudes that conserve the
map's mass; then centres, amplitudes and one shared width are refined by Adam so the rendered
Gaussians reproduce the map (least squares on the full grid, each Gaussian rendered on the voxels
within 5 widths of its centre: memory and work grow with the Gaussians, not with the box). The threshold defaults to Otsu's threshold of the positive map values. The quality is
reported as the map-vs-model FSC.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch

from ..data.fourier import fsc
from ..data.geometry import grid_coordinates
from ..errors import InputError
from .render import local_chunks, local_window, render_volume_local, splat

log = logging.getLogger(__name__)

#: Gaussians fitted when no number is given; fewer (with a warning) when the map supports fewer
DEFAULT_N_GAUSSIANS = 30000


@dataclass
class GaussianModel:
    """``positions_angstrom``: ``(n, 3)`` xyz, Å from the box centre; ``amplitudes``: ``(n,)``;
    ``sigma_angstrom``: ``(n,)`` widths."""

    positions_angstrom: torch.Tensor
    amplitudes: torch.Tensor
    sigma_angstrom: torch.Tensor

    def __len__(self) -> int:
        return self.positions_angstrom.shape[0]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"positions_angstrom": self.positions_angstrom, "amplitudes": self.amplitudes,
                "sigma_angstrom": self.sigma_angstrom}

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> "GaussianModel":
        return cls(state["positions_angstrom"], state["amplitudes"], state["sigma_angstrom"])

    def to(self, device) -> "GaussianModel":
        return GaussianModel(self.positions_angstrom.to(device), self.amplitudes.to(device), self.sigma_angstrom.to(device))


def otsu_threshold(volume: torch.Tensor, bins: int = 256) -> float:
    """Otsu's threshold of the positive values of ``(d, d, d)`` ``volume``."""
    values = volume[volume > 0].double()
    if values.numel() == 0:
        raise InputError("the consensus map has no positive density")
    hist = torch.histc(values, bins=bins, min=0.0, max=float(values.max()))
    centres = (torch.arange(bins, dtype=torch.float64) + 0.5) * float(values.max()) / bins
    w0 = torch.cumsum(hist, 0)
    w1 = w0[-1] - w0
    m0 = torch.cumsum(hist * centres, 0)
    mean0 = m0 / w0.clamp(min=1)
    mean1 = (m0[-1] - m0) / w1.clamp(min=1)
    between = w0 * w1 * (mean0 - mean1) ** 2
    return float(centres[int(torch.argmax(between))])


def gaussian_count(requested: int | None, n_above: int, threshold: float) -> int:
    """How many Gaussians to fit to a map with ``n_above`` voxels above ``threshold`` (at most one
    Gaussian per voxel): ``requested`` if the map supports it, else an :class:`InputError`; when
    none was requested, :data:`DEFAULT_N_GAUSSIANS` capped at ``n_above``, with a warning."""
    if requested is not None and n_above < requested:
        raise InputError(f"--n-gaussians {requested}: only {n_above} voxels of the consensus map are above the "
                         f"threshold {threshold:.4g}; use at most {n_above} Gaussians or a lower --initial-threshold")
    if requested is not None:
        return requested
    if n_above < 2:
        raise InputError(f"only {n_above} voxel(s) of the consensus map are above the threshold {threshold:.4g}; "
                         f"give a lower --initial-threshold")
    if n_above < DEFAULT_N_GAUSSIANS:
        log.warning("the consensus map has only %d voxels above the threshold %.4g: fitting %d Gaussians instead "
                    "of the default %d", n_above, threshold, n_above, DEFAULT_N_GAUSSIANS)
    return min(n_above, DEFAULT_N_GAUSSIANS)


def _loss_and_gradients(volume: torch.Tensor, positions: torch.Tensor, log_amp: torch.Tensor, log_sigma: torch.Tensor,
                        pixel_size_angstrom: float, scale: float) -> float:
    """The fit's loss ``mean((model - volume)^2) / scale``; its gradients are accumulated into
    ``positions`` ``(n, 3)``, ``log_amp`` ``(n,)`` and ``log_sigma`` (scalar). Two passes over
    chunks of Gaussians rendered locally (:func:`~dynamight.model.render.splat`): the model, then
    each chunk's share of the gradient ``2 (model - volume) / (d^3 scale)``, so that memory stays
    bounded at any box and number of Gaussians."""
    d = volume.shape[-1]
    n = len(log_amp)
    sigma = log_sigma.detach().exp().expand(n)
    residual = render_volume_local(positions.detach(), log_amp.detach().exp(), sigma, d, pixel_size_angstrom) - volume
    loss = float(residual.pow(2).mean()) / scale
    grad_model = (residual * (2 / (residual.numel() * scale))).flatten()
    del residual
    window = local_window(sigma, pixel_size_angstrom, d)
    for part in local_chunks(n, window):
        width = log_sigma.exp().expand(len(log_amp[part]))  # a graph per chunk: each is freed by its backward
        values, index = splat(positions[part], log_amp[part].exp(), width, d, pixel_size_angstrom, window)
        (values * grad_model[index]).sum().backward()
    return loss


def fit_gaussians(volume: torch.Tensor, pixel_size_angstrom: float, n_gaussians: int | None,
                  threshold: float | None = None, seed: int = 0, n_steps: int = 40,
                  fixed_positions: torch.Tensor | None = None) -> tuple[GaussianModel, torch.Tensor]:
    """Fit Gaussians to a map.

    Args:
        volume: ``(d, d, d)`` consensus map.
        pixel_size_angstrom: its voxel size.
        n_gaussians: number of Gaussians; ``None``: the default, capped by the map (:func:`gaussian_count`).
            Ignored with ``fixed_positions``.
        threshold: density threshold for the initial centres (default: Otsu).
        seed: seed of the initial draw.
        n_steps: Adam steps.
        fixed_positions: ``(n, 3)`` centres to keep (e.g. atoms); only amplitudes and the width are fitted.

    Returns:
        The model and the ``(d // 2 + 1,)`` FSC between the map and the rendered model.

    Raises:
        InputError: a requested number above the number of voxels above the threshold.
    """
    d = volume.shape[-1]
    threshold = otsu_threshold(volume) if threshold is None else threshold
    above = volume > threshold
    n_above = int(above.sum())
    if fixed_positions is None:
        n_gaussians = gaussian_count(n_gaussians, n_above, threshold)
        g = torch.Generator().manual_seed(seed)
        coords = grid_coordinates(d, 3, device=volume.device)[above] * pixel_size_angstrom  # (m, 3) Å
        weights = volume[above].clamp(min=0).double().cpu()
        chosen = torch.multinomial(weights, n_gaussians, replacement=False, generator=g).to(volume.device)
        positions = coords[chosen].clone()
    else:
        n_gaussians = len(fixed_positions)
        positions = fixed_positions.to(volume.device).clone()
    positions.requires_grad_(fixed_positions is None)
    # widths from the volume each Gaussian covers; amplitudes so that the model's mass is the map's
    mass = float(volume[above].sum()) * pixel_size_angstrom**3
    volume_per_gaussian = n_above * pixel_size_angstrom**3 / n_gaussians
    sigma0 = max(0.5 * pixel_size_angstrom, (3 * volume_per_gaussian / (4 * math.pi)) ** (1 / 3) / 2)
    amplitude0 = mass / (n_gaussians * (2 * math.pi) ** 1.5 * sigma0**3)
    log_sigma = torch.tensor(math.log(sigma0), device=volume.device, requires_grad=True)
    log_amp = torch.full((n_gaussians,), math.log(amplitude0), device=volume.device, requires_grad=True)
    optimiser = torch.optim.Adam([{"params": [positions], "lr": 0.1 * pixel_size_angstrom},
                                  {"params": [log_amp, log_sigma], "lr": 0.05}])
    scale = float(volume.pow(2).mean())
    previous = float("inf")
    for step in range(n_steps):
        optimiser.zero_grad()
        loss = _loss_and_gradients(volume, positions, log_amp, log_sigma, pixel_size_angstrom, scale)
        optimiser.step()
        if step % 10 == 9:  # stop when ten steps gain less than 2% of the residual
            if loss > 0.98 * previous:
                break
            previous = loss
    fitted = GaussianModel(positions.detach(), log_amp.detach().exp(), log_sigma.detach().exp().expand(n_gaussians).clone())
    curve = fsc(render_volume_local(fitted.positions_angstrom, fitted.amplitudes, fitted.sigma_angstrom, d,
                                    pixel_size_angstrom), volume)
    log.info("fitted %d Gaussians (width %.2f Å, threshold %.4g): map-vs-model FSC %.3f at half Nyquist, "
             "%.3f at 0.8 Nyquist", n_gaussians, float(fitted.sigma_angstrom[0]), threshold,
             float(curve[d // 4]), float(curve[int(0.4 * d)]))
    return fitted, curve
