"""Real protein structures as simulated molecules: one pseudo-atom per residue of a PDB/mmCIF file.

A residue becomes one Gaussian at the centroid of its heavy atoms, its amplitude the summed atomic
numbers of those atoms over 6 (a carbon atom: 1): at the pixel sizes simulated (3-4 Å, Nyquist 6-8
Å) a residue is not resolved, and one Gaussian per residue renders six to eight times faster than
one per atom. The molecule's centroid is put at the box centre.

Selections name the parts that move: comma-separated items, each a chain (``B``) or a chain's
residue range (``A:122-159``, author numbering, inclusive); ``D,E`` is chains D and E together.
The structures shipped in ``structures/`` (see its README) can be named instead of a path.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import InputError

SHIPPED = Path(__file__).with_name("structures")


def resolve_atomic_model(path: Path) -> Path:
    """A file path as given, or the shipped structure of that name (``1ake``, ``3hsy``, ``1bd2``)."""
    path = Path(path)
    if path.is_file():
        return path
    shipped = SHIPPED / f"{str(path).lower()}.pdb.gz"
    if shipped.is_file():
        return shipped
    names = ", ".join(sorted(p.name.split(".")[0] for p in SHIPPED.glob("*.pdb.gz")))
    raise InputError(f"{path}: no such atomic model file (nor a shipped structure: {names})")


def parse_selection(text: str) -> list[tuple[str, int | None, int | None]]:
    """``"A:10-50,B"`` -> ``[("A", 10, 50), ("B", None, None)]``."""
    items = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        chain, _, residues = item.partition(":")
        if not residues:
            items.append((chain, None, None))
            continue
        first, _, last = residues.partition("-")
        try:
            items.append((chain, int(first), int(last or first)))
        except ValueError as exc:
            raise InputError(f"selection {text!r}: expected CHAIN or CHAIN:FIRST-LAST, e.g. A:122-159") from exc
    if not items:
        raise InputError(f"selection {text!r}: empty")
    return items


def _selected(chain: str, residue: int, selection) -> bool:
    return any(chain == c and (first is None or first <= residue <= last) for c, first, last in selection)


def read_structure(path: Path, selections: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One pseudo-atom per residue of the first model's polymer chains, from its heavy atoms (no
    hydrogens, waters or ligands).

    Args:
        path: PDB or mmCIF file (optionally gzipped).
        selections: the moving parts, in order (domain 1, 2, ...).

    Returns:
        ``(n, 3)`` residue positions, Å, centroid at the origin (the box centre); ``(n,)`` amplitudes
        (summed atomic numbers / 6); ``(n,)`` domain labels (0: no selection; ``k``: the ``k``-th).
    """
    import gemmi

    try:
        structure = gemmi.read_structure(str(path))
    except (RuntimeError, ValueError, OSError) as exc:
        raise InputError(f"{path}: not a readable PDB/mmCIF atomic model ({exc})") from exc
    structure.remove_hydrogens()
    structure.remove_ligands_and_waters()
    structure.remove_alternative_conformations()
    parsed = [parse_selection(s) for s in selections]
    xyz, amplitude, domain = [], [], []
    for chain in structure[0] if len(structure) else []:
        for residue in chain:
            if len(residue) == 0:
                continue
            atoms = torch.tensor([a.pos.tolist() for a in residue], dtype=torch.float64)
            xyz.append(atoms.mean(0).tolist())
            amplitude.append(sum(a.element.atomic_number for a in residue) / 6.0)
            domain.append(next((k + 1 for k, sel in enumerate(parsed) if _selected(chain.name, residue.seqid.num, sel)), 0))
    if not xyz:
        raise InputError(f"{path}: the atomic model has no protein or nucleic-acid residues")
    positions = torch.tensor(xyz, dtype=torch.float32)
    domain_t = torch.tensor(domain)
    for k, text in enumerate(selections, start=1):
        count = int((domain_t == k).sum())
        if count == 0:
            raise InputError(f"{path}: selection {text!r} matches no residue (chains: "
                             f"{', '.join(c.name for c in structure[0])})")
        if count == len(domain_t):
            raise InputError(f"{path}: selection {text!r} is the whole molecule: nothing stays fixed")
    return positions - positions.mean(0), torch.tensor(amplitude, dtype=torch.float32), domain_t
