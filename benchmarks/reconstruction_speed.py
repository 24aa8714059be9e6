"""Plain reconstruction: seconds per particle, ours vs relion_reconstruct on the same data (same
run), and simulation throughput.

    python benchmarks/reconstruction_speed.py [--n-particles 2000] [--box 64] [--gpu-id -1]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from dynamight.data.fourier import fsc, resolution_at
from dynamight.data.images import ParticleImages
from dynamight.data.particles import read_particles
from dynamight.data.volumes import read_map
from dynamight.reconstruction.plain import reconstruct_half_maps
from dynamight.runtime import resolve_device
from dynamight.simulate.dataset import simulate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-particles", type=int, default=2000)
    parser.add_argument("--box", type=int, default=64)
    parser.add_argument("--gpu-id", type=int, default=-1)
    args = parser.parse_args()
    device = resolve_device(args.gpu_id)
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        pixel = 128.0 / args.box
        t0 = time.perf_counter()
        simulate(project, n_particles=args.n_particles, box_px=args.box, pixel_size_angstrom=pixel, snr=0.1)
        t_sim = time.perf_counter() - t0
        table = read_particles(project / "particles.star")
        images = ParticleImages(table)
        t0 = time.perf_counter()
        maps = reconstruct_half_maps(table, images, device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t_ours = time.perf_counter() - t0
        print(f"particles {args.n_particles}, box {args.box}, device {device}, torch threads {torch.get_num_threads()}")
        print(f"simulation: {t_sim:.2f} s = {args.n_particles / t_sim:.0f} particles/s")
        print(f"ours (two half-maps + merged map): {t_ours:.2f} s = {1e3 * t_ours / args.n_particles:.3f} ms/particle")
        print(f"peak resident memory of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
        if shutil.which("relion_reconstruct") is None:
            print("relion_reconstruct not installed: no comparison")
            return
        t0 = time.perf_counter()
        subprocess.run(["relion_reconstruct", "--i", "particles.star", "--o", "relion.mrc", "--ctf"], cwd=project,
                       check=True, capture_output=True)
        t_relion = time.perf_counter() - t0
        relion = read_map(project / "relion.mrc").data
        truth = read_map(project / "map.mrc").data
        print(f"relion_reconstruct --ctf (one map, one process): {t_relion:.2f} s = "
              f"{1e3 * t_relion / args.n_particles:.3f} ms/particle")
        print(f"time ratio ours / relion_reconstruct: {t_ours / t_relion:.2f}")
        for name, volume in (("ours", maps.merged.cpu()), ("relion_reconstruct", relion)):
            curve = fsc(volume, truth)
            print(f"{name}: FSC against the true map crosses 0.5 at "
                  f"{resolution_at(curve, args.box, pixel, 0.5):.2f} Å, mean FSC {curve[1:].mean():.3f}")


if __name__ == "__main__":
    main()
