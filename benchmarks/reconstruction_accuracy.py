"""Plain reconstruction: ours against ``relion_reconstruct`` on the same ``relion_project`` particles.

Particles are rendered by real ``relion_project --ctf`` from a map (the simulator's static consensus
map, or ``--map``/``--mask``) at the poses, CTFs and fractional origins of a simulated project,
with white Gaussian noise added at each SNR (variance of the signal over that of the noise,
seeded). Printed: band-mean FSC against the true map from 10 Å to Nyquist for

- ``dynamight reconstruct`` (regularised by RELION's Wiener term; without and with a solvent mask,
  whose corrected FSC then feeds the term) and unregularised (plain weight division),
- ``relion_reconstruct --ctf`` (unregularised) and ``--ctf --fsc`` given our unregularised
  half-map FSC,

and the resolution at FSC 0.143 of ours against ``relion_postprocess`` on our half-maps and mask.

    python benchmarks/reconstruction_accuracy.py [--n-particles 3000] [--box 64] [--pixel 3] [--snr 0.05 0.5]
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path

import mrcfile
import numpy as np
import starfile
import torch

from dynamight.cli import main as dynamight
from dynamight.data.fourier import fsc
from dynamight.data.images import ParticleImages
from dynamight.data.particles import read_particles
from dynamight.data.volumes import read_map
from dynamight.reconstruction.plain import reconstruct_half_maps
from dynamight.reconstruction.report import fsc_table
from dynamight.simulate.dataset import simulate


def relion(args: list[str], cwd: Path) -> None:
    subprocess.run(args, cwd=cwd, check=True, capture_output=True)


def render(work: Path, volume: Path, angles: Path, pixel: float, snr: float, seed: int) -> Path:
    """``relion_project --ctf`` at the poses of ``angles``, then white noise at ``snr``: ``proj.star``."""
    relion(["relion_project", "--i", str(volume), "--o", "proj", "--ang", str(angles), "--ctf",
            "--angpix", str(pixel)], work)
    with mrcfile.open(work / "proj.mrcs", mode="r+") as mrc:
        signal = mrc.data.astype(np.float32)
        rng = np.random.default_rng(seed)
        mrc.data[...] = signal + rng.normal(0, signal.std() / np.sqrt(snr), signal.shape).astype(np.float32)
    return work / "proj.star"


def scores(work: Path, star: Path, truth: torch.Tensor, mask: Path, box: int, pixel: float) -> dict:
    low = int(round(box * pixel / 10))  # the 10 Å shell

    def band(volume: torch.Tensor) -> float:
        return float(fsc(volume, truth)[low:].mean())

    out = {}
    for name, extra in (("ours", []), ("ours, masked FSC", ["--mask-file", str(mask)])):
        assert dynamight(["reconstruct", "--refinement-star-file", str(star), "--output-directory",
                          str(work / name.replace(", ", "_").replace(" ", "_")), "--gpu-id", "-1", *extra]) == 0
        out[name] = band(read_map(work / name.replace(", ", "_").replace(" ", "_") / "map.mrc").data)
    table = read_particles(star)
    plain = reconstruct_half_maps(table, ParticleImages(table), torch.device("cpu"), regularise=False)
    out["ours, unregularised"] = band(plain.merged)
    starfile.write({"fsc": fsc_table({"rlnGoldStandardFsc": fsc(plain.half1, plain.half2)}, box, pixel)},
                   work / "gold.star", overwrite=True)
    relion(["relion_reconstruct", "--i", star.name, "--o", "relion.mrc", "--ctf"], work)
    relion(["relion_reconstruct", "--i", star.name, "--o", "relion_fsc.mrc", "--ctf", "--fsc", "gold.star"], work)
    out["relion_reconstruct"] = band(read_map(work / "relion.mrc").data)
    out["relion_reconstruct --fsc"] = band(read_map(work / "relion_fsc.mrc").data)
    masked = work / "ours_masked_FSC"
    (work / "pp").mkdir(exist_ok=True)
    relion(["relion_postprocess", "--i", str(masked / "half1.mrc"), "--i2", str(masked / "half2.mrc"), "--mask",
            str(mask), "--angpix", str(pixel), "--o", "pp/postprocess"], work)
    out["resolution (ours)"] = float(starfile.read(masked / "fsc.star")["general"]["rlnFinalResolution"])
    out["resolution (relion_postprocess)"] = float(
        starfile.read(work / "pp" / "postprocess.star", always_dict=True)["general"]["rlnFinalResolution"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-particles", type=int, default=3000)
    parser.add_argument("--box", type=int, default=64)
    parser.add_argument("--pixel", type=float, default=3.0)
    parser.add_argument("--snr", type=float, nargs="+", default=[0.05, 0.5])
    parser.add_argument("--map", type=Path, default=None, help="true map (default: the simulator's static map)")
    parser.add_argument("--mask", type=Path, default=None, help="solvent mask for --map")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        simulate(root / "poses", n_particles=args.n_particles, box_px=args.box, pixel_size_angstrom=args.pixel,
                 snr=0.0, motion="none", seed=args.seed)
        volume = args.map or root / "poses" / "map.mrc"
        mask = args.mask or root / "poses" / "mask.mrc"
        truth = read_map(volume).data
        print(f"{args.n_particles} particles, box {args.box}, {args.pixel} Å/px, relion_project --ctf, white noise; "
              f"band-mean FSC against the true map from 10 Å to Nyquist")
        for snr in args.snr:
            work = root / f"snr{snr}"
            work.mkdir()
            star = render(work, volume, root / "poses" / "particles.star", args.pixel, snr, args.seed + 1)
            result = scores(work, star, truth, mask, args.box, args.pixel)
            print(f"SNR {snr}: " + "; ".join(f"{k} {v:.3f}" for k, v in result.items()), flush=True)
            best_relion = max(result["relion_reconstruct"], result["relion_reconstruct --fsc"])
            print(f"SNR {snr}: ours - best relion_reconstruct {result['ours'] - best_relion:+.3f} (unmasked FSC), "
                  f"{result['ours, masked FSC'] - best_relion:+.3f} (masked FSC)", flush=True)


if __name__ == "__main__":
    main()
