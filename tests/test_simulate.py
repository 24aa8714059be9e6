"""The simulator: seeded, its static twin shares everything but the motion, ground truth is right."""

from __future__ import annotations

import mrcfile
import numpy as np
import pytest
import starfile
import torch

from dynamight.data.fourier import fft_centred
from dynamight.data.geometry import euler_angles_to_matrix
from dynamight.data.volumes import read_map
from dynamight.model.render import project_gaussians, render_volume
from dynamight.reconstruction.fourier_slice import FourierProjector
from dynamight.errors import InputError
from dynamight.simulate.dataset import clean_images, simulate
from dynamight.simulate.evaluate import spearman
from dynamight.simulate.factors import factor_accuracy
from dynamight.simulate.molecule import hinge_positions, two_domain_molecule
from dynamight.simulate.motions import move_part
from dynamight.simulate.scenario import build, check_fits
from dynamight.simulate.truth import GroundTruth

from .helpers import ncc


def _stack(path):
    with mrcfile.open(path / "Particles" / "particles_0000.mrcs") as mrc:
        return mrc.data.copy()


def test_static_twin_shares_poses_ctf_and_noise(tmp_path):
    kwargs = dict(n_particles=40, box_px=32, pixel_size_angstrom=4.0, snr=0.2, seed=11)
    simulate(tmp_path / "moving", motion="hinge", **kwargs)
    simulate(tmp_path / "static", motion="none", **kwargs)
    simulate(tmp_path / "again", motion="hinge", **kwargs)
    moving, static = starfile.read(tmp_path / "moving" / "particles.star"), starfile.read(tmp_path / "static" / "particles.star")
    assert moving["particles"].equals(static["particles"])
    assert np.array_equal(_stack(tmp_path / "moving"), _stack(tmp_path / "again"))  # seeded
    difference = _stack(tmp_path / "moving") - _stack(tmp_path / "static")
    noise_sigma = starfile.read(tmp_path / "moving" / "ground_truth.star")["general"]["dmNoiseSigma"]
    assert difference.std() < 0.3 * noise_sigma  # the noise cancels: only the moved signal differs
    truth = starfile.read(tmp_path / "static" / "ground_truth.star")["particles"]
    assert (truth["dmTrueHingeAngleDeg"] == 0).all()


def test_ground_truth_hinge_moves_only_the_moving_domain():
    m = two_domain_molecule()
    moved = hinge_positions(m, torch.tensor([0.0, 20.0]))
    assert torch.allclose(moved[0], m.positions_angstrom)
    shift = (moved[1] - m.positions_angstrom).norm(dim=-1)
    assert shift[~m.moving].max() == 0 and shift[m.moving].mean() > 3.0
    # distances within the moving domain are preserved (a rigid rotation)
    def distances(x):
        return (x[:, None] - x[None]).norm(dim=-1)

    inner = distances(moved[1][m.moving]) - distances(m.positions_angstrom[m.moving])
    assert inner.abs().max() < 1e-3


def test_written_map_is_the_consensus_conformation(tiny_project):
    m = two_domain_molecule()
    volume = read_map(tiny_project / "map.mrc")
    expected = render_volume(m.positions_angstrom, torch.ones(len(m.moving)), torch.full((len(m.moving),), 2.0), 32, 4.0)
    assert volume.pixel_size_angstrom == 4.0
    assert torch.allclose(volume.data, expected, atol=1e-4)
    moving_mask = read_map(tiny_project / "masks" / "moving_domain.mrc").data
    centre = ((m.positions_angstrom[m.moving].mean(0) / 4.0).round().long() + 16).tolist()
    assert moving_mask[centre[2], centre[1], centre[0]] == 1.0


def test_gaussian_projection_matches_fourier_projection_of_rendered_map():
    g = torch.Generator().manual_seed(0)
    positions = torch.randn(200, 3, generator=g) * 12
    amplitudes, sigma = torch.rand(200, generator=g) + 0.5, torch.full((200,), 3.0)
    volume = render_volume(positions, amplitudes, sigma, 40, 2.0)
    rotations = euler_angles_to_matrix(torch.tensor([[20.0, 50.0, -30.0], [140.0, 100.0, 75.0]]))
    direct = project_gaussians(positions, amplitudes, sigma, rotations, 40, 2.0)
    sliced = torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(FourierProjector(volume).project(rotations), dim=(-2, -1))), dim=(-2, -1)).real
    assert ncc(direct, sliced).min() > 0.99
    assert abs(float(direct.std() / sliced.std()) - 1) < 0.01
    assert fft_centred(direct, 2).shape == (2, 40, 40)


# --- real structures, bending, two independent hinges -------------------------------------------

MOTIONS = [  # (motion, atomic model, moving chain, second moving chain)
    ("bend", None, None, None),
    ("two-hinges", None, None, None),
    ("hinge", "1ake", "A:122-159", None),
    ("bend", "1ake", "A:122-159", None),
    ("two-hinges", "1ake", "A:122-159", "A:30-59"),
]
TINY = dict(box_px=32, pixel_size_angstrom=4.0, seed=4)


def _simulate(path, motion, model, chain, chain2, n=12, snr=0.0, **extra):
    simulate(path, n_particles=n, snr=snr, motion=motion, atomic_model=model, moving_chain=chain,
             second_moving_chain=chain2, **TINY, **extra)
    return path


def _kabsch_rms(moved, reference):
    """RMS residual (Å) of the best rigid fit of ``(m, 3)`` moved points onto reference ones."""
    a, b = moved - moved.mean(0), reference - reference.mean(0)
    u, _, vt = torch.linalg.svd(a.T.double() @ b.double())
    d = torch.sign(torch.det(u @ vt))
    rot = u @ torch.diag(torch.tensor([1.0, 1.0, float(d)], dtype=torch.float64)) @ vt
    return float(((a.double() @ rot) - b.double()).pow(2).sum(-1).mean().sqrt())


@pytest.mark.parametrize("motion,model,chain,chain2", MOTIONS)
def test_ground_truth_renders_the_images(tmp_path, motion, model, chain, chain2):
    """Noise-free images are the projections of the true deformed atoms of ground_truth.star, and
    not those of the consensus atoms."""
    project = _simulate(tmp_path, motion, model, chain, chain2)
    truth = GroundTruth.read(project)
    assert truth.factor_names == {"bend": ["dmTrueBendAngleDeg"], "hinge": ["dmTrueHingeAngleDeg"],
                                  "two-hinges": ["dmTrueHingeAngleDeg", "dmTrueHinge2AngleDeg"]}[motion]
    rows = starfile.read(project / "particles.star")["particles"]
    index = np.arange(len(rows))
    optics = dict(voltage_kv=300.0, cs_mm=2.7, q0=0.1)
    expected = clean_images(truth.molecule(), truth.positions(index), rows, 32, 4.0, **optics)
    consensus = clean_images(truth.molecule(), truth.atoms[None].expand(len(rows), -1, -1), rows, 32, 4.0, **optics)
    images = torch.from_numpy(_stack(project))
    scale = float(images.std())
    assert (images - expected).abs().max() < 1e-4 * scale
    assert (images - consensus).std() > 0.02 * scale
    moved = truth.displacements(index).norm(dim=-1)
    assert moved[:, ~truth.moving].max() < 1e-4 and moved[:, truth.moving].max() > 2.0


def test_two_hinges_are_independent(tmp_path):
    project = _simulate(tmp_path, "two-hinges", None, None, None, n=400)
    truth = GroundTruth.read(project)
    first, second = truth.factors["dmTrueHingeAngleDeg"], truth.factors["dmTrueHinge2AngleDeg"]
    assert abs(spearman(first.to_numpy(), second.to_numpy())) < 0.15
    assert first.abs().max() > 20 and second.abs().max() > 20
    # each factor moves its own domain only
    truth.factors["dmTrueHinge2AngleDeg"] = 0.0
    moved = truth.displacements(np.arange(400)).norm(dim=-1)
    assert moved[:, truth.domain == 2].max() < 1e-4 and moved[:, truth.domain == 1].max() > 5.0
    assert (read_map(project / "masks" / "domain_2.mrc").data > 0.5).any()


@pytest.mark.parametrize("model,chain", [(None, None), ("1ake", "A:122-159"), ("1bd2", "D,E")])
def test_bend_is_not_rigid(model, chain):
    molecule, parts = build("bend", model, chain)
    (part,) = parts
    arm = molecule.domain == part.domain
    bent = move_part(molecule.positions_angstrom[arm], part, torch.tensor([45.0]))[0]  # the default maximum
    tip = (bent - molecule.positions_angstrom[arm]).norm(dim=-1)
    assert tip.max() > 5.0
    assert _kabsch_rms(bent, molecule.positions_angstrom[arm]) > 1.0  # no rigid motion explains it
    hinged = move_part(molecule.positions_angstrom[arm], part.model_copy(update={"kind": "hinge"}), torch.tensor([20.0]))[0]
    assert _kabsch_rms(hinged, molecule.positions_angstrom[arm]) < 1e-3
    small = move_part(molecule.positions_angstrom[arm], part, torch.tensor([1e-6]))[0]  # smooth at 0 curvature
    assert torch.allclose(small, molecule.positions_angstrom[arm], atol=1e-3)


def test_real_structure_molecule():
    molecule, (part,) = build("hinge", "1ake", "A:122-159")
    assert len(molecule.positions_angstrom) == 214  # residues of adenylate kinase
    assert int(molecule.moving.sum()) == 38
    assert molecule.positions_angstrom.mean(0).abs().max() < 1e-3  # centred
    assert abs(float(torch.tensor(part.axis).norm()) - 1) < 1e-5
    receptor, _ = build("hinge", "3hsy", "B")
    assert len(receptor.positions_angstrom) == 730 and int(receptor.moving.sum()) == 376
    with pytest.raises(InputError, match="matches no residue"):
        build("hinge", "1ake", "Q")
    with pytest.raises(InputError, match="second-moving-chain"):
        build("two-hinges", "1ake", "A:122-159")
    with pytest.raises(InputError, match="does not fit"):
        check_fits(build("hinge", "1bd2", "D,E")[0], 32, 2.0, 2.0)


def test_static_twin_of_a_bend(tmp_path):
    moving = _simulate(tmp_path / "moving", "bend", None, None, None, n=30, snr=0.2)
    static = _simulate(tmp_path / "static", "none", None, None, None, n=30, snr=0.2, molecule="branched")
    assert starfile.read(moving / "particles.star")["particles"].equals(starfile.read(static / "particles.star")["particles"])
    noise_sigma = starfile.read(moving / "ground_truth.star")["general"]["dmNoiseSigma"]
    assert (_stack(moving) - _stack(static)).std() < 0.3 * noise_sigma
    assert np.array_equal(read_map(moving / "map.mrc").data, read_map(static / "map.mrc").data)


def test_factor_accuracy_per_half_and_held_out(tmp_path):
    project = _simulate(tmp_path / "p", "two-hinges", None, None, None, n=300)
    particles = starfile.read(project / "particles.star")["particles"]
    truth = GroundTruth.read(project)
    rng = np.random.default_rng(0)
    latents = particles.copy()
    latents["rlnDynaMightLatent1"] = truth.factors["dmTrueHingeAngleDeg"] + truth.factors["dmTrueHinge2AngleDeg"]
    latents["rlnDynaMightLatent2"] = truth.factors["dmTrueHingeAngleDeg"] - truth.factors["dmTrueHinge2AngleDeg"]
    latents["rlnDynaMightLatent3"] = rng.normal(size=len(latents))
    latents["rlnDynaMightHalfSet"] = latents["rlnRandomSubset"]
    latents["rlnDynaMightIsValidation"] = (np.arange(len(latents)) % 10 == 0).astype(int)
    (tmp_path / "run" / "forward_deformations").mkdir(parents=True)
    starfile.write({"particles": latents.iloc[::-1]}, tmp_path / "run" / "forward_deformations" / "latents.star")
    result = factor_accuracy(project, tmp_path / "run")
    assert set(result) == {1, 2}
    for half in result.values():
        assert set(half) == {"dmTrueHingeAngleDeg", "dmTrueHinge2AngleDeg"}
        assert all(v["all"] > 0.99 and v["held_out"] > 0.99 for v in half.values())
