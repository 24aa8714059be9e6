"""``dynamight simulate``: a small RELION project with known per-particle motions."""

from __future__ import annotations

from pathlib import Path
from pydantic import BaseModel, ConfigDict, Field

from ..runtime import JobControl, progress, save_config
from ..simulate.dataset import simulate
from ..simulate.scenario import Motion, SyntheticMolecule

HELP = ("Simulate a RELION project (particles.star, stacks, map, masks, ground truth) of a moving molecule: "
        "a synthetic one or a real structure (--atomic-model).")


class Config(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    output_directory: Path = Field(description="project directory to write")
    n_particles: int = Field(1000, ge=2, description="number of particle images")
    box_size: int = Field(64, ge=32, description="image box in pixels (even)")
    pixel_size: float = Field(2.0, gt=0, description="pixel size in Å")
    snr: float = Field(0.1, ge=0, description="signal-to-noise ratio (variance ratio); 0 for no noise")
    motion: Motion = Field(
        "hinge", description="hinge: one part swings rigidly; interpolate: between two conformations; bend: an "
        "elongated part bends along its length (per-particle curvature); two-hinges: two parts swing "
        "independently; none: the static twin")
    max_hinge_angle: float = Field(25.0, ge=0, description="hinge angles are uniform in ±this many degrees")
    max_bend_angle: float = Field(45.0, ge=0, description="bend: the arm's tip turns by up to ±this many degrees")
    atomic_model: Path | None = Field(
        None, description="build the molecule from the heavy atoms of this PDB/mmCIF file, centred (or a shipped "
        "structure: 1ake, 3hsy, 1bd2); default: the synthetic molecule")
    moving_chain: str | None = Field(
        None, description="with --atomic-model: the part that moves (bends, for bend): chains and residue "
        "ranges, e.g. B, D,E or A:122-159")
    second_moving_chain: str | None = Field(
        None, description="with --atomic-model and --motion two-hinges: the second part that moves")
    molecule: SyntheticMolecule | None = Field(
        None, description="synthetic molecule: two-domain (default for hinge, interpolate, none) or branched (a "
        "core, a swinging domain and a long arm; default for bend, two-hinges; with --motion none: their twin)")
    seed: int = Field(0, description="random seed (same seed + --motion none = the static twin)")


def run(config: Config, job: JobControl) -> None:
    if config.box_size % 2:
        from ..errors import InputError

        raise InputError(f"--box-size {config.box_size}: must be even")
    save_config(config.output_directory / "simulation_config.json", config)
    with progress(job, "simulating", config.n_particles) as advance:
        simulate(config.output_directory, config.n_particles, config.box_size, config.pixel_size, config.snr,
                 config.motion, config.max_hinge_angle, config.seed, on_batch=advance,
                 atomic_model=config.atomic_model, moving_chain=config.moving_chain,
                 second_moving_chain=config.second_moving_chain, molecule=config.molecule,
                 max_bend_deg=config.max_bend_angle)
