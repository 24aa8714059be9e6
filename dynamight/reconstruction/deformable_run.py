"""The ``deformable-backprojection`` step: every particle of each half, through its own half's
model, into that half's map (see :mod:`.deformable` for the algorithm)."""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Callable

import numpy as np
import starfile
import torch

from ..data.batches import group_batches, load_batch
from ..data.files import atomic_path
from ..data.images import ParticleImages
from ..data.particles import ParticleTable
from ..distributed import any_rank, current, from_main, is_main
from ..errors import InputError
from ..model.graph import mean_neighbour_distance
from ..training.model import ForwardModel
from .cluster_scales import LowResolutionClusters, cluster_scales, scaled
from .clusters import PARTICLES_PER_CLUSTER, deformation_clusters, mean_displacement
from .deformable import ClusterWarper, DeformableAccumulator
from .plain import HalfMaps, half_maps_from, insert_batch

log = logging.getLogger(__name__)
PROGRESS_FILE = "progress.pth"
PROGRESS_VERSION = 3  # 3: half-grid accumulators
SAVE_EVERY_SECONDS = 60.0


def read_latents(path: Path, table: ParticleTable) -> np.ndarray:
    """``(n_particles, l)`` codes from ``latents.star``; must list the same particles as ``table``."""
    if not path.is_file():
        raise InputError(f"{path}: latents.star not found (run optimize-deformations first)")
    particles = starfile.read(path, always_dict=True).get("particles")
    columns = sorted((c for c in particles.columns if c.startswith("rlnDynaMightLatent")), key=lambda c: int(c[18:]))
    if not columns or len(particles) != len(table) or \
            list(particles["rlnImageName"]) != list(table.particles["rlnImageName"]):
        raise InputError(f"{path}: does not list the particles of {table.star_path} with rlnDynaMightLatent columns")
    return particles[columns].to_numpy(np.float32)


def deformable_half_maps(table: ParticleTable, images: ParticleImages, models: dict[int, ForwardModel],
                         latents: np.ndarray, device: torch.device, batch_size: int, downsample: int,
                         state_dir: Path, seed: int = 0, zero_deformation: bool = False, insert_batch_size: int = 32,
                         on_batch: Callable[[int], None] | None = None, regularise: bool = True,
                         particles_per_cluster: int = PARTICLES_PER_CLUSTER,
                         mask: torch.Tensor | None = None, fit_scales: bool = True) -> HalfMaps:
    """Both half-maps (``batch_size`` codes per decoder call, ``insert_batch_size`` images per
    insertion); resumable: progress is saved in ``state_dir`` at most every
    ``SAVE_EVERY_SECONDS`` (after a round of clusters); a killed run redoes at most that much.
    ``mask``: ``(d, d, d)`` solvent mask for the Wiener term's FSC (see :func:`.plain.half_maps_from`)
    and the fit of the clusters' scales (``fit_scales``, :mod:`.cluster_scales`).

    The progress file holds a fingerprint of the clusters and their scales; one made with other
    clusters (another ``particles_per_cluster`` or seed, other codes or scales) is not resumed
    from: the backprojection starts over. The scales are fitted again on a resume (deterministic:
    the same ones); every process of a distributed run fits all of them.

    In a distributed run the clusters are dealt out in rounds, one per process (cluster
    ``round * P + rank``); the accumulators are summed over the processes at each save and at the
    end, and only rank 0 writes the progress file.
    """
    group = table.optics_groups[0]
    box, pixel = group.box_px, group.pixel_size_angstrom
    launch = current()
    members = {h: np.flatnonzero(table.half_set == h) for h in (1, 2)}
    labelling = {h: deformation_clusters(models[h], latents[members[h]], particles_per_cluster, batch_size, device,
                                         seed=seed + h) for h in (1, 2)}
    scales = {h: _scales(table, images, models[h], latents[members[h]], labelling[h], members[h], batch_size, downsample,
                         device, mask, half=h) if fit_scales and not zero_deformation else None for h in (1, 2)}
    fingerprint = hashlib.sha256(b"".join(members[h].tobytes() + labelling[h].tobytes() for h in (1, 2))
                                 + repr([None if s is None else s[0].tolist() for s in scales.values()]).encode()).hexdigest()
    accumulators = {h: DeformableAccumulator(box, device=device) for h in (1, 2)}
    done = from_main(lambda: _load_progress(state_dir / PROGRESS_FILE, accumulators, fingerprint))
    if not launch.is_main:  # rank 0 holds the saved totals; the others add only their new clusters
        accumulators = {h: DeformableAccumulator(box, device=device) for h in (1, 2)}
    last_save = time.monotonic()
    for half in (1, 2):
        model, labels = models[half], labelling[half]
        warper = ClusterWarper(model.positions, box, pixel, downsample, mean_neighbour_distance(model.positions))
        n_clusters = int(labels.max()) + 1
        spread, n_spread = 0.0, 0
        for first in range(0, n_clusters, launch.world):
            round_ = range(first, min(first + launch.world, n_clusters))
            cluster = first + launch.rank
            chosen = members[half][labels == cluster] if cluster in round_ else members[half][:0]
            if (half, cluster) not in done and len(chosen):
                for idx in group_batches(table, chosen, insert_batch_size):
                    insert_batch(accumulators[half].cluster, load_batch(table, images, idx, device), pixel)
                shift = None
                if not zero_deformation:
                    shift, squares = mean_displacement(model, latents[chosen], batch_size, device)
                    spread, n_spread = spread + squares, n_spread + len(chosen)
                    if scales[half] is not None:
                        shift = scaled(scales[half][1], shift, float(scales[half][0][cluster]))
                accumulators[half].finish_cluster(warper, shift)
            done.update((half, c) for c in round_)
            if on_batch is not None:
                on_batch(int(np.isin(labels, list(round_)).sum()))
            if any_rank(time.monotonic() - last_save > SAVE_EVERY_SECONDS):
                _save_progress(state_dir / PROGRESS_FILE, accumulators, done, fingerprint)
                last_save = time.monotonic()
        accumulators[half].release_cluster()
        if n_spread and launch.is_main:
            log.info("half %d: %d clusters; RMS distance of a particle's displacements (movable Gaussians) from its "
                     "cluster's mean: %.2f Å%s", half, n_clusters, (spread / n_spread) ** 0.5,
                     " (this process's clusters)" if launch.world > 1 else "")
    totals = {h: a.summed_over_processes() for h, a in accumulators.items()}
    return half_maps_from(totals[1], totals[2], box, pixel, regularise, mask)


def _scales(table: ParticleTable, images: ParticleImages, model, codes: np.ndarray, labels: np.ndarray,
            indices: np.ndarray, batch_size: int, downsample: int, device, mask: torch.Tensor | None,
            half: int) -> tuple[np.ndarray, torch.Tensor]:
    """Each cluster's fitted scale and the half's mean displacement (:func:`.cluster_scales.cluster_scales`)."""
    group = table.optics_groups[0]
    low = LowResolutionClusters(table, images, model, group.box_px, group.pixel_size_angstrom, downsample, device, mask)
    if is_main():
        log.info("half %d: fitting the scales of %d clusters' warps at %.0f Å", half, int(labels.max()) + 1,
                 2 * low.pixel)
    scales, centre = cluster_scales(low, model, codes, labels, indices, batch_size, device)
    if is_main():
        log.info("half %d: scales of the clusters' warps: median %.2f, range %.2f-%.2f",
                 half, float(np.median(scales)), float(scales.min()), float(scales.max()))
    return scales, centre


def _save_progress(path: Path, accumulators: dict, done: set, fingerprint: str) -> None:
    """Rank 0 saves the totals of every process (collective: every process calls it)."""
    accumulators = {h: a.summed_over_processes() for h, a in accumulators.items()}
    if not is_main():
        return
    with atomic_path(path) as tmp:
        torch.save({"format": "dynamight-backprojection-progress", "version": PROGRESS_VERSION,
                    "clusters": fingerprint, "done": sorted([list(x) for x in done]),
                    "halves": {str(h): a.state_dict() for h, a in accumulators.items()}}, tmp)


def _load_progress(path: Path, accumulators: dict, fingerprint: str) -> set:
    """Load the saved totals into ``accumulators``; returns the ``(half, cluster)`` pairs done
    (none when there is no file, or it was made with other clusters)."""
    if not path.is_file():
        return set()
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("version") != PROGRESS_VERSION or state.get("clusters") != fingerprint:
        log.warning("%s was made with other clusters (particles per cluster, seed, codes or fitted scales): "
                    "the backprojection starts over", path)
        return set()
    for h, acc in accumulators.items():
        acc.load_state_dict(state["halves"][str(h)])
    log.info("resuming the backprojection from %s (%d clusters done)", path, len(state["done"]))
    return {tuple(x) for x in state["done"]}
