"""Deformed models beside the analysis' maps: PDB and mmCIF files written with ``gemmi``, one model
per conformation (a movie's frames are the models of one multi-model file).

- A run trained with ``--atomic-model``: that model (its first model, every atom, every other
  record kept), each atom moved as its Gaussian moved (:mod:`.atom_motion`).
- Otherwise, the Gaussians as pseudo-atoms: one residue ``UNK`` with one atom ``CA`` (element C)
  each, in chains of at most 9,999 residues (``A``, ``B``, ...), B-factor ``8 pi^2 sigma^2`` from
  the Gaussian's width ``sigma`` (Å), occupancy 1, the unit cell the map's box.

Coordinates are the map's (voxel ``i`` at ``i * pixel``, :func:`dynamight.training.setup.centred_atoms`):
a model overlays its map as written.
"""

from __future__ import annotations

import logging
import math
import string
from pathlib import Path

import numpy as np
import torch

from ..data.files import atomic_path
from ..errors import InputError
from ..training.setup import centred_atoms, read_structure
from .atom_motion import AtomMotion

log = logging.getLogger(__name__)
CHAIN_NAMES = string.ascii_uppercase + string.ascii_lowercase + string.digits
RESIDUES_PER_CHAIN = 9999  # PDB's residue-number field


def _atoms(model) -> list:
    """Every atom of a ``gemmi.Model`` in :func:`~dynamight.training.setup.centred_atoms`' order."""
    return [atom for chain in model for residue in chain for atom in residue]


class ModelWriter:
    """Writes the deformed models of one run.

    Args:
        structure: the consensus ``gemmi.Structure`` (its first model is used).
        motion: how atoms follow the Gaussians (``None``: the atoms are the Gaussians, in order).
        box_px, pixel_size_angstrom: the map's grid.
    """

    def __init__(self, structure, motion: AtomMotion | None, box_px: int, pixel_size_angstrom: float):
        while len(structure) > 1:
            del structure[len(structure) - 1]
        self.structure, self.motion = structure, motion
        self.offset_angstrom = (box_px // 2) * pixel_size_angstrom
        self.atomic = motion is not None
        self.reference = np.array([[a.pos.x, a.pos.y, a.pos.z] for a in _atoms(structure[0])], dtype=np.float64)

    @property
    def n_atoms(self) -> int:
        return len(self.reference)

    def coordinates(self, positions: torch.Tensor, consensus: torch.Tensor) -> np.ndarray:
        """``(f, n, 3)`` deformed and ``(n, 3)`` consensus Gaussian centres (Å from the box centre)
        -> ``(f, a, 3)`` atom coordinates of the file's frame, Å."""
        positions = positions.detach().double().cpu().reshape(-1, *consensus.shape)
        if self.motion is None:
            return positions.numpy() + self.offset_angstrom
        moved = self.motion.displacements(positions - consensus.detach().double().cpu()[None])
        return self.reference[None] + moved.double().numpy()

    def write(self, stem: Path, positions: torch.Tensor, consensus: torch.Tensor) -> list[Path]:
        """Write ``stem.pdb`` and ``stem.cif``: one model per conformation of ``positions``
        ``(f, n, 3)`` (see :meth:`coordinates`). Returns the two paths."""
        import gemmi

        coordinates = self.coordinates(positions, consensus)
        out = self.structure.clone()
        del out[0]
        for frame, xyz in enumerate(coordinates):
            model = self.structure[0].clone()
            model.num = frame + 1
            for atom, (x, y, z) in zip(_atoms(model), xyz):
                atom.pos = gemmi.Position(x, y, z)
            out.add_model(model)
        paths = [Path(f"{stem}.pdb"), Path(f"{stem}.cif")]
        with atomic_path(paths[0]) as tmp:
            out.write_pdb(str(tmp))
        with atomic_path(paths[1]) as tmp:
            out.make_mmcif_document().write_file(str(tmp))
        return paths


def pseudo_atoms(centres: torch.Tensor, sigma_angstrom: torch.Tensor, box_px: int, pixel_size_angstrom: float):
    """A ``gemmi.Structure`` of ``(n, 3)`` Gaussian centres (Å from the box centre) with widths
    ``(n,)`` Å (see the module docstring)."""
    import gemmi

    structure, model = gemmi.Structure(), gemmi.Model(1)
    structure.name = "dynamight_gaussians"
    side = box_px * pixel_size_angstrom
    structure.cell = gemmi.UnitCell(side, side, side, 90, 90, 90)
    xyz = centres.detach().double().cpu().numpy() + (box_px // 2) * pixel_size_angstrom
    bfactor = 8 * math.pi**2 * sigma_angstrom.detach().double().cpu().numpy() ** 2
    for start in range(0, len(xyz), RESIDUES_PER_CHAIN):
        chain = gemmi.Chain(CHAIN_NAMES[(start // RESIDUES_PER_CHAIN) % len(CHAIN_NAMES)])
        for k in range(start, min(start + RESIDUES_PER_CHAIN, len(xyz))):
            residue, atom = gemmi.Residue(), gemmi.Atom()
            residue.name, residue.seqid = "UNK", gemmi.SeqId(k - start + 1, " ")
            atom.name, atom.element, atom.occ, atom.b_iso = "CA", gemmi.Element("C"), 1.0, float(bfactor[k])
            atom.pos = gemmi.Position(*xyz[k])
            residue.add_atom(atom)
            chain.add_residue(residue)
        model.add_chain(chain)
    structure.add_model(model)
    structure.setup_entities()
    return structure


def model_writer(config: dict, consensus: torch.Tensor, sigma_angstrom: torch.Tensor, box_px: int,
                 pixel_size_angstrom: float) -> ModelWriter:
    """The writer of a run: its ``atomic_model`` (training config) when that file is readable and
    its atoms include every Gaussian, else pseudo-atoms (with a warning naming the file)."""
    path = config.get("atomic_model")
    if path:
        try:
            structure = read_structure(Path(path))
        except InputError as exc:
            log.warning("%s; writing the Gaussians as pseudo-atoms instead", exc)
        else:
            atoms = centred_atoms(structure, box_px, pixel_size_angstrom)
            motion = AtomMotion(atoms, consensus) if len(atoms) else None
            if motion is not None and motion.every_gaussian_is_an_atom:
                return ModelWriter(structure, motion, box_px, pixel_size_angstrom)
            log.warning("%s: its atoms are not the run's Gaussians (another model, or another box?); writing the "
                        "Gaussians as pseudo-atoms instead", path)
    return ModelWriter(pseudo_atoms(consensus, sigma_angstrom, box_px, pixel_size_angstrom), None, box_px,
                       pixel_size_angstrom)
