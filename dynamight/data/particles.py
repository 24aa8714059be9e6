"""Particle STAR files of RELION 3.0, 3.1, 4 and 5 (or cryoSPARC ``.cs`` files, converted to the
same tables by :mod:`.cryosparc`) -> one typed particle table.

Each CTF value comes from the particle row, else from its optics group, else from RELION's default
(``DefocusV = DefocusU``, B-factor 0, scale 1, phase shift 0). Origins are converted to Ångström
(3.0's ``rlnOriginX/Y`` are pixels). Image names ``N@stack.mrcs`` are 1-based; stack paths resolve
against the project directory (the working directory) and, failing that, the STAR file's folder.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import starfile

from ..errors import InputError
from .cryosparc import is_cryosparc_file, read_cryosparc_tables

log = logging.getLogger(__name__)

REQUIRED_PARTICLE_COLUMNS = ("rlnImageName", "rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi")
# RELION's defaults (ctf.cpp) for values in neither the particle row nor its optics group
MICROSCOPE_DEFAULTS = {"rlnVoltage": 200.0, "rlnSphericalAberration": 0.0, "rlnAmplitudeContrast": 0.0}
CTF_DEFAULTS = {"rlnCtfBfactor": 0.0, "rlnCtfScalefactor": 1.0, "rlnPhaseShift": 0.0}


@dataclass
class OpticsGroup:
    """One optics group: pixel size (Å), box (px), and whether images carry a CTF at all."""

    number: int
    pixel_size_angstrom: float
    box_px: int


@dataclass
class ParticleTable:
    """All per-particle metadata of a STAR file; arrays have ``n`` rows, one per particle.

    Attributes:
        star_path: the STAR file read.
        particles: the particle table as read (extra columns kept, for writing it back).
        optics: the optics table as read (``None`` for a RELION 3.0 file).
        optics_groups: groups in order; ``optics_index`` indexes this list.
        angles_deg: ``(n, 3)`` rot, tilt, psi in degrees.
        origins_angstrom: ``(n, 2)`` origin x, y in Å.
        defocus_u_angstrom, defocus_v_angstrom, defocus_angle_deg, voltage_kv,
        spherical_aberration_mm, amplitude_contrast, phase_shift_deg, bfactor_angstrom2,
        ctf_scale: ``(n,)`` CTF parameters (``has_ctf`` is False when the file has no defocus).
        half_set: ``(n,)`` 1 or 2.
        image_index: ``(n,)`` 0-based index into the stack.
        stack_index: ``(n,)`` index into ``stack_paths``.
        stack_names: stack names as written in the STAR file.
        stack_paths: resolved stack files (``None`` where the stack was not found: reading those
            images raises :class:`InputError`, the metadata stays usable).
        image_sign: ``(n,)`` factor applied to each image as read (cryoSPARC's ``blob/sign``;
            ``None``: 1, as RELION's images are stored).
    """

    star_path: Path
    particles: pd.DataFrame
    optics: pd.DataFrame | None
    optics_groups: list[OpticsGroup]
    optics_index: np.ndarray
    angles_deg: np.ndarray
    origins_angstrom: np.ndarray
    has_ctf: bool
    defocus_u_angstrom: np.ndarray
    defocus_v_angstrom: np.ndarray
    defocus_angle_deg: np.ndarray
    voltage_kv: np.ndarray
    spherical_aberration_mm: np.ndarray
    amplitude_contrast: np.ndarray
    phase_shift_deg: np.ndarray
    bfactor_angstrom2: np.ndarray
    ctf_scale: np.ndarray
    half_set: np.ndarray
    image_index: np.ndarray
    stack_index: np.ndarray
    stack_names: list[str]
    stack_paths: list[Path | None]
    image_sign: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.particles)

    @property
    def pixel_size_angstrom(self) -> np.ndarray:
        """``(n,)`` image pixel size of each particle, Å."""
        return np.array([g.pixel_size_angstrom for g in self.optics_groups])[self.optics_index]

    @property
    def box_px(self) -> np.ndarray:
        """``(n,)`` image box of each particle, pixels."""
        return np.array([g.box_px for g in self.optics_groups])[self.optics_index]


def _split_blocks(path: Path, blocks: dict) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    tables = {k: v for k, v in blocks.items() if isinstance(v, pd.DataFrame)}
    if "particles" in tables:
        if "optics" not in tables:
            raise InputError(f"{path}: has a data_particles table but no data_optics table")
        return tables["particles"], tables["optics"]
    candidates = [v for v in tables.values() if "rlnImageName" in v.columns]
    if not candidates:
        raise InputError(f"{path}: no particle table found (expected data_particles, or a RELION 3.0 "
                         f"table with rlnImageName)")
    return candidates[0], None


def _column(df: pd.DataFrame, optics_rows: pd.DataFrame | None, name: str, default=None) -> np.ndarray | None:
    """Particle value, else the optics group's value, else ``default`` (``None`` if absent)."""
    if name in df.columns:
        return df[name].to_numpy(dtype=np.float64)
    if optics_rows is not None and name in optics_rows.columns:
        return optics_rows[name].to_numpy(dtype=np.float64)
    if default is None:
        return None
    return np.full(len(df), float(default))


def _parse_image_names(path: Path, names: pd.Series) -> tuple[np.ndarray, list[str], np.ndarray]:
    parts = names.astype(str).str.split("@", n=1, expand=True)
    if parts.shape[1] == 1:
        parts[1] = parts[0]
        parts[0] = "1"
    has_index = names.astype(str).str.contains("@")
    index_text = parts[0].where(has_index, "1")
    stack_text = parts[1].where(has_index, parts[0])
    try:
        index = index_text.astype(np.int64).to_numpy() - 1
    except ValueError as exc:
        raise InputError(f"{path}: rlnImageName must look like 000123@stack.mrcs ({exc})") from exc
    if (index < 0).any():
        raise InputError(f"{path}: rlnImageName indices are 1-based; found index 0")
    codes, uniques = pd.factorize(stack_text)
    return index, list(uniques), codes.astype(np.int64)


def search_folders(star_path: Path) -> list[Path]:
    """Where a relative path in a STAR file is looked for: the working directory, the STAR file's
    folder, and the two folders above it (a RELION job's ``Refine3D/job012/run_data.star`` names
    its images relative to the project directory, two levels up)."""
    parent = Path(star_path).absolute().parent
    return [Path.cwd(), parent, *parent.parents[:2]]


def resolve_path(name: str, star_path: Path) -> Path | None:
    """Resolve a path from a STAR file: absolute, else the first of :func:`search_folders` that has
    it; ``None`` when none has."""
    p = Path(name)
    if p.is_absolute():
        if p.exists():
            return p
    else:
        for folder in search_folders(star_path):
            if (folder / p).exists():
                return folder / p
    return None


def read_configured_particles(config) -> ParticleTable:
    """The particles a step's config names: ``refinement_star_file``, ``seed`` and the cryoSPARC
    options (``cs_passthrough_file``, ``cs_project_directory``), from a pydantic config or its saved
    dict (a checkpoint's ``config``; keys it lacks take their defaults)."""
    values = config if isinstance(config, dict) else config.model_dump()
    return read_particles(values["refinement_star_file"], seed=int(values.get("seed", 0)),
                          cs_passthrough_file=values.get("cs_passthrough_file"),
                          cs_project_directory=values.get("cs_project_directory"))


def read_particles(star_path: str | os.PathLike, seed: int = 0, cs_passthrough_file: str | os.PathLike | None = None,
                   cs_project_directory: str | os.PathLike | None = None) -> ParticleTable:
    """Read a RELION particle STAR file of any version, or a cryoSPARC ``.cs`` file (see module docstring).

    Args:
        cs_passthrough_file, cs_project_directory: for a ``.cs`` file only (see :mod:`.cryosparc`).

    Raises:
        InputError: missing file, missing required columns, undefined optics groups, bad image names.
    """
    star_path = Path(star_path)
    sign = None
    if is_cryosparc_file(star_path):
        df, optics, sign = read_cryosparc_tables(star_path, cs_passthrough_file, cs_project_directory)
    else:
        if not star_path.is_file():
            raise InputError(f"{star_path}: particle STAR file not found")
        try:
            blocks = starfile.read(star_path, always_dict=True)
        except Exception as exc:  # starfile raises many types on malformed text
            raise InputError(f"{star_path}: not a readable STAR file ({exc})") from exc
        df, optics = _split_blocks(star_path, blocks)
    df = df.reset_index(drop=True)
    missing = [c for c in REQUIRED_PARTICLE_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(f"{star_path}: missing required column(s) {', '.join(missing)} in the particle table")
    if len(df) == 0:
        raise InputError(f"{star_path}: the particle table is empty")

    image_index, stack_names, stack_index = _parse_image_names(star_path, df["rlnImageName"])
    stack_paths = [resolve_path(name, star_path) for name in stack_names]
    if optics is not None:
        groups, optics_index, optics_rows = _optics_from_table(star_path, df, optics)
    else:
        groups, optics_index, optics_rows = _optics_from_30(star_path, df, stack_paths, stack_index)

    pix = np.array([g.pixel_size_angstrom for g in groups])[optics_index]
    if "rlnOriginXAngst" in df.columns:
        origins = df[["rlnOriginXAngst", "rlnOriginYAngst"]].to_numpy(dtype=np.float64)
    elif "rlnOriginX" in df.columns:
        origins = df[["rlnOriginX", "rlnOriginY"]].to_numpy(dtype=np.float64) * pix[:, None]
    else:
        origins = np.zeros((len(df), 2))

    defocus_u = _column(df, optics_rows, "rlnDefocusU")
    has_ctf = defocus_u is not None
    n = len(df)
    if has_ctf:
        absent = [c for c in MICROSCOPE_DEFAULTS if _column(df, optics_rows, c) is None]
        if absent:
            log.warning("%s: no %s; using RELION's defaults %s", star_path, ", ".join(absent),
                        {c: MICROSCOPE_DEFAULTS[c] for c in absent})
        ctf = {c: _column(df, optics_rows, c, default=v) for c, v in MICROSCOPE_DEFAULTS.items()}
        defocus_v = _column(df, optics_rows, "rlnDefocusV", default=np.nan)
        defocus_v = np.where(np.isnan(defocus_v), defocus_u, defocus_v)
    else:
        ctf = {c: np.full(n, v) for c, v in MICROSCOPE_DEFAULTS.items()}
        defocus_u = defocus_v = np.zeros(n)
    extra = {c: _column(df, optics_rows, c, default=v) for c, v in CTF_DEFAULTS.items()}

    table = ParticleTable(
        star_path=star_path, particles=df, optics=optics, optics_groups=groups, optics_index=optics_index,
        angles_deg=df[["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]].to_numpy(dtype=np.float64),
        origins_angstrom=origins, has_ctf=has_ctf,
        defocus_u_angstrom=defocus_u, defocus_v_angstrom=defocus_v,
        defocus_angle_deg=_column(df, optics_rows, "rlnDefocusAngle", default=0.0),
        voltage_kv=ctf["rlnVoltage"], spherical_aberration_mm=ctf["rlnSphericalAberration"],
        amplitude_contrast=ctf["rlnAmplitudeContrast"], phase_shift_deg=extra["rlnPhaseShift"],
        bfactor_angstrom2=extra["rlnCtfBfactor"], ctf_scale=extra["rlnCtfScalefactor"],
        half_set=_half_sets(star_path, df, seed), image_index=image_index, stack_index=stack_index,
        stack_names=stack_names, stack_paths=stack_paths, image_sign=sign,
    )
    _check_finite(table)
    return table


def _optics_from_table(path: Path, df: pd.DataFrame, optics: pd.DataFrame):
    for column in ("rlnOpticsGroup", "rlnImagePixelSize", "rlnImageSize"):
        if column not in optics.columns:
            raise InputError(f"{path}: missing required column {column} in the data_optics table")
    if "rlnOpticsGroup" not in df.columns:
        raise InputError(f"{path}: missing required column rlnOpticsGroup in the data_particles table")
    numbers = optics["rlnOpticsGroup"].astype(int).tolist()
    undefined = sorted(set(df["rlnOpticsGroup"].astype(int)) - set(numbers))
    if undefined:
        raise InputError(f"{path}: particles reference optics group(s) {undefined} that data_optics does not define "
                         f"(defined: {numbers})")
    groups = [OpticsGroup(int(r.rlnOpticsGroup), float(r.rlnImagePixelSize), int(r.rlnImageSize))
              for r in optics.itertuples()]
    lookup = {g.number: i for i, g in enumerate(groups)}
    optics_index = df["rlnOpticsGroup"].astype(int).map(lookup).to_numpy(dtype=np.int64)
    optics_rows = optics.iloc[optics_index].reset_index(drop=True)
    return groups, optics_index, optics_rows


def _optics_from_30(path: Path, df: pd.DataFrame, stack_paths: list[Path], stack_index: np.ndarray):
    """RELION 3.0: one group per distinct pixel size; box from the first image stack's header."""
    if "rlnDetectorPixelSize" in df.columns and "rlnMagnification" in df.columns:
        pix = df["rlnDetectorPixelSize"].to_numpy(dtype=np.float64) * 1e4 / df["rlnMagnification"].to_numpy(dtype=np.float64)
    elif "rlnImagePixelSize" in df.columns:
        pix = df["rlnImagePixelSize"].to_numpy(dtype=np.float64)
    else:
        raise InputError(f"{path}: RELION 3.0 file without rlnDetectorPixelSize and rlnMagnification "
                         f"(needed for the pixel size)")
    from .images import stack_shape  # local import: images depends on this module's table

    first_stack = stack_paths[int(stack_index[0])]
    box = stack_shape(first_stack)[-1] if first_stack is not None else 0  # 0: unknown until images exist
    unique, optics_index = np.unique(np.round(pix, 6), return_inverse=True)
    groups = [OpticsGroup(i + 1, float(p), int(box)) for i, p in enumerate(unique)]
    return groups, optics_index.astype(np.int64), None


def _half_sets(path: Path, df: pd.DataFrame, seed: int) -> np.ndarray:
    if "rlnRandomSubset" in df.columns:
        half = df["rlnRandomSubset"].to_numpy(dtype=np.int64)
        if not np.isin(half, (1, 2)).all():
            raise InputError(f"{path}: rlnRandomSubset must be 1 or 2 for every particle")
        return half
    log.warning("%s has no rlnRandomSubset column: splitting the particles into random half-sets (seed %d)", path, seed)
    rng = np.random.default_rng(seed)
    half = np.ones(len(df), dtype=np.int64)
    half[rng.permutation(len(df))[: len(df) // 2]] = 2
    return half


def _check_finite(table: ParticleTable) -> None:
    """Refuse NaN or infinite poses, origins or defocus, naming the first such particle row."""
    for name in ("angles_deg", "origins_angstrom", "defocus_u_angstrom", "defocus_v_angstrom", "defocus_angle_deg"):
        values = getattr(table, name)
        bad = ~np.isfinite(values.reshape(len(values), -1)).all(axis=1)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise InputError(f"{table.star_path}: particle row {row + 1} ({table.particles['rlnImageName'].iloc[row]}) has "
                             f"non-finite {name.replace('_', ' ')} ({int(bad.sum())} row(s) in all); expected numbers")
