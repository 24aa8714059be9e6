"""``dynamight deformable-backprojection``: half-maps of the consensus frame from deformed particles."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from ..runtime import JobControl
from .options import StepConfig

HELP = "Reconstruct half-maps in the consensus frame, undoing each particle's deformation."


class Config(StepConfig):
    output_directory: Path = Field(description="the optimize-deformations output directory",
                                   json_schema_extra={"positional": True})
    checkpoint_file: Path | None = Field(None, description="forward checkpoint (default: "
                                         "forward_deformations/checkpoints/checkpoint_final.pth)",
                                         json_schema_extra={"aliases": ["--vae-directory"]})
    inverse_deformation_directory: Path | None = Field(
        None, description="inverse deformations (default: OUTPUT_DIRECTORY/inverse_deformations); their held-out "
                          "check is reported; the backprojection itself warps with the forward field")
    batch_size: int = Field(24, ge=1, description="particles per batch when computing deformations")
    backprojection_batch_size: int = Field(32, ge=1, description="particles per batch when inserting images")
    downsample: int = Field(2, ge=1, description="the deformation field is evaluated on a (box/downsample)^3 grid")
    particles_per_cluster: int = Field(200, ge=1, description="particles per cluster of similar deformations: each "
                                       "cluster's data is reconstructed, warped into the consensus frame as one")
    fit_cluster_scales: bool = Field(True, description="scale each cluster's warp (about the half-set's mean "
                                     "deformation) to what best aligns its low-resolution density with the rest of "
                                     "its half-set (corrects the too small motions a blurred consensus map leads to)")
    mask_file: Path | None = Field(None, description="solvent mask: the FSC (and the Wiener term) is the mask-corrected one")
    preload_images: bool = Field(False, description="read all images into memory first")
    seed: int = Field(0, description="seed of the clustering")


def run(config: Config, job: JobControl) -> None:
    from ..reconstruction.deformable_step import deformable_backprojection

    deformable_backprojection(config, job)
