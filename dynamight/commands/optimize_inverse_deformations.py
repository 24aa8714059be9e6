"""``dynamight optimize-inverse-deformations``: one inverse-deformation network per half-set."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from ..runtime import JobControl
from .options import StepConfig

HELP = "Fit the inverse deformations (deformed frame -> consensus frame) of a trained run."


class Config(StepConfig):
    output_directory: Path = Field(description="the optimize-deformations output directory",
                                   json_schema_extra={"positional": True})
    checkpoint_file: Path | None = Field(None, description="forward checkpoint (default: "
                                                                  "forward_deformations/checkpoints/checkpoint_final.pth)")
    n_epochs: int = Field(50, ge=1, description="epochs over the training particles' codes")
    batch_size: int = Field(16, ge=1, description="codes per batch")
    save_deformations: bool = Field(False, description="also write every particle's deformed Gaussian positions "
                                                       "(inverse_deformations/deformations_half*.npy, memory-mapped)")
    preload_images: bool = Field(False, description="accepted for compatibility: this step reads no images")
    seed: int = Field(0, description="random seed")


def run(config: Config, job: JobControl) -> None:
    from ..inverse.run import optimize_inverse_deformations

    optimize_inverse_deformations(config, job)
