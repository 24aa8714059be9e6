"""optimize-deformations end to end (a fresh process, as a user runs it): seconds, particles per
second, peak memory; the first workload is the one upstream DynaMight's timing was quoted for
(200 particles, box 64, 400 Gaussians, 2 latent dimensions, batch 32, 3 epochs: 33 s end to end
on this 2-core machine).

    python benchmarks/training_speed.py [--skip-large]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dynamight.simulate.dataset import simulate

UPSTREAM_SECONDS_200 = 33.0


def run(project: Path, out: Path, n_gaussians: int, n_latent: int, epochs: int, batch: int,
        extra: tuple[str, ...] = ()) -> float:
    command = [sys.executable, "-m", "dynamight.cli", "optimize-deformations", "--refinement-star-file",
               str(project / "particles.star"), "--output-directory", str(out), "--initial-model",
               str(project / "map.mrc"), "--n-gaussians", str(n_gaussians), "--n-latent-dimensions", str(n_latent),
               "--batch-size", str(batch), "--n-epochs", str(epochs), "--gpu-id", "-1", *extra]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-large", action="store_true", help="only the 200-particle workload")
    args = parser.parse_args()
    workloads = [(200, 64, 400, 2, 3)]
    if not args.skip_large:
        workloads += [(4000, 64, 1500, 6, 3), (1000, 128, 1500, 6, 1)]
    with tempfile.TemporaryDirectory() as tmp:
        for n, box, gaussians, latent, epochs in workloads:
            project = Path(tmp) / f"p{n}_{box}"
            simulate(project, n_particles=n, box_px=box, pixel_size_angstrom=128.0 / box, snr=0.1, seed=0)
            # default, and without the refinement of the training codes after training (upstream's work:
            # its codes are the encoder's, computed once)
            for label, extra in (("default", ()), ("no code refinement", ("--latent-refinement-steps", "0"))):
                seconds = run(project, Path(tmp) / f"r{n}_{box}_{len(extra)}", gaussians, latent, epochs, 32, extra)
                peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
                line = (f"{n} particles, box {box}, {gaussians} Gaussians, {latent} latent dims, {epochs} epochs, "
                        f"{label}: {seconds:.1f} s end to end, {n * epochs / seconds:.0f} particle-epochs/s, "
                        f"peak RSS so far {peak:.0f} MB")
                if n == 200 and box == 64:
                    line += f"; upstream {UPSTREAM_SECONDS_200:.0f} s: {UPSTREAM_SECONDS_200 / seconds:.1f}x faster"
                print(line, flush=True)


if __name__ == "__main__":
    main()
