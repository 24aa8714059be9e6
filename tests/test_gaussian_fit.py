"""The consensus fit's local rendering: the same maps and gradients as the exact dense product."""

import torch

from dynamight.model import gaussians, render
from dynamight.model.render import render_volume, render_volume_local


def _model(n: int = 300, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    positions = torch.randn(n, 3, generator=g) * 12
    positions[0] = torch.tensor([29.0, -3.0, 1.0])  # at the box edge: its window is clipped
    return positions, torch.rand(n, generator=g) + 0.5, torch.full((n,), 1.7)


def test_local_rendering_matches_the_exact_one():
    positions, amplitudes, sigma = _model()
    exact = render_volume(positions, amplitudes, sigma, 40, 1.5)
    local = render_volume_local(positions, amplitudes, sigma, 40, 1.5)
    assert float((local - exact).abs().max()) < 1e-5 * float(exact.abs().max())


def test_chunked_fit_gradient_equals_the_dense_one(monkeypatch):
    positions, amplitudes, sigma = _model()
    target = render_volume(positions + 0.4, amplitudes * 1.1, sigma * 1.05, 40, 1.5)
    scale = float(target.pow(2).mean())
    leaves = [positions.clone().requires_grad_(), amplitudes.log().requires_grad_(), sigma[0].log().requires_grad_()]
    dense = render_volume(leaves[0], leaves[1].exp(), leaves[2].exp().expand(len(amplitudes)), 40, 1.5)
    expected_loss = (dense - target).pow(2).mean() / scale
    expected = torch.autograd.grad(expected_loss, leaves)
    monkeypatch.setattr(render, "LOCAL_VALUES_PER_CHUNK", 5000)  # many chunks of a few Gaussians
    chunked = [leaf.detach().clone().requires_grad_() for leaf in leaves]
    loss = gaussians._loss_and_gradients(target, *chunked, 1.5, scale)
    assert abs(loss - float(expected_loss)) < 1e-5 * float(expected_loss)
    for leaf, grad in zip(chunked, expected):
        assert torch.allclose(leaf.grad, grad, rtol=1e-3, atol=1e-4 * float(grad.abs().max()))
