"""DynaMight side by side with cryoDRGN (``train_vae``) on the same simulated particles: wall time and
how well each latent space finds the true motion factor(s).

cryoDRGN 4.3 is installed from PyPI into its own virtualenv (never a dependency of this project):
``--venv``, by default ``~/.cache/dynamight-peers/cryodrgn-4.3``, made with ``python3 -m venv``,
then ``pip install torch==2.13.0`` (the CPU build) first and ``cryodrgn==4.3.*``; an existing one is
reused. The particles are converted with cryoDRGN's own ``parse_pose_star`` and ``parse_ctf_star``
(``-D`` box, ``--Apix`` from the optics table) and ``train_vae`` reads the particle stack through the
same ``particles.star`` (``--datadir`` the project), with its default architecture, ``--zdim`` equal
to our latent dimension and ``--no-analysis`` (the timed run is training and its codes only).

Dataset by default as ``real_structure.py`` (3hsy, chain B swings up to 20 degrees, 4,000
particles, box 64, 3 A/px, SNR 0.1; its ``simulate_pair`` and ``consensus_map``), ours:
``optimize-deformations`` with its defaults plus ``--n-gaussians 1500 --n-epochs 50``. ``--project``
and ``--ours-run`` reuse an existing simulated project and run of ours (the wall time of a reused
run is read from its files: ``config.json``'s start time to ``latents.star``'s modification time).

Accuracy (``dynamight.simulate.factors.accuracy_by_half``): the best linear direction of the codes,
|Spearman| against each true factor of ``ground_truth.star``, per half-set (``rlnRandomSubset``;
ours learns one latent space per half) and, for cryoDRGN's single latent space, on all particles;
held out: the direction fitted on the half's training particles, scored on our held-out ones
(``rlnDynaMightIsValidation``: codes from our encoder; cryoDRGN trained on every image, so there it
measures only how well the direction carries over).

    python benchmarks/peers.py [--project DIR] [--ours-run DIR] [--keep DIR] [--venv DIR]
        [--cryodrgn-epochs 25] [--match-time] [--n-particles 4000 --box 64 --pixel 3] [--n-epochs 50]
        [--threads N]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import starfile

from dynamight.cli import main as dynamight
from dynamight.simulate.factors import _image_key, accuracy_by_half, factor_accuracy, true_factors

from real_structure import add_dataset_arguments, consensus_map, simulate_pair

CRYODRGN = "cryodrgn==4.3.*"
TORCH = "torch==2.13.0"


def ensure_cryodrgn(venv: Path) -> tuple[Path, str]:
    """cryoDRGN's executable in its own virtualenv (made and installed when missing) and its
    versions (``cryodrgn X, torch Y``)."""
    exe = venv / "bin" / "cryodrgn"
    if not exe.is_file():
        print(f"installing {CRYODRGN} into {venv} (its own virtualenv)", flush=True)
        subprocess.run([shutil.which("python3") or sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
        for spec in (TORCH, CRYODRGN):
            done = subprocess.run([*pip, spec], capture_output=True, text=True)
            if done.returncode != 0:
                hint = f" (does cryoDRGN pin a torch that {TORCH}, the CPU build, does not satisfy?)" \
                    if spec == CRYODRGN else ""
                raise SystemExit(f"pip install {spec} into {venv} failed{hint}:\n{done.stderr[-3000:]}")
    probe = "import torch, cryodrgn; print(cryodrgn.__version__, torch.__version__, torch.version.cuda)"
    version, torch_version, cuda = subprocess.run([str(venv / "bin" / "python"), "-c", probe], check=True,
                                                  capture_output=True, text=True).stdout.split()
    if cuda != "None":
        print(f"warning: {venv} has a CUDA build of torch ({torch_version})", flush=True)
    return exe, f"cryodrgn {version}, torch {torch_version}"


def optics(star: Path) -> tuple[int, float]:
    """Box (px) and pixel size (A) of the first optics group."""
    group = starfile.read(star, always_dict=True)["optics"].iloc[0]
    return int(group["rlnImageSize"]), float(group["rlnImagePixelSize"])


def run_cryodrgn(exe: Path, project: Path, out: Path, zdim: int, epochs: int, seed: int, threads: int,
                 time_limit: float | None = None) -> tuple[np.ndarray, float, int]:
    """Parse poses and CTF, train ``train_vae``: ``(n, zdim)`` codes (the means, in the order of
    ``particles.star``), the training's wall time (s) and its epochs. With ``time_limit`` (s), training
    stops once it has run that long and has finished an epoch; the codes are then the last finished
    epoch's (``z.E.pkl``, which cryoDRGN writes after every epoch) and the time is up to that file."""
    star = project / "particles.star"
    box, pixel = optics(star)
    env = dict(os.environ)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    out.mkdir(parents=True, exist_ok=True)

    def cryodrgn(*argv: str, stop=lambda: False) -> bool:
        """Runs one command; True when ``stop()`` ended it early."""
        with open(out / "cryodrgn.log", "a") as log:
            log.write(" ".join(["cryodrgn", *argv]) + "\n")
            log.flush()
            process = subprocess.Popen([str(exe), *argv], stdout=log, stderr=subprocess.STDOUT, env=env)
            while process.poll() is None:
                if stop():
                    process.terminate()
                    process.wait()
                    return True
                time.sleep(1.0)
        if process.returncode != 0:
            raise SystemExit(f"cryodrgn {argv[0]} failed; see {out / 'cryodrgn.log'}")
        return False

    cryodrgn("parse_pose_star", str(star), "-D", str(box), "--Apix", str(pixel), "-o", str(out / "pose.pkl"))
    blocks = starfile.read(star, always_dict=True)
    # without rlnPhaseShift, parse_ctf_star writes NaN phase shifts (and train_vae stops at once: "KLD is nan")
    phase = [] if any("rlnPhaseShift" in b for b in blocks.values()) else ["--ps", "0"]
    cryodrgn("parse_ctf_star", str(star), "-D", str(box), "--Apix", str(pixel), *phase, "-o", str(out / "ctf.pkl"))
    train = out / "train_vae"
    if train.exists():
        shutil.rmtree(train)

    def complete(f: Path) -> bool:
        """A ``z.E.pkl`` fully written: the means, then the log-variances."""
        try:
            with open(f, "rb") as stream:
                pickle.load(stream), pickle.load(stream)
            return True
        except (OSError, EOFError, pickle.UnpicklingError):
            return False

    def finished() -> list[int]:
        return sorted(int(f.name.split(".")[1]) for f in train.glob("z.*.pkl")
                      if f.name.split(".")[1].isdigit() and complete(f))

    start, wall = time.perf_counter(), time.time()
    stopped = cryodrgn("train_vae", str(star), "--datadir", str(project), "--poses", str(out / "pose.pkl"),
                       "--ctf", str(out / "ctf.pkl"), "--zdim", str(zdim), "-n", str(epochs), "--seed", str(seed),
                       "--no-analysis", "-o", str(train),
                       stop=lambda: time_limit is not None and time.perf_counter() - start > time_limit
                       and len(finished()) > 0)
    seconds = time.perf_counter() - start
    codes = train / "z.pkl"
    if stopped:
        epochs = finished()[-1]
        codes = train / f"z.{epochs}.pkl"
        seconds = codes.stat().st_mtime - wall
    with open(codes, "rb") as f:
        z_mu = pickle.load(f)  # the file holds the means, then the log-variances
    return np.asarray(z_mu, dtype=np.float64), seconds, epochs


def run_ours(project: Path, run: Path, args) -> float | None:
    """Trains ours unless ``run`` has its latents; the wall time, s (from the files for a reused run,
    None when they do not tell)."""
    latents = run / "forward_deformations" / "latents.star"
    if not latents.is_file():
        consensus = consensus_map(project)
        start = time.perf_counter()
        argv = ["optimize-deformations", "--refinement-star-file", str(project / "particles.star"),
                "--output-directory", str(run), "--initial-model", str(consensus),
                "--n-gaussians", str(args.n_gaussians), "--n-epochs", str(args.n_epochs), "--seed", str(args.seed)]
        if args.threads:
            argv += ["--n-threads", str(args.threads)]
        assert dynamight(argv) == 0
        return time.perf_counter() - start
    try:
        started = datetime.datetime.fromisoformat(json.loads((run / "config.json").read_text())["time"])
        return latents.stat().st_mtime - started.timestamp()
    except (OSError, KeyError, ValueError):
        return None


def cryodrgn_accuracy(project: Path, latents_star: Path, z: np.ndarray) -> tuple[dict, dict]:
    """cryoDRGN's codes against the true factors: per our half-sets (held out: our validation
    particles) and on all particles."""
    particles = starfile.read(project / "particles.star", always_dict=True)["particles"]
    if len(particles) != len(z):
        raise SystemExit(f"cryoDRGN gave {len(z)} codes for {len(particles)} particles")
    table = pd.DataFrame(z, columns=[f"z{i}" for i in range(z.shape[1])])
    table["key"] = _image_key(particles["rlnImageName"]).to_numpy()
    factors, names = true_factors(project)
    ours = starfile.read(latents_star, always_dict=True)["particles"]
    ours = pd.DataFrame({"key": _image_key(ours["rlnImageName"]).to_numpy(),
                         "half": ours.get("rlnDynaMightHalfSet", ours["rlnRandomSubset"]).to_numpy(),
                         "held": ours["rlnDynaMightIsValidation"].to_numpy().astype(bool)})
    table = table.merge(factors, on="key", validate="one_to_one").merge(ours, on="key", validate="one_to_one")
    codes = table[[c for c in table.columns if c.startswith("z")]].to_numpy()
    halves = accuracy_by_half(codes, table[names], table["half"].to_numpy(), table["held"].to_numpy())
    everyone = accuracy_by_half(codes, table[names], np.zeros(len(table), dtype=int), np.zeros(len(table), bool))
    return halves, everyone[0]


def table(rows: list[tuple[str, int, float | None, dict, dict | None]]) -> str:
    """One line per tool and factor."""
    lines = [f"{'tool':<18}{'epochs':>7}{'wall s':>9}  {'factor':<24}{'half 1':>8}{'half 2':>8}{'all':>8}"
             f"{'held-out 1':>12}{'held-out 2':>12}"]

    def cell(value: float | None, width: int) -> str:
        return f"{'-':>{width}}" if value is None else f"{value:>{width}.3f}"

    for tool, epochs, seconds, halves, everyone in rows:
        wall = f"{'?':>9}" if seconds is None else f"{seconds:>9.0f}"
        for name in next(iter(halves.values())):
            lines.append(f"{tool:<18}{epochs:>7}{wall}  {name:<24}"
                         f"{cell(halves.get(1, {}).get(name, {}).get('all'), 8)}"
                         f"{cell(halves.get(2, {}).get(name, {}).get('all'), 8)}"
                         f"{cell(everyone[name]['all'] if everyone else None, 8)}"
                         f"{cell(halves.get(1, {}).get(name, {}).get('held_out'), 12)}"
                         f"{cell(halves.get(2, {}).get(name, {}).get('held_out'), 12)}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=None,
                        help="an existing simulated project (not simulated again)")
    parser.add_argument("--ours-run", type=Path, default=None, help="an existing optimize-deformations run on it")
    parser.add_argument("--keep", type=Path, default=None, help="keep (and reuse) the projects and runs here")
    parser.add_argument("--venv", type=Path, default=Path.home() / ".cache" / "dynamight-peers" / "cryodrgn-4.3")
    parser.add_argument("--cryodrgn-epochs", type=int, default=25)
    parser.add_argument("--match-time", action="store_true",
                        help="stop cryoDRGN after its first epoch that ends past our wall time "
                        "(at most --cryodrgn-epochs)")
    parser.add_argument("--zdim", type=int, default=None, help="cryoDRGN's latent dimension (default: ours)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads of each tool (0: each one's default)")
    add_dataset_arguments(parser)
    args = parser.parse_args()
    exe, versions = ensure_cryodrgn(args.venv.expanduser())
    print(f"peer: {versions} ({args.venv})", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        project = args.project or simulate_pair(root, args)[0]
        run = args.ours_run or root / "run"
        ours_seconds = run_ours(project, run, args)
        zdim = args.zdim or int(json.loads((run / "config.json").read_text())["config"]["n_latent_dimensions"])
        if args.match_time and ours_seconds is None:
            raise SystemExit(f"--match-time: the wall time of {run} is not known")
        z, drgn_seconds, drgn_epochs = run_cryodrgn(exe, project, root / "cryodrgn", zdim, args.cryodrgn_epochs,
                                                    args.seed, args.threads,
                                                    ours_seconds if args.match_time else None)
        halves, everyone = cryodrgn_accuracy(project, run / "forward_deformations" / "latents.star", z)
        ours_epochs = int(json.loads((run / "config.json").read_text())["config"]["n_epochs"])
        print(f"{len(z)} particles, latent dimension {zdim}; best linear direction, |Spearman| with each true factor")
        print(table([("DynaMight", ours_epochs, ours_seconds, factor_accuracy(project, run), None),
                     (f"cryoDRGN {versions.split()[1].rstrip(',')}", drgn_epochs, drgn_seconds, halves,
                      everyone)]))
        if ours_seconds:
            print(f"wall time cryoDRGN / DynaMight: {drgn_seconds / ours_seconds:.2f}")
        print("DynaMight: one latent space per half-set (no 'all'); held out: codes from its encoder. cryoDRGN: one "
              "latent space, trained on every image (its held-out columns only test the fitted direction).",
              flush=True)


if __name__ == "__main__":
    main()
