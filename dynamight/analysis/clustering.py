"""Seeded k-means of latent codes (k-means++ starts, several restarts, the best kept; fitted to a
sample of at most ``KMEANS_SAMPLE`` codes)."""

from __future__ import annotations

import numpy as np
import torch

from .sampling import reference_sample

KMEANS_SAMPLE = 50000  # points the centres are fitted to; the others join the nearest centre


def _plus_plus(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ starting centres ``(k, f)`` from points ``(m, f)``."""
    first = torch.randint(len(x), (1,), generator=generator)
    centres = x[first]
    closest = (x - centres[0]).pow(2).sum(-1)
    for _ in range(1, k):
        weights = closest / closest.sum() if closest.sum() > 0 else torch.full_like(closest, 1.0 / len(x))
        chosen = torch.multinomial(weights, 1, generator=generator)
        centres = torch.cat([centres, x[chosen]])
        closest = torch.minimum(closest, (x - x[chosen]).pow(2).sum(-1))
    return centres


def _lloyd(x: torch.Tensor, centres: torch.Tensor, max_iter: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    for _ in range(max_iter):
        labels = torch.cdist(x, centres).argmin(1)
        sums = torch.zeros_like(centres).index_add_(0, labels, x)
        counts = torch.bincount(labels, minlength=len(centres)).to(x.dtype)
        moved = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], centres)
        if torch.allclose(moved, centres, rtol=0, atol=1e-9):
            break
        centres = moved
    labels = torch.cdist(x, centres).argmin(1)
    inertia = float((x - centres[labels]).pow(2).sum())
    return labels, centres, inertia


def kmeans(x: np.ndarray, k: int, seed: int = 0, n_init: int = 4, max_iter: int = 100,
           sample: int = KMEANS_SAMPLE) -> tuple[np.ndarray, np.ndarray]:
    """Cluster ``(m, f)`` points into ``min(k, m)`` clusters.

    The centres are fitted to a seeded sample of at most ``sample`` points (all of them below
    that); then every point joins its nearest centre and each centre becomes the mean of its members.

    Returns:
        ``(m,)`` 0-based labels and ``(k, f)`` centres (the means of their members), from the
        restart with the smallest within-cluster sum of squares; the same for the same seed.
    """
    points = torch.as_tensor(np.asarray(x), dtype=torch.float64)
    k = max(1, min(k, len(points)))
    generator = torch.Generator().manual_seed(seed)
    fitted = points[torch.as_tensor(reference_sample(len(points), sample, seed))]
    best = None
    for _ in range(n_init):
        labels, centres, inertia = _lloyd(fitted, _plus_plus(fitted, k, generator), max_iter)
        if best is None or inertia < best[2]:
            best = (labels, centres, inertia)
    labels, centres = best[0], best[1]
    if len(fitted) < len(points):  # every point to its nearest centre, each centre to its members' mean
        labels = torch.cdist(points, centres).argmin(1)
        counts = torch.bincount(labels, minlength=k).to(points.dtype)[:, None]
        sums = torch.zeros_like(centres).index_add_(0, labels, points)
        centres = torch.where(counts > 0, sums / counts.clamp(min=1), centres)
    return labels.numpy(), centres.numpy()


def order_by(labels: np.ndarray, centres: np.ndarray, key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Renumber clusters so that ``key`` (``(k,)``, one value per centre) increases with the label."""
    order = np.argsort(key, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return rank[labels], centres[order]
