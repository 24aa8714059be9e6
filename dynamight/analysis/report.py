"""The headless analysis of a latent space (``explore-latent-space --headless``, and what
``relion_dynamight_explore`` runs).

Layout (``prefix`` = ``half1_``, ``half2_`` or ``validation_``, so runs on different half-sets
can share a directory)::

    <report>/latent_space.star          the particles with embedding, cluster and property columns
    <report>/embedding_<property>.png   the embedding coloured by each property; embedding.pdf: all
    <root>/maps/<prefix>consensus.mrc   the undeformed Gaussians
    <root>/maps/<prefix>cluster_NN.mrc  the Gaussians deformed by cluster NN's centre code
    <root>/subsets/<prefix>cluster_NN.star  cluster NN's particles in the input's format (RELION
                                        input: STAR, input columns, optics kept; cryoSPARC: .cs)
    <root>/movies/<prefix>pc1/frame_000.mrc ...  -2 to +2 std along the first principal direction (pc2 too)

Beside every map, its deformed model (:mod:`.deformed_models`): ``<prefix>consensus.pdb/.cif``,
``<prefix>cluster_NN.pdb/.cif``, and in each movie's folder ``model.pdb/.cif`` (one model per frame).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.volumes import write_map
from ..runtime import JobControl
from .outputs import MOVIE_MODEL, write_latent_space, write_movie
from .plots import write_embedding_plots
from .space import LatentSpace
from .subsets import write_subset

log = logging.getLogger(__name__)


def prefix_of(half_set: int) -> str:
    """File-name prefix of a half-set choice: ``half1_``, ``half2_``, ``validation_``."""
    return "validation_" if half_set == 0 else f"half{half_set}_"


@dataclass
class ReportFiles:
    """What :func:`write_report` wrote."""

    latent_space: Path
    pngs: list[Path]
    pdf: Path
    cluster_maps: list[Path] = field(default_factory=list)
    subsets: list[Path] = field(default_factory=list)
    movies: dict[str, list[Path]] = field(default_factory=dict)
    consensus_map: Path | None = None
    models: list[Path] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)


def write_report(space: LatentSpace, root: Path, report: Path, n_frames: int = 10, extent_std: float = 2.0,
                 job: JobControl | None = None) -> ReportFiles:
    """Write every file of the headless analysis (see the module docstring); ``job`` is checked
    for an abort request between files."""
    job = job or JobControl(None)
    latents, embedding = space.latents, space.embedding
    prefix = prefix_of(latents.half_set)
    star = report / "latent_space.star"
    write_latent_space(star, latents, embedding, space.properties, space.common_z)
    pngs, pdf = write_embedding_plots(report, embedding.coords, space.properties, embedding.method,
                                      highlight=embedding.scores(space.centres) if embedding.method == "PCA" else None)
    files = ReportFiles(star, pngs, pdf)
    job.check_abort()
    pixel = space.pixel_size_angstrom
    consensus = space.decoder.consensus(space.reference_half)
    files.consensus_map = root / "maps" / f"{prefix}consensus.mrc"
    write_map(files.consensus_map, space.volume(consensus), pixel)
    files.models += space.models.write(files.consensus_map.with_suffix(""), consensus[None], consensus)
    for k, centre in enumerate(space.centres):
        members = np.flatnonzero(space.labels == k)
        path = root / "maps" / f"{prefix}cluster_{k + 1:02d}.mrc"
        positions = space.code_positions(centre[None])
        write_map(path, space.volume(positions[0]), pixel)
        files.cluster_maps.append(path)
        files.models += space.models.write(path.with_suffix(""), positions, consensus)
        if len(members):  # k-means can leave a cluster empty: no particles, no file
            subset = root / "subsets" / f"{prefix}cluster_{k + 1:02d}{space.source.suffix}"
            write_subset(subset, latents, members, space.source)
            files.subsets.append(subset)
        job.check_abort()
    for direction in range(2 if latents.n_latent > 1 else 1):
        codes = embedding.direction_codes(direction, n_frames, extent_std)
        positions = space.code_positions(codes)
        folder = root / "movies" / f"{prefix}pc{direction + 1}"
        files.movies[f"pc{direction + 1}"] = write_movie(folder, [space.volume(p) for p in positions], pixel)
        files.models += space.models.write(folder / MOVIE_MODEL, positions, consensus)
        job.check_abort()
    files.lines = summary_lines(space, n_frames, extent_std)
    return files


def summary_lines(space: LatentSpace, n_frames: int, extent_std: float) -> list[str]:
    """The report's result lines (for the log and logfile.pdf)."""
    latents, embedding = space.latents, space.embedding
    which = "the validation set (both half-sets)" if latents.half_set == 0 else f"half-set {latents.half_set}"
    sizes = np.bincount(space.labels, minlength=len(space.centres))
    lines = [
        f"{len(latents)} particles of {which}, {latents.n_latent} latent dimensions, embedding: {embedding.method}",
        "principal directions of the latent codes explain "
        + ", ".join(f"{100 * e:.1f}%" for e in embedding.explained[:latents.n_latent]) + " of their variance",
        f"{len(sizes)} k-means clusters of " + ", ".join(str(s) for s in sizes) + " particles",
        f"movies: {n_frames} frames from -{extent_std:g} to +{extent_std:g} std along each principal direction",
        f"RMS displacement: median {np.median(space.properties['amount']):.2f} Å, "
        f"95th percentile {np.percentile(space.properties['amount'], 95):.2f} Å",
    ]
    if latents.half_set == 0:
        error = space.properties["error"]
        mismatch = space.match_error[latents.half == 2]
        lines.append(f"error estimate (half-set disagreement): median {np.nanmedian(error):.2f} Å")
        if len(mismatch):
            lines.append(f"half-2 particles placed in half 1's latent space with a median RMS mismatch of "
                         f"{np.median(mismatch):.2f} Å")
    return lines
