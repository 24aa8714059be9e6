"""cryoSPARC ``.cs`` input against the STAR path on the same particles (projections, reconstruction),
and against cryoDRGN's reading of real cryoSPARC-written files (when cryoDRGN's test data are given)."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from dynamight.cli import main
from dynamight.data.batches import load_batch
from dynamight.data.cryosparc import read_cryosparc_tables
from dynamight.data.fourier import fsc
from dynamight.data.geometry import euler_angles_to_matrix
from dynamight.data.images import ParticleImages
from dynamight.data.particles import read_particles
from dynamight.data.volumes import read_map
from dynamight.errors import InputError
from dynamight.reconstruction.fourier_slice import FourierProjector
from dynamight.reconstruction.imaging import batch_ctf, observe

from .cryosparc_files import write_cryosparc_project
from .helpers import ncc

# cryoDRGN's tests/data folder (GPL-3 data, not copied here): `pip download --no-deps --no-binary :all:
# cryodrgn`, unpack, and point this variable at cryodrgn-*/tests/data
CRYODRGN_DATA = os.environ.get("DYNAMIGHT_CRYODRGN_TEST_DATA")


def _predicted(table, volume, rows):
    batch = load_batch(table, ParticleImages(table), rows)
    images = observe(FourierProjector(volume).project(batch.rotations), batch_ctf(batch), batch.centring_shift_px)
    return batch, images


def test_cs_projections_match_star(clean_project, tmp_path):
    """The same map projected with the .cs metadata and with the STAR metadata, and the images."""
    cs = write_cryosparc_project(clean_project / "particles.star", tmp_path / "P1")
    star_table, cs_table = read_particles(clean_project / "particles.star"), read_particles(cs)
    rows = np.arange(96)
    volume = read_map(clean_project / "map.mrc").data
    star_batch, from_star = _predicted(star_table, volume, rows)
    cs_batch, from_cs = _predicted(cs_table, volume, rows)
    assert torch.equal(star_batch.images, cs_batch.images)
    assert ncc(from_cs, from_star).min() >= 0.999
    # the noise-free images (simulated from the atom model, not from the map): as well as the STAR's poses
    to_images = ncc(from_cs, cs_batch.images)
    assert to_images.min() >= 0.98 and (to_images - ncc(from_star, star_batch.images)).abs().max() < 1e-3
    wrong = load_batch(cs_table, ParticleImages(cs_table), rows)
    wrong.rotations = wrong.rotations.transpose(-1, -2)  # the other reading of the rotation vector
    wrong_images = observe(FourierProjector(volume).project(wrong.rotations), batch_ctf(wrong), wrong.centring_shift_px)
    assert ncc(wrong_images, cs_batch.images).mean() < 0.8
    assert np.array_equal(cs_table.half_set, star_table.half_set)
    for name in ("defocus_u_angstrom", "defocus_v_angstrom", "defocus_angle_deg", "phase_shift_deg", "voltage_kv",
                 "spherical_aberration_mm", "amplitude_contrast", "bfactor_angstrom2", "pixel_size_angstrom", "box_px"):
        np.testing.assert_allclose(getattr(cs_table, name), getattr(star_table, name), rtol=1e-6, atol=2e-3)


def test_reconstruct_from_cs_equals_star(tiny_project, tmp_path):
    cs = write_cryosparc_project(tiny_project / "particles.star", tmp_path / "P1")
    maps = {}
    for name, source in (("star", tiny_project / "particles.star"), ("cs", cs)):
        out = tmp_path / name
        assert main(["reconstruct", "--refinement-star-file", str(source), "--output-directory", str(out),
                     "--gpu-id", "-1"]) == 0
        maps[name] = read_map(out / "map.mrc").data
    assert fsc(maps["cs"], maps["star"])[1:].min() >= 0.999
    assert float((maps["cs"] - maps["star"]).norm() / maps["star"].norm()) < 1e-3


def test_cs_elsewhere_needs_the_project_directory(tiny_project, tmp_path):
    """An exported .cs outside its project: blobs resolve with --cs-project-directory; the passthrough
    is found beside it or given."""
    cs = write_cryosparc_project(tiny_project / "particles.star", tmp_path / "P1")
    moved = tmp_path / "export" / "here" / cs.name
    moved.parent.mkdir(parents=True)
    shutil.copy(cs, moved)
    passthrough = cs.with_name("J5_passthrough_particles.cs")
    with pytest.raises(InputError, match="blob/path 'J2/extract/.*' not found.*--cs-project-directory"):
        read_particles(moved, cs_passthrough_file=passthrough)
    table = read_particles(moved, cs_passthrough_file=passthrough, cs_project_directory=tmp_path / "P1")
    assert table.has_ctf and len(table) == 200
    no_ctf = read_particles(moved, cs_project_directory=tmp_path / "P1")  # no passthrough beside it
    assert not no_ctf.has_ctf


def test_blob_sign_multiplies_the_images(tiny_project, tmp_path):
    plain = read_particles(write_cryosparc_project(tiny_project / "particles.star", tmp_path / "A"))
    dark = read_particles(write_cryosparc_project(tiny_project / "particles.star", tmp_path / "B", sign=-1.0))
    rows = np.arange(5)
    np.testing.assert_array_equal(ParticleImages(dark).read(rows), -ParticleImages(plain).read(rows))


@pytest.mark.skipif(CRYODRGN_DATA is None, reason="DYNAMIGHT_CRYODRGN_TEST_DATA (cryoDRGN's tests/data) not set")
def test_real_cryosparc_refinement_matches_cryodrgn():
    """cryoDRGN's test data: a cryoSPARC homogeneous refinement's particles.cs and cryoDRGN's poses
    parsed from it (pose.cs.pkl: RELION's matrix A, and shift / box)."""
    data = Path(CRYODRGN_DATA)
    particles, optics, _ = read_cryosparc_tables(data / "cryosparc_P12_J24_001_particles.cs", require_images=False)
    with open(data / "pose.cs.pkl", "rb") as handle:
        rotations, translations = pickle.load(handle)
    angles = torch.from_numpy(particles[["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]].to_numpy())
    assert np.abs(euler_angles_to_matrix(angles).numpy() - rotations).max() < 1e-5
    origins = particles[["rlnOriginXAngst", "rlnOriginYAngst"]].to_numpy()
    box, pixel = int(optics["rlnImageSize"][0]), float(optics["rlnImagePixelSize"][0])
    assert np.abs(origins / pixel / box - translations).max() < 1e-6
    assert sorted(particles["rlnRandomSubset"].unique()) == [1, 2]


@pytest.mark.skipif(CRYODRGN_DATA is None, reason="DYNAMIGHT_CRYODRGN_TEST_DATA (cryoDRGN's tests/data) not set")
@pytest.mark.parametrize("name", ["empiar_10076_7.cs", "cryosparc_J2_particles_exported.cs"])
def test_real_cryosparc_files_without_3d_poses(name):
    with pytest.raises(InputError, match=f"{name}: no poses \\(field alignments3D/pose"):
        read_cryosparc_tables(Path(CRYODRGN_DATA) / name, require_images=False)
