"""``dynamight explore-latent-space``: the napari explorer of a trained run's latent space, or
(``--headless``) the same analysis written to files, for machines without a display."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field

from ..errors import InputError
from ..runtime import JobControl, resolve_device, save_config
from .options import StepConfig

HELP = ("Explore the latent space of a trained run: a napari viewer (maps of clicked particles, movies along drawn "
        "paths, particle subsets of drawn regions), or with --headless plots, clusters, maps, movies and STAR files.")
REPORT_FOLDERS = {0: "validation", 1: "half1", 2: "half2"}

log = logging.getLogger(__name__)


class Config(StepConfig):
    output_directory: Path = Field(description="the training run's output directory; maps/, movies/, subsets/ and "
                                               "latent_space/ are written inside", json_schema_extra={"positional": True})
    checkpoint_file: Path | None = Field(None, description="forward-deformation checkpoint (default: "
                                                           "OUTPUT_DIRECTORY/forward_deformations/checkpoints/"
                                                           "checkpoint_final.pth)")
    latents_file: Path | None = Field(None, description="the run's latents.star (default: beside the checkpoint)")
    half_set: Literal[0, 1, 2] = Field(1, description="1 or 2: that half-set's particles and model; 0: the validation "
                                                      "particles of both halves, each with its own half's model")
    dimensionality_reduction_method: Literal["PCA", "UMAP"] = Field(
        "PCA", description="2D embedding of the latent codes (UMAP needs umap-learn)")
    headless: bool = Field(False, description="no window: write the analysis (latent_space/<half>/: "
                                              "latent_space.star, plots; maps/, movies/, subsets/)")
    n_clusters: int = Field(6, ge=1, description="k-means clusters: one map and one particle subset each")
    n_movie_frames: int = Field(10, ge=2, description="frames of each movie (along a principal direction or a drawn path)")
    screenshot: Path | None = Field(None, description="open the explorer, show the particle that moves most, save a "
                                                      "PNG of the window here and close (for documentation)")
    batch_size: int = Field(128, ge=1, description="particles per batch")
    seed: int = Field(0, description="seed for k-means, UMAP and the half-set-0 matching")


def checkpoint_of(config: Config) -> Path:
    """The checkpoint to explore: ``--checkpoint-file`` or the run's final one."""
    from ..training.layout import find_final_checkpoint

    return config.checkpoint_file or find_final_checkpoint(config.output_directory)


def report_directory(config: Config) -> Path:
    """Where the headless run writes latent_space.star and the plots."""
    return config.output_directory / "latent_space" / REPORT_FOLDERS[config.half_set]


def headless(config: Config, job: JobControl, report: Path | None = None):
    """Open the latent space and write the whole analysis; ``report`` (default
    :func:`report_directory`) receives latent_space.star and the plots. Returns the
    :class:`~dynamight.analysis.space.LatentSpace` and the :class:`~dynamight.analysis.report.ReportFiles`."""
    from ..analysis.report import write_report

    space = _open(config)
    job.check_abort()
    report = report or report_directory(config)
    save_config(report / "config.json", config)
    files = write_report(space, config.output_directory, report, config.n_movie_frames, job=job)
    for line in files.lines:
        log.info("%s", line)
    log.info("wrote %s, %d plots, %d cluster maps and subsets, %d movies, %d model files (%s)", files.latent_space,
             len(files.pngs), len(files.cluster_maps), len(files.movies), len(files.models),
             "the deformed atomic model" if space.models.atomic else "the Gaussians as pseudo-atoms")
    return space, files


def _open(config: Config):
    from ..analysis.space import open_latent_space

    if config.n_threads:
        torch.set_num_threads(config.n_threads)
    return open_latent_space(checkpoint_of(config), config.latents_file, config.half_set,
                             config.dimensionality_reduction_method, config.n_clusters, resolve_device(config.gpu_id),
                             config.batch_size, config.seed)


def run(config: Config, job: JobControl) -> None:
    if config.headless:
        headless(config, job)
        return
    from ..viewer import missing_requirements

    problem = missing_requirements()
    if problem is not None:
        raise InputError(f"{problem}; or use --headless to write the analysis without a window")
    space = _open(config)
    job.check_abort()
    from ..viewer.window import open_explorer

    open_explorer(space, config.output_directory, config.n_movie_frames, config.screenshot)
