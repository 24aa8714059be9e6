"""Codes of particles after training (:mod:`dynamight.training.inference`)."""

from __future__ import annotations

import numpy as np
import torch

from dynamight.data.batches import load_batch
from dynamight.data.images import ParticleImages
from dynamight.data.particles import read_particles
from dynamight.training.inference import _objective, best_start, gauss_newton_hessian, observed
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


def test_gauss_newton_hessian_is_the_hessian_where_the_prediction_fits(tiny_project):
    """Where the images are the model's own predictions at the codes (a residual near zero: autograd
    differentiates ``|r|^2`` through ``|r|``, flat at exactly zero), the Gauss-Newton Hessian of the
    training objective (central differences) is its exact Hessian (double backpropagation), and the
    displacements' Jacobian is the exact one; with noise added it stays positive definite."""
    table = read_particles(tiny_project / "particles.star")
    gaussians, _, _ = consensus_gaussians(tiny_project / "map.mrc", None, None, 120, 32, 4.0, 0)
    torch.manual_seed(0)
    model = ForwardModel(gaussians, torch.ones(len(gaussians)), 32, 4.0, 3, 16, local_rigid=True).eval()
    with torch.no_grad():
        for p in model.decoder.parameters():
            p.add_(0.3 * torch.randn_like(p))
    batch = load_batch(table, ParticleImages(table), np.arange(6), torch.device("cpu"), 32)
    z = torch.randn(6, 3, generator=torch.Generator().manual_seed(2))
    spectra, ctf = observed(batch)
    weights = 1.0 / spectra.abs().pow(2).mean(0).clamp(min=1e-3)
    with torch.no_grad():
        fitted = model.predict(model.positions + model.displacements(z), batch.rotations, ctf)
        fitted = fitted + 1e-4 * fitted.abs().mean() * torch.randn_like(fitted)
    hessian, jacobian = gauss_newton_hessian(model, batch, (fitted, ctf), weights, z, None)

    codes = z.clone().requires_grad_(True)
    grad, = torch.autograd.grad(_objective(model, batch, (fitted, ctf), weights, codes, None).sum(), codes,
                                create_graph=True)
    exact = torch.stack([torch.autograd.grad(grad[:, k].sum(), codes, retain_graph=True)[0] for k in range(3)], 1)
    exact_jacobian = torch.autograd.functional.jacobian(lambda c: model.displacements(c[None])[0], z[0])
    assert torch.allclose(hessian, exact, rtol=2e-2, atol=2e-2 * exact.abs().max().item())
    # (this randomly perturbed decoder has ReLU kinks inside the step at a few Gaussians)
    assert (jacobian[0] - exact_jacobian).norm() < 0.05 * exact_jacobian.norm()
    assert (exact - torch.eye(3)).abs().max() > 1.0  # the data term does curve the objective

    noisy = fitted + 3 * torch.randn_like(fitted.real) / weights.sqrt()
    hessian, _ = gauss_newton_hessian(model, batch, (noisy, ctf), weights, z, None)
    assert (torch.linalg.eigvalsh(hessian) >= 1 - 1e-4).all()
