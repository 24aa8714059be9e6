"""Compare a trained model with a simulation's ground truth (benchmarks and tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import starfile
import torch

from ..data.particles import read_particles
from ..training.inference import displacements_of
from ..training.layout import find_final_checkpoint
from ..training.restore import load_forward_models
from .molecule import HINGE_AXIS, axis_angle_matrix


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (no ties expected in continuous data)."""
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def true_hinge_displacements(positions: torch.Tensor, angle_deg: torch.Tensor, hinge_point: torch.Tensor) -> torch.Tensor:
    """``(n, 3)`` Gaussian centres, ``(b,)`` angles -> ``(b, n, 3)`` the hinge motion's displacements (Å)."""
    rot = axis_angle_matrix(HINGE_AXIS, torch.deg2rad(angle_deg.float()))
    p = positions - hinge_point
    return torch.einsum("bij,nj->bni", rot, p) - p[None]


@torch.no_grad()
def hinge_accuracy(project: Path, run_directory: Path, device: torch.device = torch.device("cpu"),
                   batch_size: int = 256) -> dict[int, dict[str, float]]:
    """Per half-set: |Spearman| of the best linear latent direction with the true hinge angle, the
    RMS displacement error of the moving domain relative to the RMS true displacement, and the
    Spearman correlation of the validation error estimate with the true per-particle error."""
    truth = starfile.read(project / "ground_truth.star")
    general, atoms = truth["general"], truth["atoms"]
    hinge_point = torch.tensor([general["dmHingePointX"], general["dmHingePointY"], general["dmHingePointZ"]])
    angle = truth["particles"]["dmTrueHingeAngleDeg"].to_numpy()
    table = read_particles(project / "particles.star")
    box, pixel = table.optics_groups[0].box_px, table.optics_groups[0].pixel_size_angstrom
    models, saved = load_forward_models(find_final_checkpoint(run_directory), box, pixel, device)
    latents_table = starfile.read(run_directory / "forward_deformations" / "latents.star")["particles"]
    validation = latents_table["rlnDynaMightIsValidation"].to_numpy().astype(bool)
    estimate = latents_table["rlnDynaMightErrorEstimate"].to_numpy()
    atom_xyz = torch.tensor(atoms[["dmAtomX", "dmAtomY", "dmAtomZ"]].to_numpy(), dtype=torch.float32)
    z_all = latents_table[[c for c in latents_table.columns if c.startswith("rlnDynaMightLatent")]].to_numpy(np.float32)
    result = {}
    for half, model in models.items():
        centres = model.positions.cpu()
        nearest = torch.cdist(centres, atom_xyz).argmin(dim=1).numpy()
        moving = torch.from_numpy(atoms["dmAtomMoving"].to_numpy()[nearest].astype(bool))
        members = np.flatnonzero(table.half_set == half)
        err2, true2, per_particle = 0.0, 0.0, np.zeros(len(members))
        for rows, delta in displacements_of(model, z_all[members], batch_size, device):
            predicted = delta.cpu()[:, moving]
            expected = true_hinge_displacements(centres, torch.as_tensor(angle[members[rows]]), hinge_point)[:, moving]
            diff2 = (predicted - expected).pow(2).sum(-1)
            err2 += float(diff2.sum())
            true2 += float(expected.pow(2).sum(-1).sum())
            per_particle[rows] = diff2.mean(-1).sqrt().numpy()
        design = np.concatenate([z_all[members], np.ones((len(members), 1))], axis=1)
        coef, *_ = np.linalg.lstsq(design, angle[members], rcond=None)
        held = validation[members]
        result[half] = {
            "latent_spearman": abs(spearman(design @ coef, angle[members])),
            "relative_rms_error": float(np.sqrt(err2 / true2)),
            "rms_true_displacement": float(np.sqrt(true2 / (len(members) * int(moving.sum())))),
            "error_estimate_spearman": spearman(estimate[members][held], per_particle[held]) if held.sum() > 2 else float("nan"),
        }
    return result
