"""explore-latent-space --headless on simulated hinge data: does the first principal direction of
the latent space order the particles by their true hinge angle, and do the cluster maps differ
where the domain moves (and not where it does not)? Defaults: the deformation benchmark's
4,000 particles, box 64, SNR 0.1, 40 epochs.

    python benchmarks/latent_space_hinge.py [--gpu-id 0] [--keep DIR]      # simulate, train, explore
    python benchmarks/latent_space_hinge.py --reuse DIR                     # DIR/project, DIR/run from
                                                                            # deformation_accuracy.py --keep DIR
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import mrcfile
import numpy as np
import starfile

from dynamight.cli import main as dynamight
from dynamight.simulate.dataset import simulate
from dynamight.simulate.evaluate import hinge_accuracy, spearman

FOLDERS = {0: ("validation", "validation_"), 1: ("half1", "half1_"), 2: ("half2", "half2_")}


def domain_cores(project: Path) -> tuple[np.ndarray, np.ndarray]:
    """Voxels of only the moving domain's mask, and of only the fixed domain's."""
    moving = mrcfile.read(project / "masks" / "moving_domain.mrc")
    fixed = mrcfile.read(project / "masks" / "fixed_domain.mrc")
    return (moving > 0.99) & (fixed < 0.01), (fixed > 0.99) & (moving < 0.01)


def evaluate(project: Path, run: Path, half_set: int) -> dict[str, float]:
    """|Spearman| of the first principal score with the true angle; moving/fixed ratios of the
    cluster maps' voxel spread and of the pc1 movie's end-to-end change."""
    folder, prefix = FOLDERS[half_set]
    space = starfile.read(run / "latent_space" / folder / "latent_space.star")["particles"]
    truth = starfile.read(project / "ground_truth.star")["particles"].set_index("rlnImageName")
    angle = truth.loc[space["rlnImageName"], "dmTrueHingeAngleDeg"].to_numpy()
    moving, fixed = domain_cores(project)
    maps = np.stack([mrcfile.read(p) for p in sorted((run / "maps").glob(f"{prefix}cluster_*.mrc"))])
    spread = maps.std(axis=0)
    movie = sorted((run / "movies" / f"{prefix}pc1").glob("frame_*.mrc"))
    change = np.abs(mrcfile.read(movie[-1]) - mrcfile.read(movie[0]))
    return {"n": len(space), "spearman": abs(spearman(space["rlnDynaMightPrincipal1"].to_numpy(), angle)),
            "cluster_ratio": float(spread[moving].mean() / max(spread[fixed].mean(), 1e-12)),
            "movie_ratio": float(change[moving].mean() / max(change[fixed].mean(), 1e-12))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-particles", type=int, default=4000)
    parser.add_argument("--box", type=int, default=64)
    parser.add_argument("--snr", type=float, default=0.1)
    parser.add_argument("--n-epochs", type=int, default=40)
    parser.add_argument("--n-gaussians", type=int, default=1500)
    parser.add_argument("--n-latent-dimensions", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--regularization-factor", type=float, default=None, help="default: the engine's")
    parser.add_argument("--gpu-id", default="-1", help="-1: the CPU")
    parser.add_argument("--keep", type=Path, default=None, help="keep the project and run here")
    parser.add_argument("--reuse", type=Path, default=None, help="DIR with project/ and run/ from an earlier run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.reuse or args.keep or Path(tmp)
        project, run = root / "project", root / "run"
        if args.reuse is None:
            start = time.perf_counter()
            simulate(project, n_particles=args.n_particles, box_px=args.box, pixel_size_angstrom=128.0 / args.box,
                     snr=args.snr, motion="hinge", seed=1)
            assert dynamight(["optimize-deformations", "--refinement-star-file", str(project / "particles.star"),
                              "--output-directory", str(run), "--initial-model", str(project / "map.mrc"),
                              "--n-gaussians", str(args.n_gaussians), "--n-latent-dimensions",
                              str(args.n_latent_dimensions), "--n-epochs", str(args.n_epochs),
                              "--batch-size", str(args.batch_size), "--gpu-id", args.gpu_id]
                             + ([] if args.regularization_factor is None
                                else ["--regularization-factor", str(args.regularization_factor)])) == 0
            print(f"simulated and trained in {time.perf_counter() - start:.0f} s", flush=True)
        for half, r in hinge_accuracy(project, run).items():
            print(f"training, half {half}: best linear latent direction vs hinge angle |Spearman| "
                  f"{r['latent_spearman']:.3f}", flush=True)
        for half_set in (1, 2, 0):
            start = time.perf_counter()
            assert dynamight(["explore-latent-space", str(run), "--headless", "--half-set", str(half_set),
                              "--gpu-id", args.gpu_id]) == 0
            seconds = time.perf_counter() - start
            r = evaluate(project, run, half_set)
            print(f"half-set {half_set} ({r['n']} particles, {seconds:.1f} s): first principal direction vs true "
                  f"hinge angle |Spearman| {r['spearman']:.3f} (need >= 0.9); voxel spread of the cluster maps, "
                  f"moving / fixed domain {r['cluster_ratio']:.1f}; pc1 movie change, moving / fixed "
                  f"{r['movie_ratio']:.1f}", flush=True)


if __name__ == "__main__":
    main()
