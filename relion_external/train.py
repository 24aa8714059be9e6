"""``relion_dynamight_train``: learn the per-particle deformations as a RELION External job.

GUI: External job, "External executable" ``relion_dynamight_train``, "Input particles" the consensus
refinement's ``run_data.star``, "Input 3D reference" its ``run_class001.mrc``; parameters (label /
value) ``n_gaussians``, ``n_latent_dimensions``, ``regularization_factor``, ``n_epochs``,
``initial_threshold``, ``batch_size``, ``training_box``, ``gpu_id``, ``preload_images``, ``refine_poses``
(flags: empty value).

The engine (``dynamight optimize-deformations``) writes into the job directory itself:
``forward_deformations/`` (``checkpoints/NNN.pth`` after every epoch, ``checkpoints/checkpoint_final.pth``
as upstream, ``latents.star``, ``consensus_gaussians.star``, ``tensorboard/``) and ``config.json``. What later
jobs consume is then published directly in the job directory under fixed names:

- ``checkpoint.pth``: a copy of ``forward_deformations/checkpoints/checkpoint_final.pth`` (the ``checkpoint``
  parameter of invert, backproject and explore);
- ``latents.star``: a copy of ``forward_deformations/latents.star``, beside ``checkpoint.pth``
  because the later steps read the particles' latent codes from beside the checkpoint;
- ``particles.star``: the same table, declared to RELION as a particle set;
- ``refined_poses.star`` (``refine_poses``): the particles with their refined poses, beside ``latents.star``.

A continued job (or any rerun in the same directory) resumes from the latest epoch checkpoint in
``forward_deformations/checkpoints/`` (with a larger ``n_epochs``, it trains on to the new total);
when training had already finished (``checkpoint_final.pth`` and ``latents.star`` written after the
last epoch, at least ``n_epochs`` epochs), it only publishes the outputs and the logfile again.
"""

from __future__ import annotations

import filecmp
import logging
import shutil
from pathlib import Path

import numpy as np
import starfile
from matplotlib.ticker import MaxNLocator

from dynamight.commands import optimize_deformations
from dynamight.commands.options import build_config
from dynamight.data.files import atomic_path
from dynamight.runtime import resolve_device
from dynamight.training.checkpoint import latest_checkpoint, load_checkpoint
from dynamight.training.poses import REFINED_POSES_NAME
from dynamight.training.layout import find_final_checkpoint, final_checkpoint_path

from .job import StepContext, run_step
from .logfile import Report
from .registry import TRAIN

SPEC = TRAIN
log = logging.getLogger("relion_external")

FORWARD = "forward_deformations"
#: loss terms of a training history entry, and how the logfile names them
LOSS_TERMS = {"data": "data term (whitened squared error per pixel)", "kl": "latent prior (|z|^2 / 2)",
              "prior": "distance prior", "lambda": "weight of the distance prior (lambda)"}


def publish(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` atomically (a reader never sees half a file); an identical
    ``target`` is left alone, so that its time stamp still tells later steps it has not changed."""
    if target.is_file() and filecmp.cmp(source, target, shallow=False):
        return
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)


def run(context: StepContext) -> Report:
    """Train (or resume), publish ``checkpoint.pth``, ``latents.star`` and ``particles.star``, and
    report the loss curves and the latent space."""
    args, params = context.args, context.args.params
    directory = context.directory
    config = build_config(optimize_deformations.Config, {
        "refinement_star_file": args.inputs["in_parts"], "initial_model": args.inputs["in_3dref"],
        "output_directory": directory, "initial_threshold": params["initial_threshold"],
        "n_gaussians": params["n_gaussians"], "n_latent_dimensions": params["n_latent_dimensions"],
        "regularization_factor": params["regularization_factor"], "n_epochs": params["n_epochs"],
        "batch_size": params["batch_size"], "training_box": params["training_box"], "gpu_id": params["gpu_id"],
        "n_threads": args.threads,
        "preload_images": params["preload_images"], "refine_poses": params["refine_poses"],
    })
    resumed = latest_checkpoint(directory / FORWARD / "checkpoints")
    finished = finished_training(directory / FORWARD, config.n_epochs)
    if finished:
        log.info("training had finished (%s, %s are newer than the last epoch's checkpoint %s): nothing to do",
                 final_checkpoint_path(".").as_posix(), FORWARD + "/latents.star", resumed)
    else:
        if resumed is not None:
            log.info("found %s: training resumes from it", resumed)
        optimize_deformations.run(config, context.control)
    if not context.main_process:  # a distributed run's other processes stop here
        return Report([], [])
    publish(find_final_checkpoint(directory), directory / "checkpoint.pth")
    publish(directory / FORWARD / "latents.star", directory / "latents.star")
    publish(directory / FORWARD / "latents.star", directory / "particles.star")
    if (directory / FORWARD / REFINED_POSES_NAME).is_file():  # beside latents.star, where invert/backproject look
        publish(directory / FORWARD / REFINED_POSES_NAME, directory / REFINED_POSES_NAME)
    report = training_report(directory / "checkpoint.pth", directory / "latents.star")
    report.lines.insert(1, f"device: {resolve_device(config.gpu_id)}; "
                           + ("training had already finished; outputs published again" if finished else
                              f"resumed from {resumed.relative_to(directory)}" if resumed else "trained from scratch"))
    return report


def finished_training(forward: Path, n_epochs: int) -> bool:
    """``True`` when a previous run in this directory trained at least ``n_epochs`` epochs and wrote
    its final checkpoint and ``latents.star`` after the last epoch's checkpoint."""
    latest = latest_checkpoint(forward / "checkpoints")
    final, latents = find_final_checkpoint(forward.parent), forward / "latents.star"
    if latest is None or int(latest.stem) + 1 < n_epochs or not final.is_file() or not latents.is_file():
        return False
    return latest.stat().st_mtime_ns <= final.stat().st_mtime_ns <= latents.stat().st_mtime_ns


def training_report(checkpoint: Path, latents_star: Path) -> Report:
    """Summary lines, the loss curves of both halves (``halves[h]["history"]``), the latent space and
    the displacement sizes."""
    saved = load_checkpoint(checkpoint)
    histories = {h: list(saved["halves"][str(h)]["history"]) for h in (1, 2)}
    particles = starfile.read(latents_star, always_dict=True)["particles"]
    columns = sorted((c for c in particles.columns if c.startswith("rlnDynaMightLatent")), key=lambda c: int(c[18:]))
    z = particles[columns].to_numpy(np.float64)
    half = particles["rlnDynaMightHalfSet"].to_numpy(int)
    validation = particles["rlnDynaMightIsValidation"].to_numpy(int).astype(bool)
    rms = particles["rlnDynaMightDisplacementRms"].to_numpy(np.float64)
    config = saved["config"]
    lines = [f"{len(particles)} particles ({int((half == 1).sum())} in half-set 1, {int((half == 2).sum())} in "
             f"half-set 2; {int(validation.sum())} held out for validation); "
             f"{len(saved['gaussians']['positions_angstrom'])} Gaussians; {len(columns)} latent dimensions; "
             f"{int(saved['epoch']) + 1} epochs trained",
             f"displacement RMS per particle: median {np.median(rms):.2f} Å, 95th percentile "
             f"{np.percentile(rms, 95):.2f} Å, max {rms.max():.2f} Å"]
    for h, history in histories.items():
        if history:
            last = history[-1]
            lines.append(f"half {h}, last epoch: " + ", ".join(f"{k} {last[k]:.4g}" for k in LOSS_TERMS if k in last))
    if validation.any():
        errors = particles["rlnDynaMightErrorEstimate"].to_numpy(np.float64)[validation]
        lines.append(f"validation particles: median disagreement of the two half-set models {np.median(errors):.2f} Å")
    lines.append(f"regularization factor {config['regularization_factor']:g}, batch size {config['batch_size']}")

    figures = [(f"Training: {title}", _curve(histories, key)) for key, title in LOSS_TERMS.items()
               if any(key in entry for history in histories.values() for entry in history)]

    def draw_latents(ax) -> None:
        y = z[:, 1] if z.shape[1] > 1 else np.zeros(len(z))
        for h, colour in ((1, "tab:blue"), (2, "tab:orange")):
            chosen = (half == h) & ~validation
            ax.scatter(z[chosen, 0], y[chosen], s=3, alpha=0.5, color=colour, label=f"half-set {h}")
        ax.scatter(z[validation, 0], y[validation], s=5, color="black", marker="x", label="validation")
        ax.set_xlabel("latent 1")
        ax.set_ylabel("latent 2" if z.shape[1] > 1 else "")
        ax.legend(fontsize=8)

    def draw_rms(ax) -> None:
        ax.hist(rms, bins=50, color="tab:green")
        ax.set_xlabel("RMS displacement of the Gaussians (Å)")
        ax.set_ylabel("particles")

    figures += [("Latent space (first two dimensions)", draw_latents), ("Size of the deformations", draw_rms)]
    return Report(lines, figures)


def _curve(histories: dict[int, list[dict]], key: str):
    def draw(ax) -> None:
        for h, history in histories.items():
            points = [(entry.get("epoch", i), entry[key]) for i, entry in enumerate(history) if key in entry]
            if points:
                epochs, values = zip(*points)
                ax.plot(np.asarray(epochs) + 1, values, marker="o", ms=3, label=f"half-set {h}")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.legend(fontsize=8)

    return draw


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point (``argv`` defaults to ``sys.argv[1:]``); returns the exit status."""
    return run_step(SPEC, run, argv)
