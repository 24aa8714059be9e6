"""Real STAR files written by RELION 3.0, 3.1 and 5 (shared fixtures; skipped when absent)."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
import starfile

from dynamight.data.images import ParticleImages
from dynamight.data.particles import read_particles

from .conftest import SHARED_FIXTURES

needs_fixtures = pytest.mark.skipif(not SHARED_FIXTURES.is_dir(), reason="../shared fixtures absent")


@needs_fixtures
def test_relion30_single_table_pixel_origins():
    t = read_particles(SHARED_FIXTURES / "cryodrgn" / "FinalRefinement-OriginalParticles-PfCRT.star")
    assert len(t) == 5 and t.optics is None
    pixel = 1.035 * 1e4 / 10000.0  # rlnDetectorPixelSize (um) * 1e4 / rlnMagnification
    assert t.optics_groups[0].pixel_size_angstrom == pytest.approx(pixel)
    assert t.origins_angstrom[0] == pytest.approx([-0.14063 * pixel, -0.04688 * pixel])
    assert list(t.half_set) == [2, 1, 2, 2, 2]
    assert t.voltage_kv[0] == 300 and t.amplitude_contrast[0] == 0  # RELION's default Q0 when absent


@needs_fixtures
@pytest.mark.parametrize("name", ["relion31.star", "relion31.v2.star"])
def test_relion31_with_images(name, monkeypatch):
    monkeypatch.chdir(SHARED_FIXTURES.parent)  # the stack resolves beside the STAR file instead
    t = read_particles(SHARED_FIXTURES / "cryodrgn" / name)
    assert len(t) == 5 and t.optics_groups[0].box_px == 256
    assert t.optics_groups[0].pixel_size_angstrom == pytest.approx(2.806)
    images = ParticleImages(t).read(np.arange(5))
    assert images.shape == (5, 256, 256) and np.isfinite(images).all() and images.std() > 0


@needs_fixtures
def test_relion31_six_optics_groups():
    t = read_particles(SHARED_FIXTURES / "cryodrgn" / "relion31.6opticsgroups.star")
    assert len(t.optics_groups) == 6
    raw = starfile.read(SHARED_FIXTURES / "cryodrgn" / "relion31.6opticsgroups.star")
    optics = raw["optics"].set_index("rlnOpticsGroup")
    groups = raw["particles"]["rlnOpticsGroup"].to_numpy()
    assert np.allclose(t.pixel_size_angstrom, optics.loc[groups, "rlnImagePixelSize"].to_numpy())
    assert np.allclose(t.spherical_aberration_mm, optics.loc[groups, "rlnSphericalAberration"].to_numpy())
    assert {1.24, 1.25} == set(np.round(t.pixel_size_angstrom, 2))
    assert np.allclose(t.phase_shift_deg, raw["particles"]["rlnPhaseShift"].to_numpy())


@needs_fixtures
def test_relion5_eight_digit_indices_and_images(monkeypatch):
    folder = SHARED_FIXTURES / "relion5-written"
    monkeypatch.chdir(folder)
    t = read_particles("proj.star")
    assert t.image_index[:3].tolist() == [0, 1, 2] and t.image_index.max() == 199
    assert ParticleImages(t).read(np.array([0, 199])).shape == (2, 64, 64)
    refined = read_particles("run_it001_data.star")
    assert refined.origins_angstrom[0] == pytest.approx([0.453947, 0.453947])


@needs_fixtures
def test_relion31_refinement_metadata_without_stack():
    t = read_particles(SHARED_FIXTURES / "relion31-written" / "refine3d_data.star")
    assert len(t) == 200 and set(t.half_set) == {1, 2}
    assert t.origins_angstrom[0] == pytest.approx([1.068675, -1.68333])
    assert t.stack_paths == [None]  # proj.mrcs is not included: metadata readable, images not


def _write(path, particles, optics=None):
    blocks = {"particles": particles} if optics is None else {"optics": optics, "particles": particles}
    starfile.write(blocks, path, overwrite=True)


def test_ctf_value_from_particle_then_optics_then_default(tiny_project, tmp_path):
    raw = starfile.read(tiny_project / "particles.star")
    particles, optics = raw["particles"].copy(), raw["optics"].copy()
    particles = particles.drop(columns=["rlnDefocusV"])
    particles["rlnSphericalAberration"] = 1.4  # particle value overrides the optics group
    particles["rlnImageName"] = [f"{n.split('@')[0]}@{tiny_project / n.split('@')[1]}" for n in particles["rlnImageName"]]
    _write(tmp_path / "p.star", particles, optics)
    t = read_particles(tmp_path / "p.star")
    assert np.allclose(t.spherical_aberration_mm, 1.4)
    assert np.allclose(t.voltage_kv, 300.0)  # from the optics group
    assert np.allclose(t.defocus_v_angstrom, t.defocus_u_angstrom)  # default DefocusV = DefocusU
    assert np.allclose(t.ctf_scale, 1.0) and np.allclose(t.bfactor_angstrom2, 0.0)


def test_paths_resolve_against_project_then_star_folder(tiny_project, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the project: falls back to the STAR file's folder
    t = read_particles(tiny_project / "particles.star")
    assert t.stack_paths[0] == tiny_project / "Particles" / "particles_0000.mrcs"
    monkeypatch.chdir(tiny_project)
    t = read_particles("particles.star")
    assert t.stack_paths[0].resolve() == (tiny_project / "Particles" / "particles_0000.mrcs").resolve()


def test_paths_resolve_against_a_relion_jobs_project_directory(tiny_project, tmp_path, monkeypatch):
    """A RELION job's ``Refine3D/job012/run_data.star`` names images relative to the project
    directory two folders up; found from any working directory."""
    project = tmp_path / "project"
    job = project / "Refine3D" / "job012"
    job.mkdir(parents=True)
    (project / "Particles").symlink_to(tiny_project / "Particles")
    (job / "run_data.star").write_text((tiny_project / "particles.star").read_text())
    monkeypatch.chdir(tmp_path)
    t = read_particles(job / "run_data.star")
    assert t.stack_paths[0] == project / "Particles" / "particles_0000.mrcs"


def test_missing_half_sets_get_a_seeded_split(tiny_project, tmp_path, caplog):
    raw = starfile.read(tiny_project / "particles.star")
    raw["particles"] = raw["particles"].drop(columns=["rlnRandomSubset"])
    _write(tmp_path / "p.star", raw["particles"], raw["optics"])
    a, b = read_particles(tmp_path / "p.star", seed=1), read_particles(tmp_path / "p.star", seed=1)
    assert (a.half_set == b.half_set).all() and abs((a.half_set == 1).sum() - len(a) / 2) <= 1
    assert "rlnRandomSubset" in caplog.text


def test_images_read_lazily_equal_the_stack_and_the_preloaded_copy(tiny_project):
    import mrcfile

    t = read_particles(tiny_project / "particles.star")
    rows = np.array([0, 7, 199, 3])
    lazy = ParticleImages(t).read(rows)
    preloaded = ParticleImages(t, preload=True).read(rows)
    assert np.array_equal(lazy, preloaded)
    for i, p in enumerate(rows):
        stack = mrcfile.read(t.stack_paths[t.stack_index[p]])
        assert np.array_equal(lazy[i], stack[t.image_index[p]])
