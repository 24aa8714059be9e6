"""Latent codes -> deformed Gaussians -> maps, with both half-set models of a checkpoint.

Also the common latent space of half-set 0: half 2's validation particles get the code under
half 1's model whose displacements best match what half 2's model predicts for them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..model.render import render_volume_local
from ..reconstruction.masking import soft_mask_outside_map
from ..training.inference import movable_mask
from ..training.model import ForwardModel
from ..training.restore import load_forward_models

CHECK_EVERY, CONVERGED = 25, 0.01  # matching codes stops once 25 steps lower the mismatch by under 1%


class ConformationDecoder:
    """The two trained half-set models and the grid they render on.

    Args:
        models: ``{1: model, 2: model}`` in eval mode.
        box_px: map box ``d``.
        pixel_size_angstrom: voxel size, Å.
        n_latent: latent dimensions ``l``.
        device: where the decoders run (maps come back on the CPU).
        config: the training run's config (the checkpoint's; ``{}`` when unknown): which particle
            file and atomic model it used.
    """

    def __init__(self, models: dict[int, ForwardModel], box_px: int, pixel_size_angstrom: float, n_latent: int,
                 device: torch.device, config: dict | None = None):
        self.models, self.box_px, self.pixel_size_angstrom = models, box_px, pixel_size_angstrom
        self.n_latent, self.device, self.config = n_latent, device, dict(config or {})

    @classmethod
    def load(cls, checkpoint: Path, box_px: int, pixel_size_angstrom: float,
             device: torch.device) -> "ConformationDecoder":
        """Both models of a forward-deformation checkpoint (raises ``InputError`` naming the file)."""
        try:
            models, saved = load_forward_models(checkpoint, box_px, pixel_size_angstrom, device)
        except RuntimeError as exc:  # state dicts of another box size
            raise InputError(f"{checkpoint}: its models do not fit a box of {box_px} px at {pixel_size_angstrom:g} "
                             f"Å/px (the particles'): {str(exc).splitlines()[0]}") from exc
        return cls(models, box_px, pixel_size_angstrom, int(saved["config"]["n_latent_dimensions"]), device,
                   saved["config"])

    def consensus(self, half: int) -> torch.Tensor:
        """``(n, 3)`` consensus Gaussian centres of ``half``'s model, Å from the box centre (CPU)."""
        return self.models[half].positions.detach().cpu()

    def movable(self, half: int) -> torch.Tensor:
        """``(n,)`` bool, the Gaussians that ``half``'s model can move (CPU)."""
        return movable_mask(self.models[half]).cpu()

    @torch.no_grad()
    def displacements(self, z: np.ndarray, half: int, subset: torch.Tensor | None = None) -> torch.Tensor:
        """``(b, l)`` codes -> ``(b, n, 3)`` displacements (Å) under ``half``'s model (CPU); with
        ``subset`` (``(s,)`` Gaussian indices) ``(b, s, 3)``, those Gaussians' only."""
        codes = torch.as_tensor(np.asarray(z, dtype=np.float32), device=self.device).reshape(-1, self.n_latent)
        if subset is not None:
            return displacements_at(self.models[half], codes, subset.to(self.device)).cpu()
        return self.models[half].displacements(codes).cpu()

    def positions(self, z: np.ndarray, half: int) -> torch.Tensor:
        """``(b, l)`` codes -> ``(b, n, 3)`` deformed Gaussian centres (Å from the box centre, CPU)."""
        return self.consensus(half)[None] + self.displacements(z, half)

    @torch.no_grad()
    def volume(self, positions: torch.Tensor, half: int = 1) -> torch.Tensor:
        """``(n, 3)`` Gaussian centres (Å) -> ``(d, d, d)`` map ``[z, y, x]`` (CPU), rendered with
        ``half``'s amplitudes and widths, each Gaussian on the voxels within 5 widths (bounded
        memory and work at any box), and masked outside the inscribed sphere as every
        reconstruction is (a Gaussian deformed towards the box edge fades out there as it would in a map)."""
        model = self.models[half]
        positions = positions.to(self.device, torch.float32)
        out = render_volume_local(positions, model.amplitudes, model.sigma, self.box_px, self.pixel_size_angstrom)
        return soft_mask_outside_map(out).cpu()


def displacements_at(model: ForwardModel, z: torch.Tensor, subset: torch.Tensor) -> torch.Tensor:
    """``(b, l)`` codes -> ``(b, s, 3)`` displacements (Å) of the Gaussians ``subset`` only (a
    free-form decoder evaluates just those; a rigid one needs every body's centre)."""
    if getattr(model, "rigid", False) or not hasattr(model, "decoder"):
        return model.displacements(z)[:, subset]
    return model.decoder(z, model.positions[subset], model.movable[subset])


def matched_codes(decoder: ConformationDecoder, z_source: np.ndarray, source: int, target: int,
                  pool: np.ndarray, n_points: int = 512, steps: int = 150, batch_size: int = 256,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Codes under ``target``'s model that reproduce ``source``'s deformations.

    Each code minimises the mean squared difference of the two models' displacements over a seeded
    subset of at most ``n_points`` movable Gaussians (Adam from the best code of ``pool``, at most
    ``steps`` steps, fewer once a batch's mismatch stops falling).

    Args:
        z_source: ``(m, l)`` codes under ``source``'s model.
        pool: ``(p, l)`` candidate starting codes under ``target``'s model (p >= 1).

    Returns:
        ``(m, l)`` codes under ``target``'s model, and ``(m,)`` the RMS mismatch left (Å).
    """
    movable = torch.nonzero(decoder.movable(target) & decoder.movable(source)).flatten()
    if len(movable) == 0:
        movable = torch.arange(len(decoder.consensus(target)))
    generator = torch.Generator().manual_seed(seed)
    subset = movable[torch.randperm(len(movable), generator=generator)[:n_points]].to(decoder.device)
    src, tgt = decoder.models[source], decoder.models[target]
    pool_t = torch.as_tensor(np.asarray(pool, dtype=np.float32), device=decoder.device)
    out = np.zeros_like(z_source, dtype=np.float32)
    mismatch = np.zeros(len(z_source), dtype=np.float32)
    with torch.no_grad():
        pool_fields = displacements_at(tgt, pool_t, subset).flatten(1)
    for start in range(0, len(z_source), batch_size):
        rows = slice(start, start + batch_size)
        with torch.no_grad():
            wanted = displacements_at(src, torch.as_tensor(z_source[rows], device=decoder.device), subset)
            nearest = torch.cdist(wanted.flatten(1), pool_fields).argmin(dim=1)
        z = pool_t[nearest].clone().requires_grad_(True)
        optimiser = torch.optim.Adam([z], lr=0.05)
        best_z, best = z.detach().clone(), torch.full((len(z),), float("inf"), device=z.device)
        previous = float("inf")
        for step in range(steps + 1):
            optimiser.zero_grad()
            loss = (displacements_at(tgt, z, subset) - wanted).pow(2).sum(-1).mean(-1)
            with torch.no_grad():  # each particle keeps its best code so far
                better = loss < best
                best, best_z[better] = torch.where(better, loss, best), z[better]
            if step % CHECK_EVERY == 0:  # converged: CHECK_EVERY steps lowered the batch's mismatch by < 1%
                if float(best.sum()) > (1 - CONVERGED) * previous:
                    break
                previous = float(best.sum())
            if step == steps:
                break
            loss.sum().backward()
            optimiser.step()
        out[rows] = best_z.cpu().numpy()
        mismatch[rows] = best.sqrt().cpu().numpy()
    return out, mismatch
