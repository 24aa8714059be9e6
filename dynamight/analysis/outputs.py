"""Files of the analysis: the latent space as a STAR file, maps and movies as MRC files (particle
subsets: :mod:`.subsets`)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from ..data.volumes import write_map
from .embedding import Embedding
from .latents import LatentSet
from .properties import PROPERTIES
from .subsets import write_star


def write_latent_space(path: Path, latents: LatentSet, embedding: Embedding, properties: dict[str, np.ndarray],
                       common_z: np.ndarray | None = None) -> None:
    """The set's particles (every latents.star column, optics table kept) plus
    ``rlnDynaMightEmbedding1/2``, ``rlnDynaMightPrincipal1/2`` (scores along the main latent
    directions), the properties' columns, and for half-set 0 ``rlnDynaMightCommonLatentK`` (the
    code in the reference half's space)."""
    frame = latents.particles
    principal = embedding.scores(embedding.codes)
    for k in range(2):
        frame[f"rlnDynaMightEmbedding{k + 1}"] = embedding.coords[:, k]
        frame[f"rlnDynaMightPrincipal{k + 1}"] = principal[:, k]
    for key, values in properties.items():
        column = PROPERTIES[key].column
        if column is not None:
            frame[column] = values.astype(int) if PROPERTIES[key].categorical else values
    if latents.half_set == 0 and common_z is not None:
        for k in range(common_z.shape[1]):
            frame[f"rlnDynaMightCommonLatent{k + 1}"] = common_z[:, k]
    write_star(path, frame, latents.table.optics)


MOVIE_MODEL = "model"  # a movie's deformed models: <movie folder>/model.pdb, model.cif (one model per frame)


def write_movie(directory: Path, volumes: list[torch.Tensor], pixel_size_angstrom: float) -> list[Path]:
    """``(d, d, d)`` frames -> ``directory/frame_000.mrc``... (stale frames of an earlier movie
    removed first). Returns the paths in order."""
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("frame_*.mrc"):
        old.unlink()
    paths = [directory / f"frame_{i:03d}.mrc" for i in range(len(volumes))]
    for path, volume in zip(paths, volumes):
        write_map(path, volume, pixel_size_angstrom)
    return paths


def next_numbered(directory: Path, stem: str, suffix: str = "") -> Path:
    """``directory/{stem}_NNN{suffix}`` with the first free number (001 up)."""
    pattern = re.compile(rf"{re.escape(stem)}_(\d+){re.escape(suffix)}$")
    taken = [int(m.group(1)) for p in directory.glob(f"{stem}_*") if (m := pattern.match(p.name))] \
        if directory.is_dir() else []
    return directory / f"{stem}_{max(taken, default=0) + 1:03d}{suffix}"
