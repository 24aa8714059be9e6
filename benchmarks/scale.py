"""Scale: particles per second and peak memory of training, inverse deformations and deformable
backprojection at box 64 and 128; 1 against 2 processes; peak training memory at 2,000 against
20,000 particles; a training step's predicted memory (:mod:`dynamight.memory`) against the measured
one at box 64/128/256 and 1,500/10,000/30,000 Gaussians; with ``--large-boxes``, every step at
boxes of 256-400 with 30,000 Gaussians (peak memory beside the estimate each step logs). Every
stage runs in a fresh process (``measured.py``, ``dynamight.training.step_memory``), on the GPU
when there is one (``--gpu-id -1`` forces the CPU; the step memory is measured on the CPU).

    python benchmarks/scale.py [--gpu-id -1] [--skip-memory] [--skip-processes] [--skip-stages] [--skip-predicted]
        [--large-boxes 256 400] [--large-particles 100] [--large-gaussians 30000] [--large-training-box D]

Upstream DynaMight on the 2-core CPU machine of this project, as quoted in its issues: training
200 particles x 3 epochs in 28 s inside its training function (21 particle-epochs/s), deformable
backprojection 0.84 s per particle.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from dynamight.errors import InputError
from dynamight.memory import AUTOMATIC_BATCH, choose_batch_size, gib, training_step_bytes
from dynamight.simulate.dataset import simulate
from dynamight.training.checkpoint import load_checkpoint
from dynamight.training.layout import find_final_checkpoint
from dynamight.training.step_memory import measure as measure_step

HERE = Path(__file__).resolve().parent
UPSTREAM_TRAINING_PER_S, UPSTREAM_BACKPROJECTION_S = 600 / 28.0, 0.84


def measure(args: list[str], processes: int = 1) -> dict:
    """Run ``dynamight ARGS`` in fresh process(es); the cost of rank 0 (peak memory: the largest)."""
    if processes > 1:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(processes),
                    "--master-port", str(port)]
    else:
        launcher = [sys.executable]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([*launcher, str(HERE / "measured.py"), *args], capture_output=True, text=True, env=env)
    records = [json.loads(m) for m in re.findall(r"MEASURED (\{[^}]*\})", done.stdout)]  # lines may interleave
    if done.returncode != 0 or not records:
        raise RuntimeError(f"dynamight {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    first = min(records, key=lambda r: r["rank"])
    estimates = re.findall(r"estimated peak memory[^\n]*?: ([0-9.]+) GiB", done.stdout + done.stderr)
    return {"seconds": first["seconds"], "peak_rss_mb": max(r["peak_rss_mb"] for r in records),
            "peak_gpu_mb": max(r["peak_gpu_mb"] for r in records),
            "estimated_gib": max(map(float, estimates)) if estimates else None}


def training_args(project: Path, out: Path, gpu: str, epochs: int, gaussians: int, latent: int,
                  batch: int | None = 64) -> list[str]:
    """``optimize-deformations`` options (``batch`` ``None``: the automatic batch size)."""
    return ["optimize-deformations", "--refinement-star-file", str(project / "particles.star"), "--output-directory",
            str(out), "--initial-model", str(project / "map.mrc"), "--n-gaussians", str(gaussians),
            "--n-latent-dimensions", str(latent), "--n-epochs", str(epochs), "--gpu-id", gpu] + \
        (["--batch-size", str(batch)] if batch else [])


def training_rate(out: Path) -> float:
    """Particle-epochs per second inside the training loop (both halves), from the checkpoint."""
    saved = load_checkpoint(find_final_checkpoint(out))
    seconds = sum(e["seconds"] for h in ("1", "2") for e in saved["halves"][h]["history"])
    n_train = int((~saved["validation"].bool()).sum())
    return n_train * len(saved["halves"]["1"]["history"]) / seconds


def memory(record: dict) -> str:
    gpu = f", GPU {record['peak_gpu_mb']:.0f} MB" if record["peak_gpu_mb"] else ""
    return f"peak RSS {record['peak_rss_mb']:.0f} MB{gpu}"


def stages(root: Path, gpu: str) -> None:
    for n, box in ((2000, 64), (1000, 128)):
        project, out = root / f"p{box}", root / f"r{box}"
        simulate(project, n_particles=n, box_px=box, pixel_size_angstrom=128.0 / box, snr=0.1, motion="hinge", seed=0)
        t = measure(training_args(project, out, gpu, 2, 1500, 6))
        print(f"box {box}, {n} particles: training (1500 Gaussians, 6 latent dims, batch 64, 2 epochs) "
              f"{training_rate(out):.0f} particle-epochs/s in the loop (upstream {UPSTREAM_TRAINING_PER_S:.0f} at box 64), "
              f"{t['seconds']:.0f} s end to end, {memory(t)}", flush=True)
        t = measure(["optimize-inverse-deformations", str(out), "--n-epochs", "5", "--gpu-id", gpu])
        print(f"box {box}: inverse deformations (5 epochs) {t['seconds']:.1f} s, {5 * n / t['seconds']:.0f} "
              f"particle-epochs/s, {memory(t)}", flush=True)
        t = measure(["deformable-backprojection", str(out), "--gpu-id", gpu])
        print(f"box {box}: deformable backprojection {t['seconds'] / n:.4f} s/particle "
              f"({UPSTREAM_BACKPROJECTION_S / (t['seconds'] / n):.0f}x upstream's {UPSTREAM_BACKPROJECTION_S} s at box 64), "
              f"{memory(t)}", flush=True)


def large_boxes(root: Path, gpu: str, boxes: tuple[int, ...], n_particles: int, n_gaussians: int,
                training_box: int | None = None) -> None:
    """Every step at large boxes on a few particles of a real structure (3HSY, chain B hinging; 1 Å
    pixels, as a user's 256-400 Å box around a ~100 kDa molecule; automatic batch sizes): seconds
    per particle and peak memory, beside the estimate each step logs (:mod:`dynamight.memory`)."""
    for box in boxes:
        project, out = root / f"big{box}", root / f"bigrun{box}"
        simulate(project, n_particles=n_particles, box_px=box, pixel_size_angstrom=1.0, snr=0.1, motion="hinge", seed=0,
                 atomic_model="3hsy", moving_chain="B")
        # the training box automatic (these narrow Gaussians keep the full box) unless given
        train = training_args(project, out, gpu, 1, n_gaussians, 6, batch=None)
        if training_box:
            train += ["--training-box", str(training_box)]
        steps = [(f"training, 1 epoch (training box {training_box or 'automatic'})", train),
                 ("inverse deformations, 1 epoch", ["optimize-inverse-deformations", str(out), "--n-epochs", "1",
                                                    "--gpu-id", gpu]),
                 ("deformable backprojection", ["deformable-backprojection", str(out), "--gpu-id", gpu]),
                 ("plain reconstruction", ["reconstruct", "--refinement-star-file", str(project / "particles.star"),
                                           "--output-directory", str(root / f"plain{box}"), "--gpu-id", gpu])]
        for name, args in steps:
            t = measure(args)
            scope = "a training step: the process's peak also holds the consensus map's fit" if name.startswith(
                "training") else "the whole step"
            estimate = f", estimated {t['estimated_gib']} GiB ({scope})" if t.get("estimated_gib") else ""
            print(f"box {box}, {n_gaussians} Gaussians, {n_particles} particles: {name} "
                  f"{t['seconds'] / n_particles:.3f} s/particle ({t['seconds']:.0f} s), {memory(t)}{estimate}", flush=True)


def processes(root: Path) -> None:
    project = root / "p64"
    if not (project / "particles.star").is_file():
        simulate(project, n_particles=2000, box_px=64, pixel_size_angstrom=2.0, snr=0.1, motion="hinge", seed=0)
    rates = {}
    for p in (1, 2):
        out = root / f"procs{p}"
        t = measure(training_args(project, out, "-1", 2, 1500, 6) + ["--n-threads", str(max(1, (os.cpu_count() or 2) // p))], p)
        rates[p] = training_rate(out)
        print(f"CPU, {p} process(es) (gloo), box 64, 2000 particles: {rates[p]:.0f} particle-epochs/s in the loop, "
              f"{t['seconds']:.0f} s end to end, {memory(t)}", flush=True)
    print(f"2 processes / 1 process: {rates[2] / rates[1]:.2f}x", flush=True)


def peak_memory(root: Path, gpu: str) -> None:
    peaks, metadata = {}, {}
    for n in (2000, 20000):
        project = root / f"m{n}"
        simulate(project, n_particles=n, box_px=64, pixel_size_angstrom=2.0, snr=0.1, motion="hinge", seed=0)
        peaks[n] = measure(training_args(project, root / f"mr{n}", gpu, 1, 600, 2))
        metadata[n] = _metadata_mb(project)
        print(f"{n} particles, box 64 (600 Gaussians, 1 epoch): training {memory(peaks[n])}; "
              f"particle table and codes alone {metadata[n]:.0f} MB", flush=True)
    allowed = 1.1 * peaks[2000]["peak_rss_mb"] + metadata[20000] - metadata[2000]
    print(f"peak RSS 20,000 vs 2,000 particles: {peaks[20000]['peak_rss_mb']:.0f} vs {peaks[2000]['peak_rss_mb']:.0f} MB "
          f"(allowed: 10% + metadata = {allowed:.0f} MB): {'OK' if peaks[20000]['peak_rss_mb'] <= allowed else 'EXCEEDED'}")


def predicted_memory(n_particles: int = 100_000) -> None:
    """Predicted peak memory of training at the CPU's automatic batch size (default networks,
    ``n_particles`` codes), and the measured peak increase of two steps where it is small (a few
    GiB, seconds)."""
    print(f"{'box':>4} {'Gaussians':>9} {'batch':>5} {'predicted GiB':>13} {'measured GiB':>12} {'ratio':>5}")
    for box in (64, 128, 256):
        for n in (1500, 10000, 30000):
            def estimate(b: int) -> int:
                return training_step_bytes(box, n, b, n_particles=n_particles)
            try:
                batch = choose_batch_size(estimate, torch.device("cpu"), AUTOMATIC_BATCH)
            except InputError:
                print(f"{box:>4} {n:>9} {'-':>5} {gib(estimate(1)):>13} (even batch 1 does not fit)")
                continue
            predicted, measured = estimate(batch), None
            if predicted < 2.5 * 2**30 and box * n <= 128 * 10000:
                measured = measure_step(box, n, batch, n_particles=n_particles)["peak_increase_bytes"]
            shown = f"{gib(measured):>12} {predicted / measured:>5.2f}" if measured else f"{'-':>12} {'-':>5}"
            print(f"{box:>4} {n:>9} {batch:>5} {gib(predicted):>13} {shown}", flush=True)


def _metadata_mb(project: Path) -> float:
    """Peak RSS of a process that only reads the particle table and makes its codes, minus one that imports."""
    code = ("import resource, sys, numpy as np; from dynamight.data.particles import read_particles; "
            "t = read_particles(sys.argv[1]) if len(sys.argv) > 1 else None; "
            "z = np.zeros((len(t), 2 * 4), np.float32) if t else None; "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
    base = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    full = float(subprocess.run([sys.executable, "-c", code, str(project / "particles.star")], capture_output=True,
                                text=True, check=True).stdout)
    return full - base


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu-id", default=None, help="-1 for the CPU (default: the first GPU if there is one)")
    parser.add_argument("--skip-stages", action="store_true")
    parser.add_argument("--skip-processes", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-predicted", action="store_true")
    parser.add_argument("--large-boxes", type=int, nargs="*", default=[],
                        help="also run every step at these boxes (e.g. 256 400) on --large-particles particles")
    parser.add_argument("--large-particles", type=int, default=100)
    parser.add_argument("--large-gaussians", type=int, default=30000)
    parser.add_argument("--large-training-box", type=int, default=None, help="--training-box of the large runs")
    args = parser.parse_args()
    gpu = args.gpu_id or ("0" if torch.cuda.is_available() else "-1")
    print(f"device: {torch.cuda.get_device_name(int(gpu)) if gpu != '-1' else f'CPU, {os.cpu_count()} cores'}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if not args.skip_stages:
            stages(root, gpu)
        if not args.skip_processes:
            processes(root)
        if not args.skip_memory:
            peak_memory(root, gpu)
        if not args.skip_predicted:
            predicted_memory()
        if args.large_boxes:
            large_boxes(root, gpu, tuple(args.large_boxes), args.large_particles, args.large_gaussians,
                        args.large_training_box)


if __name__ == "__main__":
    main()
