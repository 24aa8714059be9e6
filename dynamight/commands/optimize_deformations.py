"""``dynamight optimize-deformations``: learn per-particle deformations of a Gaussian model."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from ..model.gaussians import DEFAULT_N_GAUSSIANS
from ..runtime import JobControl
from .options import ParticleFileOptions, StepConfig

HELP = "Learn a latent space and per-particle deformations of a Gaussian model of the consensus map (two half-set models)."


class Config(StepConfig, ParticleFileOptions):
    refinement_star_file: Path = Field(description="particle STAR file of the consensus refinement (poses, CTF, "
                                                   "rlnRandomSubset), or a cryoSPARC refinement's particles .cs file")
    output_directory: Path = Field(description="output directory (forward_deformations/ is written inside)")
    initial_model: Path | None = Field(None, description="consensus map (MRC) to fit the Gaussians to")
    initial_threshold: float | None = Field(None, description="density threshold for the Gaussian fit (default: automatic, Otsu)")
    atomic_model: Path | None = Field(None, description="PDB/mmCIF model whose atoms become the Gaussians")
    mask_file: Path | None = Field(None, description="mask: Gaussians outside it (value < 0.5) do not move")
    checkpoint_file: Path | None = Field(None, description="resume from this checkpoint (default: the latest in the output directory)")
    n_gaussians: int | None = Field(None, ge=2, description=f"number of Gaussians (default: {DEFAULT_N_GAUSSIANS}, "
                                    "or as many as the map has voxels above the threshold, with a warning)")
    training_box: int | None = Field(None, ge=8, description="box (pixels) the deformations are learnt at: the "
                                     "images are Fourier-cropped to it (default: from the Gaussians' width, pixel "
                                     "about 1.2 widths, at least 32); maps and later steps use the full images")
    n_latent_dimensions: int = Field(6, ge=1, description="latent space dimensions")
    regularization_factor: float = Field(0.3, ge=0, description="weight of the distance prior relative to the data "
                                         "(gradient-norm balanced; upstream's default 0.9 erased a weak second motion)")
    batch_size: int | None = Field(None, ge=1, description="particles per batch (default: automatic: 128, "
                                   "halved until the estimated memory of a training step fits in 80 "
                                   "percent of the device's free memory; a resumed run keeps its batch size)")
    n_epochs: int = Field(150, ge=1, description="training epochs")
    n_warmup_epochs: int | None = Field(None, ge=0, description="epochs without the distance prior at the start (default: half of --n-epochs)")
    preload_images: bool = Field(False, description="read all images into memory first")
    particle_diameter: float | None = Field(None, gt=0, description="particle diameter in Å for the encoder's mask (default: from the model)")
    n_positional_encoding_dimensions: int = Field(6, ge=1, description="positional-encoding octaves per axis")
    n_linear_layers: int = Field(8, ge=2, description="decoder layers")
    n_neurons_per_layer: int = Field(32, ge=4, description="decoder width")
    n_encoder_neurons: int = Field(256, ge=8, description="encoder width")
    decoder_motion: Literal["local-rigid", "displacement"] = Field(
        "local-rigid", description="what the decoder gives each Gaussian: a rotation and translation (a rigid domain "
                                   "motion is then constant over the domain) or a displacement (upstream)")
    initial_codes: Literal["forces", "random"] = Field(
        "forces", description="how the per-particle codes start: each particle's scores on the principal components "
                              "of the forces its image exerts on the consensus Gaussians (a linearised variability "
                              "analysis: every latent dimension starts on a motion in the data), or small random values")
    n_fixed_code_epochs: int | None = Field(
        None, ge=0, description="epochs at the start in which the codes stay where they started while the decoder "
                                "learns to follow them (default: a tenth of --n-epochs with --initial-codes forces, "
                                "else 0)")
    latent_learning_rate: float = Field(0.05, gt=0, description="learning rate of the per-particle latent codes")
    latent_refinement_steps: int = Field(4, ge=0, description="Adam steps refining each training particle's code against the final decoder (0: keep the codes learnt in training)")
    refine_poses: bool = Field(False, description="refine each particle's pose with its code after the warm-up: a "
                               "rotation (up to 6 degrees per axis) and an origin shift (up to 2 pixels), "
                               "regularised towards the consensus pose; written to refined_poses.star beside "
                               "latents.star and used by the inverse and the deformable backprojection")
    latent_noise: float = Field(0.1, ge=0, description="noise added to the latent codes while training (smooths the decoder)")
    learning_rate: float = Field(1e-3, gt=0, description="Adam learning rate")
    mixed_precision: bool = Field(False, description="bfloat16 for the encoder and decoder networks on GPUs (rendering and losses stay float32)")
    validation_fraction: float = Field(0.1, ge=0, lt=0.5, description="fraction of each half-set held out for validation")
    seed: int = Field(0, description="random seed")


def run(config: Config, job: JobControl) -> None:
    from ..training.run import optimize_deformations

    optimize_deformations(config, job, deformation_masks=None)
