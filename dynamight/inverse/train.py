"""Fit one inverse-deformation network per half-set.

The inverse ``g(z, y)`` maps a point ``y`` of a particle's deformed frame to its consensus position
``y + g(z, y)``. It is trained on the Gaussians: for a code ``z``, ``y_j = c_j + delta_j(z)`` must map
back to ``c_j``. Codes are the half's training particles' codes (``latents.star``); validation
particles' codes are kept out and give the held-out check (RMS of ``|y_j + g(z, y_j) - c_j|``).
"""

from __future__ import annotations

import logging
from typing import Callable

import numpy as np
import torch

from ..model.decoder import DisplacementDecoder
from ..training.model import ForwardModel

log = logging.getLogger(__name__)


def make_inverse(model: ForwardModel, n_latent: int, n_layers: int = 6, hidden: int = 32) -> DisplacementDecoder:
    """An inverse network shaped like the forward decoder (positional encoding of ``y`` and ``z``)."""
    extent = model.box_px * model.pixel_size_angstrom / 2
    return DisplacementDecoder(n_latent, extent, n_frequencies=6, hidden=hidden, n_layers=n_layers,
                               step_angstrom=model.pixel_size_angstrom)


def composition_error(forward: ForwardModel, inverse: DisplacementDecoder, z: torch.Tensor) -> torch.Tensor:
    """``(b, l)`` codes -> ``(b, n)`` distance (Å) between ``c_j`` and ``inverse(forward(c_j))``."""
    deformed = forward.positions + forward.displacements(z)
    ones = torch.ones(forward.positions.shape[0], device=z.device)
    back = deformed + inverse(z, deformed, ones)
    return (back - forward.positions).norm(dim=-1)


def fit_inverse(forward: ForwardModel, inverse: DisplacementDecoder, codes: np.ndarray, n_epochs: int,
                batch_size: int, device: torch.device, seed: int,
                on_epoch: Callable[[int, float], None] | None = None) -> list[float]:
    """Train ``inverse`` on ``(m, l)`` codes; returns the RMS composition error (Å) per epoch."""
    optimiser = torch.optim.Adam(inverse.parameters(), lr=2e-3)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=max(1, n_epochs))
    z_all = torch.as_tensor(codes, device=device)
    history = []
    forward.eval()
    for epoch in range(n_epochs):
        order = torch.randperm(len(z_all), generator=torch.Generator().manual_seed(seed + epoch)).to(device)
        total, count = 0.0, 0
        for start in range(0, len(order), batch_size):
            z = z_all[order[start:start + batch_size]]
            with torch.no_grad():
                forward_part = forward.displacements(z)
            deformed = forward.positions + forward_part
            ones = torch.ones(forward.positions.shape[0], device=device)
            error = deformed + inverse(z, deformed, ones) - forward.positions
            loss = error.pow(2).sum(-1).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(z)
            count += len(z)
        scheduler.step()
        history.append(float(np.sqrt(total / max(count, 1))))
        if on_epoch is not None:
            on_epoch(epoch, history[-1])
    return history
