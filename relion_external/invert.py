"""``relion_dynamight_invert``: fit the inverse deformations as a RELION External job.

GUI: External job, "External executable" ``relion_dynamight_invert``, no input nodes; parameters
(label / value) ``checkpoint`` (the train job's ``checkpoint.pth``, e.g.
``External/job012/checkpoint.pth``; the particles' latent codes are read from the ``latents.star``
beside it), ``n_epochs``, ``batch_size``, ``gpu_id``, ``preload_images`` (accepted; this step reads
no images).

The engine (``dynamight optimize-inverse-deformations``) writes ``inverse_deformations/`` in the job
directory (``inv_chkpt.pth``, ``config.json``); ``inverse.pth``, a copy of ``inv_chkpt.pth``, is
published directly in the job directory for the backproject job. The engine saves its result only
once, at the end: a rerun in the same directory (RELION's "Continue") whose finished
``inv_chkpt.pth`` was fitted with the same checkpoint, epochs, batch size and seed, and is newer
than the checkpoint, reuses it instead of fitting again; otherwise the fit starts over.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from matplotlib.ticker import MaxNLocator

from dynamight.commands import optimize_inverse_deformations
from dynamight.commands.options import build_config
from dynamight.errors import InputError
from dynamight.inverse.run import INVERSE_FORMAT
from dynamight.runtime import resolve_device
from dynamight.training.checkpoint import load_checkpoint
from dynamight.training.layout import find_latents_file

from .job import StepContext, run_step
from .logfile import Report
from .registry import INVERT
from .train import publish

SPEC = INVERT
log = logging.getLogger("relion_external")

INVERSE = "inverse_deformations"
#: config fields that decide the result: a finished fit with the same values is reused
REUSE_KEYS = ("checkpoint_file", "n_epochs", "batch_size", "seed")


def check_checkpoint(checkpoint: Path) -> None:
    """The later steps read the particles' latent codes from the ``latents.star`` beside the checkpoint
    (or one folder up, for ``forward_deformations/checkpoints/checkpoint_final.pth``)."""
    try:
        find_latents_file(checkpoint)
    except InputError:
        raise InputError(f"--checkpoint {checkpoint}: no latents.star beside it; give the train job's "
                         f"checkpoint.pth (e.g. External/job012/checkpoint.pth)") from None


def run(context: StepContext) -> Report:
    """Fit (or reuse a finished fit), publish ``inverse.pth``, report the fit's curves."""
    args, params = context.args, context.args.params
    directory = context.directory
    check_checkpoint(params["checkpoint"])
    config = build_config(optimize_inverse_deformations.Config, {
        "output_directory": directory, "checkpoint_file": params["checkpoint"], "n_epochs": params["n_epochs"],
        "batch_size": params["batch_size"], "gpu_id": params["gpu_id"], "n_threads": args.threads,
        "preload_images": params["preload_images"],
    })
    result = directory / INVERSE / "inv_chkpt.pth"
    reused = finished_fit(result, config)
    if reused:
        log.info("reusing %s: fitted with the same checkpoint and options, after the checkpoint was written", result)
    else:
        optimize_inverse_deformations.run(config, context.control)
    if not context.main_process:  # a distributed run's other processes stop here
        return Report([], [])
    publish(result, directory / "inverse.pth")
    report = inverse_report(directory / "inverse.pth")
    report.lines.insert(0, f"device: {resolve_device(config.gpu_id)}; "
                           + ("reused the finished fit of the previous run" if reused else "fitted"))
    return report


def finished_fit(result: Path, config) -> bool:
    """``True`` when ``result`` is a finished fit of the same inputs, newer than the checkpoint."""
    if not result.is_file():
        return False
    try:
        saved = load_checkpoint(result, INVERSE_FORMAT)
    except InputError as exc:
        log.warning("%s; fitting again", exc)
        return False
    wanted = config.model_dump(mode="json")
    if any(saved["config"].get(key) != wanted[key] for key in REUSE_KEYS):
        return False
    return result.stat().st_mtime_ns >= Path(config.checkpoint_file).stat().st_mtime_ns


def inverse_report(path: Path) -> Report:
    """The held-out check and the RMS composition error per epoch of each half."""
    saved = load_checkpoint(path, INVERSE_FORMAT)
    halves = {int(h): state for h, state in saved["halves"].items()}
    lines = [f"half {h}: held-out RMS of forward then inverse deformation {state['held_out_rms']:.3f} Å "
             f"(last epoch's training RMS {state['history'][-1]:.3f} Å)" for h, state in sorted(halves.items())
             if state["history"]]
    lines.append(f"checkpoint: {saved['config'].get('checkpoint_file')}; {saved['config'].get('n_epochs')} epochs")

    def draw(ax) -> None:
        for h, state in sorted(halves.items()):
            ax.plot(np.arange(1, len(state["history"]) + 1), state["history"], label=f"half-set {h}")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel("RMS composition error (Å)")
        ax.set_yscale("log")
        ax.legend(fontsize=8)

    return Report(lines, [("Inverse deformations: |inverse(forward(c)) - c| over the training codes", draw)])


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point (``argv`` defaults to ``sys.argv[1:]``); returns the exit status."""
    return run_step(SPEC, run, argv)
