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
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from ..distributed import all_reduce_sum, current, shard
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
    """Train ``inverse`` on ``(m, l)`` codes; returns the RMS composition error (Å) per epoch.

    In a distributed run every process draws the same batches and takes its share of each
    (:func:`~dynamight.distributed.shard`); DDP averages the gradients of the shares' losses, scaled
    so that the step is the single-process one.
    """
    optimiser = torch.optim.Adam(inverse.parameters(), lr=2e-3)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=max(1, n_epochs))
    runner = inverse
    if dist.is_initialized():
        runner = DistributedDataParallel(inverse, device_ids=[device] if device.type == "cuda" else None)
    world = current().world
    z_all = torch.as_tensor(codes, device=device)
    ones = torch.ones(forward.positions.shape[0], device=device)
    history = []
    forward.eval()
    for epoch in range(n_epochs):
        order = torch.randperm(len(z_all), generator=torch.Generator().manual_seed(seed + epoch)).numpy()
        total = torch.zeros(2, dtype=torch.float64, device=device)  # summed squared error, points
        for start in range(0, len(order) - world + 1, batch_size):  # every process gets a share
            full = order[start:start + batch_size]
            z = z_all[torch.as_tensor(shard(full), device=device)]
            with torch.no_grad():
                deformed = forward.positions + forward.displacements(z)
            squared = (deformed + runner(z, deformed, ones) - forward.positions).pow(2).sum(-1)
            loss = squared.sum() / (len(full) * squared.shape[1]) * world
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += torch.stack([squared.detach().sum().double(), torch.tensor(float(squared.numel()), device=device)])
        scheduler.step()
        all_reduce_sum(total)
        history.append(float((total[0] / total[1].clamp(min=1)).sqrt()))
        if on_epoch is not None:
            on_epoch(epoch, history[-1])
    return history
