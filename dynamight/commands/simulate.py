"""``dynamight simulate``: a small RELION project with known per-particle motions."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ..runtime import JobControl, progress, save_config
from ..simulate.dataset import simulate

HELP = "Simulate a RELION project (particles.star, stacks, map, masks, ground truth) of a moving two-domain molecule."


class Config(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    output_directory: Path = Field(description="project directory to write")
    n_particles: int = Field(1000, ge=2, description="number of particle images")
    box_size: int = Field(64, ge=32, description="image box in pixels (even)")
    pixel_size: float = Field(2.0, gt=0, description="pixel size in Å")
    snr: float = Field(0.1, ge=0, description="signal-to-noise ratio (variance ratio); 0 for no noise")
    motion: Literal["hinge", "interpolate", "none"] = Field(
        "hinge", description="hinge rotation, interpolation between two conformations, or none (the static twin)")
    max_hinge_angle: float = Field(25.0, ge=0, description="hinge angles are uniform in ±this many degrees")
    seed: int = Field(0, description="random seed (same seed + --motion none = the static twin)")


def run(config: Config, job: JobControl) -> None:
    if config.box_size % 2:
        from ..errors import InputError

        raise InputError(f"--box-size {config.box_size}: must be even")
    save_config(config.output_directory / "simulation_config.json", config)
    with progress(job, "simulating", config.n_particles) as advance:
        simulate(config.output_directory, config.n_particles, config.box_size, config.pixel_size, config.snr,
                 config.motion, config.max_hinge_angle, config.seed, on_batch=advance)
