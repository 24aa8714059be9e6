"""Initial latent codes from the images: a linearised variability analysis of the consensus model.

A particle's whitened data term, differentiated with respect to the consensus Gaussians' positions,
is a force field ``(n, 3)``: where its image pulls each Gaussian. To first order, the forces of a
particle whose molecule is displaced by ``u a`` (a motion ``u``, amount ``a``) are ``J^T W J u a``:
its displacement seen through its projection ``J`` and the whitening ``W``. The principal components
of the forces over many particles therefore span the motions in the data, and a particle's scores on
them measure how much of each it shows (the same idea as cryoSPARC's 3D variability analysis, here on
the Gaussians instead of voxels).

Why not random codes: the decoder starts at zero and random codes carry no motion, so codes and
decoder start at a saddle. The strongest motion leaves it first, and a weaker independent one (a
small domain moving by itself) may never leave it within the epochs given: on 1BD2 with the TCR and
β2-microglobulin hinging independently, random codes learnt the TCR motion (|Spearman| 0.98) and
none of β2m's (0.05-0.10). The force components start every code dimension on a motion: there the
top component alone follows the TCR hinge at |Spearman| 0.89 and the top six follow β2m's at 0.80.
The decoder must then be able to take up the weaker motion: see its modes
(:class:`~dynamight.model.decoder.DisplacementDecoder`).

Gold standard: each half's codes come from its own particles only.
"""

from __future__ import annotations

import numpy as np
import torch

from ..data.batches import load_batch
from ..data.images import ParticleImages
from ..data.particles import ParticleTable
from ..distributed import all_reduce_sum, from_main
from ..reconstruction.imaging import batch_ctf, centred_spectra
from .inference import frozen, movable_mask, shared_batches
from .losses import data_term
from .model import ForwardModel

FORCE_SAMPLE = 2048  # particles whose forces give the components (the others are projected on them)


def force_fields(model: ForwardModel, weights: torch.Tensor, table: ParticleTable, images: ParticleImages,
                 indices: np.ndarray, batch_size: int, device: torch.device):
    """Yield ``(rows, (b, 3 n) forces)``: for this process's share of ``indices`` (positions
    ``rows`` in it), the gradient of each particle's whitened data term with respect to the
    consensus Gaussians' positions (``1 / Å``; zero for Gaussians that cannot move)."""
    movable = movable_mask(model).to(device)
    for rows, idx in shared_batches(table, indices, batch_size):
        batch = load_batch(table, images, idx, device, model.box_px)
        positions = model.positions.expand(len(idx), -1, -1).clone().requires_grad_(True)
        with frozen(model):
            loss = data_term(centred_spectra(batch), model.predict(positions, batch.rotations, batch_ctf(batch)),
                             weights.to(device)).sum()
            force, = torch.autograd.grad(loss, positions)
        yield rows, (force * movable[None, :, None]).flatten(1)


def _components(forces: torch.Tensor, n_components: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(m, 3 n)`` forces -> their mean ``(3 n,)``, the top principal directions ``(3 n, k)``
    divided by the scores' standard deviations (projections on them have unit variance), and the
    sample's standardised scores ``(m, k)``; ``k = min(n_components, m - 1)``."""
    mean = forces.mean(0)
    centred = (forces - mean).double()
    gram = centred @ centred.T  # (m, m): cheaper than the (3n, 3n) covariance when n is large
    values, vectors = torch.linalg.eigh(gram)
    k = min(n_components, len(forces) - 1)
    values, vectors = values.flip(0)[:k].clamp(min=1e-30), vectors.flip(1)[:, :k]
    spread = (values / len(forces)).sqrt()  # each score's standard deviation
    directions = centred.T @ vectors / values.sqrt() / spread
    return mean.cpu(), directions.float().cpu(), (vectors * np.sqrt(len(forces))).float().cpu()


def initial_codes(model: ForwardModel, weights: torch.Tensor, table: ParticleTable, images: ParticleImages,
                  indices: np.ndarray, n_latent: int, batch_size: int, device: torch.device,
                  seed: int) -> torch.Tensor:
    """``(len(indices), k)`` codes of the given particles (one half's): their scores on the top
    ``k = min(n_latent, sample - 1)`` principal components of the forces (:func:`force_fields`) of a
    seeded sample of at most ``FORCE_SAMPLE`` of them, each with unit variance over all of them.
    Collective in a distributed run (every process computes a share of the forces and receives all
    codes); ``model``: a new half-set model (no motion yet), ``weights``: ``(d, d)`` its whitening
    weights."""
    rng = np.random.default_rng(seed)
    in_sample = np.zeros(len(indices), dtype=bool)
    in_sample[rng.choice(len(indices), size=min(FORCE_SAMPLE, len(indices)), replace=False)] = True
    sample, rest = np.flatnonzero(in_sample), np.flatnonzero(~in_sample)
    forces = torch.zeros((len(sample), 3 * len(model.positions)), device=device)
    for rows, part in force_fields(model, weights, table, images, indices[sample], batch_size, device):
        forces[torch.as_tensor(rows, device=device)] = part
    all_reduce_sum(forces)
    mean, directions, scores = from_main(lambda: _components(forces, n_latent))  # one basis for all processes
    codes = torch.zeros((len(indices), scores.shape[1]))
    codes[torch.as_tensor(sample)] = scores
    rest_codes = torch.zeros((len(rest), scores.shape[1]), device=device)
    for rows, part in force_fields(model, weights, table, images, indices[rest], batch_size, device):
        rest_codes[torch.as_tensor(rows, device=device)] = (part - mean.to(device)) @ directions.to(device)
    codes[torch.as_tensor(rest)] = all_reduce_sum(rest_codes).cpu()
    return codes / codes.std(0, correction=0).clamp(min=1e-12)  # the sample's variance overstates the others'
