"""Local pose refinement (``--refine-poses``): a small rotation and shift per particle, learnt with
its latent code against the deformed model.

A particle's pose is the consensus one corrected by a rotation ``R(w)`` in the image frame and an
origin shift ``s``: ``A' = R(w) A`` (``A``: RELION's matrix, map -> image) and
``origin' = origin + s``. Both are bounded, ``|w_k| < MAX_ANGLE_DEG`` per axis and ``|s_k| <
MAX_SHIFT_PX`` pixels (``tanh`` of free parameters), and regularised towards the consensus pose by a
Gaussian prior (``PRIOR_ANGLE_DEG``, ``PRIOR_SHIFT_PX``) in the units of the whitened data term (a
log-likelihood). They are refined only once the warm-up is over: before the decoder has learnt
the motion, a rigid turn of the whole particle would absorb part of it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import starfile
import torch

from ..data.fourier import phase_shift_2d
from ..data.geometry import centring_shift_px, euler_angles_to_matrix, matrix_to_euler_angles, rotation_vector_to_matrix
from ..data.particles import ParticleTable
from ..errors import InputError

log = logging.getLogger(__name__)

MAX_ANGLE_DEG = 6.0
MAX_SHIFT_PX = 2.0
PRIOR_ANGLE_DEG = 2.0
PRIOR_SHIFT_PX = 1.0
N_PARAMETERS = 5  # rotation vector (3), shift x, y (2)
REFINED_POSES_NAME = "refined_poses.star"  # beside latents.star
ANGLE_COLUMNS = ["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]
ORIGIN_COLUMNS = ["rlnOriginXAngst", "rlnOriginYAngst"]
PRIOR_COLUMNS = ["rlnAngleRotPrior", "rlnAngleTiltPrior", "rlnAnglePsiPrior", "rlnOriginXPriorAngst",
                 "rlnOriginYPriorAngst"]


def corrections(parameters: torch.Tensor, pixel_size_angstrom: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(b, 5)`` free parameters -> ``(b, 3)`` rotation vectors (radians, image frame) and ``(b, 2)``
    origin shifts (Å), each bounded."""
    rotation = math.radians(MAX_ANGLE_DEG) * torch.tanh(parameters[:, :3])
    shift = MAX_SHIFT_PX * pixel_size_angstrom * torch.tanh(parameters[:, 3:])
    return rotation, shift


def pose_prior(parameters: torch.Tensor, pixel_size_angstrom: float) -> torch.Tensor:
    """``(b,)`` negative log prior of the corrections: ``|w / sigma_w|^2 / 2 + |s / sigma_s|^2 / 2``."""
    rotation, shift = corrections(parameters, pixel_size_angstrom)
    return (0.5 * (rotation / math.radians(PRIOR_ANGLE_DEG)).pow(2).sum(-1)
            + 0.5 * (shift / (PRIOR_SHIFT_PX * pixel_size_angstrom)).pow(2).sum(-1))


def corrected(parameters: torch.Tensor, rotations: torch.Tensor, spectra: torch.Tensor,
              pixel_size_angstrom: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The consensus poses corrected.

    Args:
        parameters: ``(b, 5)`` free parameters (zeros: the consensus pose).
        rotations: ``(b, 3, 3)`` consensus RELION matrices.
        spectra: ``(b, d, d)`` image spectra centred with the consensus origins.
        pixel_size_angstrom: the images' pixel size.

    Returns:
        ``(b, 3, 3)`` corrected matrices ``R(w) A`` and ``(b, d, d)`` spectra centred with the
        corrected origins.
    """
    rotation, shift = corrections(parameters, pixel_size_angstrom)
    return (rotation_vector_to_matrix(rotation) @ rotations,
            phase_shift_2d(spectra, centring_shift_px(shift, pixel_size_angstrom)))


def refined_pose_table(table: ParticleTable, parameters: np.ndarray, pixel_size_angstrom: float) -> pd.DataFrame:
    """The particle table with refined ``rlnAngle*`` / ``rlnOrigin*Angst`` and the consensus pose in
    RELION's prior columns (``rlnAngleRotPrior``, ..., ``rlnOriginYPriorAngst``).

    Args:
        table: the particles as read.
        parameters: ``(n, 5)`` each particle's free pose parameters.
        pixel_size_angstrom: the pixel size the shifts were bounded in (the training box's).
    """
    angles, origins = refined_poses(table.angles_deg, table.origins_angstrom, parameters, pixel_size_angstrom)
    particles = table.particles.drop(columns=["rlnOriginX", "rlnOriginY"], errors="ignore")
    particles[PRIOR_COLUMNS] = np.concatenate([table.angles_deg, table.origins_angstrom], axis=1)
    particles[ANGLE_COLUMNS] = angles
    particles[ORIGIN_COLUMNS] = origins
    return particles


def refined_poses(angles_deg: np.ndarray, origins_angstrom: np.ndarray, parameters: np.ndarray,
                  pixel_size_angstrom: float) -> tuple[np.ndarray, np.ndarray]:
    """``(n, 3)`` consensus Euler angles (degrees) and ``(n, 2)`` origins (Å) corrected by ``(n, 5)``
    free parameters -> the refined ones, same shapes and units."""
    rotation, shift = corrections(torch.as_tensor(parameters, dtype=torch.float64), pixel_size_angstrom)
    matrices = rotation_vector_to_matrix(rotation) @ euler_angles_to_matrix(torch.as_tensor(angles_deg, dtype=torch.float64))
    return matrix_to_euler_angles(matrices).numpy(), origins_angstrom + shift.numpy()


def pose_change_summary(table: ParticleTable, parameters: np.ndarray, pixel_size_angstrom: float) -> str:
    """One line: median and 90th percentile of the refined poses' change (rotation angle, shift)."""
    rotation, shift = corrections(torch.as_tensor(parameters, dtype=torch.float64), pixel_size_angstrom)
    angle, length = np.degrees(rotation.norm(dim=-1).numpy()), shift.norm(dim=-1).numpy()
    return (f"pose change of {len(table)} particles: rotation median {np.median(angle):.2f}° (90th percentile "
            f"{np.percentile(angle, 90):.2f}°), shift median {np.median(length):.2f} Å (90th percentile "
            f"{np.percentile(length, 90):.2f} Å)")


def with_refined_poses(table: ParticleTable, path: Path) -> ParticleTable:
    """``table`` with the poses of ``path`` (a ``refined_poses.star``, same particles in the same
    order) when it exists; else ``table`` unchanged.

    Raises:
        InputError: ``path`` lists other particles than ``table``.
    """
    if not path.is_file():
        return table
    refined = starfile.read(path, always_dict=True)["particles"]
    names = table.particles["rlnImageName"].to_numpy()
    if len(refined) != len(names) or not (refined["rlnImageName"].to_numpy() == names).all():
        raise InputError(f"{path}: lists other particles than {table.star_path} (expected the same "
                         f"{len(names)} rlnImageName in the same order)")
    log.info("using the refined poses of %s", path)
    return dataclasses.replace(table, angles_deg=refined[ANGLE_COLUMNS].to_numpy(np.float64),
                               origins_angstrom=refined[ORIGIN_COLUMNS].to_numpy(np.float64))
