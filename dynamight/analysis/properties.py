"""Per-particle properties to colour the latent space by.

Movement properties come from each particle's displacement field under its own half's model
(movable Gaussians only): its amount (RMS displacement), its direction (the mean displacement
vector, as an angle in the plane where those vectors spread most), and its location (where the
most-moving tenth of the Gaussians sits along the molecule's long axis). Beyond a few thousand
Gaussians and ten thousand particles they are measured on a seeded subset of the Gaussians and
carried from a sample of the particles to the others by their nearest codes (:mod:`.sampling`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .decoding import ConformationDecoder
from .latents import LatentSet
from .sampling import on_sample, reference_sample

MOVING_FRACTION = 0.1  # the share of Gaussians that defines where a particle moves
DENSITY_NEIGHBOURS = 10
DENSITY_REFERENCE = 5000  # at most this many particles as kNN reference points (k = 10 sets the noise)
MOVEMENT_GAUSSIANS = 2000  # movable Gaussians (a seeded subset) a particle's movement is measured over
MOVEMENT_SAMPLE = 10000  # particles per half whose movement is decoded; the others' is interpolated


@dataclass(frozen=True)
class PropertyInfo:
    """How to show and store one property: ``column`` is its latent_space.star column (``None``:
    already in the input), ``cyclic`` for angles that wrap, ``categorical`` for labels."""

    key: str
    label: str
    column: str | None
    cyclic: bool = False
    categorical: bool = False


PROPERTIES = {p.key: p for p in (
    PropertyInfo("amount", "amount of movement: RMS displacement (Å)", "rlnDynaMightMovementAmount"),
    PropertyInfo("direction", "direction of movement: mean displacement angle (°)", "rlnDynaMightMovementDirection",
                 cyclic=True),
    PropertyInfo("location", "location of movement: along the main axis (Å)", "rlnDynaMightMovementLocation"),
    PropertyInfo("tilt", "pose: tilt (°)", None),
    PropertyInfo("rot", "pose: rot (°)", None, cyclic=True),
    PropertyInfo("shift", "shift: |origin| (Å)", "rlnDynaMightShift"),
    PropertyInfo("density", "local density in the embedding (particles per unit area)", "rlnDynaMightLocalDensity"),
    PropertyInfo("cluster", "k-means cluster", "rlnDynaMightCluster", categorical=True),
    PropertyInfo("error", "error estimate: half-set disagreement (Å)", None),
    PropertyInfo("half", "half-set of the particle's model", None, categorical=True),
)}


def main_axis(positions: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(n, 3)`` points, ``(n,)`` weights -> their weighted centroid ``(3,)`` and long axis ``(3,)``
    (unit, largest component positive)."""
    w = weights.clamp(min=0) + 1e-12
    centre = (positions * w[:, None]).sum(0) / w.sum()
    d = positions - centre
    _, vectors = torch.linalg.eigh((d * w[:, None]).T @ d)
    axis = vectors[:, -1]
    return centre, axis * torch.sign(axis[axis.abs().argmax()])


def movement(decoder: ConformationDecoder, latents: LatentSet, batch_size: int, seed: int = 0,
             sample: int = MOVEMENT_SAMPLE) -> dict[str, np.ndarray]:
    """``amount`` (Å), ``direction`` (degrees, -180..180) and ``location`` (Å) of each particle's
    movement, each ``(m,)``: over a seeded subset of at most ``MOVEMENT_GAUSSIANS`` movable Gaussians,
    exact for at most ``sample`` particles per half and interpolated from the nearest codes for the
    others (:mod:`.sampling`)."""
    m = len(latents)
    amount, location = np.zeros(m), np.zeros(m)
    mean_vector = np.zeros((m, 3))
    for half in (1, 2):
        members = np.flatnonzero(latents.half == half)
        movable = torch.nonzero(decoder.movable(half)).flatten()
        if len(members) == 0 or len(movable) == 0:
            continue
        subset = movable[reference_sample(len(movable), MOVEMENT_GAUSSIANS, seed)]
        centre, axis = main_axis(decoder.consensus(half).double(), decoder.models[half].amplitudes.cpu().double())
        along = (decoder.consensus(half)[subset].double() - centre) @ axis  # (s,) Å
        top = max(1, math.ceil(MOVING_FRACTION * len(subset)))

        def compute(rows: np.ndarray) -> dict[str, np.ndarray]:  # rows: indices into members
            out = {"amount": np.zeros(len(rows)), "mean_vector": np.zeros((len(rows), 3)),
                   "location": np.zeros(len(rows))}
            for start in range(0, len(rows), batch_size):
                part = slice(start, start + batch_size)
                delta = decoder.displacements(latents.z[members[rows[part]]], half, subset).double()  # (b, s, 3)
                size = delta.norm(dim=-1)
                out["amount"][part] = size.pow(2).mean(-1).sqrt().numpy()
                out["mean_vector"][part] = delta.mean(1).numpy()
                out["location"][part] = along[size.topk(top, dim=1).indices].mean(1).numpy()
            return out

        values = on_sample(compute, latents.z[members], sample, seed, f"movement of half {half}'s particles")
        amount[members], mean_vector[members], location[members] = (values[k] for k in ("amount", "mean_vector",
                                                                                        "location"))
    _, _, vt = np.linalg.svd(mean_vector, full_matrices=False)
    signs = np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(1)])
    vt = vt * np.where(signs == 0, 1.0, signs)[:, None]
    direction = np.degrees(np.arctan2(mean_vector @ vt[1], mean_vector @ vt[0])) if len(vt) > 1 \
        else np.zeros(m)
    return {"amount": amount, "direction": direction, "location": location}


def local_density(coords: np.ndarray, k: int = DENSITY_NEIGHBOURS, seed: int = 0,
                  device: torch.device = torch.device("cpu")) -> np.ndarray:
    """``(m, 2)`` embedded points -> ``(m,)`` kNN density estimate, particles per unit area:
    ``k / (pi r_k^2)`` with ``r_k`` the distance to the ``k``-th nearest of at most
    ``DENSITY_REFERENCE`` reference particles, scaled to all ``m``."""
    m = len(coords)
    if m < 2:
        return np.ones(m)
    points = torch.as_tensor(coords, dtype=torch.float32, device=device)
    reference = points[torch.as_tensor(reference_sample(m, DENSITY_REFERENCE, seed), device=device)]
    k = min(k, len(reference) - 1)
    chunk = max(1, (1 << 24) // len(reference))
    radius = torch.empty(m, device=device)
    for start in range(0, m, chunk):
        distance = torch.cdist(points[start:start + chunk], reference)
        radius[start:start + chunk] = distance.topk(k + 1, largest=False).values[:, -1]  # +1: itself
    spread = float(points.std()) + 1e-12
    density = k / (math.pi * radius.clamp(min=1e-6 * spread) ** 2) * (m / len(reference))
    return density.cpu().numpy().astype(np.float64)


def particle_properties(decoder: ConformationDecoder, latents: LatentSet, coords: np.ndarray, labels: np.ndarray,
                        batch_size: int = 128, seed: int = 0) -> dict[str, np.ndarray]:
    """Every property of :data:`PROPERTIES` that applies (``error`` and ``half`` for half-set 0 only),
    in that order, each ``(m,)``.

    Args:
        coords: ``(m, 2)`` the embedding.
        labels: ``(m,)`` cluster of each particle (0-based; shown 1-based).
    """
    values = movement(decoder, latents, batch_size, seed)
    values["tilt"] = latents.angles_deg[:, 1].copy()
    values["rot"] = latents.angles_deg[:, 0].copy()
    values["shift"] = np.linalg.norm(latents.origins_angstrom, axis=1)
    values["density"] = local_density(coords, seed=seed, device=decoder.device)
    values["cluster"] = np.asarray(labels, dtype=np.float64) + 1
    if latents.half_set == 0:
        values["error"] = latents.error_estimate.copy()
        values["half"] = latents.half.astype(np.float64)
    return {key: values[key] for key in PROPERTIES if key in values}
