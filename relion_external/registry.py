"""The declarations of every External-job executable, in one place.

Each executable module (``reconstruct.py``, later ``train.py``...) binds its declaration here to one
engine call. Schemes are validated against these declarations (``tests/test_schemes.py``), so a
Scheme can only pass a parameter that its executable accepts, and only refer to files it writes.
"""

from __future__ import annotations

from pathlib import Path

from .nodes import NodeKind
from .spec import Input, Output, Param, StepSpec

GPU_ID = Param("gpu_id", int, None, "GPU index; -1 for the CPU; not given: the first GPU if there is one, else the CPU",
               minimum=-1)
PRELOAD = Param("preload_images", bool, False, "read all particle images into memory first")
LOGFILE = Output("logfile.pdf", NodeKind.LOGFILE, "what the step did: parameters, curves, plots")
HALF_MAPS = (
    Output("half1.mrc", NodeKind.HALFMAP, "half-map of half-set 1"),
    Output("half2.mrc", NodeKind.HALFMAP, "half-map of half-set 2"),
    Output("map.mrc", NodeKind.MAP, "the two half-sets merged"),
    Output("fsc.star", None, "FSC between the half-maps (masked when a mask is given)"),
)


def _batch(default: int) -> Param:
    return Param("batch_size", int, default, "particles per batch", minimum=1)


def _checkpoint(what: str, producer: str, file: str) -> Param:
    return Param(what, Path, None, f"the {producer} job's {file} (in a Scheme: Schemes/<name>/{producer}/{file})",
                 required=True)


RECONSTRUCT = StepSpec(
    "relion_dynamight_reconstruct", "relion_external.reconstruct:main",
    "Plain (rigid) half-map reconstruction with FSC: the baseline of the deformable one.",
    inputs=(Input("in_parts", "particle STAR file with poses and CTF (e.g. Refine3D/jobNNN/run_data.star), "
                                "or a cryoSPARC refinement's particles .cs"),
            Input("in_mask", "soft mask for the masked FSC", required=False)),
    params=(GPU_ID, _batch(128), PRELOAD),
    outputs=(*HALF_MAPS, LOGFILE),
)

TRAIN = StepSpec(
    "relion_dynamight_train", "relion_external.train:main",
    "Learn per-particle deformations of a Gaussian model of the consensus map (both half-sets).",
    inputs=(Input("in_parts", "consensus refinement's particles (Refine3D/jobNNN/run_data.star, or a "
                                "cryoSPARC refinement's particles .cs)"),
            Input("in_3dref", "consensus map the Gaussians are fitted to (Refine3D/jobNNN/run_class001.mrc)")),
    params=(Param("n_gaussians", int, None, "number of Gaussian pseudo-atoms (not given: dynamight's default, "
                  "fewer when the map has fewer voxels above the threshold)", minimum=2),
            Param("n_latent_dimensions", int, 5, "dimensions of the latent space", minimum=1),
            Param("regularization_factor", float, 0.3, "weight of the deformation prior", minimum=0),
            Param("n_epochs", int, 200, "training epochs", minimum=1),
            Param("initial_threshold", float, None, "map threshold for placing the Gaussians (not given: estimated)"),
            Param("batch_size", int, None, "particles per batch (not given: dynamight's automatic choice, 128, "
                  "fewer when a training step would not fit in the device's memory)", minimum=1),
            Param("training_box", int, None, "box (pixels) the deformations are learnt at, Fourier-cropped (not "
                  "given: from the Gaussians' width; outputs stay at the particles' box)", minimum=8),
            Param("refine_poses", bool, False, "refine each particle's pose locally with its latent code "
                  "(refined_poses.star; used by invert and backproject)"),
            GPU_ID, PRELOAD),
    outputs=(Output("checkpoint.pth", None, "the trained models (resumed from on continue)"),
             Output("particles.star", NodeKind.PARTICLES, "the particles with their latent coordinates"), LOGFILE),
)

INVERT = StepSpec(
    "relion_dynamight_invert", "relion_external.invert:main",
    "Fit the inverse deformations (deformed -> consensus) needed by the deformable backprojection.",
    inputs=(),
    params=(_checkpoint("checkpoint", "train", "checkpoint.pth"),
            Param("n_epochs", int, 200, "epochs of inverse-deformation fitting", minimum=1),
            _batch(128), GPU_ID, PRELOAD),
    outputs=(Output("inverse.pth", None, "the inverse-deformation model"), LOGFILE),
)

BACKPROJECT = StepSpec(
    "relion_dynamight_backproject", "relion_external.backproject:main",
    "Deformable backprojection: half-maps corrected for every particle's deformation, and their FSC.",
    inputs=(Input("in_mask", "soft mask for the masked FSC", required=False),),
    params=(_checkpoint("checkpoint", "train", "checkpoint.pth"), _checkpoint("inverse", "invert", "inverse.pth"),
            _batch(10), Param("particles_per_cluster", int, 200, "particles per cluster of similar deformations (each is "
                              "reconstructed and warped into the consensus frame as one)", minimum=1),
            GPU_ID, PRELOAD),
    outputs=(*HALF_MAPS, LOGFILE),
)

EXPLORE = StepSpec(
    "relion_dynamight_explore", "relion_external.explore:main",
    "Headless analysis of the latent space: embedding, clusters, maps along the main motions.",
    inputs=(),
    params=(_checkpoint("checkpoint", "train", "checkpoint.pth"),
            Param("half_set", int, 1, "half-set to analyse (1 or 2; 0: the validation set)", minimum=0),
            GPU_ID),
    outputs=(Output("latent_space.star", None, "latent coordinates, embedding and cluster of every particle"),
             LOGFILE),
)

SPECS: dict[str, StepSpec] = {s.executable: s for s in (RECONSTRUCT, TRAIN, INVERT, BACKPROJECT, EXPLORE)}
