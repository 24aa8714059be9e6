"""Deformable backprojection on simulated hinge data against its static twin: band-mean FSC
(10 Å to Nyquist) against the true consensus map inside the moving and the fixed domain, the 0.5
and 0.143 crossings, and seconds per particle (ours plain, ours deformable, relion_reconstruct).

Every map comes regularised (RELION's FSC-based Wiener term; ``relion_reconstruct --fsc`` given our
plain half-map FSC) and unregularised (plain weight division; ``relion_reconstruct`` without
``--fsc``), and each comparison is between maps made the same way.

    python benchmarks/deformable_backprojection.py [--n-particles 4000] [--n-epochs 30]
    python benchmarks/deformable_backprojection.py --from-run DIR   # DIR from deformation_accuracy.py --keep DIR
    python benchmarks/deformable_backprojection.py --project P --twin T --run R   # any simulated project
    python benchmarks/deformable_backprojection.py --speed-only [--gpu-id 0]   # box 64 and 128

Each map is scored merged and per half-set, beside the deformable map made with the simulation's
true deformations (what the backprojection recovers when training is perfect); with the project's solvent mask (``mask.mrc``) the
regularised maps' Wiener term comes from the mask-corrected FSC, as ``dynamight reconstruct
--mask-file`` and ``deformable-backprojection --mask-file`` make it.

The speed part trains a small model briefly on 1,000 simulated particles at box 64 and at box 128
(its accuracy does not matter there), then times the ``deformable-backprojection`` command in a
fresh process (peak memory included) and ``relion_reconstruct --ctf`` on the same particles.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import starfile
import torch

from dynamight.cli import main as dynamight
from dynamight.data.fourier import fsc, resolution_at
from dynamight.data.images import ParticleImages
from dynamight.data.particles import read_particles, search_folders
from dynamight.data.volumes import read_map
from dynamight.reconstruction.deformable_run import deformable_half_maps, read_latents
from dynamight.reconstruction.plain import reconstruct_half_maps
from dynamight.reconstruction.report import fsc_table
from dynamight.training.layout import find_final_checkpoint
from dynamight.training.poses import REFINED_POSES_NAME, with_refined_poses
from dynamight.training.restore import load_forward_models
from dynamight.simulate.dataset import simulate
from dynamight.simulate.motions import apply_parts
from dynamight.simulate.truth import GroundTruth

from scale import UPSTREAM_BACKPROJECTION_S, measure, memory, training_args


def timed(f):
    start = time.perf_counter()
    result = f()
    return result, time.perf_counter() - start


def relion_reconstruct(cwd: Path, output: Path | str, *options: str, star: Path | str = "particles.star") -> float:
    """Run ``relion_reconstruct --i star --ctf`` in ``cwd`` (where ``star``'s image names resolve);
    returns its seconds."""
    _, seconds = timed(lambda: subprocess.run(["relion_reconstruct", "--i", str(star), "--o", str(output),
                                               "--ctf", *options], cwd=cwd, check=True, capture_output=True))
    return seconds


def speed(root: Path, gpu: str, n: int = 1000) -> None:
    """Seconds per particle of the whole deformable-backprojection command at box 64 and 128."""
    for box in (64, 128):
        project, run = root / f"speed{box}", root / f"speed_run{box}"
        simulate(project, n_particles=n, box_px=box, pixel_size_angstrom=128.0 / box, snr=0.1, motion="hinge", seed=0)
        measure(training_args(project, run, gpu, 1, 600, 2))
        t = measure(["deformable-backprojection", str(run), "--gpu-id", gpu])
        line = (f"box {box}, {n} particles: deformable backprojection {t['seconds'] / n:.4f} s/particle "
                f"({UPSTREAM_BACKPROJECTION_S / (t['seconds'] / n):.0f}x upstream's {UPSTREAM_BACKPROJECTION_S} s "
                f"at box 64), {memory(t)}")
        if shutil.which("relion_reconstruct"):
            t_relion = relion_reconstruct(project, "relion.mrc")
            line += f"; relion_reconstruct {t_relion / n:.4f} s/particle, ratio {t['seconds'] / t_relion:.1f}"
        print(line, flush=True)


def band_scores(maps: dict, truth: torch.Tensor, masks: dict, box: int, pixel: float) -> dict:
    """Band-mean FSC (10 Å to Nyquist) against ``truth`` inside each domain's mask, printed with crossings."""
    low = int(round(box * pixel / 10))  # shell of 10 Å
    band = {}
    for name, volume in maps.items():
        for domain, mask in masks.items():
            curve = fsc(volume, truth, mask)
            band[name, domain] = float(curve[low:].mean())
            print(f"{name:44s} {domain:6s}: band mean {band[name, domain]:.3f}, FSC 0.5 at "
                  f"{resolution_at(curve, box, pixel, 0.5):.2f} Å, 0.143 at {resolution_at(curve, box, pixel, 0.143):.2f} Å")
    return band


def gap_report(band: dict, parts: tuple[str, ...]) -> None:
    """For each part (merged map, half 1, half 2): the share of the moving domain's gap between each
    plain map and the static twin that the deformable map closes, and the fixed domain's change."""
    comparisons = [("plain (ours)", "deformable", "static twin (ours)"),
                   ("plain (ours)", "deformable (true deformations)", "static twin (ours)"),
                   ("plain (ours, unregularised)", "deformable (unregularised)", "static twin (ours, unregularised)"),
                   ("plain (relion_reconstruct --fsc)", "deformable", "static twin (ours)"),
                   ("plain (relion_reconstruct, unregularised)", "deformable (unregularised)",
                    "static twin (ours, unregularised)")]
    for part in parts:
        for plain_name, deformable_name, twin_name in comparisons:
            if part and "relion" in plain_name:
                continue  # relion_reconstruct's maps are merged maps only
            names = [f"{n}{part}" for n in (plain_name, deformable_name, twin_name)]
            if any((n, "moving") not in band for n in names):
                continue
            plain_, deformable_, twin_ = names
            gap = band[twin_, "moving"] - band[plain_, "moving"]
            closed = band[deformable_, "moving"] - band[plain_, "moving"]
            print(f"moving domain: {deformable_} closes {100 * closed / gap:.0f}% of the gap between {plain_} and "
                  f"{twin_} (need >= 75%); fixed domain change {band[deformable_, 'fixed'] - band[plain_, 'fixed']:+.3f} "
                  f"(need >= 0)")


class TrueDeformations:
    """The simulation's own motion as a deformation model (codes = the true factors): the
    deformable backprojection's upper bound, free of what training gets wrong."""

    rigid = False

    def __init__(self, project: Path):
        self.truth = GroundTruth.read(project)
        self.positions, self.movable = self.truth.atoms, self.truth.moving.float()
        self.codes = self.truth.factors[self.truth.factor_names].to_numpy(np.float32)

    def displacements(self, z: torch.Tensor) -> torch.Tensor:
        factors = {name: z[:, i] for i, name in enumerate(self.truth.factor_names)}
        return apply_parts(self.truth.atoms, self.truth.domain, self.truth.parts, factors) - self.truth.atoms[None]


def maps_of(half_maps, name: str) -> dict:
    """``{name: merged, name + ' half 1': ..., name + ' half 2': ...}`` of a :class:`HalfMaps`."""
    return {name: half_maps.merged, f"{name} half 1": half_maps.half1, f"{name} half 2": half_maps.half2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-particles", type=int, default=4000)
    parser.add_argument("--n-epochs", type=int, default=30)
    parser.add_argument("--n-gaussians", type=int, default=1000)
    parser.add_argument("--keep", type=Path, default=None)
    parser.add_argument("--from-run", type=Path, default=None,
                        help="use the project and trained run that deformation_accuracy.py --keep left here")
    parser.add_argument("--project", type=Path, default=None, help="with --run and --twin: any simulated project")
    parser.add_argument("--twin", type=Path, default=None, help="the static twin of --project")
    parser.add_argument("--run", type=Path, default=None, help="optimize-deformations output of --project")
    parser.add_argument("--speed-only", action="store_true", help="only the seconds per particle at box 64 and 128")
    parser.add_argument("--gpu-id", default="-1", help="device of the speed part (default: the CPU)")
    args = parser.parse_args()
    if args.speed_only:
        with tempfile.TemporaryDirectory() as tmp:
            speed(Path(tmp), args.gpu_id)
        return
    with tempfile.TemporaryDirectory() as tmp:
        if args.project:
            moving, twin, run = args.project, args.twin, args.run
        else:
            root = args.from_run or args.keep or Path(tmp)
            moving, twin, run = (root / "project", root / "twin", root / "run") if args.from_run else \
                (root / "moving", root / "twin", root / "run")
            n_particles = len(read_particles(moving / "particles.star")) if args.from_run else args.n_particles
            for path, motion in ((moving, "hinge"), (twin, "none"))[1 if args.from_run else 0:]:
                simulate(path, n_particles=n_particles, box_px=64, pixel_size_angstrom=2.0, snr=0.1,
                         motion=motion, seed=1)
            if not args.from_run:
                assert dynamight(["optimize-deformations", "--refinement-star-file", str(moving / "particles.star"),
                                  "--output-directory", str(run), "--initial-model", str(moving / "map.mrc"),
                                  "--n-gaussians", str(args.n_gaussians), "--n-latent-dimensions", "2",
                                  "--n-epochs", str(args.n_epochs), "--batch-size", "64", "--gpu-id", "-1"]) == 0
        compare(moving, twin, run, Path(tmp))


def compare(moving: Path, twin: Path, run: Path, tmp: Path, particles: Path | None = None) -> None:
    """Every map of ``moving``'s particles (plain, deformable from ``run``, RELION's) and of the
    static ``twin`` (at its true poses), regularised and not, scored inside the moving and the fixed
    domain against the true map. ``particles``: the STAR the plain maps reconstruct from, the one
    ``run`` trained on (default: ``moving/particles.star``, the true poses; e.g. RELION's
    ``run_data.star``)."""
    cpu = torch.device("cpu")
    star = Path(particles or moving / "particles.star").resolve()
    table = read_particles(star)
    # where the STAR's image names resolve, for relion_reconstruct
    images_root = next(f for f in search_folders(star) if (f / table.stack_names[0]).exists())
    group = table.optics_groups[0]
    box, pixel, n = group.box_px, group.pixel_size_angstrom, len(table)
    mask_file = moving / "mask.mrc"
    mask = read_map(mask_file).data
    assert dynamight(["optimize-inverse-deformations", str(run), "--n-epochs", "30", "--gpu-id", "-1"]) == 0
    _, t_deformable = timed(lambda: dynamight(["deformable-backprojection", str(run), "--gpu-id", "-1",
                                               "--mask-file", str(mask_file)]))
    out = run / "backprojection"
    maps = {"deformable": read_map(out / "map.mrc").data, "deformable half 1": read_map(out / "map_half1.mrc").data,
            "deformable half 2": read_map(out / "map_half2.mrc").data}
    plain, t_plain = timed(lambda: reconstruct_half_maps(table, ParticleImages(table), cpu, mask=mask))
    twin_table = read_particles(twin / "particles.star")
    maps |= maps_of(plain, "plain (ours)")
    maps |= maps_of(reconstruct_half_maps(twin_table, ParticleImages(twin_table), cpu, mask=mask), "static twin (ours)")
    # unregularised (plain weight division), to compare with relion_reconstruct, which has no Wiener term
    unregularised = reconstruct_half_maps(table, ParticleImages(table), cpu, regularise=False)
    maps |= maps_of(unregularised, "plain (ours, unregularised)")
    models, _ = load_forward_models(find_final_checkpoint(run), box, pixel, cpu)
    latents = read_latents(run / "forward_deformations" / "latents.star", table)
    refined = with_refined_poses(table, run / "forward_deformations" / REFINED_POSES_NAME)  # --refine-poses
    maps |= maps_of(deformable_half_maps(refined, ParticleImages(refined), models, latents, cpu, 64, 2, tmp,
                                         regularise=False), "deformable (unregularised)")
    maps |= maps_of(reconstruct_half_maps(twin_table, ParticleImages(twin_table), cpu, regularise=False),
                    "static twin (ours, unregularised)")
    true = TrueDeformations(moving)
    if true.truth.parts:
        maps |= maps_of(deformable_half_maps(table, ParticleImages(table), {1: true, 2: true}, true.codes, cpu, 64, 2,
                                             tmp / "true", mask=mask), "deformable (true deformations)")
    t_relion = None
    if shutil.which("relion_reconstruct"):
        t_relion = relion_reconstruct(images_root, tmp / "relion.mrc", star=star)
        maps["plain (relion_reconstruct, unregularised)"] = read_map(tmp / "relion.mrc").data
        fsc_star = tmp / "fsc.star"
        # the table relion_reconstruct --fsc reads: rlnSpectralIndex, rlnGoldStandardFsc
        starfile.write({"fsc": fsc_table({"rlnGoldStandardFsc": fsc(unregularised.half1, unregularised.half2)},
                                         box, pixel)}, fsc_star, overwrite=True)
        relion_reconstruct(images_root, tmp / "relion_fsc.mrc", "--fsc", str(fsc_star), star=star)
        maps["plain (relion_reconstruct --fsc)"] = read_map(tmp / "relion_fsc.mrc").data
    truth = read_map(moving / "map.mrc").data
    masks = {name: read_map(moving / "masks" / f"{name}_domain.mrc").data for name in ("moving", "fixed")}
    band = band_scores(maps, truth, masks, box, pixel)
    gap_report(band, ("", " half 1", " half 2"))
    print(f"peak RSS of this process (every map above): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    print(f"seconds per particle: deformable (whole command) {t_deformable / n:.4f}, plain (ours) {t_plain / n:.4f}"
          + (f", relion_reconstruct {t_relion / n:.4f}; deformable / relion_reconstruct {t_deformable / t_relion:.1f}"
             if t_relion else ""))


if __name__ == "__main__":
    main()
