"""The particles of one half-set choice, with the latent codes training gave them.

Half-set 1 or 2: that half's particles (its validation particles included), decoded by that half's
model. Half-set 0: the validation set, the particles held out of training in both halves, each
decoded by its own half's model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..data.particles import ParticleTable, read_particles
from ..errors import InputError
from ..training.layout import find_latents_file  # noqa: F401  (its home is the run layout)

LATENT_PREFIX = "rlnDynaMightLatent"
TRAINING_PREFIX = "rlnDynaMight"  # every column training adds to the input particles
REQUIRED_COLUMNS = ("rlnDynaMightHalfSet", "rlnDynaMightIsValidation")


@dataclass
class LatentSet:
    """``m`` particles of one half-set choice.

    Attributes:
        half_set: 0 (validation set), 1 or 2.
        table: the whole latents STAR file (every particle, optics table kept).
        rows: ``(m,)`` rows of ``table`` in this set.
        z: ``(m, l)`` float32 codes, each under its own half's model.
        half: ``(m,)`` 1 or 2, the model that decodes each particle.
        validation: ``(m,)`` bool, held out of training.
        error_estimate: ``(m,)`` Å, the two half models' disagreement (NaN outside the validation set).
        all_z: ``(N, l)`` the codes of every particle of ``table``; ``all_half``: ``(N,)`` their half-sets.
    """

    half_set: int
    table: ParticleTable
    rows: np.ndarray
    z: np.ndarray
    half: np.ndarray
    validation: np.ndarray
    error_estimate: np.ndarray
    all_z: np.ndarray
    all_half: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def n_latent(self) -> int:
        return self.z.shape[1]

    @property
    def angles_deg(self) -> np.ndarray:
        """``(m, 3)`` rot, tilt, psi, degrees."""
        return self.table.angles_deg[self.rows]

    @property
    def origins_angstrom(self) -> np.ndarray:
        """``(m, 2)`` origin x, y, Å."""
        return self.table.origins_angstrom[self.rows]

    @property
    def particles(self) -> pd.DataFrame:
        """The ``m`` rows of the latents STAR file, every column."""
        return self.table.particles.iloc[self.rows].reset_index(drop=True)

    def input_particles(self, members: np.ndarray) -> pd.DataFrame:
        """Rows ``members`` (indices into this set) as the input particles: the columns training
        added (``rlnDynaMight*``) removed, so that any RELION version reads them."""
        frame = self.table.particles.iloc[self.rows[np.asarray(members, dtype=np.int64)]]
        return frame[[c for c in frame.columns if not c.startswith(TRAINING_PREFIX)]].reset_index(drop=True)


def read_latent_set(path: Path, half_set: int) -> LatentSet:
    """Read a latents STAR file (written by ``optimize-deformations``) and select a half-set.

    Raises:
        InputError: unreadable file, no latent columns, an empty selection.
    """
    if half_set not in (0, 1, 2):
        raise InputError(f"--half-set {half_set}: must be 0 (the validation set), 1 or 2")
    table = read_particles(path)
    frame = table.particles
    latent_columns = sorted((c for c in frame.columns if c.startswith(LATENT_PREFIX)),
                            key=lambda c: int(c[len(LATENT_PREFIX):] or 0))
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if not latent_columns or missing:
        raise InputError(f"{path}: no latent codes (expected the columns {LATENT_PREFIX}1.., "
                         f"{', '.join(REQUIRED_COLUMNS)} written by optimize-deformations)")
    half = frame["rlnDynaMightHalfSet"].to_numpy(dtype=np.int64)
    validation = frame["rlnDynaMightIsValidation"].to_numpy(dtype=np.int64) == 1
    if half_set == 0:
        rows = np.flatnonzero(validation)
        if len(rows) == 0:
            raise InputError(f"{path}: no validation particles (rlnDynaMightIsValidation 1), so half-set 0 is "
                             f"empty; train with --validation-fraction > 0 or choose --half-set 1 or 2")
    else:
        rows = np.flatnonzero(half == half_set)
        if len(rows) == 0:
            raise InputError(f"{path}: no particles of half-set {half_set} (rlnDynaMightHalfSet)")
    if "rlnDynaMightErrorEstimate" in frame.columns:
        error = frame["rlnDynaMightErrorEstimate"].to_numpy(dtype=np.float64)
    else:
        error = np.full(len(frame), np.nan)
    error = np.where(validation, error, np.nan)
    z = frame[latent_columns].to_numpy(dtype=np.float32)
    if not np.isfinite(z[rows]).all():
        raise InputError(f"{path}: non-finite latent codes")
    return LatentSet(half_set, table, rows, z[rows], half[rows], validation[rows], error[rows], z, half)
