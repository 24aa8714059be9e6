"""``dynamight optimize-deformations-rigid``: one rigid motion per body defined by masks."""

from __future__ import annotations

from pathlib import Path

from pydantic import ConfigDict, Field

from ..runtime import JobControl
from .optimize_deformations import Config as FreeConfig

HELP = "As optimize-deformations, but each body (one mask per body in --deformation-masks) moves rigidly."


class Config(FreeConfig):
    model_config = ConfigDict(frozen=True, extra="forbid")

    deformation_masks: Path = Field(description="folder with one binary mask (*.mrc) per rigid body")


def run(config: Config, job: JobControl) -> None:
    from ..training.run import optimize_deformations

    optimize_deformations(config, job, deformation_masks=config.deformation_masks)
