"""The displacement decoder: no motion at start, its modes' term, and checkpoints from before the modes."""

from __future__ import annotations

import torch

from dynamight.model.decoder import DisplacementDecoder
from dynamight.model.gaussians import GaussianModel
from dynamight.training.model import ForwardModel


def _positions(n: int = 50) -> torch.Tensor:
    return 20 * torch.rand(n, 3, generator=torch.Generator().manual_seed(1)) - 10


def test_a_new_decoder_moves_nothing():
    for local_rigid in (False, True):
        decoder = DisplacementDecoder(4, 30.0, local_rigid=local_rigid)
        assert decoder(torch.randn(5, 4), _positions(), torch.ones(50)).abs().max() == 0


def test_the_modes_term_gives_each_latent_dimension_its_own_linear_field():
    """With the MLP's output off, displacements are linear in z (superposition holds), dimension k
    moves the Gaussians by its own field, and only dimension k's output weights get a gradient from
    particles that differ only along k."""
    torch.manual_seed(0)
    decoder = DisplacementDecoder(3, 30.0, local_rigid=False)
    torch.nn.init.normal_(decoder.modes[-1].weight)
    positions, movable = _positions(), torch.ones(50)
    z1, z2 = torch.randn(4, 3), torch.randn(4, 3)
    moved = lambda z: decoder(z, positions, movable)  # noqa: E731
    base = moved(torch.zeros(4, 3))
    assert torch.allclose(moved(z1 + z2) - base, (moved(z1) - base) + (moved(z2) - base), atol=1e-4)
    along_second = torch.zeros(4, 3)
    along_second[:, 1] = torch.randn(4)
    moved(along_second).pow(2).sum().backward()
    grad = decoder.modes[-1].weight.grad.reshape(3, 3, -1)  # (outputs, latent dimension, hidden)
    assert grad[:, 1].abs().max() > 0 and grad[:, [0, 2]].abs().max() == 0


def test_a_checkpoint_from_before_the_modes_loads_and_decodes_as_before():
    torch.manual_seed(0)
    positions = _positions()
    gaussians = GaussianModel(positions, torch.ones(50), torch.full((50,), 2.0))
    trained = ForwardModel(gaussians, torch.ones(50), 32, 2.0, 3, 16, local_rigid=True)
    torch.nn.init.normal_(trained.decoder.out.weight)
    old = {k: v for k, v in trained.state_dict().items() if not k.startswith("decoder.modes.")}
    restored = ForwardModel(gaussians, torch.ones(50), 32, 2.0, 3, 16, local_rigid=True)
    restored.load_state_dict(old)
    z = torch.randn(6, 3)
    with torch.no_grad():
        assert torch.allclose(restored.displacements(z), trained.displacements(z))
        assert trained.displacements(z).abs().max() > 0.1
