"""A trained run's latent space, ready to explore: the particles of one half-set choice, their
embedding, clusters and properties, and the decoders that turn any point of it into a map.

Half-set 0 mixes two independently trained models, whose latent spaces differ. Its common space is
half 1's: a half-2 particle is placed there at the half-1 code that reproduces its half-2
deformation (:func:`.decoding.matched_codes`; beyond ``MATCH_SAMPLE`` particles, for a sample,
the others interpolated from it, :mod:`.sampling`), and the principal directions are those of all of
half 1's codes (better determined than from the small validation set). A particle itself is always decoded by its own
half's model; a point of the space (a trajectory, a cluster centre) by the reference model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from .clustering import kmeans, order_by
from .decoding import ConformationDecoder, matched_codes
from .deformed_models import ModelWriter, model_writer
from .embedding import Embedding, embed
from .latents import LatentSet, find_latents_file, read_latent_set
from .properties import particle_properties
from .sampling import on_sample
from .subsets import ParticleSource

log = logging.getLogger(__name__)
MATCH_POOL = 2000  # at most this many half-1 codes as starting points for matching half-2 particles
MATCH_SAMPLE = 1000  # half-2 particles matched (about 0.1 s each on a 2-core CPU); the others' codes are interpolated


@dataclass
class LatentSpace:
    """Everything the report and the viewer show.

    Attributes:
        latents: the ``m`` particles and their own codes.
        decoder: both half models.
        common_z: ``(m, l)`` codes in the reference model's latent space (``latents.z`` for half-set
            1 or 2).
        reference_half: the model of the common space (the half-set, or 1 for half-set 0).
        embedding: the 2D embedding of ``common_z``.
        labels: ``(m,)`` 0-based k-means cluster of each particle, numbered along the first
            principal direction; ``centres``: ``(k, l)`` cluster centres in the common space.
        properties: key -> ``(m,)`` values (see :data:`.properties.PROPERTIES`).
        match_error: ``(m,)`` Å RMS mismatch of the common code's deformation (half-set 0; zeros otherwise).
    """

    latents: LatentSet
    decoder: ConformationDecoder
    common_z: np.ndarray
    reference_half: int
    embedding: Embedding
    labels: np.ndarray
    centres: np.ndarray
    properties: dict[str, np.ndarray]
    match_error: np.ndarray

    @property
    def box_px(self) -> int:
        return self.decoder.box_px

    @property
    def pixel_size_angstrom(self) -> float:
        return self.decoder.pixel_size_angstrom

    def particle_positions(self, index: int) -> torch.Tensor:
        """``(n, 3)`` Gaussian centres (Å from the box centre) of particle ``index`` of the set,
        decoded from its own code by its own half's model."""
        return self.decoder.positions(self.latents.z[index:index + 1], int(self.latents.half[index]))[0]

    def code_positions(self, z: np.ndarray) -> torch.Tensor:
        """``(p, l)`` codes of the common space -> ``(p, n, 3)`` Gaussian centres, Å."""
        return self.decoder.positions(z, self.reference_half)

    def positions_at(self, points: np.ndarray) -> torch.Tensor:
        """``(p, 2)`` points of the embedding -> ``(p, n, 3)`` Gaussian centres, Å."""
        return self.code_positions(self.embedding.to_latent(points))

    @cached_property
    def models(self) -> ModelWriter:
        """Writes the deformed atomic model (``--atomic-model``) or the pseudo-atoms of any conformation."""
        half = self.reference_half
        return model_writer(self.decoder.config, self.decoder.consensus(half), self.decoder.models[half].sigma.cpu(),
                            self.box_px, self.pixel_size_angstrom)

    @property
    def source(self) -> ParticleSource:
        """The particle file the run was trained on (subsets are written in its format)."""
        return ParticleSource.from_config(self.decoder.config)

    def volume(self, positions: torch.Tensor, half: int | None = None) -> torch.Tensor:
        """``(n, 3)`` Gaussian centres, Å -> ``(d, d, d)`` map."""
        return self.decoder.volume(positions, half or self.reference_half)

    def particle_volume(self, index: int) -> torch.Tensor:
        """``(d, d, d)`` map of particle ``index``'s conformation."""
        return self.decoder.volume(self.particle_positions(index), int(self.latents.half[index]))


def open_latent_space(checkpoint: Path, latents_file: Path | None, half_set: int, method: str = "PCA",
                      n_clusters: int = 6, device: torch.device = torch.device("cpu"), batch_size: int = 128,
                      seed: int = 0) -> LatentSpace:
    """Load a run (the checkpoint's models, the latents STAR file) and analyse one half-set.

    Raises:
        InputError: a missing or unreadable checkpoint or latents file, an empty half-set, a
            checkpoint that does not fit the particles, UMAP without umap-learn.
    """
    if not Path(checkpoint).is_file():
        raise InputError(f"{checkpoint}: checkpoint not found (expected a forward-deformation checkpoint, e.g. "
                         f"<run>/forward_deformations/checkpoints/checkpoint_final.pth)")
    latents = read_latent_set(latents_file or find_latents_file(checkpoint), half_set)
    group = latents.table.optics_groups[0]
    decoder = ConformationDecoder.load(checkpoint, group.box_px, group.pixel_size_angstrom, device)
    if decoder.n_latent != latents.n_latent:
        raise InputError(f"{latents.table.star_path}: {latents.n_latent} latent dimensions, but {checkpoint} has "
                         f"{decoder.n_latent}; give the latents.star of the same run")
    return analyse(latents, decoder, method, n_clusters, batch_size, seed)


def analyse(latents: LatentSet, decoder: ConformationDecoder, method: str = "PCA", n_clusters: int = 6,
            batch_size: int = 128, seed: int = 0) -> LatentSpace:
    """The common space (half-set 0: half-2 particles matched into half 1's), the embedding,
    k-means clusters (numbered along the first principal direction) and the properties."""
    half_set = latents.half_set
    common, reference, mismatch = latents.z.copy(), half_set or 1, np.zeros(len(latents))
    if half_set == 0:
        other = np.flatnonzero(latents.half == 2)
        pool = latents.all_z[latents.all_half == 1][:MATCH_POOL]
        if len(other):
            def match(rows: np.ndarray) -> dict[str, np.ndarray]:
                codes, rms = matched_codes(decoder, latents.z[other[rows]], 2, 1, pool, seed=seed,
                                           batch_size=batch_size)
                return {"codes": codes, "rms": rms}

            matched = on_sample(match, latents.z[other], MATCH_SAMPLE, seed, "half-1 codes of half-2 particles")
            common[other], mismatch[other] = matched["codes"], matched["rms"]
            log.info("half-set 0: %d half-2 particles placed in half 1's latent space (RMS mismatch median %.2f Å)",
                     len(other), float(np.median(mismatch[other])))
    # half-set 0: the main directions of the reference model's latent space, from all its particles
    basis = latents.all_z[latents.all_half == reference] if half_set == 0 else None
    embedding = embed(common, method, seed, basis)
    labels, centres = kmeans(common, n_clusters, seed)
    labels, centres = order_by(labels, centres, embedding.scores(centres)[:, 0])
    properties = particle_properties(decoder, latents, embedding.coords, labels, batch_size, seed)
    return LatentSpace(latents, decoder, common, reference, embedding, labels, centres.astype(np.float32),
                       properties, mismatch)
