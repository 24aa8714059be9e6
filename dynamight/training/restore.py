"""Rebuild the trained half-set models from a forward-deformation checkpoint (for later steps)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..data.fourier import cropped_pixel_size
from ..model.gaussians import GaussianModel
from .checkpoint import load_checkpoint
from .model import ForwardModel


def load_forward_models(path: Path, box_px: int, pixel_size_angstrom: float,
                        device: torch.device) -> tuple[dict[int, ForwardModel], dict]:
    """``{1: model, 2: model}`` in eval mode, and the checkpoint (config, validation split, ...).

    ``box_px``, ``pixel_size_angstrom``: the particles' grid; the models are rebuilt on the grid
    they were trained on (the Fourier-cropped training box, when one was used)."""
    saved = load_checkpoint(path)
    training = int(saved.get("training_box_px", box_px))
    pixel_size_angstrom, box_px = cropped_pixel_size(pixel_size_angstrom, box_px, training), training
    config = saved["config"]
    gaussians = GaussianModel.from_state_dict(saved["gaussians"])
    models = {}
    for half in (1, 2):
        state = saved["halves"][str(half)]["model"]
        model = ForwardModel(gaussians, saved["movable"], box_px, pixel_size_angstrom, config["n_latent_dimensions"],
                             float(saved["mask_radius_px"]),
                             saved["body"], int(saved["n_bodies"]), config["n_positional_encoding_dimensions"],
                             config["n_linear_layers"], config["n_neurons_per_layer"], config["n_encoder_neurons"],
                             config.get("decoder_motion", "displacement") == "local-rigid")
        model.load_state_dict(state)
        models[half] = model.to(device).eval()
    return models, saved
