"""The simulator: seeded, its static twin shares everything but the motion, ground truth is right."""

from __future__ import annotations

import mrcfile
import numpy as np
import starfile
import torch

from dynamight.data.fourier import fft_centred
from dynamight.data.geometry import euler_angles_to_matrix
from dynamight.data.volumes import read_map
from dynamight.model.render import project_gaussians, render_volume
from dynamight.reconstruction.fourier_slice import FourierProjector
from dynamight.simulate.dataset import simulate
from dynamight.simulate.molecule import hinge_positions, two_domain_molecule

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
