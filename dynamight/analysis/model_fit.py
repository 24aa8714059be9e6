"""How well a model fits a map: its atoms rendered as Gaussians, correlated with the map."""

from __future__ import annotations

import torch

from ..model.render import render_volume_local

def model_map(atoms_angstrom: torch.Tensor, box_px: int, pixel_size_angstrom: float,
              sigma_angstrom: float) -> torch.Tensor:
    """``(a, 3)`` atoms (Å from the box centre) -> ``(d, d, d)`` map ``[z, y, x]`` of unit-height
    Gaussians of width ``sigma_angstrom`` (each on the voxels within 5 widths)."""
    atoms = atoms_angstrom.float()
    return render_volume_local(atoms, torch.ones(len(atoms)), torch.full((len(atoms),), sigma_angstrom), box_px,
                               pixel_size_angstrom)


def map_model_correlation(atoms_angstrom: torch.Tensor, volume: torch.Tensor, pixel_size_angstrom: float,
                          sigma_angstrom: float | None = None) -> float:
    """Pearson correlation over the whole box of ``(d, d, d)`` ``volume`` and :func:`model_map` of
    ``(a, 3)`` atoms (Å from the box centre); ``sigma_angstrom`` defaults to one pixel."""
    sigma = pixel_size_angstrom if sigma_angstrom is None else sigma_angstrom
    rendered = model_map(atoms_angstrom, volume.shape[-1], pixel_size_angstrom, sigma).flatten().double()
    target = torch.as_tensor(volume).flatten().double()
    rendered, target = rendered - rendered.mean(), target - target.mean()
    return float((rendered @ target) / (rendered.norm() * target.norm()))
