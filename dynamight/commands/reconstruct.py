"""``dynamight reconstruct``: plain half-map reconstruction, the baseline of the deformable one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from pydantic import Field

from ..data.images import ParticleImages
from ..data.particles import read_configured_particles
from ..data.volumes import read_mask
from ..memory import log_reconstruction_memory
from ..reconstruction.plain import reconstruct_half_maps
from ..reconstruction.report import write_half_maps
from ..runtime import JobControl, progress, resolve_device, save_config
from .options import ParticleFileOptions, StepConfig

HELP = "Reconstruct two half-maps, a merged map and their FSC from a particle STAR file (no deformations)."


class Config(StepConfig, ParticleFileOptions):
    refinement_star_file: Path = Field(description="particle STAR file (RELION 3.0 to 5) with poses and CTF, or a "
                                                   "cryoSPARC particles .cs file")
    output_directory: Path = Field(description="where half1.mrc, half2.mrc, map.mrc and fsc.star are written")
    mask_file: Path | None = Field(None, description="solvent mask: the FSC (and the Wiener term) is the mask-corrected one")
    batch_size: int = Field(128, ge=1, description="particles per batch")
    preload_images: bool = Field(False, description="read all images into memory first")
    seed: int = Field(0, description="seed for the half-set split when the STAR file has no rlnRandomSubset")


def run(config: Config, job: JobControl) -> None:
    if config.n_threads:
        torch.set_num_threads(config.n_threads)
    device = resolve_device(config.gpu_id)
    table = read_configured_particles(config)
    images = ParticleImages(table, preload=config.preload_images)
    group = table.optics_groups[0]
    mask = read_mask(config.mask_file, group.box_px, group.pixel_size_angstrom)
    log_reconstruction_memory(group.box_px, device, batch_size=config.batch_size)
    out = config.output_directory
    out.mkdir(parents=True, exist_ok=True)
    save_config(out / "config.json", config)
    with progress(job, "reconstructing", len(table)) as advance:
        maps = reconstruct_half_maps(table, images, device, config.batch_size, on_batch=advance, mask=mask)
    write_half_maps(out, maps, ("half1.mrc", "half2.mrc", "map.mrc"), mask)
