"""cryoSPARC particle files (``.cs``) -> the RELION 3.1 particle and optics tables that
:mod:`dynamight.data.particles` reads from a STAR file, so that everything downstream is unchanged.

Read with ``cryosparc-tools``' ``Dataset``. Fields used (cryoSPARC's names; the pose and shift
conventions live in :mod:`dynamight.data.geometry`):

- ``blob/path``, ``blob/idx`` (0-based), ``blob/shape`` (px), ``blob/psize_A`` (Å),
  ``blob/sign`` (images are multiplied by it: cryoSPARC's stacks are usually stored dark, sign -1;
  RELION's are white);
- ``alignments3D/pose`` (rotation vector, radians), ``alignments3D/shift`` (pixels of
  ``alignments3D/psize_A``), ``alignments3D/split`` (0/1 -> ``rlnRandomSubset`` 1/2);
- ``ctf/df1_A``, ``ctf/df2_A`` (``rlnDefocusU/V``), ``ctf/df_angle_rad`` and ``ctf/phase_shift_rad``
  (-> degrees), ``ctf/cs_mm``, ``ctf/accel_kv``, ``ctf/amp_contrast``, ``ctf/bfactor`` (Å²).

Fields missing from the ``.cs`` are taken from its passthrough file (matched by ``uid``): the one
given, else the one ``*_passthrough_particles*.cs`` beside it (cryoSPARC keeps the inputs' CTF
there). Blob paths are relative to the cryoSPARC project directory (``--cs-project-directory``);
without one, each path is looked for under the folder two levels above the ``.cs`` (the project
folder of ``<project>/J12/J12_particles.cs``), then the ``.cs``'s own folder, then the working
directory; a leading ``>`` (exported jobs) is dropped.

Each particle's ``uid`` is kept as the column ``rlnDynaMightCryosparcUid`` (``UID_COLUMN``; it travels to
``latents.star``), so that a subset can be taken from the original ``.cs`` by uid
(:mod:`dynamight.analysis.subsets`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..errors import InputError
from .geometry import cryosparc_pose_to_euler_angles, cryosparc_shift_to_origin_angstrom

log = logging.getLogger(__name__)

CS_SUFFIX = ".cs"
POSE, SHIFT, SPLIT, ALIGNMENT_PIXEL = ("alignments3D/pose", "alignments3D/shift", "alignments3D/split",
                                       "alignments3D/psize_A")
UID_COLUMN = "rlnDynaMightCryosparcUid"  # the particle's cryoSPARC uid (uint64), carried through training
REQUIRED_FIELDS = ("blob/path", "blob/idx", "blob/shape", "blob/psize_A")
# cryoSPARC field -> (RELION column, factor)
CTF_FIELDS = {"ctf/df1_A": ("rlnDefocusU", 1.0), "ctf/df2_A": ("rlnDefocusV", 1.0),
              "ctf/df_angle_rad": ("rlnDefocusAngle", 180 / np.pi), "ctf/phase_shift_rad": ("rlnPhaseShift", 180 / np.pi),
              "ctf/bfactor": ("rlnCtfBfactor", 1.0)}
OPTICS_FIELDS = {"ctf/accel_kv": "rlnVoltage", "ctf/cs_mm": "rlnSphericalAberration", "ctf/amp_contrast": "rlnAmplitudeContrast"}


def is_cryosparc_file(path: str | Path) -> bool:
    """Whether ``path`` names a cryoSPARC ``.cs`` file (by its suffix)."""
    return Path(path).suffix.lower() == CS_SUFFIX


def load_dataset(path: Path):
    """The ``cryosparc.dataset.Dataset`` of a ``.cs`` file (raises ``InputError`` naming the file)."""
    try:
        from cryosparc.dataset import Dataset
    except ImportError as exc:
        raise InputError(f"{path}: reading cryoSPARC .cs files needs cryosparc-tools "
                         f"(pip install cryosparc-tools)") from exc
    if not path.is_file():
        raise InputError(f"{path}: cryoSPARC particle file not found")
    try:
        return Dataset.load(path)
    except Exception as exc:  # numpy and cryosparc-tools raise several types on foreign files
        raise InputError(f"{path}: not a readable cryoSPARC .cs file ({exc})") from exc


def _load(path: Path) -> dict[str, np.ndarray]:
    dataset = load_dataset(path)
    return {field: np.asarray(dataset[field]) for field in dataset.fields()}


def find_passthrough(cs_path: Path) -> Path | None:
    """The ``*_passthrough_particles*.cs`` beside ``cs_path`` (preferring its own job's), if one."""
    candidates = [p for p in sorted(cs_path.parent.glob("*_passthrough_particles*.cs")) if p != cs_path]
    own = [p for p in candidates if p.name.split("_")[0] == cs_path.name.split("_")[0]]
    candidates = own or candidates
    if len(candidates) > 1:
        raise InputError(f"{cs_path}: several passthrough files beside it ({', '.join(p.name for p in candidates)}); "
                         f"give one with --cs-passthrough-file")
    return candidates[0] if candidates else None


def _merge(fields: dict[str, np.ndarray], cs_path: Path, passthrough: Path) -> dict[str, np.ndarray]:
    """Add the passthrough's fields that ``fields`` lacks, row by row through ``uid``."""
    extra = _load(passthrough)
    if "uid" not in fields or "uid" not in extra:
        raise InputError(f"{passthrough}: no uid field to match with {cs_path}")
    order = np.argsort(extra["uid"])
    position = np.searchsorted(extra["uid"], fields["uid"], sorter=order).clip(0, len(order) - 1)
    rows = order[position]
    if not (extra["uid"][rows] == fields["uid"]).all():
        raise InputError(f"{passthrough}: does not hold every particle (uid) of {cs_path}")
    return {**{k: v[rows] for k, v in extra.items() if k not in fields}, **fields}


def _check_poses(fields: dict[str, np.ndarray], cs_path: Path) -> None:
    classes = sorted({k.split("/")[0] for k in fields if k.startswith("alignments_class_")})
    if len(classes) > 1:
        raise InputError(f"{cs_path}: holds several classes' alignments ({', '.join(c + '/pose' for c in classes)}), "
                         f"as a 3D classification writes; give the particles of one class, or of a refinement "
                         f"(field {POSE})")
    if POSE not in fields:
        raise InputError(f"{cs_path}: no poses (field {POSE}, nor in a passthrough file); give the particles of a "
                         f"3D refinement (homogeneous, non-uniform or local), or its passthrough with "
                         f"--cs-passthrough-file")


def _resolve_blob(name: str, cs_path: Path, project_directory: Path | None) -> Path | None:
    relative = Path(name[1:] if name.startswith(">") else name)
    if relative.is_absolute():
        folders = [Path("/")]
    elif project_directory is not None:
        folders = [Path(project_directory)]
    else:
        folders = [cs_path.parent.parent, cs_path.parent, Path.cwd()]
    for folder in folders:
        if (folder / relative).is_file():
            return (folder / relative).absolute()
    return None


def _blob_paths(paths: np.ndarray, cs_path: Path, project_directory: Path | None) -> np.ndarray:
    names, codes = np.unique(paths.astype(str), return_inverse=True)
    resolved = [_resolve_blob(name, cs_path, project_directory) for name in names]
    missing = [n for n, r in zip(names, resolved) if r is None]
    if missing:
        where = (f"the project directory {project_directory}" if project_directory is not None else
                 f"{cs_path.parent.parent} (two folders up: the cryoSPARC project), {cs_path.parent} or {Path.cwd()}")
        raise InputError(f"{cs_path}: blob/path '{missing[0]}' not found under {where}"
                         f"{f' (and {len(missing) - 1} more stacks)' if len(missing) > 1 else ''}; "
                         f"give the cryoSPARC project directory with --cs-project-directory")
    return np.array([str(r) for r in resolved], dtype=object)[codes]


def read_cryosparc_tables(cs_path: str | Path, passthrough: str | Path | None = None,
                          project_directory: str | Path | None = None, require_images: bool = True,
                          ) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """Convert a cryoSPARC particle file to RELION tables (see the module docstring).

    Args:
        require_images: resolve every ``blob/path`` (else the image names keep the paths as written).

    Returns:
        ``data_particles`` and ``data_optics`` tables as :func:`starfile.read` gives them (one optics
        group per pixel size, box and microscope), and ``(n,)`` the image signs (``blob/sign``, else 1).

    Raises:
        InputError: unreadable file, no poses, several classes' poses, a missing field, missing blobs.
    """
    cs_path = Path(cs_path)
    fields = _load(cs_path)
    passthrough = Path(passthrough) if passthrough is not None else find_passthrough(cs_path)
    if passthrough is not None:
        fields = _merge(fields, cs_path, passthrough)
    _check_poses(fields, cs_path)
    missing = [f for f in REQUIRED_FIELDS if f not in fields]
    if missing:
        raise InputError(f"{cs_path}: missing field(s) {', '.join(missing)} (needed for the particle images)")
    n = len(fields[POSE])
    if n == 0:
        raise InputError(f"{cs_path}: no particles")
    pixel = fields["blob/psize_A"].astype(np.float64)
    pose = torch.from_numpy(fields[POSE].astype(np.float64).reshape(n, 3))
    shift = torch.from_numpy(fields.get(SHIFT, np.zeros((n, 2))).astype(np.float64).reshape(n, 2))
    alignment_pixel = torch.from_numpy(fields.get(ALIGNMENT_PIXEL, pixel).astype(np.float64))
    angles = cryosparc_pose_to_euler_angles(pose).numpy()
    origins = cryosparc_shift_to_origin_angstrom(shift, alignment_pixel).numpy()

    paths = (_blob_paths(fields["blob/path"], cs_path, project_directory) if require_images
             else fields["blob/path"].astype(str))
    particles = pd.DataFrame({
        "rlnImageName": [f"{i + 1:06d}@{p}" for i, p in zip(fields["blob/idx"].astype(np.int64), paths)],
        "rlnAngleRot": angles[:, 0], "rlnAngleTilt": angles[:, 1], "rlnAnglePsi": angles[:, 2],
        "rlnOriginXAngst": origins[:, 0], "rlnOriginYAngst": origins[:, 1]})
    for field, (column, factor) in CTF_FIELDS.items():
        if field in fields:
            particles[column] = fields[field].astype(np.float64) * factor
    if "uid" in fields:
        particles[UID_COLUMN] = fields["uid"].astype(np.uint64)
    if SPLIT in fields:
        particles["rlnRandomSubset"] = fields[SPLIT].astype(np.int64) + 1
    optics_keys = {"rlnImagePixelSize": pixel, "rlnImageSize": fields["blob/shape"].reshape(n, -1)[:, -1].astype(np.int64),
                   **{column: fields[f].astype(np.float64) for f, column in OPTICS_FIELDS.items() if f in fields}}
    keys = pd.DataFrame(optics_keys).round(6)
    group = keys.groupby(list(keys.columns), sort=False).ngroup().to_numpy() + 1
    particles["rlnOpticsGroup"] = group
    optics = keys.assign(rlnOpticsGroup=group).drop_duplicates("rlnOpticsGroup").reset_index(drop=True)
    optics.insert(1, "rlnOpticsGroupName", [f"opticsGroup{g}" for g in optics["rlnOpticsGroup"]])
    optics["rlnImageDimensionality"] = 2
    optics = optics[["rlnOpticsGroup", "rlnOpticsGroupName", *[c for c in optics.columns
                                                              if c not in ("rlnOpticsGroup", "rlnOpticsGroupName")]]]
    sign = fields["blob/sign"].astype(np.float64) if "blob/sign" in fields else np.ones(n)
    return particles, optics, sign
