"""The distance-preserving prior on a radius graph of the consensus Gaussians."""

from __future__ import annotations

import torch


def radius_graph(positions: torch.Tensor, radius: float, chunk: int = 2048) -> torch.Tensor:
    """``(n, 3)`` -> ``(e, 2)`` index pairs ``i < j`` closer than ``radius`` (chunked, O(n) memory)."""
    edges = []
    for start in range(0, positions.shape[0], chunk):
        d = torch.cdist(positions[start:start + chunk], positions, compute_mode="donot_use_mm_for_euclid_dist")
        i, j = torch.nonzero(d < radius, as_tuple=True)
        i = i + start
        keep = i < j
        edges.append(torch.stack([i[keep], j[keep]], -1))
    return torch.cat(edges)


def mean_neighbour_distance(positions: torch.Tensor, chunk: int = 2048) -> float:
    """Mean distance from each point to its nearest other point."""
    nearest = []
    for start in range(0, positions.shape[0], chunk):
        d = torch.cdist(positions[start:start + chunk], positions, compute_mode="donot_use_mm_for_euclid_dist")
        d[torch.arange(d.shape[0]), torch.arange(start, start + d.shape[0])] = float("inf")
        nearest.append(d.min(dim=1).values)
    return float(torch.cat(nearest).mean())


class DistancePrior(torch.nn.Module):
    """Mean squared change of edge lengths, plus a repulsion below half the rest neighbour distance."""

    def __init__(self, positions: torch.Tensor, radius_factor: float = 1.5):
        super().__init__()
        spacing = mean_neighbour_distance(positions)
        edges = radius_graph(positions, radius_factor * spacing)
        self.register_buffer("edges", edges, persistent=False)
        self.register_buffer("rest", (positions[edges[:, 0]] - positions[edges[:, 1]]).norm(dim=-1), persistent=False)
        self.min_distance = 0.5 * spacing

    def forward(self, deformed: torch.Tensor) -> torch.Tensor:
        """``(b, n, 3)`` deformed positions -> scalar prior energy (Å^2)."""
        length = (deformed[:, self.edges[:, 0]] - deformed[:, self.edges[:, 1]]).norm(dim=-1)
        stretch = (length - self.rest).pow(2).mean()
        repulsion = torch.relu(self.min_distance - length).pow(2).mean()
        return stretch + repulsion
