"""Particle subsets in the format of the run's input, importable as is.

- RELION input (STAR): a particle STAR file of the chosen rows of ``latents.star`` (the input rows
  as read, every input column, the optics table kept; the columns training added removed), so
  every ``rlnImageName`` points at the original stacks.
- cryoSPARC input (``.cs``): a ``.cs`` file of the original ``.cs`` rows of the chosen particles
  (found by ``uid``, which :mod:`dynamight.data.cryosparc` keeps in ``latents.star``), every
  original field, plus the passthrough's fields the ``.cs`` lacks (as cryoSPARC's exports hold
  them), written with ``cryosparc-tools``; ``blob/path`` unchanged (relative to the cryoSPARC
  project, the original stacks).

Which applies is read from the training run's config (``refinement_star_file``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import starfile

from ..data.cryosparc import UID_COLUMN, find_passthrough, is_cryosparc_file, load_dataset
from ..data.files import atomic_path
from ..errors import InputError
from .latents import LatentSet


@dataclass(frozen=True)
class ParticleSource:
    """The particle file a run was trained on.

    Attributes:
        path: the refinement file (STAR or ``.cs``); ``None`` when unknown (subsets are then STAR).
        passthrough: cryoSPARC: the passthrough ``.cs`` given to training (``None``: the one beside
            ``path``, if any).
    """

    path: Path | None = None
    passthrough: Path | None = None

    @classmethod
    def from_config(cls, config: dict) -> "ParticleSource":
        """From a training config (a checkpoint's ``config``, or ``config.json``'s)."""
        path, passthrough = config.get("refinement_star_file"), config.get("cs_passthrough_file")
        return cls(Path(path) if path else None, Path(passthrough) if passthrough else None)

    @property
    def is_cryosparc(self) -> bool:
        return self.path is not None and is_cryosparc_file(self.path)

    @property
    def suffix(self) -> str:
        """The subsets' file suffix: ``.cs`` or ``.star``."""
        return ".cs" if self.is_cryosparc else ".star"


def write_star(path: Path, particles: pd.DataFrame, optics: pd.DataFrame | None) -> None:
    """A RELION STAR file of ``particles`` (and ``optics``, when not ``None``), written atomically."""
    blocks = {"optics": optics, "particles": particles} if optics is not None else {"particles": particles}
    with atomic_path(path) as tmp:
        starfile.write(blocks, tmp, overwrite=True)


def write_subset(path: Path, latents: LatentSet, members: np.ndarray, source: ParticleSource | None = None) -> int:
    """Write particles ``members`` (indices into the set) in the input's format (see the module
    docstring; ``path``'s suffix should be ``source.suffix``). Returns the number written.

    Raises:
        InputError: cryoSPARC: the original ``.cs`` (or its passthrough) is missing, unreadable, or
            lacks some of the particles.
    """
    members = np.asarray(members, dtype=np.int64)
    if source is not None and source.is_cryosparc:
        return write_cs_subset(path, source, latents, members)
    write_star(path, latents.input_particles(members), latents.table.optics)
    return len(members)


def _rows_by_uid(dataset, uids: np.ndarray, path: Path) -> np.ndarray:
    """``(m,)`` rows of ``dataset`` holding ``uids`` ``(m,)`` (raises naming ``path`` if one is missing)."""
    have = np.asarray(dataset["uid"], dtype=np.uint64)
    order = np.argsort(have)
    rows = order[np.searchsorted(have, uids, sorter=order).clip(0, len(have) - 1)]
    if len(have) == 0 or not np.array_equal(have[rows], uids):
        raise InputError(f"{path}: does not hold every chosen particle (uid); is it the .cs the run was trained on?")
    return rows


def _chosen_uids(latents: LatentSet, members: np.ndarray, dataset, path: Path) -> np.ndarray:
    """The uids of the chosen particles: ``latents.star``'s uid column, else (runs made before it)
    the rows in the ``.cs``'s order."""
    rows = latents.rows[members]
    frame = latents.table.particles
    if UID_COLUMN in frame.columns:
        return frame[UID_COLUMN].to_numpy()[rows].astype(np.uint64)
    if len(dataset) != len(frame):
        raise InputError(f"{path}: {len(dataset)} particles, but {latents.table.star_path} has {len(frame)} and no "
                         f"{UID_COLUMN} column to match them by")
    return np.asarray(dataset["uid"], dtype=np.uint64)[rows]


def write_cs_subset(path: Path, source: ParticleSource, latents: LatentSet, members: np.ndarray) -> int:
    """The original ``.cs`` rows of particles ``members``, with the passthrough's extra fields."""
    original = load_dataset(source.path)
    uids = _chosen_uids(latents, members, original, source.path)
    subset = original.take(_rows_by_uid(original, uids, source.path))
    passthrough = source.passthrough or find_passthrough(source.path)
    if passthrough is not None:
        extra = load_dataset(passthrough)
        fields = [f for f in extra.descr() if f[0] not in subset.fields()]
        if fields:
            rows = extra.take(_rows_by_uid(extra, uids, passthrough))
            subset.add_fields(fields)
            for field in fields:
                subset[field[0]] = rows[field[0]]
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            subset.save(handle)
    return len(uids)
