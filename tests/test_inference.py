"""Codes of particles after training (:mod:`dynamight.training.inference`)."""

from __future__ import annotations

import numpy as np
import torch

from dynamight.data.batches import load_batch
from dynamight.data.images import ParticleImages
from dynamight.data.particles import read_particles
from dynamight.training.inference import _objective, best_start, observed
from dynamight.training.model import ForwardModel
from dynamight.training.setup import consensus_gaussians


def test_best_start_is_the_lowest_objective_of_the_encoder_code_and_the_candidates(tiny_project):
    """Per particle, the start chosen for an untrained particle is whichever of its encoder's code
    and the candidate codes fits its image best (no other code, none worse than any of them)."""
    table = read_particles(tiny_project / "particles.star")
    gaussians, _, _ = consensus_gaussians(tiny_project / "map.mrc", None, None, 120, 32, 4.0, 0)
    torch.manual_seed(0)
    model = ForwardModel(gaussians, torch.ones(len(gaussians)), 32, 4.0, 2, 16).eval()
    with torch.no_grad():  # a decoder that moves the Gaussians, so that codes differ in fit
        for p in model.decoder.parameters():
            p.add_(0.3 * torch.randn_like(p))
    batch = load_batch(table, ParticleImages(table), np.arange(24), torch.device("cpu"), 32)
    weights = torch.ones(32, 32)
    candidates = 2.0 * torch.randn(8, 2, generator=torch.Generator().manual_seed(1))
    chosen = best_start(model, batch, weights, candidates)
    with torch.no_grad():
        images = observed(batch)
        encoded, _ = model.encode(*images, batch.rotations)
        options = torch.cat([encoded[None], candidates[:, None].expand(-1, 24, -1)])  # (9, 24, 2)
        values = torch.stack([_objective(model, batch, images, weights, z, None) for z in options])
        picked = _objective(model, batch, images, weights, chosen, None)
    assert torch.allclose(picked, values.min(0).values)
    assert all(any(torch.equal(chosen[i], options[k, i]) for k in range(9)) for i in range(24))
    assert (values.argmin(0) > 0).any() and (values.argmin(0) == 0).sum() < 24  # the candidates do get chosen
