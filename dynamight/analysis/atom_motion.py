"""Atom displacements from Gaussian displacements.

With ``--atomic-model`` the Gaussians are atoms of the model (all of them, or a seeded subset when
the model has more atoms than ``--n-gaussians``). An atom that is a Gaussian (same position, to
1e-3 Å) moves exactly as its Gaussian. Any other atom takes the displacement of its nearest
Gaussians, weighted with the kernel the deformable backprojection extends deformations with
(:func:`dynamight.reconstruction.deformation_field.kernel_weights`, width the Gaussians' mean
neighbour spacing), plus a first-order term: a weighted least-squares affine fit of the
neighbours' displacements (moving least squares), evaluated at the atom. The plain weighted mean
would give an atom the displacement of its neighbours' weighted centre, off by up to a neighbour
spacing times the rotation; the affine fit reproduces any locally rigid (or affine) motion
exactly, so bonds inside a rigid domain keep their lengths.

The result is linear in the displacements: one ``(a, k)`` weight table, computed once.
"""

from __future__ import annotations

import torch

from ..model.graph import mean_neighbour_distance
from ..reconstruction.deformation_field import kernel_weights

EXACT_ANGSTROM = 1e-3  # an atom this close to a Gaussian is that Gaussian
RIDGE = 1e-4  # Tikhonov term of the affine fit, in units of the squared kernel width


class AtomMotion:
    """Maps ``(f, n, 3)`` Gaussian displacements to ``(f, a, 3)`` atom displacements.

    Args:
        atoms: ``(a, 3)`` consensus atom positions, Å from the box centre.
        centres: ``(n, 3)`` consensus Gaussian centres, Å from the box centre.
        top_k: Gaussians per atom.

    Attributes:
        index: ``(a, k)`` Gaussians of each atom; ``weight``: ``(a, k)`` their coefficients (sum 1).
        exact: ``(a,)`` bool, the atom is a Gaussian.
    """

    def __init__(self, atoms: torch.Tensor, centres: torch.Tensor, top_k: int = 16):
        atoms, centres = atoms.float().cpu(), centres.float().cpu()
        self.n_gaussians = len(centres)
        width = mean_neighbour_distance(centres) if len(centres) > 1 else 1.0
        self.index, kernel = kernel_weights(atoms, centres, width, top_k)
        atoms, centres, kernel = atoms.double(), centres.double(), kernel.double()
        neighbours = centres[self.index]  # (a, k, 3)
        mean = (kernel[..., None] * neighbours).sum(1)  # (a, 3) weighted centre
        offsets = neighbours - mean[:, None]  # (a, k, 3)
        moment = torch.einsum("ak,aki,akj->aij", kernel, offsets, offsets)
        moment = moment + RIDGE * width**2 * torch.eye(3, dtype=moment.dtype)
        slope = torch.linalg.solve(moment, (atoms - mean)[..., None])[..., 0]  # (a, 3)
        self.weight = kernel * (1 + (offsets * slope[:, None]).sum(-1))
        distance = (atoms - neighbours[:, 0]).norm(dim=-1)  # column 0 is the nearest
        self.exact = distance < EXACT_ANGSTROM
        self.weight[self.exact] = 0.0
        self.weight[self.exact, 0] = 1.0
        self.weight = self.weight.float()

    def __len__(self) -> int:
        return len(self.index)

    def displacements(self, gaussian_displacements: torch.Tensor) -> torch.Tensor:
        """``(f, n, 3)`` Å -> ``(f, a, 3)`` Å."""
        gathered = gaussian_displacements.float().cpu()[:, self.index]  # (f, a, k, 3)
        return (gathered * self.weight[None, :, :, None]).sum(2)

    @property
    def every_gaussian_is_an_atom(self) -> bool:
        """Whether the atoms include every Gaussian (the Gaussians came from these atoms)."""
        hit = torch.zeros(self.n_gaussians, dtype=torch.bool)
        hit[self.index[self.exact, 0]] = True
        return bool(hit.all())
