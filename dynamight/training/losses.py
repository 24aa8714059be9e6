"""Loss terms: the noise-whitened Fourier data term and the noise spectrum it uses."""

from __future__ import annotations

import torch

from ..data.fourier import radial_index
from ..distributed import all_reduce_sum


class NoiseSpectrum:
    """Radially averaged noise power ``sigma^2(shell)`` of the centred image spectra.

    Starts from the power of the images themselves and is re-estimated from the residuals of each
    epoch. ``weights`` gives ``1 / sigma^2`` per Fourier pixel (0 beyond Nyquist).
    """

    def __init__(self, box_px: int, device=None):
        self.box_px = box_px
        self.shells = radial_index(box_px, 2, device=device)  # (d, d)
        self.n_shells = box_px // 2 + 1
        self.power = torch.ones(self.n_shells, dtype=torch.float64, device=device)
        self._sum = torch.zeros(self.n_shells, dtype=torch.float64, device=device)
        self._count = 0

    def accumulate(self, residual: torch.Tensor) -> None:
        """Add ``(b, d, d)`` complex residual spectra to this epoch's estimate."""
        power = residual.detach().abs().pow(2).sum(0).double().flatten()
        keep = self.shells.flatten() < self.n_shells
        self._sum.index_add_(0, self.shells.flatten()[keep], power[keep])
        self._count += residual.shape[0]

    def mark(self) -> tuple[torch.Tensor, int]:
        """The accumulated state, to :meth:`rollback` to (a step that failed half-way)."""
        return self._sum.clone(), self._count

    def rollback(self, mark: tuple[torch.Tensor, int]) -> None:
        self._sum, self._count = mark[0].clone(), mark[1]

    def update(self) -> None:
        """Replace the estimate by the residual power accumulated since the last update (by all
        processes of a distributed run)."""
        all_reduce_sum(self._sum)
        self._count = int(all_reduce_sum(torch.tensor([self._count], device=self._sum.device)).item())
        if self._count == 0:
            return
        counts = torch.zeros_like(self._sum).index_add_(
            0, self.shells.flatten()[self.shells.flatten() < self.n_shells],
            torch.ones_like(self.shells.flatten()[self.shells.flatten() < self.n_shells], dtype=torch.float64))
        self.power = (self._sum / (counts * self._count)).clamp(min=1e-12)
        self._sum.zero_()
        self._count = 0

    def weights(self) -> torch.Tensor:
        """``(d, d)`` whitening weights ``1 / sigma^2`` (0 beyond Nyquist)."""
        inside = self.shells < self.n_shells
        w = torch.zeros(self.shells.shape, dtype=torch.float32, device=self.shells.device)
        w[inside] = (1 / self.power[self.shells[inside]]).float()
        return w

    def state_dict(self) -> dict:
        return {"power": self.power.cpu()}

    def load_state_dict(self, state: dict) -> None:
        self.power = state["power"].to(self.power.device)


def data_term(observed: torch.Tensor, predicted: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood of complex Gaussian noise, per image.

    Args:
        observed, predicted: ``(b, d, d)`` complex centred spectra.
        weights: ``(d, d)`` ``1 / sigma^2``.

    Returns:
        ``(b,)`` ``0.5 * sum_k w_k |Y_k - M_k|^2`` (half, as the spectrum of a real image is Hermitian).
    """
    return 0.5 * ((observed - predicted).abs().pow(2) * weights).sum(dim=(-1, -2))
