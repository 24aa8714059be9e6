"""``relion_dynamight_backproject``: deformable backprojection as a RELION External job.

GUI: External job, "External executable" ``relion_dynamight_backproject``, optionally "Input 3D
mask" (for the masked FSC); parameters (label / value) ``checkpoint`` (the train job's
``checkpoint.pth``; the latent codes are read from the ``latents.star`` beside it), ``inverse`` (the
invert job's ``inverse.pth``), ``batch_size`` (particles per batch, both when decoding deformations
and when inserting images), ``particles_per_cluster`` (200), ``gpu_id``, ``preload_images`` (empty
value).

The engine (``dynamight deformable-backprojection``) writes ``backprojection/`` in the job directory
(``map_half1.mrc``, ``map_half2.mrc``, ``map.mrc``, ``fsc.star``, ``fsc.pdf``, ``config.json``, and
``progress.pth`` while it runs); the results are published directly in the job directory as
``half1.mrc``, ``half2.mrc``, ``map.mrc`` and ``fsc.star``. The inverse deformations are checked and
reported (their held-out error); the engine reads them from ``inverse_deformations/inv_chkpt.pth``
in the job directory, a copy of ``inverse``. A rerun in the same directory (RELION's "Continue")
after an interruption resumes from ``backprojection/progress.pth``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from dynamight.commands import deformable_backprojection
from dynamight.commands.options import build_config
from dynamight.data.particles import read_configured_particles
from dynamight.errors import InputError
from dynamight.inverse.run import INVERSE_FORMAT
from dynamight.runtime import resolve_device
from dynamight.training.checkpoint import load_checkpoint

from .invert import check_checkpoint
from .job import StepContext, run_step
from .logfile import Report
from .registry import BACKPROJECT
from .reports import fsc_report
from .train import publish

SPEC = BACKPROJECT
log = logging.getLogger("relion_external")

BACKPROJECTION = "backprojection"
#: engine output -> published name in the job directory
PUBLISHED = {"map_half1.mrc": "half1.mrc", "map_half2.mrc": "half2.mrc", "map.mrc": "map.mrc", "fsc.star": "fsc.star"}


def run(context: StepContext) -> Report:
    """Check the inputs, backproject (resuming if interrupted), publish the maps, report the FSC."""
    args, params = context.args, context.args.params
    directory = context.directory
    checkpoint, inverse = params["checkpoint"], params["inverse"]
    check_checkpoint(checkpoint)
    inverse_lines = check_inverse(inverse, checkpoint)
    staged = directory / "inverse_deformations"
    publish(inverse, staged / "inv_chkpt.pth")
    config = build_config(deformable_backprojection.Config, {
        "output_directory": directory, "checkpoint_file": checkpoint, "inverse_deformation_directory": staged,
        "batch_size": params["batch_size"], "backprojection_batch_size": params["batch_size"],
        "particles_per_cluster": params["particles_per_cluster"], "mask_file": args.inputs["in_mask"],
        "preload_images": params["preload_images"], "gpu_id": params["gpu_id"], "n_threads": args.threads,
    })
    if (directory / BACKPROJECTION / "progress.pth").is_file():
        log.info("found %s: the backprojection resumes from it", directory / BACKPROJECTION / "progress.pth")
    deformable_backprojection.run(config, context.control)
    if not context.main_process:  # a distributed run's other processes stop here
        return Report([], [])
    for source, target in PUBLISHED.items():
        publish(directory / BACKPROJECTION / source, directory / target)
    report = fsc_report(directory / "fsc.star")
    saved = load_checkpoint(checkpoint)
    table = read_configured_particles(saved["config"])
    halves = np.bincount(table.half_set, minlength=3)[1:]
    group = table.optics_groups[0]
    report.lines += [
        f"{len(table)} particles ({halves[0]} in half-set 1, {halves[1]} in half-set 2), box {group.box_px} px, "
        f"{group.pixel_size_angstrom:g} Å/px; each through its own half-set's model",
        f"device: {resolve_device(config.gpu_id)}; mask: {config.mask_file or 'none (unmasked FSC)'}",
        f"checkpoint: {checkpoint}; inverse: {inverse}", *inverse_lines,
    ]
    return report


def check_inverse(inverse: Path, checkpoint: Path) -> list[str]:
    """Raise :class:`InputError` unless ``inverse`` is an inverse-deformation file; warn when it was
    fitted to another checkpoint. Returns its held-out check, one line per half."""
    saved = load_checkpoint(inverse, INVERSE_FORMAT)
    fitted_to = saved.get("config", {}).get("checkpoint_file")
    if fitted_to is not None and Path(fitted_to).resolve() != Path(checkpoint).resolve():
        log.warning("--inverse %s was fitted to %s, not to --checkpoint %s", inverse, fitted_to, checkpoint)
    halves = saved.get("halves", {})
    if set(halves) != {"1", "2"}:
        raise InputError(f"--inverse {inverse}: has no inverse deformations of both half-sets")
    return [f"inverse deformations, half {h}: held-out RMS of forward then inverse {halves[h]['held_out_rms']:.3f} Å"
            for h in ("1", "2")]


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point (``argv`` defaults to ``sys.argv[1:]``); returns the exit status."""
    return run_step(SPEC, run, argv)
