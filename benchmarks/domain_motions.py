"""Where a run's learnt motion lives: per true domain of a simulated project, the consensus
Gaussians it holds, how far the decoders move them, and which true factor that motion follows.

A latent space that misses a factor (|Spearman| low for every direction) either did not move that
factor's domain at all (its learnt displacement RMS stays near zero), or moved it with another
factor (its displacement follows the other factor). This tells the two apart; the latent codes'
singular values (relative to the largest) show how many dimensions the run actually uses.

    python benchmarks/domain_motions.py PROJECT RUN
"""

from __future__ import annotations

import argparse
from pathlib import Path

import mrcfile
import numpy as np
import torch

from dynamight.simulate.factors import direction_spearman, latent_factor_table
from dynamight.simulate.truth import GroundTruth
from dynamight.training.layout import find_final_checkpoint
from dynamight.training.restore import load_forward_models


def domain_motions(project: Path, run: Path, n_components: int = 3) -> str:
    """The report (module docstring) as text. Each Gaussian belongs to the domain of its nearest
    atom; a domain's motion is scored by the best linear combination of the first ``n_components``
    principal components of its Gaussians' displacements ``(particles, 3 n_domain)``."""
    truth = GroundTruth.read(project)
    with mrcfile.open(Path(project) / "map.mrc", permissive=True) as mrc:  # the particles' grid
        box, pixel = int(mrc.header.nx), float(mrc.voxel_size.x)
    models, _ = load_forward_models(find_final_checkpoint(run), box, pixel, torch.device("cpu"))
    star = Path(run) / "forward_deformations" / "latents.star"
    table, codes, factors = latent_factor_table(project, star)
    distance = torch.cdist(models[1].positions, truth.atoms)
    domain = truth.domain[distance.argmin(1)].numpy()
    lines = [f"domain {k}: {int((truth.domain == k).sum())} atoms, {int((domain == k).sum())} Gaussians"
             for k in np.unique(truth.domain.numpy())]
    for half in (1, 2):
        rows = table["rlnDynaMightHalfSet"].to_numpy() == half
        z = table[codes].to_numpy(np.float32)[rows]
        singular = np.linalg.svd(z - z.mean(0), compute_uv=False)
        lines.append(f"half {half}: latent singular values {[round(float(v), 3) for v in singular / singular[0]]}")
        with torch.no_grad():
            moved = models[half].displacements(torch.as_tensor(z)).numpy()  # (m, n, 3) Å
        everyone = np.ones(len(z), dtype=bool)
        for k in np.unique(domain):
            part = moved[:, domain == k]
            rms = np.sqrt((part ** 2).sum(-1).mean(1))
            flat = part.reshape(len(z), -1)
            u, s, _ = np.linalg.svd(flat - flat.mean(0), full_matrices=False)
            components = u[:, :n_components] * s[:n_components]
            follows = ", ".join(f"{name} {direction_spearman(components, table[name].to_numpy()[rows], everyone, everyone):.3f}"
                                for name in factors)
            lines.append(f"  domain {k}: displacement RMS median {np.median(rms):.2f} Å (90th percentile "
                         f"{np.percentile(rms, 90):.2f}); follows {follows}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("project", type=Path, help="a `dynamight simulate` output directory")
    parser.add_argument("run", type=Path, help="an optimize-deformations output directory")
    args = parser.parse_args()
    print(domain_motions(args.project, args.run))


if __name__ == "__main__":
    main()
