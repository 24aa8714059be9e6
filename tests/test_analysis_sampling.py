"""The analysis at a million particles: what is computed on a sample of the particles and carried
to the others (movement properties, k-means centres) agrees with computing it for every particle."""

from __future__ import annotations

import numpy as np

from dynamight.analysis.clustering import kmeans
from dynamight.analysis.latents import read_latent_set
from dynamight.analysis.properties import movement
from dynamight.analysis.sampling import nearest_codes, on_sample, reference_sample
from dynamight.simulate.evaluate import spearman

from .test_analysis import _angles, hinge_project  # noqa: F401  (the fixture)
from .test_analysis_support import hinge_decoder


def test_reference_sample_is_seeded_sorted_and_all_below_the_limit():
    assert np.array_equal(reference_sample(5, 10), np.arange(5))
    sample = reference_sample(1000, 100, seed=3)
    assert len(np.unique(sample)) == 100 and np.all(np.diff(sample) > 0)
    assert np.array_equal(sample, reference_sample(1000, 100, seed=3))
    assert not np.array_equal(sample, reference_sample(1000, 100, seed=4))


def test_interpolation_is_exact_on_the_sample_and_close_to_a_smooth_function():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(5000, 3))
    smooth = lambda rows: {"value": np.sin(z[rows, 0]) + 0.5 * z[rows, 1] ** 2, "pair": z[rows, :2]}  # noqa: E731
    exact = smooth(np.arange(len(z)))
    carried = on_sample(smooth, z, limit=1000, seed=1)
    sample = reference_sample(len(z), 1000, seed=1)
    assert np.array_equal(carried["value"][sample], exact["value"][sample])
    assert carried["pair"].shape == (5000, 2)
    error = np.abs(carried["value"] - exact["value"])
    assert np.median(error) < 0.05 * np.ptp(exact["value"]) and np.corrcoef(carried["value"], exact["value"])[0, 1] > 0.96
    assert on_sample(smooth, z, limit=5000)["value"].tolist() == exact["value"].tolist()  # all: no interpolation
    indices, weights = nearest_codes(z[:3], z)
    assert np.array_equal(indices[:, 0], np.arange(3)) and np.allclose(weights[:, 0], 1.0)


def test_movement_from_a_sample_of_the_particles_follows_the_decoded_one(hinge_project):  # noqa: F811
    project, latents_path = hinge_project
    latents = read_latent_set(latents_path, 1)
    decoder = hinge_decoder(project)
    exact = movement(decoder, latents, batch_size=64)
    carried = movement(decoder, latents, batch_size=64, sample=60)
    sample = reference_sample(len(latents), 60)
    assert np.allclose(carried["amount"][sample], exact["amount"][sample])
    others = np.setdiff1d(np.arange(len(latents)), sample)
    error = np.abs(carried["amount"][others] - exact["amount"][others])
    assert np.median(error) < 0.05 * np.ptp(exact["amount"])
    assert spearman(carried["amount"], np.abs(_angles(project)[latents.rows])) > 0.95


def test_kmeans_fitted_to_a_sample_finds_the_same_clusters():
    rng = np.random.default_rng(1)
    centres = np.array([[0.0, 0.0, 0.0], [6.0, 0.0, 1.0], [0.0, 6.0, -1.0], [5.0, 5.0, 5.0]])
    truth = rng.integers(0, 4, 20000)
    x = centres[truth] + rng.normal(0, 0.5, (20000, 3))
    labels, found = kmeans(x, 4, seed=2, sample=500)
    assert all(len(set(labels[truth == k])) == 1 for k in range(4)) and len(set(labels)) == 4
    assert np.allclose(found, [x[labels == k].mean(0) for k in range(4)])  # centres: the means of all members
