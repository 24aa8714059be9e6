"""Which particles of a half-set share a conformation: k-means of their deformations.

The deformable backprojection warps each cluster's data with the cluster's mean displacement, so
a particle's error is the distance of its own displacements from that mean; k-means on the
displacements minimises exactly the sum of those squared distances. The latent codes are a poor
stand-in: latent dimensions the decoder barely uses (four or five of six on one hinge) split the
clusters as much as the one that moves the domain. On the real-structure hinge benchmark
(``benchmarks/real_structure.py``, 3HSY, 2,000 particles per half, 10 clusters per half), the
RMS distance of a particle's displacements from its cluster's mean fell from 1.18 to 0.85 Å, and
the deformable map's band FSC in the moving domain rose from 0.740 to 0.783 (merged; halves
0.675 / 0.691 -> 0.717 / 0.733), closing 61% instead of 45% of the gap between the plain map
(0.607) and the static twin's (0.901).

A particle's displacements are ``3 n`` numbers (``n`` up to 30,000 Gaussians), too many to keep
for a million particles: they are reduced to their coordinates on the ``N_COMPONENTS`` principal
components (Å) of a seeded sample of ``FEATURE_SAMPLE`` particles' displacements of at most
``FEATURE_GAUSSIANS`` movable Gaussians, which keep nearly all of their variance.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..analysis.clustering import kmeans
from ..analysis.sampling import reference_sample
from ..training.inference import displacements_of, movable_mask
from ..training.model import ForwardModel

PARTICLES_PER_CLUSTER = 200
N_COMPONENTS = 8
FEATURE_SAMPLE = 1000
FEATURE_GAUSSIANS = 512


def n_clusters_for(n_particles: int, particles_per_cluster: int = PARTICLES_PER_CLUSTER) -> int:
    return max(1, math.ceil(n_particles / particles_per_cluster))


@torch.no_grad()
def mean_displacement(model: ForwardModel, z: np.ndarray, batch_size: int, device) -> tuple[torch.Tensor, float]:
    """The ``(n, 3)`` mean of the displacements (Å) over codes ``(m, l)``, and the sum over the
    codes of the squared distance (Å^2, mean over the movable Gaussians) of their displacements from it."""
    total = torch.zeros(model.positions.shape, device=device, dtype=torch.float64)
    movable = movable_mask(model)
    squares = 0.0
    for _, delta in displacements_of(model, z, batch_size, device):
        total += delta.sum(0).double()
        squares += float(delta[:, movable].double().pow(2).sum(-1).mean(-1).sum())
    m = max(len(z), 1)
    mean = total / m
    if not bool(movable.any()):
        return mean.float(), 0.0
    return mean.float(), max(squares - m * float(mean[movable].pow(2).sum(-1).mean()), 0.0)


@torch.no_grad()
def deformation_features(model, z: np.ndarray, batch_size: int, device: torch.device, seed: int = 0) -> np.ndarray:
    """``(m, l)`` codes -> ``(m, c)`` their displacements' coordinates (Å) on the principal
    components (``c <= N_COMPONENTS``) of a sample's displacements of a sample of movable Gaussians."""
    movable = np.flatnonzero(movable_mask(model).cpu().numpy())
    gaussians = torch.as_tensor(movable[reference_sample(len(movable), FEATURE_GAUSSIANS, seed)], device=device)

    def flat(codes: np.ndarray) -> torch.Tensor:  # (m, 3 g) displacements, Å
        if len(gaussians) == 0:
            return torch.zeros((len(codes), 1), dtype=torch.float64)
        return torch.cat([delta[:, gaussians].flatten(1).double().cpu()
                          for _, delta in displacements_of(model, codes, batch_size, device)])

    sample = flat(z[reference_sample(len(z), FEATURE_SAMPLE, seed)])
    centre = sample.mean(0)
    _, _, vt = torch.linalg.svd(sample - centre, full_matrices=False)
    basis = vt[:N_COMPONENTS].T  # (3 g, c)
    out = np.zeros((len(z), basis.shape[1]), dtype=np.float64)
    for start in range(0, len(z), FEATURE_SAMPLE):
        rows = slice(start, start + FEATURE_SAMPLE)
        out[rows] = ((flat(z[rows]) - centre) @ basis).numpy()
    return out


def deformation_clusters(model, z: np.ndarray, particles_per_cluster: int, batch_size: int, device: torch.device,
                         seed: int = 0) -> np.ndarray:
    """``(m,)`` cluster labels (``0 .. k-1``) of particles with codes ``(m, l)``: seeded k-means of
    :func:`deformation_features` into about ``m / particles_per_cluster`` clusters."""
    features = deformation_features(model, z, batch_size, device, seed)
    labels, _ = kmeans(features, n_clusters_for(len(z), particles_per_cluster), seed=seed)
    _, dense = np.unique(labels, return_inverse=True)  # empty clusters dropped: labels 0 .. k-1
    return dense.reshape(-1)
