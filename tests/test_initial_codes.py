"""Codes initialised from the forces on the consensus Gaussians (a linearised variability analysis)."""

from __future__ import annotations

import numpy as np
import pytest
import starfile
import torch

from dynamight.data.images import ParticleImages
from dynamight.data.particles import read_particles
from dynamight.simulate.factors import direction_spearman
from dynamight.training import initial_codes as module
from dynamight.training.initial_codes import _components, initial_codes
from dynamight.training.model import ForwardModel
from dynamight.training.setup import consensus_gaussians


def _best_linear(codes: np.ndarray, truth: np.ndarray) -> float:
    everyone = np.ones(len(codes), dtype=bool)
    return direction_spearman(codes, truth, everyone, everyone)


def test_components_give_unit_variance_scores_that_the_projection_reproduces():
    """On any force matrix: the sample's scores have zero mean and unit variance, are uncorrelated,
    and projecting the sample's own forces on the directions gives them back (what every particle
    outside the sample gets)."""
    generator = torch.Generator().manual_seed(0)
    forces = torch.randn(300, 4, generator=generator) @ torch.randn(4, 60, generator=generator) + 0.1 * torch.randn(
        300, 60, generator=generator) + 5.0
    mean, directions, scores = _components(forces, 3)
    assert scores.shape == (300, 3) and directions.shape == (60, 3)
    assert torch.allclose(scores.mean(0), torch.zeros(3), atol=1e-4)
    assert torch.allclose(scores.T @ scores / 300, torch.eye(3), atol=1e-3)
    assert torch.allclose((forces - mean) @ directions, scores, atol=1e-3)
    assert _components(forces[:3], 6)[2].shape == (3, 2)  # no more components than the sample's rank


@pytest.mark.parametrize("sample", [module.FORCE_SAMPLE, 40])
def test_initial_codes_follow_the_true_motion_before_any_training(tiny_project, monkeypatch, sample):
    """The tiny hinge project (200 particles, box 32, SNR 0.5): half 1's codes, taken from the
    forces on the consensus Gaussians alone (no decoder, no training), already follow the true
    hinge angle, also when only 40 particles give the components and the others are projected;
    random codes do not."""
    monkeypatch.setattr(module, "FORCE_SAMPLE", sample)
    table = read_particles(tiny_project / "particles.star")
    gaussians, _, _ = consensus_gaussians(tiny_project / "map.mrc", None, None, 120, 32, 4.0, 0)
    model = ForwardModel(gaussians, torch.ones(len(gaussians)), 32, 4.0, 2, 16)
    half = np.flatnonzero(table.half_set == 1)
    codes = initial_codes(model, torch.ones(32, 32), table, ParticleImages(table), half, 2, 32,
                          torch.device("cpu"), seed=0).numpy()
    assert codes.shape == (len(half), 2)
    assert np.allclose(codes.std(0), 1.0, atol=0.15)
    angle = starfile.read(tiny_project / "ground_truth.star")["particles"]["dmTrueHingeAngleDeg"].to_numpy()[half]
    assert _best_linear(codes, angle) > 0.8, _best_linear(codes, angle)  # measured 0.887 (all), 0.889 (40)
    assert _best_linear(np.random.default_rng(0).standard_normal(codes.shape), angle) < 0.4
