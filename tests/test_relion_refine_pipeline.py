"""The pieces of ``benchmarks/relion_pipeline.py`` (DynaMight on RELION-estimated poses) that run in
seconds: the pose-error report against the truth and the RELION-style normalisation.

The whole chain (``relion_refine_mpi --auto_refine`` -> DynaMight -> ``relion_postprocess``) is not
tested here yet: on these simulated particles RELION 3.1's maximum-likelihood iterations assign
random poses (see the module's ``refine`` and the issue), so a whole-chain test would neither pass
nor finish in minutes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import mrcfile
import numpy as np
import starfile
import torch

from dynamight.data.geometry import euler_angles_to_matrix, matrix_to_euler_angles
from dynamight.simulate.factors import _image_key

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import relion_pipeline  # noqa: E402


def _relion_style(project: Path, out: Path, rotation: torch.Tensor | None = None, shift: np.ndarray | None = None,
                  angle_noise_deg: float = 0.0) -> Path:
    """The project's particles as RELION writes run_data.star: rows shuffled, zero-padded image
    names, poses ``A_true @ rotation`` (a rotated frame), origins moved by a 3D frame ``shift`` (Å)."""
    star = starfile.read(project / "particles.star", always_dict=True)
    table = star["particles"].sample(frac=1.0, random_state=1).reset_index(drop=True)
    angles = ["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]
    a = euler_angles_to_matrix(torch.tensor(table[angles].to_numpy(np.float64)))
    if rotation is not None:
        a = a @ rotation
    new = matrix_to_euler_angles(a).numpy()
    new += np.random.default_rng(0).normal(scale=angle_noise_deg, size=new.shape)
    table[angles] = new
    if shift is not None:
        table[["rlnOriginXAngst", "rlnOriginYAngst"]] += (a[:, :2].numpy() @ shift)
    index, _, stack = table["rlnImageName"].str.partition("@").values.T
    table["rlnImageName"] = [f"{int(i):06d}@Particles/../Particles/{Path(s).name}" for i, s in zip(index, stack)]
    star["particles"] = table
    starfile.write(star, out, overwrite=True)
    return out


def test_pose_errors_zero_for_the_true_poses(tiny_project, tmp_path):
    errors = relion_pipeline.pose_errors(tiny_project, _relion_style(tiny_project, tmp_path / "run_data.star"))
    assert errors["n"] == 200
    assert errors["angle_p90"] < 1e-3 and errors["view_median"] < 1e-3
    assert errors["origin_p90"] < 1e-6 and errors["frame_shift"] < 1e-6


def test_pose_errors_find_a_rotated_and_shifted_frame(tiny_project, tmp_path):
    angle = np.deg2rad(30.0)
    rotation = torch.tensor([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]],
                            dtype=torch.float64)
    shift = np.array([3.0, -2.0, 1.0])
    star = _relion_style(tiny_project, tmp_path / "run_data.star", rotation, shift, angle_noise_deg=1.0)
    errors = relion_pipeline.pose_errors(tiny_project, star)
    assert 25 < errors["angle_median"] < 35          # every particle is off by the frame's rotation
    assert abs(errors["frame_rotation"] - 30.0) < 1.0
    assert errors["angle_median_in_frame"] < 3.0     # what is left: the 1° angle noise
    assert abs(errors["frame_shift"] - np.linalg.norm(shift)) < 0.1
    assert errors["origin_median_in_frame"] < 0.2  # the angle noise moves the projected shift
    assert "frame rotation 30" in relion_pipeline.format_pose_errors(errors)


def test_normalisation_like_relion_preprocess_keeps_image_names(tiny_project, tmp_path):
    star = relion_pipeline.normalise_particles(tiny_project, tmp_path)
    names = starfile.read(star, always_dict=True)["particles"]["rlnImageName"]
    truth = starfile.read(tiny_project / "ground_truth.star", always_dict=True)["particles"]["rlnImageName"]
    assert sorted(_image_key(names)) == sorted(_image_key(truth))
    stack = names.str.partition("@")[2].iloc[0]
    raw, normalised = mrcfile.read(tiny_project / stack), mrcfile.read(tmp_path / stack)
    y, x = np.mgrid[:32, :32] - 16
    background = normalised[:, np.hypot(x, y) > 12]
    np.testing.assert_allclose(background.mean(1), 0.0, atol=1e-4)
    np.testing.assert_allclose(background.std(1), 1.0, atol=1e-4)
    # an affine map of each image, nothing else
    assert np.corrcoef(raw[0].ravel(), normalised[0].ravel())[0, 1] > 0.9999
