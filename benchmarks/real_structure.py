"""DynaMight on a real protein structure, with the consensus map a user has: latent accuracy per
half-set and the deformable map against plain maps and the static twin.

The particles are simulated from a shipped PDB structure (``dynamight simulate --atomic-model``);
the consensus map is ``relion_reconstruct --ctf`` of those particles low-passed to 8 Å
(``relion_image_handler --lowpass``), as a user has it from a refinement; ``optimize-deformations``
runs with its defaults plus ``--n-gaussians`` and ``--n-epochs``. Then the latent accuracy for every
true factor (best linear direction, |Spearman|, per half, all and held-out particles), where each
true domain's learnt motion lives (``domain_motions``), and the deformable benchmark's maps
(``deformable_backprojection.compare``: moving and fixed domain, merged and per half, against
plain ours / ``relion_reconstruct`` and the static twin).

    python benchmarks/real_structure.py [--atomic-model 3hsy --moving-chain B --motion hinge --max-hinge-angle 20]
        [--n-particles 4000] [--n-epochs 50] [--n-gaussians 1500] [--seed 0] [--keep DIR]
        [--train-option=--learning-rate=3e-3 ...]
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

from dynamight.cli import main as dynamight
from dynamight.simulate.factors import factor_accuracy, format_factor_accuracy

from deformable_backprojection import compare
from domain_motions import domain_motions


def add_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    """The dataset's options (structure, motion, size, noise, seed) and the training's epochs and
    Gaussians, shared by the benchmarks that simulate a real structure."""
    parser.add_argument("--atomic-model", default="3hsy")
    parser.add_argument("--moving-chain", default="B")
    parser.add_argument("--second-moving-chain", default=None)
    parser.add_argument("--motion", default="hinge")
    parser.add_argument("--max-hinge-angle", type=float, default=20.0)
    parser.add_argument("--n-particles", type=int, default=4000)
    parser.add_argument("--box", type=int, default=64)
    parser.add_argument("--pixel", type=float, default=3.0)
    parser.add_argument("--snr", type=float, default=0.1)
    parser.add_argument("--n-epochs", type=int, default=50)
    parser.add_argument("--n-gaussians", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=0)


def simulate_pair(root: Path, args, twin: bool = True) -> tuple[Path, Path]:
    """The moving project and (``twin``) its static twin (same seed: same poses, CTF and noise)."""
    common = ["--n-particles", str(args.n_particles), "--box-size", str(args.box), "--pixel-size", str(args.pixel),
              "--snr", str(args.snr), "--seed", str(args.seed), "--atomic-model", args.atomic_model,
              "--moving-chain", args.moving_chain, "--max-hinge-angle", str(args.max_hinge_angle)]
    if args.second_moving_chain:
        common += ["--second-moving-chain", args.second_moving_chain]
    for name, motion in (("project", args.motion), ("twin", "none"))[:2 if twin else 1]:
        if not (root / name / "particles.star").is_file():
            assert dynamight(["simulate", "--output-directory", str(root / name), "--motion", motion, *common]) == 0
    return root / "project", root / "twin"


def consensus_map(project: Path, lowpass_angstrom: float = 8.0) -> Path:
    """``relion_reconstruct --ctf`` of the particles, low-passed by ``relion_image_handler``."""
    out = project / "consensus_lowpass.mrc"
    if not out.is_file():
        subprocess.run(["relion_reconstruct", "--i", "particles.star", "--o", "consensus.mrc", "--ctf"], cwd=project,
                       check=True, capture_output=True)
        subprocess.run(["relion_image_handler", "--i", "consensus.mrc", "--o", out.name, "--lowpass",
                        str(lowpass_angstrom)], cwd=project, check=True, capture_output=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_dataset_arguments(parser)
    parser.add_argument("--keep", type=Path, default=None, help="keep (and reuse) the projects and run here")
    parser.add_argument("--skip-maps", action="store_true", help="only the latent accuracy")
    parser.add_argument("--train-option", action="append", default=[], metavar="OPTION",
                        help="an extra optimize-deformations option, e.g. --train-option=--learning-rate=3e-3 "
                             "(repeatable; the run directory is reused, so give each variant its own --keep)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        project, twin = simulate_pair(root, args)
        consensus = consensus_map(project)
        run = root / "run"
        start = time.perf_counter()
        if not (run / "forward_deformations" / "latents.star").is_file():
            assert dynamight(["optimize-deformations", "--refinement-star-file", str(project / "particles.star"),
                              "--output-directory", str(run), "--initial-model", str(consensus),
                              "--n-gaussians", str(args.n_gaussians), "--n-epochs", str(args.n_epochs),
                              "--seed", str(args.seed), *args.train_option]) == 0
        print(f"optimize-deformations: {time.perf_counter() - start:.0f} s")
        print(format_factor_accuracy(factor_accuracy(project, run)), flush=True)
        print(domain_motions(project, run), flush=True)
        if not args.skip_maps:
            compare(project, twin, run, Path(tmp))


if __name__ == "__main__":
    main()
