"""The ``deformable-backprojection`` step: files in, half-maps and FSC out."""

from __future__ import annotations

import logging
from pathlib import Path

from ..data.images import ParticleImages
from ..data.volumes import read_mask
from ..errors import InputError
from ..memory import log_reconstruction_memory
from ..distributed import barrier
from ..runtime import JobControl, progress, save_config, start_process
from ..training.checkpoint import load_checkpoint
from .deformable_run import PROGRESS_FILE, deformable_half_maps
from .report import write_half_maps

log = logging.getLogger(__name__)
HALF_MAP_NAMES = ("map_half1.mrc", "map_half2.mrc", "map.mrc")


def report_inverse(directory: Path) -> None:
    """Log the inverse deformations' held-out check, if they exist."""
    path = directory / "inv_chkpt.pth"
    if not path.is_file():
        log.info("no inverse deformations in %s (not needed: the backprojection warps with the forward field)", directory)
        return
    from ..inverse.run import INVERSE_FORMAT

    saved = load_checkpoint(path, INVERSE_FORMAT)
    for half, state in saved["halves"].items():
        log.info("inverse deformations, half %s: held-out RMS of forward then inverse %.3f Å", half, state["held_out_rms"])


def deformable_backprojection(config, job: JobControl) -> None:
    from ..inverse.run import load_run

    device, main = start_process(config.gpu_id, config.n_threads)  # only the main process writes files
    table, models, saved, latents, _ = load_run(config.output_directory, config.checkpoint_file, device)
    if len({(g.box_px, g.pixel_size_angstrom) for g in table.optics_groups}) > 1:
        raise InputError(f"{table.star_path}: optics groups have different box or pixel sizes")
    group = table.optics_groups[0]
    mask = read_mask(config.mask_file, group.box_px, group.pixel_size_angstrom)
    report_inverse(config.inverse_deformation_directory or config.output_directory / "inverse_deformations")
    if main:
        log_reconstruction_memory(group.box_px, device, deformable=True, batch_size=config.backprojection_batch_size,
                                  downsample=config.downsample)
    images = ParticleImages(table, preload=config.preload_images)
    out = config.output_directory / "backprojection"
    if main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(out / "config.json", config)
    with progress(job, "deformable backprojection", len(table)) as advance:
        maps = deformable_half_maps(table, images, models, latents, device, config.batch_size, config.downsample,
                                    out, seed=config.seed, insert_batch_size=config.backprojection_batch_size,
                                    on_batch=advance, particles_per_cluster=config.particles_per_cluster, mask=mask,
                                    fit_scales=config.fit_cluster_scales)
    if main:
        write_half_maps(out, maps, HALF_MAP_NAMES, mask)
        (out / PROGRESS_FILE).unlink(missing_ok=True)
    barrier()
