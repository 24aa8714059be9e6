"""DynaMight the way a user runs it: on the poses of a real RELION 3D auto-refinement, not the
simulation's true poses.

The chain (each step a function here, shared by ``tests/test_relion_refine_pipeline.py``):

1. :func:`normalise_particles`: the simulated stacks normalised as RELION's extraction does
   (``relion_preprocess --norm``: per image, the pixels outside ``bg_radius`` get mean 0 and standard
   deviation 1), written under the work directory with the SAME relative image names (so every
   join on ``rlnImageName`` with ``ground_truth.star`` still holds). RELION's refinement needs
   this: on the raw simulated scale (noise sigma ~8) it assigns all particles to a few views.
2. :func:`refine`: the starting map is ``relion_reconstruct --ctf`` of the normalised particles at
   their true poses, low-passed by ``relion_image_handler --lowpass`` (a low-resolution map in the
   true frame, as a user has from an initial model); the particle STAR goes to RELION without
   poses and without ``rlnRandomSubset`` (RELION draws its own halves), and
   ``mpirun relion_refine_mpi --auto_refine --split_random_halves`` refines it from a global search.
3. :func:`pose_errors`: RELION's poses against the truth (geodesic angle, viewing direction,
   origin in Å), plus the best constant rotation between the two frames.
4. :func:`run_dynamight`: ``optimize-deformations`` on ``run_data.star`` with ``run_class001.mrc``,
   ``optimize-inverse-deformations``, ``deformable-backprojection``.
5. :func:`postprocess`: ``relion_postprocess`` of the deformable half maps with a mask.

``main()`` runs it on a real structure (defaults: 3hsy, chain B hinging by up to 20°, 4000
particles, box 64, 3 Å/px, SNR 0.1) and prints the pose errors, the latent accuracy per half
(``factor_accuracy``, all and held-out particles) and RELION's resolution of the deformable map;
``--compare`` adds ``deformable_backprojection.compare``'s map scores: plain maps (ours and
``relion_reconstruct``) from RELION's poses, the deformable map, and the static twin at its TRUE poses
(a stricter reference than a twin refined by RELION); ``--refine-poses`` trains with it and scores
the refined poses against the truth.

RELION 3.1's auto-refinement failed here with ``--pad 1 --dont_combine_weights_via_disc``: on 300
particles of 3hsy (box 32, 4 Å/px, SNR 1, 2 CPU cores) every maximum-likelihood iteration assigned
random poses (median error ~130°). The same command without those two options (RELION's default
padding, 2) converges to a median of 5.9° (8.5 Å), and RELION 5 with them to 17.9°; RELION 3.1's
``--K 1`` classification with or without MPI works as well. So :func:`refine` uses RELION's
defaults there. ``main()`` runs RELION 5 where ``../shared/relion5/bin`` exists (``--relion-bin``),
else the RELION on the PATH.

Measured (defaults, seed 0, RELION 5, 2 CPU cores): RELION's auto-refine converged in 14 iterations
(~98 min under load), poses median 6.09° (90th percentile 12.5°), origins 1.13 Å; DynaMight on them
|Spearman| 0.945 / 0.930 per half (held out 0.945 / 0.931) in 34 min; ``relion_postprocess`` of the
deformable half maps 6.19 Å (RELION's own half maps 6.00 Å).

    python benchmarks/relion_pipeline.py [--n-particles 4000] [--mpi-ranks 3] [--keep DIR] [--compare]
        [--refine-poses] [--relion-bin DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import starfile
import torch

from dynamight.cli import main as dynamight
from dynamight.data.geometry import euler_angles_to_matrix
from dynamight.simulate.factors import _image_key

POSE_COLUMNS = ["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi", "rlnOriginXAngst", "rlnOriginYAngst"]
RELION5_BIN = Path(__file__).resolve().parents[2] / "shared" / "relion5" / "bin"
RELION_PROGRAMS = ("mpirun", "relion_refine_mpi", "relion_reconstruct", "relion_image_handler", "relion_postprocess")


def missing_programs() -> list[str]:
    """The RELION programs (and ``mpirun``) of this chain that are not on the PATH."""
    return [p for p in RELION_PROGRAMS if shutil.which(p) is None]


def run_command(args: list[str], cwd: Path, log: Path, timeout_s: float | None = None) -> None:
    """Run ``args`` in ``cwd`` with stdout and stderr to ``log``; on a timeout the whole process
    group (``mpirun`` and its ranks) is terminated, then killed. Raises ``CalledProcessError`` /
    ``TimeoutExpired``."""
    with open(log, "ab") as out:
        process = subprocess.Popen(args, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            raise
    if rc != 0:
        raise subprocess.CalledProcessError(rc, args, output=log.read_text(errors="replace")[-3000:])


def _optics(star: dict) -> tuple[int, float]:
    """Box (px) and pixel size (Å) of the first optics group."""
    optics = star["optics"].iloc[0]
    return int(optics["rlnImageSize"]), float(optics["rlnImagePixelSize"])


def normalise_particles(project: Path, workdir: Path, bg_radius_px: float | None = None) -> Path:
    """The project's particles normalised like ``relion_preprocess --norm``, under ``workdir``.

    Every stack ``S`` named in ``project/particles.star`` is written to ``workdir/S`` with each
    image ``(d, d)`` replaced by ``(image - mean) / std`` of its pixels farther than ``bg_radius_px``
    (default: ``0.75 * d / 2``, RELION's default ``bg_radius``) from the box centre ``d // 2``.
    Returns ``workdir/particles.star``: the project's table (true poses kept) with the same image
    names, now relative to ``workdir``.
    """
    project, workdir = Path(project), Path(workdir)
    star = starfile.read(project / "particles.star", always_dict=True)
    box, _ = _optics(star)
    radius = 0.75 * box / 2 if bg_radius_px is None else bg_radius_px
    y, x = np.mgrid[:box, :box] - box // 2
    background = np.hypot(x, y) > radius
    stacks = star["particles"]["rlnImageName"].str.partition("@")[2].unique()
    for stack in stacks:
        data = mrcfile.read(project / stack).astype(np.float32)
        pixels = data[:, background]
        data = (data - pixels.mean(1)[:, None, None]) / pixels.std(1)[:, None, None]
        (workdir / stack).parent.mkdir(parents=True, exist_ok=True)
        with mrcfile.new(workdir / stack, overwrite=True) as out:
            out.set_data(data)
            out.voxel_size = mrcfile.open(project / stack, header_only=True).voxel_size
    starfile.write(star, workdir / "particles.star", overwrite=True)
    return workdir / "particles.star"


def starting_map(workdir: Path, lowpass_angstrom: float, timeout_s: float | None = None) -> Path:
    """``workdir/start.mrc``: ``relion_reconstruct --ctf`` of ``workdir/particles.star`` (true
    poses) low-passed to ``lowpass_angstrom``."""
    log = workdir / "start.log"
    run_command(["relion_reconstruct", "--i", "particles.star", "--o", "consensus_true_poses.mrc", "--ctf"],
                workdir, log, timeout_s)
    run_command(["relion_image_handler", "--i", "consensus_true_poses.mrc", "--o", "start.mrc", "--lowpass",
                 str(lowpass_angstrom)], workdir, log, timeout_s)
    return workdir / "start.mrc"


def refine(project: Path, workdir: Path, mpi_ranks: int = 3, n_threads: int = 1, lowpass_angstrom: float = 20.0,
           particle_diameter_angstrom: float | None = None, healpix_order: int = 2, auto_local_healpix_order: int = 3,
           offset_range_px: float = 2.0, offset_step_px: float = 1.0, pad: int = 2,
           timeout_s: float | None = None) -> tuple[Path, Path]:
    """A RELION 3D auto-refinement of the simulated ``project`` from scratch poses.

    Normalises the particles (:func:`normalise_particles`), makes the starting map
    (:func:`starting_map`), strips the poses and ``rlnRandomSubset`` and runs
    ``mpirun -n mpi_ranks relion_refine_mpi --auto_refine --split_random_halves`` (``mpi_ranks``
    >= 3: a leader and one follower per half) in ``workdir`` with output ``Refine/run``. The
    offsets are in pixels (RELION 3.1's units); ``particle_diameter_angstrom`` defaults to 90% of
    the box. ``--firstiter_cc``: the starting map is not on RELION's absolute grey scale (without it
    the first, maximum-likelihood iteration assigns random poses to these particles). Log: ``workdir/refine.log``.

    Returns ``run_data.star`` (RELION's poses, origins and its own ``rlnRandomSubset``) and
    ``run_class001.mrc`` (the consensus map). Raises ``CalledProcessError`` if RELION fails.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    particles = normalise_particles(project, workdir)
    start = starting_map(workdir, lowpass_angstrom, timeout_s)
    star = starfile.read(particles, always_dict=True)
    box, pixel = _optics(star)
    star["particles"] = star["particles"].drop(columns=[c for c in [*POSE_COLUMNS, "rlnRandomSubset"]
                                                        if c in star["particles"]])
    starfile.write(star, workdir / "refine_input.star", overwrite=True)
    (workdir / "Refine").mkdir(exist_ok=True)
    diameter = 0.9 * box * pixel if particle_diameter_angstrom is None else particle_diameter_angstrom
    mpi = ["mpirun", "-n", str(mpi_ranks), "--oversubscribe"] + (["--allow-run-as-root"] if os.geteuid() == 0 else [])
    run_command([*mpi, "relion_refine_mpi", "--auto_refine", "--split_random_halves", "--i", "refine_input.star",
                 "--ref", start.name, "--ini_high", str(lowpass_angstrom), "--particle_diameter", f"{diameter:.1f}",
                 "--firstiter_cc", "--ctf", "--sym", "C1", "--healpix_order", str(healpix_order),
                 "--auto_local_healpix_order", str(auto_local_healpix_order), "--offset_range", str(offset_range_px),
                 "--offset_step", str(offset_step_px), "--pad", str(pad), "--low_resol_join_halves", "40",
                 "--j", str(n_threads), "--o", "Refine/run", "--verb", "0"],
                workdir, workdir / "refine.log", timeout_s)
    return workdir / "Refine" / "run_data.star", workdir / "Refine" / "run_class001.mrc"


def _rotation_angle_deg(r: torch.Tensor) -> torch.Tensor:
    """``(..., 3, 3)`` rotations -> ``(...,)`` their rotation angles, degrees."""
    trace = r.diagonal(dim1=-2, dim2=-1).sum(-1)
    return torch.rad2deg(torch.arccos(((trace - 1) / 2).clamp(-1, 1)))


def pose_errors(project: Path, data_star: Path) -> dict[str, float]:
    """RELION's poses in ``data_star`` against the simulation's true ones, joined on image name.

    Returns (angles in degrees, origins in Å): ``n``; ``angle_median``, ``angle_p90`` (geodesic
    distance between RELION's and the true rotation ``A``, map -> image); ``view_median`` (angle
    between the viewing directions, ``A``'s third row); ``origin_median``, ``origin_p90`` (length of
    the 2D origin difference); ``frame_rotation`` (angle of the best constant rotation ``G`` with
    ``A_relion ~ A_true G``: a rotated reference frame) and ``angle_median_in_frame`` (the median
    error after removing it); ``frame_shift`` (length of the best 3D shift ``t`` of the frame, from
    ``origin_relion - origin_true ~ (A_relion t)_xy``) and ``origin_median_in_frame``.
    """
    truth = starfile.read(Path(project) / "particles.star", always_dict=True)["particles"].copy()
    found = starfile.read(data_star, always_dict=True)["particles"].copy()
    truth["key"], found["key"] = _image_key(truth["rlnImageName"]), _image_key(found["rlnImageName"])
    table = found.merge(truth, on="key", suffixes=("", "_true"), validate="one_to_one")
    angles = ["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]
    a = euler_angles_to_matrix(torch.tensor(table[angles].to_numpy(np.float64)))
    b = euler_angles_to_matrix(torch.tensor(table[[f"{c}_true" for c in angles]].to_numpy(np.float64)))
    geodesic = _rotation_angle_deg(a @ b.transpose(-1, -2)).numpy()
    view = torch.rad2deg(torch.arccos((a[:, 2] * b[:, 2]).sum(-1).clamp(-1, 1))).numpy()
    # the constant G closest (Frobenius) to the mean of A_true^T A_relion, projected onto SO(3)
    u, _, vt = torch.linalg.svd((b.transpose(-1, -2) @ a).mean(0))
    g = u @ torch.diag(torch.tensor([1.0, 1.0, torch.linalg.det(u @ vt).sign().item()], dtype=u.dtype)) @ vt
    in_frame = _rotation_angle_deg(a @ (b @ g).transpose(-1, -2)).numpy()
    origins = ["rlnOriginXAngst", "rlnOriginYAngst"]
    delta = table[origins].to_numpy(np.float64) - table[[f"{c}_true" for c in origins]].to_numpy(np.float64)
    design = a[:, :2].reshape(-1, 3).numpy()
    shift, *_ = np.linalg.lstsq(design, delta.reshape(-1), rcond=None)
    residual = delta - (design @ shift).reshape(-1, 2)
    origin = np.linalg.norm(delta, axis=1)
    return {"n": len(table), "angle_median": float(np.median(geodesic)), "angle_p90": float(np.percentile(geodesic, 90)),
            "view_median": float(np.median(view)), "origin_median": float(np.median(origin)),
            "origin_p90": float(np.percentile(origin, 90)), "frame_rotation": float(_rotation_angle_deg(g)),
            "angle_median_in_frame": float(np.median(in_frame)), "frame_shift": float(np.linalg.norm(shift)),
            "origin_median_in_frame": float(np.median(np.linalg.norm(residual, axis=1)))}


def format_pose_errors(errors: dict[str, float]) -> str:
    """One line for benchmarks and test logs."""
    e = errors
    return (f"RELION poses vs truth ({e['n']} particles): angle median {e['angle_median']:.2f}° "
            f"(90th percentile {e['angle_p90']:.2f}°), viewing direction median {e['view_median']:.2f}°, "
            f"origin median {e['origin_median']:.2f} Å (90th percentile {e['origin_p90']:.2f} Å); "
            f"best constant frame rotation {e['frame_rotation']:.2f}° (angle median after it "
            f"{e['angle_median_in_frame']:.2f}°), frame shift {e['frame_shift']:.2f} Å (origin median after it "
            f"{e['origin_median_in_frame']:.2f} Å)")


def run_dynamight(data_star: Path, consensus: Path, run: Path, options: list[str], inverse_epochs: int = 30,
                  n_threads: int = 1, mask: Path | None = None) -> Path:
    """``optimize-deformations`` (with ``options``), ``optimize-inverse-deformations`` and
    ``deformable-backprojection`` on the CPU; asserts each returns 0. Returns
    ``run/backprojection`` (``map_half1.mrc``, ``map_half2.mrc``, ``map.mrc``)."""
    common = ["--gpu-id", "-1", "--n-threads", str(n_threads)]
    steps = [["optimize-deformations", "--refinement-star-file", str(data_star), "--output-directory", str(run),
              "--initial-model", str(consensus), *options, *common],
             ["optimize-inverse-deformations", str(run), "--n-epochs", str(inverse_epochs), *common],
             ["deformable-backprojection", str(run), *common, *(["--mask-file", str(mask)] if mask else [])]]
    for step in steps:
        rc = dynamight(step)
        assert rc == 0, f"dynamight {step[0]} returned {rc}"
    return Path(run) / "backprojection"


def postprocess(half1: Path, half2: Path, mask: Path, pixel_size_angstrom: float, output: Path,
                timeout_s: float | None = None) -> float:
    """``relion_postprocess`` of two half maps with ``mask``; returns its ``rlnFinalResolution`` (Å)
    read from ``output_data``'s ``postprocess.star`` (``output`` is RELION's ``--o`` prefix)."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    run_command(["relion_postprocess", "--i", str(Path(half1).resolve()), "--i2", str(Path(half2).resolve()),
                 "--mask", str(Path(mask).resolve()), "--angpix", str(pixel_size_angstrom),
                 # RELION writes logfile.pdf into the folder of --o: it needs one
                 "--o", f"{output.parent.name}/{output.name}"], output.parent.parent,
                output.parent / "postprocess.log", timeout_s)
    general = starfile.read(output.parent / f"{output.name}.star", always_dict=True)["general"]
    value = general["rlnFinalResolution"]
    return float(value.iloc[0] if isinstance(value, pd.Series) else value)


def main() -> None:
    from real_structure import add_dataset_arguments, simulate_pair

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_dataset_arguments(parser)
    parser.add_argument("--mpi-ranks", type=int, default=3)
    parser.add_argument("--n-threads", type=int, default=1, help="threads per RELION rank and for DynaMight")
    parser.add_argument("--lowpass", type=float, default=20.0, help="starting map's low-pass and --ini_high, Å")
    parser.add_argument("--keep", type=Path, default=None, help="keep (and reuse) the project, refinement and run here")
    parser.add_argument("--compare", action="store_true", help="also deformable_backprojection.compare (a static twin)")
    parser.add_argument("--refine-poses", action="store_true", help="train with --refine-poses (run folder "
                                                                     "run_refine_poses) and score the refined poses")
    parser.add_argument("--relion-bin", type=Path, default=RELION5_BIN if RELION5_BIN.is_dir() else None,
                        help="folder whose RELION programs run first (default: ../shared/relion5/bin where present)")
    args = parser.parse_args()
    if args.relion_bin is not None:
        os.environ["PATH"] = f"{args.relion_bin.resolve()}{os.pathsep}{os.environ['PATH']}"
    print(f"RELION: {shutil.which('relion_refine_mpi')}", flush=True)
    if missing_programs():
        raise SystemExit(f"missing: {', '.join(missing_programs())}")
    from dynamight.simulate.factors import factor_accuracy, format_factor_accuracy

    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        workdir, run = root / "relion", root / ("run_refine_poses" if args.refine_poses else "run")
        project, _ = simulate_pair(root, args, twin=args.compare)
        t0 = time.perf_counter()
        data_star, consensus = workdir / "Refine" / "run_data.star", workdir / "Refine" / "run_class001.mrc"
        if not data_star.is_file():
            data_star, consensus = refine(project, workdir, args.mpi_ranks, args.n_threads, args.lowpass)
        print(f"RELION auto-refine: {time.perf_counter() - t0:.0f} s", flush=True)
        print(format_pose_errors(pose_errors(project, data_star)), flush=True)
        t0 = time.perf_counter()
        out = run_dynamight(data_star, consensus, run, ["--n-gaussians", str(args.n_gaussians), "--n-epochs",
                                                        str(args.n_epochs), "--seed", str(args.seed),
                                                        *(["--refine-poses"] if args.refine_poses else [])],
                            n_threads=args.n_threads, mask=project / "mask.mrc")
        print(f"DynaMight (three steps): {time.perf_counter() - t0:.0f} s", flush=True)
        print(format_factor_accuracy(factor_accuracy(project, run)), flush=True)
        if args.refine_poses:
            refined = run / "forward_deformations" / "refined_poses.star"
            print("after --refine-poses: " + format_pose_errors(pose_errors(project, refined)), flush=True)
        resolution = postprocess(out / "map_half1.mrc", out / "map_half2.mrc", project / "mask.mrc", args.pixel,
                                 root / "PostProcess" / "postprocess")
        print(f"relion_postprocess of the deformable half maps: {resolution:.2f} Å", flush=True)
        if args.compare:
            from deformable_backprojection import compare
            compare(project, root / "twin", run, Path(tmp), particles=data_star)


if __name__ == "__main__":
    main()
