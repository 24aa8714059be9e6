"""Per-particle quantities at a million particles: computed exactly on a seeded sample, carried to
the other particles by their nearest codes.

What the analysis derives from a particle's code by decoding it (how much and where the particle
moves, its code in the other half's latent space) costs a pass of the decoder over every Gaussian
per particle: hours on a CPU for 1,000,000 particles and 30,000 Gaussians. Those quantities are
smooth functions of the code, so above ``limit`` particles they are computed exactly for a seeded
sample of ``limit`` particles and, for every other particle, interpolated from the ``k`` sampled
codes nearest to its own (inverse-distance weights). Sampled particles keep their exact values.
"""

from __future__ import annotations

import logging
from typing import Callable

import numpy as np
import torch

log = logging.getLogger(__name__)
NEAREST = 8  # sampled codes an interpolated value comes from
DISTANCE_ELEMENTS = 1 << 24  # code-to-sample distances held at once (64 MB of float32)


def reference_sample(m: int, limit: int, seed: int = 0) -> np.ndarray:
    """``(min(m, limit),)`` sorted indices of a seeded sample of ``m`` particles (all when ``m <= limit``)."""
    if m <= limit:
        return np.arange(m)
    chosen = torch.randperm(m, generator=torch.Generator().manual_seed(seed))[:limit].numpy()
    return np.sort(chosen)


def nearest_codes(z: np.ndarray, reference: np.ndarray, k: int = NEAREST) -> tuple[np.ndarray, np.ndarray]:
    """For each of ``(m, l)`` codes its ``k`` nearest of ``(r, l)`` reference codes.

    Returns:
        ``(m, k)`` indices into ``reference`` and ``(m, k)`` inverse-distance weights summing to 1
        (a code equal to a reference code takes that code's value).
    """
    points = torch.as_tensor(np.asarray(z, dtype=np.float32))
    anchors = torch.as_tensor(np.asarray(reference, dtype=np.float32))
    k = min(k, len(anchors))
    chunk = max(1, DISTANCE_ELEMENTS // max(len(anchors), 1))
    indices = np.empty((len(points), k), dtype=np.int64)
    weights = np.empty((len(points), k), dtype=np.float64)
    for start in range(0, len(points), chunk):
        distance, nearest = torch.cdist(points[start:start + chunk], anchors,  # exact: 0 for an equal code
                                        compute_mode="donot_use_mm_for_euclid_dist").topk(k, largest=False)
        inverse = 1.0 / distance.double().clamp(min=1e-12)
        indices[start:start + chunk] = nearest.numpy()
        weights[start:start + chunk] = (inverse / inverse.sum(1, keepdim=True)).numpy()
    return indices, weights


def on_sample(compute: Callable[[np.ndarray], dict[str, np.ndarray]], z: np.ndarray, limit: int, seed: int = 0,
              what: str = "values") -> dict[str, np.ndarray]:
    """``compute(rows)`` -> arrays ``(len(rows), ...)`` for the particles ``rows`` of ``(m, l)`` codes
    ``z``, for all ``m`` particles: exact for at most ``limit`` of them, interpolated for the others."""
    m = len(z)
    sample = reference_sample(m, limit, seed)
    exact = compute(sample)
    if len(sample) == m:
        return exact
    log.info("%s: computed for a sample of %d of %d particles, interpolated for the others from the %d "
             "nearest sampled codes", what, len(sample), m, NEAREST)
    others = np.setdiff1d(np.arange(m), sample, assume_unique=True)
    indices, weights = nearest_codes(z[others], z[sample])
    out = {}
    for key, values in exact.items():
        values = np.asarray(values, dtype=np.float64)
        full = np.empty((m, *values.shape[1:]), dtype=np.float64)
        full[sample] = values
        weight = weights.reshape(*weights.shape, *([1] * (values.ndim - 1)))
        full[others] = (values[indices] * weight).sum(1)
        out[key] = full
    return out
