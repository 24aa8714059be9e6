"""``--refine-poses``: the pose corrections' conventions (what training renders is what
``refined_poses.star`` says) and that refinement moves perturbed poses back towards the truth."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import starfile
import torch

from dynamight.cli import main as dynamight
from dynamight.data.batches import load_batch
from dynamight.data.geometry import euler_angles_to_matrix, matrix_to_euler_angles, rotation_vector_to_matrix
from dynamight.data.images import ParticleImages
from dynamight.data.particles import read_particles
from dynamight.reconstruction.imaging import centred_spectra
from dynamight.training.poses import (MAX_ANGLE_DEG, MAX_SHIFT_PX, REFINED_POSES_NAME, corrected, corrections,
                                      refined_pose_table, with_refined_poses)


def _angle_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(n,)`` geodesic angles between the rotations of two ``(n, 3)`` Euler-angle arrays."""
    r = euler_angles_to_matrix(torch.as_tensor(a)) @ euler_angles_to_matrix(torch.as_tensor(b)).transpose(-1, -2)
    return np.degrees(np.arccos(((r.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1, 1).numpy()))


def test_corrections_are_bounded_and_zero_is_the_consensus():
    rotation, shift = corrections(torch.tensor([[0.0] * 5, [50.0, -50.0, 50.0, 50.0, -50.0]]), 2.0)
    assert rotation[0].abs().max() == 0 and shift[0].abs().max() == 0
    assert torch.allclose(rotation[1].abs(), torch.full((3,), np.radians(MAX_ANGLE_DEG)))
    assert torch.allclose(shift[1].abs(), torch.full((2,), MAX_SHIFT_PX * 2.0))


def test_the_written_poses_are_the_ones_training_rendered(clean_project, tmp_path):
    """A batch loaded with ``refined_poses.star``'s poses has the rotations and centred spectra that
    training made from the consensus poses and the corrections."""
    table = read_particles(clean_project / "particles.star")
    images = ParticleImages(table)
    idx = np.arange(16)
    parameters = torch.randn(len(table), 5, generator=torch.Generator().manual_seed(0)) * 0.5
    consensus = load_batch(table, images, idx)
    rotations, spectra = corrected(parameters[idx], consensus.rotations, centred_spectra(consensus),
                                   consensus.pixel_size_angstrom)
    path = tmp_path / REFINED_POSES_NAME
    starfile.write({"optics": table.optics, "particles": refined_pose_table(table, parameters.numpy(),
                                                                             consensus.pixel_size_angstrom)}, path)
    refined = load_batch(with_refined_poses(table, path), images, idx)
    assert torch.allclose(refined.rotations, rotations, atol=1e-5)
    assert torch.allclose(centred_spectra(refined), spectra, atol=1e-3 * spectra.abs().max())
    written = starfile.read(path)["particles"]
    np.testing.assert_allclose(written[["rlnAngleRotPrior", "rlnAngleTiltPrior", "rlnAnglePsiPrior"]],
                               table.angles_deg)


def test_with_refined_poses_refuses_other_particles(clean_project, tmp_path):
    table = read_particles(clean_project / "particles.star")
    path = tmp_path / REFINED_POSES_NAME
    starfile.write({"optics": table.optics, "particles": table.particles.iloc[::-1]}, path)
    with pytest.raises(Exception, match="other particles"):
        with_refined_poses(table, path)


def test_refinement_moves_perturbed_poses_towards_the_truth(clean_project, tmp_path, caplog):
    """Noise-free static particles whose poses are off by 3° and 1.5 Å: ``--refine-poses`` brings
    them back (median angle and origin errors at least halved), and the inverse and the deformable
    backprojection read the refined poses."""
    star = starfile.read(clean_project / "particles.star", always_dict=True)
    truth = star["particles"]
    angles = ["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]
    origins = ["rlnOriginXAngst", "rlnOriginYAngst"]
    rng = np.random.default_rng(0)
    axes = rng.normal(size=(len(truth), 3))
    axes *= np.radians(3.0) / np.linalg.norm(axes, axis=1, keepdims=True)
    turned = rotation_vector_to_matrix(torch.as_tensor(axes)) @ euler_angles_to_matrix(torch.as_tensor(
        truth[angles].to_numpy(np.float64)))
    directions = rng.normal(size=(len(truth), 2))
    perturbed = truth.copy()
    perturbed[angles] = matrix_to_euler_angles(turned).numpy()
    perturbed[origins] = truth[origins].to_numpy() + 1.5 * directions / np.linalg.norm(directions, axis=1,
                                                                                          keepdims=True)
    perturbed["rlnImageName"] = [f"{i}@{clean_project / s}" for i, _, s in truth["rlnImageName"].str.partition("@").values]
    starfile.write({"optics": star["optics"], "particles": perturbed}, tmp_path / "perturbed.star")
    run = tmp_path / "run"
    assert dynamight(["optimize-deformations", "--refinement-star-file", str(tmp_path / "perturbed.star"),
                      "--output-directory", str(run), "--initial-model", str(clean_project / "map.mrc"),
                      "--n-gaussians", "300", "--n-epochs", "8", "--n-warmup-epochs", "0", "--refine-poses",
                      "--gpu-id", "-1", "--seed", "0"]) == 0
    refined = starfile.read(run / "forward_deformations" / REFINED_POSES_NAME)["particles"]
    before = _angle_deg(perturbed[angles].to_numpy(np.float64), truth[angles].to_numpy(np.float64))
    after = _angle_deg(refined[angles].to_numpy(np.float64), truth[angles].to_numpy(np.float64))
    shift_before = np.linalg.norm(perturbed[origins].to_numpy() - truth[origins].to_numpy(), axis=1)
    shift_after = np.linalg.norm(refined[origins].to_numpy() - truth[origins].to_numpy(), axis=1)
    print(f"median angle error {np.median(before):.2f} -> {np.median(after):.2f}°, origin "
          f"{np.median(shift_before):.2f} -> {np.median(shift_after):.2f} Å")
    assert np.median(after) < 0.5 * np.median(before)
    assert np.median(shift_after) < 0.5 * np.median(shift_before)
    caplog.set_level(logging.INFO)
    assert dynamight(["optimize-inverse-deformations", str(run), "--n-epochs", "2", "--gpu-id", "-1"]) == 0
    assert dynamight(["deformable-backprojection", str(run), "--gpu-id", "-1"]) == 0
    assert sum("using the refined poses" in r.getMessage() for r in caplog.records) == 2
