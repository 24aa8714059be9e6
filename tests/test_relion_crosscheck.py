"""Our conventions against Debian's real RELION 3.1 programs (relion_project, relion_reconstruct)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import starfile
import torch

from dynamight.data.batches import load_batch
from dynamight.data.ctf import ctf_image
from dynamight.data.fourier import fft_centred, fsc, radial_index
from dynamight.data.images import ParticleImages
from dynamight.data.particles import read_particles
from dynamight.data.volumes import read_map, write_map
from dynamight.reconstruction.fourier_slice import FourierProjector
from dynamight.reconstruction.imaging import batch_ctf, observe
from dynamight.reconstruction.plain import reconstruct_half_maps
from dynamight.reconstruction.report import fsc_table
from dynamight.simulate.dataset import simulate

from .helpers import ncc, needs_relion, run_relion

BOX, PIXEL = 32, 4.0


def _angles_star(path, n, seed, box=BOX, pixel=PIXEL, phase_shift=True):
    rng = np.random.default_rng(seed)
    du = rng.uniform(5000, 20000, n)
    particles = pd.DataFrame({
        "rlnImageName": [f"{i + 1:06d}@unused.mrcs" for i in range(n)],
        "rlnAngleRot": rng.uniform(-180, 180, n), "rlnAngleTilt": np.degrees(np.arccos(rng.uniform(-1, 1, n))),
        "rlnAnglePsi": rng.uniform(-180, 180, n),
        "rlnOriginXAngst": rng.uniform(-3, 3, n) * pixel, "rlnOriginYAngst": rng.uniform(-3, 3, n) * pixel,
        "rlnDefocusU": du, "rlnDefocusV": du - rng.uniform(0, 800, n), "rlnDefocusAngle": rng.uniform(0, 180, n),
        "rlnPhaseShift": rng.uniform(0, 90, n) if phase_shift else np.zeros(n),
        "rlnCtfBfactor": rng.uniform(0, 150, n), "rlnOpticsGroup": 1, "rlnRandomSubset": np.arange(n) % 2 + 1,
    })
    optics = pd.DataFrame({"rlnOpticsGroup": [1], "rlnOpticsGroupName": ["g1"], "rlnVoltage": [300.0],
                           "rlnSphericalAberration": [2.7], "rlnAmplitudeContrast": [0.07],
                           "rlnImagePixelSize": [pixel], "rlnImageSize": [box], "rlnImageDimensionality": [2]})
    starfile.write({"optics": optics, "particles": particles}, path, overwrite=True)


def _our_images(star, volume):
    table = read_particles(star)
    batch = load_batch(table, ParticleImages(table), np.arange(len(table)))
    projections = FourierProjector(volume).project(batch.rotations)
    return batch, projections


@needs_relion("relion_project")
@pytest.mark.parametrize("with_ctf", [False, True])
def test_projection_matches_relion_project(clean_project, tmp_path, with_ctf):
    _angles_star(tmp_path / "angles.star", 24, seed=1)
    args = ["relion_project", "--i", str(clean_project / "map.mrc"), "--o", "proj", "--ang", "angles.star",
            "--angpix", str(PIXEL)] + (["--ctf"] if with_ctf else [])
    run_relion(args, tmp_path)
    batch, projections = _our_images(tmp_path / "proj.star", read_map(clean_project / "map.mrc").data)
    ctf = batch_ctf(batch) if with_ctf else torch.ones(batch.images.shape)
    ours = observe(projections, ctf, batch.centring_shift_px)
    scores = ncc(ours, batch.images)
    assert scores.min() >= 0.99, scores
    assert abs(float(ours.std() / batch.images.std()) - 1) < 0.02  # same scale, not just the same shape


@needs_relion("relion_project")
def test_ctf_matches_relion(tmp_path):
    """Project a delta function: RELION's image is then the inverse FFT of its CTF."""
    delta = torch.zeros(BOX, BOX, BOX)
    delta[BOX // 2, BOX // 2, BOX // 2] = 1.0
    write_map(tmp_path / "delta.mrc", delta, PIXEL)
    _angles_star(tmp_path / "angles.star", 12, seed=2)
    star = starfile.read(tmp_path / "angles.star")
    star["particles"]["rlnOriginXAngst"] = 0.0
    star["particles"]["rlnOriginYAngst"] = 0.0
    starfile.write(star, tmp_path / "angles.star", overwrite=True)
    run_relion(["relion_project", "--i", "delta.mrc", "--o", "proj", "--ang", "angles.star", "--ctf",
                "--angpix", str(PIXEL)], tmp_path)
    table = read_particles(tmp_path / "proj.star")
    batch = load_batch(table, ParticleImages(table), np.arange(len(table)))
    relion_ctf = fft_centred(batch.images, 2).real
    ours = ctf_image(batch.ctf, BOX, PIXEL)
    k = torch.arange(BOX) - BOX // 2
    inside = (k[:, None] ** 2 + k[None, :] ** 2) <= (BOX // 2 - 1) ** 2
    assert (ours - relion_ctf)[:, inside].abs().max() < 0.02
    assert table.phase_shift_deg.max() > 10 and table.bfactor_angstrom2.max() > 10  # the test covers both


@needs_relion("relion_project", "relion_reconstruct")
def test_reconstruction_matches_relion_reconstruct(clean_project, tmp_path):
    _angles_star(tmp_path / "angles.star", 600, seed=3)
    run_relion(["relion_project", "--i", str(clean_project / "map.mrc"), "--o", "proj", "--ang", "angles.star",
                "--ctf", "--angpix", str(PIXEL)], tmp_path)
    run_relion(["relion_reconstruct", "--i", "proj.star", "--o", "relion.mrc", "--ctf"], tmp_path)
    table = read_particles(tmp_path / "proj.star")
    maps = reconstruct_half_maps(table, ParticleImages(table), torch.device("cpu"))
    relion = read_map(tmp_path / "relion.mrc").data
    truth = read_map(clean_project / "map.mrc").data
    limit = int(0.8 * BOX // 2)
    assert fsc(maps.merged, relion)[: limit + 1].min() >= 0.9
    assert fsc(maps.merged, truth)[: limit + 1].min() >= 0.9
    assert abs(float(maps.merged.std() / truth.std()) - 1) < 0.05


def _shell_amplitudes(volume: torch.Tensor) -> torch.Tensor:
    """``(d, d, d)`` -> ``(d // 2 + 1,)`` root of the summed power in each Fourier shell."""
    d = volume.shape[-1]
    power = (fft_centred(volume.double(), 3).abs() ** 2).flatten()
    shells = radial_index(d, 3).flatten()
    return torch.zeros(int(shells.max()) + 1, dtype=torch.float64).index_add_(0, shells, power)[: d // 2 + 1].sqrt()


@needs_relion("relion_reconstruct")
def test_regularisation_matches_relion_reconstruct_fsc(tmp_path):
    """RELION's FSC-based Wiener term: given the same half-map FSC, our regularised map is damped
    shell by shell as ``relion_reconstruct --fsc`` damps its own (noisy data, where it matters)."""
    simulate(tmp_path, n_particles=1000, box_px=BOX, pixel_size_angstrom=PIXEL, snr=0.05, motion="none", seed=7)
    table = read_particles(tmp_path / "particles.star")
    images = ParticleImages(table)
    plain = reconstruct_half_maps(table, images, torch.device("cpu"), regularise=False)
    regularised = reconstruct_half_maps(table, images, torch.device("cpu"))
    curve = fsc(plain.half1, plain.half2)
    starfile.write({"fsc": fsc_table({"rlnGoldStandardFsc": curve}, BOX, PIXEL)}, tmp_path / "fsc.star")
    run_relion(["relion_reconstruct", "--i", "particles.star", "--o", "plain.mrc", "--ctf"], tmp_path)
    run_relion(["relion_reconstruct", "--i", "particles.star", "--o", "wiener.mrc", "--ctf", "--fsc", "fsc.star"], tmp_path)
    relion_damping = _shell_amplitudes(read_map(tmp_path / "wiener.mrc").data) / _shell_amplitudes(read_map(tmp_path / "plain.mrc").data)
    our_damping = _shell_amplitudes(regularised.merged) / _shell_amplitudes(plain.merged)
    assert float(curve[-3:].mean()) < 0.2 and float(relion_damping[-3:].max()) < 0.5  # the term matters here
    ratio = (our_damping / relion_damping)[1:]
    assert 0.95 < float(ratio.median()) < 1.05 and ratio.min() > 0.8 and ratio.max() < 1.25, ratio
