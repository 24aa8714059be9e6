"""``relion_dynamight_reconstruct``: plain half-map reconstruction as a RELION External job.

GUI: External job, "External executable" ``relion_dynamight_reconstruct``, "Input particles" a
refinement's ``run_data.star``, optionally "Input 3D mask"; parameters (label / value) ``gpu_id``,
``batch_size``, ``preload_images`` (empty value). A continued job recomputes: a plain
reconstruction has no checkpoint to resume from.
"""

from __future__ import annotations

import numpy as np

from dynamight.commands import reconstruct
from dynamight.commands.options import build_config
from dynamight.data.particles import read_configured_particles
from dynamight.runtime import resolve_device

from .job import StepContext, run_step
from .logfile import Report
from .registry import RECONSTRUCT
from .reports import fsc_report

SPEC = RECONSTRUCT


def run(context: StepContext) -> Report:
    """Build the engine's config from the command line, reconstruct, and report the FSC."""
    args, params = context.args, context.args.params
    config = build_config(reconstruct.Config, {
        "refinement_star_file": args.inputs["in_parts"], "output_directory": context.directory,
        "mask_file": args.inputs["in_mask"], "batch_size": params["batch_size"], "gpu_id": params["gpu_id"],
        "n_threads": args.threads, "preload_images": params["preload_images"],
    })
    reconstruct.run(config, context.control)
    table = read_configured_particles(config)
    group = table.optics_groups[0]
    halves = np.bincount(table.half_set, minlength=3)[1:]
    report = fsc_report(context.directory / "fsc.star")
    report.lines[:0] = [
        f"{len(table)} particles ({halves[0]} in half-set 1, {halves[1]} in half-set 2), "
        f"box {group.box_px} px, {group.pixel_size_angstrom:g} Å/px",
        f"device: {resolve_device(config.gpu_id)}; mask: {config.mask_file or 'none (unmasked FSC)'}",
    ]
    return report


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point (``argv`` defaults to ``sys.argv[1:]``); returns the exit status."""
    return run_step(SPEC, run, argv)
