"""Learning deformations at a Fourier-cropped training box: the crop's physics, the automatic box,
and a run whose later steps use the full-size images."""

from __future__ import annotations

import math
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import torch

from dynamight.cli import main
from dynamight.data.batches import load_batch
from dynamight.data.fourier import fourier_crop
from dynamight.data.images import ParticleImages
from dynamight.data.particles import read_particles
from dynamight.errors import InputError
from dynamight.model.render import project_gaussians
from dynamight.reconstruction.imaging import batch_ctf, centred_spectra
from dynamight.training.checkpoint import load_checkpoint
from dynamight.training.layout import find_final_checkpoint
from dynamight.training.model import ForwardModel
from dynamight.training.setup import consensus_gaussians, training_box

from .test_optimize_deformations import TINY


def _ncc(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()))


def test_fourier_crop_equals_rendering_at_the_coarser_pixel():
    """A projection rendered at 2 Å/px and cropped to half the box is the projection rendered at
    4 Å/px, on the original pixel scale (the projection in units of the pixel, halved at 4 Å/px,
    times 2)."""
    generator = torch.Generator().manual_seed(0)
    positions = torch.randn((40, 3), generator=generator) * 12
    amplitudes, sigma = torch.rand(40, generator=generator) + 0.5, torch.full((40,), 5.0)
    rotation = torch.eye(3)[None]
    fine = project_gaussians(positions, amplitudes, sigma, rotation, 64, 2.0)
    coarse = project_gaussians(positions, amplitudes, sigma, rotation, 32, 4.0) * 2
    cropped = fourier_crop(fine, 32)
    assert cropped.shape == (1, 32, 32)
    assert float((cropped - coarse).abs().max() / coarse.abs().max()) < 0.01
    assert fourier_crop(fine, 64) is fine


def test_automatic_training_box():
    """Pixel about 1.2 Gaussian widths, even, at least 32, never above the box; a typed value wins."""
    assert training_box(64, 3.0, torch.full((10,), 1.8), None) == 64  # Gaussians finer than the pixel
    assert training_box(256, 1.0, torch.full((10,), 3.0), None) == 72  # 256 / 3.6 = 71.1 -> 72
    assert training_box(256, 1.0, torch.full((10,), 20.0), None) == 32  # at least 32
    assert training_box(400, 0.83, torch.full((10,), 2.0), 160) == 160
    for bad in (401, 161, 4):
        with pytest.raises(InputError, match="--training-box"):
            training_box(400, 0.83, torch.full((10,), 2.0), bad)


def test_cropped_batches_match_the_model_as_well_as_full_ones(clean_project):
    """Noise-free particles: the consensus model's prediction at a training box of 24 (5.33 Å/px)
    fits the Fourier-cropped images (pixel size, CTF and centring shifts rescaled) as well as the
    full-size prediction fits the full images."""
    table = read_particles(clean_project / "particles.star")
    images = ParticleImages(table)
    gaussians, _, _ = consensus_gaussians(clean_project / "map.mrc", None, None, 300, 32, 4.0, 0)
    indices = np.arange(32)
    fits = {}
    for box in (32, 24):
        batch = load_batch(table, images, indices, box_px=box)
        pixel = 4.0 * 32 / box
        assert batch.box_px == box and batch.pixel_size_angstrom == pytest.approx(pixel)
        model = ForwardModel(gaussians, torch.ones(len(gaussians)), box, pixel, 2, box / 2)
        spectra = centred_spectra(batch)
        predicted = model.predict(model.positions, batch.rotations, batch_ctf(batch))
        radius = torch.arange(box) - box // 2
        inside = (radius[:, None] ** 2 + radius[None, :] ** 2) < (0.4 * box) ** 2  # below 0.8 Nyquist
        fits[box] = min(_ncc(torch.view_as_real(spectra[i][inside]), torch.view_as_real(predicted[i][inside]))
                        for i in range(len(indices)))
    assert fits[32] > 0.9, fits  # measured 0.997
    assert fits[24] > fits[32] - 0.02, fits  # measured 0.982 (Gaussians of 2.3 Å sampled at 5.3 Å/px)


def test_run_at_a_training_box_keeps_full_size_outputs(tiny_project, tmp_path):
    """Training at box 24 (from 32): the checkpoint records it, the models come back on it, and the
    inverse and the deformable backprojection give full-size 32-px maps at the particles' 4 Å/px."""
    out = tmp_path / "run"
    assert main(["optimize-deformations", "--refinement-star-file", str(tiny_project / "particles.star"),
                 "--output-directory", str(out), "--initial-model", str(tiny_project / "map.mrc"),
                 "--n-epochs", "2", "--training-box", "24", *TINY]) == 0
    saved = load_checkpoint(find_final_checkpoint(out))
    assert saved["training_box_px"] == 24
    encoder_inputs = saved["halves"]["1"]["model"]["encoder.net.0.weight"].shape[1] - 9  # pixels + the pose
    assert 0 < encoder_inputs <= 12 * 12  # the 2x-binned 24-px image
    assert main(["optimize-inverse-deformations", str(out), "--n-epochs", "5", "--gpu-id", "-1"]) == 0
    assert main(["deformable-backprojection", str(out), "--gpu-id", "-1", "--particles-per-cluster", "50"]) == 0
    for name in ("map_half1.mrc", "map_half2.mrc", "map.mrc"):
        with mrcfile.open(out / "backprojection" / name) as mrc:
            assert mrc.data.shape == (32, 32, 32) and float(mrc.voxel_size.x) == pytest.approx(4.0)
            assert math.isfinite(float(mrc.data.std())) and float(mrc.data.std()) > 0
