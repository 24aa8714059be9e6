"""Shared by the deformed-model tests and scripts/atomic_model_figure.py (no tests here): the
simulator's adenylate kinase (1ake, chain A) placed in a map's box, and a half model whose decoder
is a known rigid swing of its LID domain (A:122-159) about the simulator's hinge."""

from __future__ import annotations

import numpy as np
import torch

from dynamight.analysis.decoding import ConformationDecoder
from dynamight.simulate.motions import rotate_about
from dynamight.simulate.scenario import interface_hinge
from dynamight.simulate.structures import resolve_atomic_model
from dynamight.training.setup import centred_atoms, read_atomic_model, read_structure

from .test_analysis_support import HINGE_DEG_PER_UNIT as DEG_PER_UNIT  # the swing: DEG_PER_UNIT * z[:, 0] degrees


class RigidDomainModel(torch.nn.Module):
    """A half model whose decoder swings the moving atoms rigidly: ``DEG_PER_UNIT * z[:, 0]`` degrees."""

    rigid = False

    def __init__(self, positions: torch.Tensor, moving: torch.Tensor, point, axis):
        super().__init__()
        self.register_buffer("positions", positions.float())
        self.register_buffer("amplitudes", torch.ones(len(positions)))
        self.register_buffer("sigma", torch.full((len(positions),), 1.5))
        self.register_buffer("movable", torch.ones(len(positions)))
        self.moving, self.point, self.axis = moving, point, axis

    def displacements(self, z: torch.Tensor) -> torch.Tensor:
        return true_motion(self.positions, self.moving, self.point, self.axis, DEG_PER_UNIT * z[:, 0].cpu())


def true_motion(points, moving, point, axis, degrees: torch.Tensor) -> torch.Tensor:
    """``(a, 3)`` points -> ``(b, a, 3)`` displacements of the rigid swing of the ``moving`` ones."""
    return (rotate_about(points, point, axis, degrees.float()) - points[None]) * moving[None, :, None]


def placed_1ake(path, box_px: int, pixel_size_angstrom: float):
    """Write the simulator's 1ake (chain A) with its centroid at the box centre of a ``box_px`` map
    (as a model fitted into its map); returns the ``gemmi.Structure``."""
    import gemmi

    st = read_structure(resolve_atomic_model("1ake"))
    every_atom = [a for chain in st[0] for residue in chain for a in residue]
    centroid = np.mean([[a.pos.x, a.pos.y, a.pos.z] for a in every_atom], axis=0)
    shift = gemmi.Position(*((box_px // 2) * pixel_size_angstrom - centroid))
    for atom in every_atom:
        atom.pos = atom.pos + shift
    st.write_pdb(str(path))
    return st


def lid_swing(path, box_px: int, pixel_size_angstrom: float):
    """``(a, 3)`` atoms of the placed model (Å from the box centre), ``(a,)`` LID flags, hinge point and axis."""
    st = read_structure(path)
    atoms = centred_atoms(st, box_px, pixel_size_angstrom)
    lid = torch.tensor([float(ch.name == "A" and 122 <= r.seqid.num <= 159) for ch in st[0] for r in ch for _ in r])
    hinge = interface_hinge(atoms, lid.long(), 1, "angle")
    return atoms, lid, torch.tensor(hinge.point), torch.tensor(hinge.axis)


def rigid_decoder(path, box_px: int, pixel_size_angstrom: float, n_gaussians: int | None = None,
                  atomic: bool = True) -> ConformationDecoder:
    """Both halves: the LID swing on the model's atoms as Gaussians (all, or a seeded subset as
    training takes them); the run's config names the atomic model unless ``atomic`` is False."""
    atoms, lid, point, axis = lid_swing(path, box_px, pixel_size_angstrom)
    gaussians = read_atomic_model(path, box_px, pixel_size_angstrom, n_gaussians or len(atoms), seed=0)
    moving = lid[torch.cdist(gaussians, atoms).argmin(1)]
    model = RigidDomainModel(gaussians, moving, point, axis)
    config = {"atomic_model": str(path)} if atomic else {}
    return ConformationDecoder({1: model, 2: model}, box_px, pixel_size_angstrom, 3, torch.device("cpu"), config)
