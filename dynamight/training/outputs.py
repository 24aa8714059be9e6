"""What training writes besides checkpoints: ``latents.star`` and the consensus Gaussian models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import starfile

from ..data.files import atomic_path
from ..data.particles import ParticleTable
from ..model.gaussians import GaussianModel
from .poses import refined_pose_table


def write_latents(path: Path, table: ParticleTable, latents: np.ndarray, validation: np.ndarray,
                  displacement_rms: np.ndarray, error_estimate: np.ndarray) -> None:
    """The input particles (optics table kept) plus DynaMight's columns.

    Args:
        latents: ``(n_particles, l)`` posterior means (each particle through its own half's model).
        validation: ``(n_particles,)`` bool, held out of training.
        displacement_rms: ``(n_particles,)`` Å.
        error_estimate: ``(n_particles,)`` Å, NaN for training particles (the column then holds 0
            for them; read it only where ``rlnDynaMightIsValidation`` is 1).
    """
    particles = table.particles.copy()
    for k in range(latents.shape[1]):
        particles[f"rlnDynaMightLatent{k + 1}"] = latents[:, k]
    particles["rlnDynaMightHalfSet"] = table.half_set.astype(int)
    particles["rlnDynaMightIsValidation"] = validation.astype(int)
    particles["rlnDynaMightDisplacementRms"] = displacement_rms
    particles["rlnDynaMightErrorEstimate"] = np.where(validation, error_estimate, 0.0)
    blocks = {"optics": table.optics, "particles": particles} if table.optics is not None else {"particles": particles}
    with atomic_path(path) as tmp:
        starfile.write(blocks, tmp, overwrite=True)


def write_gaussians(path: Path, gaussians: GaussianModel) -> None:
    """One row per Gaussian: centre (Å from the box centre), amplitude, width (Å)."""
    p = gaussians.positions_angstrom.cpu().numpy()
    table = pd.DataFrame({"dmGaussianX": p[:, 0], "dmGaussianY": p[:, 1], "dmGaussianZ": p[:, 2],
                          "dmGaussianAmplitude": gaussians.amplitudes.cpu().numpy(),
                          "dmGaussianSigma": gaussians.sigma_angstrom.cpu().numpy()})
    with atomic_path(path) as tmp:
        starfile.write({"gaussians": table}, tmp, overwrite=True)


def write_refined_poses(path: Path, table: ParticleTable, parameters: np.ndarray, pixel_size_angstrom: float) -> None:
    """The input particles with refined poses (``--refine-poses``), the consensus ones in RELION's
    prior columns (:func:`~dynamight.training.poses.refined_pose_table`); ``parameters``:
    ``(n_particles, 5)``."""
    particles = refined_pose_table(table, parameters, pixel_size_angstrom)
    blocks = {"optics": table.optics, "particles": particles} if table.optics is not None else {"particles": particles}
    with atomic_path(path) as tmp:
        starfile.write(blocks, tmp, overwrite=True)
