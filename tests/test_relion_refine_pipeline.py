"""``benchmarks/relion_pipeline.py``: DynaMight on RELION-estimated poses, as a user runs it.

The whole chain on a tiny real-structure dataset (1BD2, the T-cell receptor swinging by up to 20°;
300 particles, box 32, 5 Å/px, SNR 1): ``dynamight simulate`` -> ``relion_refine_mpi --auto_refine
--split_random_halves`` from a low-passed map (RELION's own ``run_data.star`` with its
``rlnRandomSubset``, and ``run_class001.mrc``) -> ``optimize-deformations`` ->
``optimize-inverse-deformations`` -> ``deformable-backprojection`` -> ``relion_postprocess``; and the
pieces that run in seconds (the pose-error report, the RELION-style normalisation).
"""

from __future__ import annotations

import sys
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import starfile
import torch

from dynamight.cli import main as dynamight
from dynamight.data.fourier import fsc
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


@pytest.fixture(scope="module")
def relion_refined(tmp_path_factory):
    """The tiny project and RELION's auto-refinement of it: ``(project, run_data.star, run_class001.mrc)``."""
    missing = relion_pipeline.missing_programs()
    if missing:
        pytest.skip(f"RELION programs not on the PATH: {', '.join(missing)}")
    root = tmp_path_factory.mktemp("relion_chain")
    project = root / "project"
    assert dynamight(["simulate", "--output-directory", str(project), "--atomic-model", "1bd2", "--moving-chain",
                      "D,E", "--motion", "hinge", "--n-particles", "300", "--box-size", "32", "--pixel-size", "5",
                      "--snr", "1", "--seed", "2"]) == 0
    data_star, consensus = relion_pipeline.refine(project, root / "relion", lowpass_angstrom=15.0, timeout_s=1200)
    return project, data_star, consensus


def test_relion_auto_refine_recovers_the_poses(relion_refined):
    project, data_star, consensus = relion_refined
    errors = relion_pipeline.pose_errors(project, data_star)
    print(relion_pipeline.format_pose_errors(errors))
    assert errors["n"] == 300
    assert errors["angle_median"] < 10.0 and errors["view_median"] < 10.0
    assert errors["origin_median"] < 4.0  # 0.8 pixel
    subsets = starfile.read(data_star, always_dict=True)["particles"]["rlnRandomSubset"]
    assert set(subsets) == {1, 2}
    assert mrcfile.read(consensus).shape == (32, 32, 32)


def test_dynamight_runs_on_relions_refinement_end_to_end(relion_refined, tmp_path):
    project, data_star, consensus = relion_refined
    run = tmp_path / "run"
    out = relion_pipeline.run_dynamight(data_star, consensus, run, ["--n-gaussians", "300", "--n-epochs", "6",
                                                                    "--seed", "0"], inverse_epochs=5,
                                        mask=project / "mask.mrc")
    # the halves are RELION's
    latents = starfile.read(run / "forward_deformations" / "latents.star", always_dict=True)["particles"]
    relion = starfile.read(data_star, always_dict=True)["particles"]
    assert len(latents) == 300
    halves = dict(zip(relion["rlnImageName"], relion["rlnRandomSubset"]))
    assert all(halves[name] == half for name, half in zip(latents["rlnImageName"], latents["rlnDynaMightHalfSet"]))
    # the deformable map against the truth, beside RELION's own map of the same particles
    truth = torch.as_tensor(mrcfile.read(project / "map.mrc").copy())
    ours = torch.as_tensor(mrcfile.read(out / "map.mrc").copy())
    theirs = torch.as_tensor(mrcfile.read(consensus).copy())
    band = slice(2, 12)  # 80 Å to 13.3 Å
    ours_fsc, theirs_fsc = float(fsc(ours, truth)[band].mean()), float(fsc(theirs, truth)[band].mean())
    print(f"band FSC vs the true map: deformable {ours_fsc:.3f}, RELION's run_class001 {theirs_fsc:.3f}")
    assert ours_fsc > 0.8 and ours_fsc > theirs_fsc - 0.03
    resolution = relion_pipeline.postprocess(out / "map_half1.mrc", out / "map_half2.mrc", project / "mask.mrc", 5.0,
                                             tmp_path / "PostProcess" / "postprocess", timeout_s=300)
    print(f"relion_postprocess of the deformable half maps: {resolution:.2f} Å")
    assert 10.0 <= resolution < 25.0
