"""Shared by the latent-space tests (no tests here): a tiny trained run, made once per session,
and a latent space whose "decoder" is the simulator's true hinge motion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import starfile
import torch

from dynamight.analysis.decoding import ConformationDecoder
from dynamight.cli import main as dynamight
from dynamight.simulate.dataset import simulate
from dynamight.simulate.evaluate import true_hinge_displacements

_RUNS: dict[str, tuple[Path, Path]] = {}
HINGE_DEG_PER_UNIT = 10.0  # half 1's code: angle / 10; half 2's: -angle / 20 (another latent space)


def trained_run(tmp_path_factory) -> tuple[Path, Path]:
    """``(project, run)``: 200 simulated hinge particles (32 px, 4 Å) and optimize-deformations
    with tiny settings (150 Gaussians, 2 latent dimensions, 2 epochs, CPU). Made once per session."""
    if "run" not in _RUNS:
        root = tmp_path_factory.mktemp("explore")
        project, run = root / "project", root / "run"
        simulate(project, n_particles=200, box_px=32, pixel_size_angstrom=4.0, snr=0.5, motion="hinge", seed=1)
        code = dynamight(["optimize-deformations", "--refinement-star-file", str(project / "particles.star"),
                          "--output-directory", str(run), "--initial-model", str(project / "map.mrc"),
                          "--n-gaussians", "150", "--n-latent-dimensions", "2", "--n-epochs", "2",
                          "--batch-size", "64", "--gpu-id", "-1", "--validation-fraction", "0.15"])
        assert code == 0
        _RUNS["run"] = (project, run)
    return _RUNS["run"]


class HingeModel(torch.nn.Module):
    """A stand-in for a trained half model whose decoder is the true hinge motion:
    ``angle = degrees_per_unit * z[:, 0]`` (the other code dimensions do nothing)."""

    rigid = False

    def __init__(self, positions: torch.Tensor, hinge_point: torch.Tensor, moving: torch.Tensor,
                 degrees_per_unit: float):
        super().__init__()
        self.register_buffer("positions", positions.float())
        self.register_buffer("amplitudes", torch.ones(len(positions)))
        self.register_buffer("sigma", torch.full((len(positions),), 2.0))
        self.register_buffer("movable", torch.ones(len(positions)))
        self.hinge_point, self.moving, self.degrees_per_unit = hinge_point, moving, degrees_per_unit

    def displacements(self, z: torch.Tensor) -> torch.Tensor:
        angle = self.degrees_per_unit * z[:, 0].cpu().float()
        delta = true_hinge_displacements(self.positions.cpu(), angle, self.hinge_point.float())
        return (delta * self.moving[None, :, None]).to(z.device)


def hinge_latents(project: Path, directory: Path, n_latent: int = 3, noise: float = 0.05, seed: int = 0) -> Path:
    """A latents.star for ``project``'s particles with the codes the :class:`HingeModel` pair
    decodes to their true hinge angles (plus a little noise, and noise-only extra dimensions)."""
    rng = np.random.default_rng(seed)
    blocks = starfile.read(project / "particles.star", always_dict=True)
    particles: pd.DataFrame = blocks["particles"].copy()
    angle = starfile.read(project / "ground_truth.star")["particles"]["dmTrueHingeAngleDeg"].to_numpy()
    half = particles["rlnRandomSubset"].to_numpy()
    z = rng.normal(0.0, noise, (len(particles), n_latent))
    z[:, 0] += np.where(half == 1, angle / HINGE_DEG_PER_UNIT, -angle / (2 * HINGE_DEG_PER_UNIT))
    for k in range(n_latent):
        particles[f"rlnDynaMightLatent{k + 1}"] = z[:, k]
    particles["rlnDynaMightHalfSet"] = half
    particles["rlnDynaMightIsValidation"] = (rng.random(len(particles)) < 0.2).astype(int)
    particles["rlnDynaMightDisplacementRms"] = 1.0
    particles["rlnDynaMightErrorEstimate"] = np.where(particles["rlnDynaMightIsValidation"] == 1,
                                                      rng.uniform(0.5, 1.5, len(particles)), 0.0)
    path = directory / "latents.star"
    starfile.write({"optics": blocks["optics"], "particles": particles}, path, overwrite=True)
    return path


def hinge_decoder(project: Path, n_latent: int = 3, box_px: int = 32,
                  pixel_size_angstrom: float = 4.0) -> ConformationDecoder:
    """Half 1 and half 2 :class:`HingeModel` s on the simulated atoms (two different latent spaces)."""
    truth = starfile.read(project / "ground_truth.star")
    general, atoms = truth["general"], truth["atoms"]
    positions = torch.tensor(atoms[["dmAtomX", "dmAtomY", "dmAtomZ"]].to_numpy(), dtype=torch.float32)
    hinge = torch.tensor([general["dmHingePointX"], general["dmHingePointY"], general["dmHingePointZ"]])
    moving = torch.tensor(atoms["dmAtomMoving"].to_numpy().astype(np.float32))
    models = {1: HingeModel(positions, hinge, moving, HINGE_DEG_PER_UNIT),
              2: HingeModel(positions, hinge, moving, -2 * HINGE_DEG_PER_UNIT)}
    return ConformationDecoder(models, box_px, pixel_size_angstrom, n_latent, torch.device("cpu"))
