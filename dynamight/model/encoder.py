"""The encoder: a centred, CTF-phase-flipped, binned particle image -> a Gaussian posterior over z."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class Encoder(nn.Module):
    """MLP encoder of the pixels inside a circular mask of a ``bin``-times binned image, plus
    ``n_extra`` per-particle values (the pose)."""

    def __init__(self, box_px: int, n_latent: int, mask_radius_px: float, hidden: int = 256, n_layers: int = 3,
                 bin_factor: int = 2, n_extra: int = 0):
        super().__init__()
        self.bin_factor = bin_factor
        small = box_px // bin_factor
        axis = torch.arange(small, dtype=torch.float32) - small // 2
        inside = (axis[:, None] ** 2 + axis[None, :] ** 2) <= (mask_radius_px / bin_factor) ** 2
        self.register_buffer("inside", inside, persistent=False)
        layers: list[nn.Module] = []
        width = int(inside.sum()) + n_extra
        for _ in range(n_layers):
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        layers.append(nn.Linear(width, 2 * n_latent))
        self.net = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor, extra: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(b, d, d)`` normalised images and ``(b, n_extra)`` values -> ``(b, l)`` posterior mean
        and ``(b, l)`` log-variance."""
        x = F.avg_pool2d(images[:, None], self.bin_factor)[:, 0] if self.bin_factor > 1 else images
        x = x[:, self.inside]
        if extra is not None:
            x = torch.cat([x, extra], dim=-1)
        mu, logvar = self.net(x).chunk(2, dim=-1)
        return mu, logvar.clamp(-12, 6)
