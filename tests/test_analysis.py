"""The latent-space analysis without a display: reading latents, embedding, clustering,
properties, and the physics of the whole pipeline on a space decoded by the true hinge motion."""

from __future__ import annotations

import sys

import mrcfile
import numpy as np
import pytest
import starfile
import torch

from dynamight.analysis.clustering import kmeans, order_by
from dynamight.analysis.embedding import embed
from dynamight.analysis.latents import find_latents_file, read_latent_set
from dynamight.analysis.properties import local_density, movement
from dynamight.analysis.report import write_report
from dynamight.analysis.space import analyse
from dynamight.errors import InputError
from dynamight.simulate.dataset import simulate
from dynamight.simulate.evaluate import spearman

from .test_analysis_support import hinge_decoder, hinge_latents


@pytest.fixture(scope="module")
def hinge_project(tmp_path_factory):
    """400 simulated hinge particles (metadata and ground truth; the images are not used)."""
    root = tmp_path_factory.mktemp("hinge")
    simulate(root / "project", n_particles=400, box_px=32, pixel_size_angstrom=4.0, snr=0.5, motion="hinge", seed=7)
    return root / "project", hinge_latents(root / "project", root)


def domain_cores(project):
    """Voxels of only the moving domain's soft mask, and of only the fixed domain's (the masks overlap at the hinge)."""
    moving = mrcfile.read(project / "masks" / "moving_domain.mrc")
    fixed = mrcfile.read(project / "masks" / "fixed_domain.mrc")
    return (moving > 0.99) & (fixed < 0.01), (fixed > 0.99) & (moving < 0.01)


def _angles(project):
    return starfile.read(project / "ground_truth.star")["particles"]["dmTrueHingeAngleDeg"].to_numpy()


def test_half_sets_select_their_particles_and_codes(hinge_project):
    project, latents_path = hinge_project
    table = starfile.read(latents_path)["particles"]
    for half in (1, 2):
        s = read_latent_set(latents_path, half)
        assert np.array_equal(s.rows, np.flatnonzero(table["rlnDynaMightHalfSet"] == half))
        assert np.allclose(s.z[:, 1], table["rlnDynaMightLatent2"].to_numpy()[s.rows])
        assert (s.half == half).all() and np.isnan(s.error_estimate[~s.validation]).all()
    validation = read_latent_set(latents_path, 0)
    assert np.array_equal(validation.rows, np.flatnonzero(table["rlnDynaMightIsValidation"] == 1))
    assert set(validation.half) == {1, 2} and np.isfinite(validation.error_estimate).all()
    subset = validation.input_particles(np.arange(3))
    assert not [c for c in subset.columns if c.startswith("rlnDynaMight")]
    assert list(subset["rlnImageName"]) == list(table["rlnImageName"].iloc[validation.rows[:3]])


def test_bad_latent_input_is_one_line_naming_the_file(hinge_project, tmp_path):
    project, latents_path = hinge_project
    with pytest.raises(InputError, match="particles.star: no latent codes"):
        read_latent_set(project / "particles.star", 1)
    with pytest.raises(InputError, match="--half-set 3"):
        read_latent_set(latents_path, 3)
    with pytest.raises(InputError, match="no latents.star beside"):
        find_latents_file(tmp_path / "forward_deformations" / "checkpoint_final.pth")
    (tmp_path / "forward_deformations" / "checkpoints").mkdir(parents=True)
    (tmp_path / "forward_deformations" / "latents.star").write_text("")
    found = find_latents_file(tmp_path / "forward_deformations" / "checkpoints" / "007.pth")
    assert found == tmp_path / "forward_deformations" / "latents.star"


def test_pca_finds_the_main_direction_and_inverts():
    rng = np.random.default_rng(0)
    t = rng.uniform(-1, 1, 500)
    direction = np.array([0.6, -0.8, 0.0])
    z = t[:, None] * direction + rng.normal(0, 0.05, (500, 3)) + [1.0, 2.0, 3.0]
    e = embed(z)
    assert abs(spearman(e.coords[:, 0], t)) > 0.99 and e.explained[0] > 0.9
    assert abs(abs(e.components[0] @ direction) - 1) < 0.01 and e.components[0, np.abs(e.components[0]).argmax()] > 0
    frames = e.direction_codes(0, 10)
    assert np.allclose(e.scores(frames)[:, 0], np.linspace(-2, 2, 10) * e.std[0], atol=1e-5)
    assert np.allclose(e.scores(e.to_latent(e.coords[:5])), e.coords[:5], atol=1e-5)
    few = embed(z[:20] * [1.0, 1.0, 50.0], basis=z)  # directions from another (larger) set of codes
    assert np.allclose(few.components, e.components) and np.allclose(few.coords, (z[:20] * [1, 1, 50] - e.mean) @ e.components.T)


def test_umap_without_umap_learn_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "umap", None)
    with pytest.raises(InputError, match="umap-learn"):
        embed(np.random.default_rng(0).normal(size=(50, 3)), "UMAP")
    with pytest.raises(InputError, match="expected one of PCA, UMAP"):
        embed(np.zeros((5, 2)), "TSNE")


def test_umap_embedding_when_installed():
    pytest.importorskip("umap")
    rng = np.random.default_rng(3)
    t = rng.uniform(-1, 1, 300)
    z = np.stack([t, t**2, rng.normal(0, 0.01, 300)], axis=1)
    e = embed(z, "UMAP", seed=1)
    assert e.method == "UMAP" and e.coords.shape == (300, 2) and np.isfinite(e.coords).all()
    assert np.allclose(e.to_latent(e.coords[:5]), z[:5], atol=1e-4)  # a particle's own point gives back its code
    assert abs(spearman(e.scores(z)[:, 0], t)) > 0.9  # the principal directions stay those of the codes


def test_kmeans_recovers_separated_clusters_and_is_seeded():
    rng = np.random.default_rng(1)
    centres = np.array([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0]])
    truth = rng.integers(0, 3, 300)
    x = centres[truth] + rng.normal(0, 0.3, (300, 2))
    labels, found = kmeans(x, 3, seed=4)
    assert all(len(set(labels[truth == k])) == 1 for k in range(3)) and len(set(labels)) == 3
    assert np.array_equal(labels, kmeans(x, 3, seed=4)[0])
    relabelled, ordered = order_by(labels, found, found[:, 0] + 2 * found[:, 1])
    assert np.allclose(ordered[relabelled], found[labels])
    assert len(kmeans(x[:2], 5)[1]) == 2


def test_local_density_is_higher_where_points_crowd(monkeypatch):
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.normal(0, 0.1, (200, 2)), rng.normal(0, 3.0, (200, 2))])
    density = local_density(x)
    assert np.median(density[:200]) > 50 * np.median(density[200:])
    monkeypatch.setattr("dynamight.analysis.properties.DENSITY_REFERENCE", 100)  # the subsampled path
    sub = local_density(x)
    assert np.median(sub[:200]) > 20 * np.median(sub[200:])


def test_movement_properties_follow_the_hinge(hinge_project):
    project, latents_path = hinge_project
    latents = read_latent_set(latents_path, 1)
    values = movement(hinge_decoder(project), latents, batch_size=64)
    angle = _angles(project)[latents.rows]
    assert spearman(values["amount"], np.abs(angle)) > 0.95  # RMS displacement grows with |angle|
    opposite = np.abs(((values["direction"][angle > 5] - np.median(values["direction"][angle < -5])) + 180) % 360 - 180)
    assert np.median(opposite) > 150  # opposite hinge angles move the domain in opposite directions
    decoder = hinge_decoder(project)
    moving = decoder.models[1].moving.bool()
    centre = decoder.consensus(1).mean(0)
    axis = torch.linalg.eigh(torch.cov((decoder.consensus(1) - centre).T))[1][:, -1]
    axis = axis * torch.sign(axis[axis.abs().argmax()])  # the documented sign: largest component positive
    side = float(torch.sign(((decoder.consensus(1)[moving] - centre) @ axis).mean()))
    big = np.abs(angle) > 5
    assert (np.sign(values["location"][big]) == side).mean() > 0.95  # where it moves: the moving domain's end


@pytest.mark.parametrize("half_set", [1, 0])
def test_first_direction_orders_by_hinge_angle_and_cluster_maps_differ_where_the_domain_moves(
        hinge_project, tmp_path, half_set):
    project, latents_path = hinge_project
    latents = read_latent_set(latents_path, half_set)
    space = analyse(latents, hinge_decoder(project), "PCA", n_clusters=4, batch_size=64)
    angle = _angles(project)[latents.rows]
    assert abs(spearman(space.embedding.coords[:, 0], angle)) >= 0.9
    files = write_report(space, tmp_path, tmp_path / "report", n_frames=5)
    maps = np.stack([mrcfile.read(p) for p in files.cluster_maps])
    spread = maps.std(axis=0)
    moving, fixed = domain_cores(project)
    assert spread[moving].mean() > 10 * spread[fixed].mean() and spread[moving].mean() > 0.01 * maps.max()
    movie = np.stack([mrcfile.read(p) for p in files.movies["pc1"]])
    assert movie.shape == (5, 32, 32, 32)
    change = np.abs(movie[0] - movie[-1])
    assert change[moving].mean() > 10 * change[fixed].mean()
    if half_set == 0:
        assert set(space.latents.half) == {1, 2} and "error" in space.properties
        assert np.median(space.match_error[space.latents.half == 2]) < 0.5  # Å: half 2 found in half 1's space
