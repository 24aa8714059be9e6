"""The ``optimize-inverse-deformations`` step."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import starfile
import torch

from ..data.particles import read_configured_particles
from ..distributed import barrier
from ..errors import InputError
from ..runtime import JobControl, progress, save_config, start_process
from ..training.checkpoint import load_checkpoint, save_checkpoint
from ..training.inference import displacements_of
from ..training.layout import find_final_checkpoint, find_latents_file
from ..training.poses import REFINED_POSES_NAME, with_refined_poses
from ..training.restore import load_forward_models
from .train import composition_error, fit_inverse, make_inverse

log = logging.getLogger(__name__)
INVERSE_FORMAT = "dynamight-inverse-deformations"


def forward_checkpoint(output_directory: Path, checkpoint_file: Path | None) -> Path:
    path = checkpoint_file or find_final_checkpoint(output_directory)
    if not Path(path).is_file():
        raise InputError(f"{path}: forward-deformation checkpoint not found (run optimize-deformations first, "
                         f"or give --checkpoint-file)")
    return Path(path)


def load_run(output_directory: Path, checkpoint_file: Path | None, device: torch.device):
    """The particle table, both half models, the checkpoint, and every particle's code."""
    path = forward_checkpoint(output_directory, checkpoint_file)
    saved = load_checkpoint(path)
    table = read_configured_particles(saved["config"])
    group = table.optics_groups[0]
    models, saved = load_forward_models(path, group.box_px, group.pixel_size_angstrom, device)
    from ..reconstruction.deformable_run import read_latents

    latents_file = find_latents_file(path)
    latents = read_latents(latents_file, table)
    table = with_refined_poses(table, latents_file.parent / REFINED_POSES_NAME)  # --refine-poses
    validation = saved["validation"].numpy().astype(bool)
    return table, models, saved, latents, validation


def optimize_inverse_deformations(config, job: JobControl) -> None:
    device, main = start_process(config.gpu_id, config.n_threads)  # only the main process writes files
    table, models, saved, latents, validation = load_run(config.output_directory, config.checkpoint_file, device)
    out = config.output_directory / "inverse_deformations"
    if main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(out / "config.json", config)
    halves, report = {}, {}
    n_latent = latents.shape[1]
    with progress(job, "inverse deformations", 2 * config.n_epochs, log_lines=False) as advance:
        for half in (1, 2):
            forward = models[half]
            train = np.flatnonzero((table.half_set == half) & ~validation)
            torch.manual_seed(config.seed + half)  # network initialisation
            inverse = make_inverse(forward, n_latent).to(device)

            def on_epoch(epoch: int, rms: float, half=half) -> None:
                log.info("half %d epoch %d/%d: RMS composition error %.3f Å", half, epoch + 1, config.n_epochs, rms)
                advance(1)

            history = fit_inverse(forward, inverse, latents[train], config.n_epochs, config.batch_size, device,
                                  config.seed + half, on_epoch)
            held = np.flatnonzero((table.half_set == half) & validation)
            check = held if len(held) else train
            with torch.no_grad():
                error = composition_error(forward, inverse, torch.as_tensor(latents[check], device=device))
            report[half] = float(error.pow(2).mean().sqrt())
            log.info("half %d: held-out RMS of forward then inverse: %.3f Å (%d particles)", half, report[half], len(check))
            halves[str(half)] = {"model": inverse.state_dict(), "history": history, "held_out_rms": report[half]}
            if config.save_deformations and main:
                save_deformations(out / f"deformations_half{half}.npy", forward, latents[table.half_set == half],
                                  config.batch_size, device)
    if main:
        save_checkpoint(out / "inv_chkpt.pth", {"format": INVERSE_FORMAT, "config": config.model_dump(mode="json"),
                                                "n_latent": n_latent, "halves": halves})
    barrier()


def save_deformations(path: Path, forward, codes: np.ndarray, batch_size: int, device) -> None:
    """Write ``(m, n, 3)`` float32 deformed positions (Å) to a ``.npy`` file batch by batch (memory-mapped:
    RAM stays at one batch)."""
    shape = (len(codes), forward.positions.shape[0], 3)
    log.info("writing %s: %d particles x %d Gaussians x 3 float32 = %.2f GB on disk, one batch (%.1f MB) in memory",
             path, shape[0], shape[1], np.prod(shape) * 4 / 1e9, batch_size * shape[1] * 12 / 1e6)
    array = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)
    for rows, delta in displacements_of(forward, codes, batch_size, device):
        array[rows] = (forward.positions + delta).cpu().numpy()
    array.flush()
    del array
