"""optimize-deformations on simulated hinge data: latent-vs-angle Spearman, displacement error,
validation error estimate, and time. Defaults: the issue's 4,000 particles, box 64, SNR 0.1.

    python benchmarks/deformation_accuracy.py [--n-particles 4000] [--n-epochs 40] [--n-gaussians 1500]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import torch

from dynamight.cli import main as dynamight
from dynamight.simulate.dataset import simulate
from dynamight.simulate.evaluate import hinge_accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-particles", type=int, default=4000)
    parser.add_argument("--box", type=int, default=64)
    parser.add_argument("--snr", type=float, default=0.1)
    parser.add_argument("--n-epochs", type=int, default=40)
    parser.add_argument("--n-gaussians", type=int, default=1500)
    parser.add_argument("--n-latent-dimensions", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--keep", type=Path, default=None, help="keep the project and run here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        project, run = root / "project", root / "run"
        simulate(project, n_particles=args.n_particles, box_px=args.box, pixel_size_angstrom=128.0 / args.box,
                 snr=args.snr, motion="hinge", seed=1)
        start = time.perf_counter()
        code = dynamight(["optimize-deformations", "--refinement-star-file", str(project / "particles.star"),
                          "--output-directory", str(run), "--initial-model", str(project / "map.mrc"),
                          "--n-gaussians", str(args.n_gaussians), "--n-latent-dimensions", str(args.n_latent_dimensions),
                          "--n-epochs", str(args.n_epochs), "--batch-size", str(args.batch_size), "--gpu-id", "-1"])
        elapsed = time.perf_counter() - start
        assert code == 0
        print(f"{args.n_particles} particles, box {args.box}, SNR {args.snr}, {args.n_gaussians} Gaussians, "
              f"{args.n_latent_dimensions} latent dims, {args.n_epochs} epochs: {elapsed:.0f} s training "
              f"({torch.get_num_threads()} threads), peak RSS "
              f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
        for half, r in hinge_accuracy(project, run).items():
            print(f"half {half}: |Spearman| latent vs hinge angle {r['latent_spearman']:.3f} (need >= 0.9); "
                  f"RMS displacement error {100 * r['relative_rms_error']:.1f}% of the RMS true displacement "
                  f"{r['rms_true_displacement']:.2f} Å (need <= 35%); validation error estimate vs true error "
                  f"Spearman {r['error_estimate_spearman']:.3f} (need > 0)")


if __name__ == "__main__":
    main()
