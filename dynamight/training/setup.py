"""Building what training starts from: the consensus Gaussians, masks, the validation split."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from ..data.volumes import Volume, check_same_grid, read_map
from ..errors import InputError
from ..model.gaussians import DEFAULT_N_GAUSSIANS, GaussianModel, fit_gaussians

log = logging.getLogger(__name__)


def values_at(volume: torch.Tensor, positions_angstrom: torch.Tensor, pixel_size_angstrom: float) -> torch.Tensor:
    """``(d, d, d)`` map at ``(n, 3)`` positions (nearest voxel; 0 outside the box) -> ``(n,)``."""
    d = volume.shape[-1]
    idx = torch.round(positions_angstrom / pixel_size_angstrom).long() + d // 2
    inside = ((idx >= 0) & (idx < d)).all(-1)
    out = torch.zeros(len(idx), dtype=volume.dtype)
    i = idx[inside]
    out[inside] = volume[i[:, 2], i[:, 1], i[:, 0]]
    return out


def read_structure(path: Path):
    """A PDB/mmCIF file as a ``gemmi.Structure`` (raises ``InputError`` naming the file)."""
    import gemmi

    try:
        return gemmi.read_structure(str(path))
    except (RuntimeError, ValueError, OSError) as exc:
        raise InputError(f"{path}: not a readable PDB/mmCIF atomic model ({exc})") from exc


def centred_atoms(structure, box_px: int, pixel_size_angstrom: float, model: int = 0) -> torch.Tensor:
    """``(a, 3)`` every atom of one model of the structure (the first by default; chain, residue,
    atom order), Å from the box centre: the file's coordinates are map coordinates (voxel ``i`` at
    ``i * pixel``), the box centre is voxel ``box // 2``."""
    atoms = [a.pos for chain in structure[model] for res in chain for a in res]
    xyz = torch.tensor([[p.x, p.y, p.z] for p in atoms], dtype=torch.float32).reshape(-1, 3)
    return xyz - (box_px // 2) * pixel_size_angstrom


def read_atomic_model(path: Path, box_px: int, pixel_size_angstrom: float, n_gaussians: int, seed: int) -> torch.Tensor:
    """Atom positions of a PDB/mmCIF file (``gemmi``), in Å from the box centre
    (:func:`centred_atoms`); at most ``n_gaussians`` of them (a seeded subset)."""
    xyz = centred_atoms(read_structure(path), box_px, pixel_size_angstrom)
    if not len(xyz):
        raise InputError(f"{path}: the atomic model has no atoms")
    if len(xyz) > n_gaussians:
        g = torch.Generator().manual_seed(seed)
        xyz = xyz[torch.randperm(len(xyz), generator=g)[:n_gaussians]]
    return xyz


def consensus_gaussians(initial_model: Path | None, atomic_model: Path | None, initial_threshold: float | None,
                        n_gaussians: int | None, box_px: int, pixel_size_angstrom: float,
                        seed: int) -> tuple[GaussianModel, Volume | None, torch.Tensor | None]:
    """The consensus model: fitted to the map, or the atoms of an atomic model (widths and
    amplitudes then fitted to the map when there is one, else 2 Å and 1). ``n_gaussians``: the
    number of Gaussians (at most that many atoms); ``None``: the default, capped by the map.

    Returns the model, the map (if any) and the map-vs-model FSC (if any)."""
    if initial_model is None and atomic_model is None:
        raise InputError("no consensus map (--initial-model) and no atomic model (--atomic-model): one is needed")
    volume = None
    if initial_model is not None:
        volume = read_map(initial_model, what="consensus map")
        check_same_grid(volume, initial_model, box_px, pixel_size_angstrom, "consensus map")
    if atomic_model is None:
        gaussians, curve = fit_gaussians(volume.data, pixel_size_angstrom, n_gaussians, initial_threshold, seed)
        return gaussians, volume, curve
    positions = read_atomic_model(atomic_model, box_px, pixel_size_angstrom, n_gaussians or DEFAULT_N_GAUSSIANS, seed)
    n = len(positions)
    if volume is None:
        return GaussianModel(positions, torch.ones(n), torch.full((n,), 2.0)), None, None
    gaussians, curve = fit_gaussians(volume.data, pixel_size_angstrom, n, initial_threshold, seed,
                                     fixed_positions=positions)
    return gaussians, volume, curve


def mask_values(path: Path, gaussians: GaussianModel, box_px: int, pixel_size_angstrom: float, what: str) -> torch.Tensor:
    """``(n,)`` mask value at each Gaussian centre, after checking the mask's grid."""
    mask = read_map(path, what=what)
    check_same_grid(mask, path, box_px, pixel_size_angstrom, what)
    return values_at(mask.data, gaussians.positions_angstrom, pixel_size_angstrom)


def body_assignment(directory: Path, gaussians: GaussianModel, box_px: int, pixel_size_angstrom: float) -> tuple[torch.Tensor, int]:
    """``(n,)`` body index per Gaussian (first mask >= 0.5, else -1) from every ``*.mrc`` in ``directory``."""
    masks = sorted(Path(directory).glob("*.mrc")) if Path(directory).is_dir() else []
    if not masks:
        raise InputError(f"{directory}: no deformation masks (*.mrc) found; expected one binary mask per rigid body")
    body = torch.full((len(gaussians),), -1, dtype=torch.long)
    for k, path in enumerate(masks):
        inside = mask_values(path, gaussians, box_px, pixel_size_angstrom, "deformation mask") >= 0.5
        body[(body < 0) & inside] = k
    log.info("rigid bodies: %s", ", ".join(f"{p.name}: {int((body == k).sum())} Gaussians" for k, p in enumerate(masks)))
    return body, len(masks)


TRAINING_PIXEL_PER_SIGMA = 1.2  # the Gaussians' spectrum is down to 3% at the Nyquist of this pixel
MIN_TRAINING_BOX = 32


def training_box(box_px: int, pixel_size_angstrom: float, sigma_angstrom: torch.Tensor,
                 requested: int | None) -> int:
    """The box the deformations are learnt at: the particles' box Fourier-cropped so that the pixel
    is about ``TRAINING_PIXEL_PER_SIGMA`` times the Gaussians' median width (``(n,)`` Å; finer
    detail than the model's own is only noise to it), even, at least ``MIN_TRAINING_BOX``, never
    above ``box_px``. ``requested`` (``--training-box``) wins; it must be even and <= the box."""
    if requested is not None:
        if requested > box_px or requested % 2 or requested < 8:
            raise InputError(f"--training-box {requested}: must be an even number of pixels from 8 to the "
                             f"particles' box ({box_px})")
        return requested
    pixel = max(pixel_size_angstrom, TRAINING_PIXEL_PER_SIGMA * float(sigma_angstrom.median()))
    box = 2 * int(np.ceil(box_px * pixel_size_angstrom / pixel / 2))
    return int(min(box_px, max(box, min(MIN_TRAINING_BOX, box_px))))


def validation_split(half_set: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """``(n,)`` bool: a seeded ``fraction`` of each half-set held out as the validation set."""
    rng = np.random.default_rng(seed + 17)
    validation = np.zeros(len(half_set), dtype=bool)
    for half in (1, 2):
        members = np.flatnonzero(half_set == half)
        k = int(round(fraction * len(members)))
        validation[rng.choice(members, size=k, replace=False)] = True
    return validation
