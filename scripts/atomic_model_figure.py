"""The picture of docs/atomic-models.md: a deformed atomic model over its map.

The simulator's adenylate kinase (1ake, chain A) placed in a 48-px, 1.5-Å map; 600 of its 1,656
atoms are the Gaussians (the seeded subset training takes with ``--n-gaussians 600``), and the
decoder swings the LID domain (A:122-159) rigidly by 20 degrees about the simulator's hinge
(``tests/atomic_support.py``, the stand-in the tests use). The map is rendered from the 600 deformed
Gaussians as the analysis renders a cluster map; the model is the PDB the analysis writes beside it
(all 1,656 atoms, the others moved by interpolation), read back with gemmi. Left: the consensus model over that map; right: the deformed model. Each panel
gives the map-model correlation (:func:`dynamight.analysis.model_fit.map_model_correlation`).

Usage (from the repository root; a few seconds on a CPU)::

    python scripts/atomic_model_figure.py [docs/atomic-model.png]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import gemmi
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dynamight.analysis.deformed_models import model_writer  # noqa: E402
from dynamight.analysis.model_fit import map_model_correlation  # noqa: E402
from dynamight.training.setup import centred_atoms  # noqa: E402
from tests.atomic_support import DEG_PER_UNIT, lid_swing, placed_1ake, rigid_decoder  # noqa: E402

BOX, PIXEL, DEGREES, N_GAUSSIANS = 48, 1.5, 20.0, 600


def main(out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        pdb = Path(tmp) / "1ake_A.pdb"
        placed_1ake(pdb, BOX, PIXEL)
        _, lid, _, _ = lid_swing(pdb, BOX, PIXEL)
        decoder = rigid_decoder(pdb, BOX, PIXEL, N_GAUSSIANS)
        consensus = decoder.consensus(1)
        positions = decoder.positions(np.array([[DEGREES / DEG_PER_UNIT, 0.0, 0.0]]), 1)
        volume = decoder.volume(positions[0])
        writer = model_writer(decoder.config, consensus, decoder.models[1].sigma, BOX, PIXEL)
        deformed_pdb = writer.write(Path(tmp) / "deformed", positions, consensus)[0]
        models = {"consensus model": centred_atoms(gemmi.read_structure(str(pdb)), BOX, PIXEL),
                  f"deformed model (LID swung by {DEGREES:g}°)":
                      centred_atoms(gemmi.read_structure(str(deformed_pdb)), BOX, PIXEL)}
    projection = volume.sum(0).numpy()  # along z: [y, x]
    offset, extent = (BOX // 2) * PIXEL, (-PIXEL / 2, (BOX - 0.5) * PIXEL, -PIXEL / 2, (BOX - 0.5) * PIXEL)
    figure, axes = plt.subplots(1, 2, figsize=(9, 4.6), layout="constrained")
    for ax, (name, atoms) in zip(axes, models.items()):
        xyz = atoms.numpy() + offset
        ax.imshow(projection, origin="lower", extent=extent, cmap="gray_r", interpolation="bicubic")
        for moving, colour, label in ((0, "tab:blue", "core"), (1, "tab:red", "LID (A:122-159)")):
            chosen = lid.numpy() == moving
            ax.scatter(xyz[chosen, 0], xyz[chosen, 1], s=1.5, c=colour, alpha=0.6, linewidths=0, label=label)
        correlation = map_model_correlation(atoms, volume, PIXEL)
        ax.set_title(f"{name}\nmap-model correlation {correlation:.3f}", fontsize=10)
        ax.set_xlabel("x (Å)")
        ax.set_ylabel("y (Å)")
        ax.set_xlim(8, BOX * PIXEL - 8)
        ax.set_ylim(8, BOX * PIXEL - 8)
        print(f"{name}: map-model correlation {correlation:.4f}")
    axes[1].legend(loc="lower right", markerscale=6, fontsize=8)
    figure.suptitle(f"A deformed map ({N_GAUSSIANS} Gaussians, projected along z) and the whole model over it",
                    fontsize=11)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs/atomic-model.png"))
