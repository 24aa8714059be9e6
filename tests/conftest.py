"""Shared fixtures: tiny simulated projects, RELION programs, the shared real-STAR fixtures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dynamight.simulate.dataset import simulate

SHARED_FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "relion-star"


@pytest.fixture(scope="session")
def tiny_project(tmp_path_factory) -> Path:
    """A 200-particle, 32-px hinge dataset at SNR 0.5 (seed 3)."""
    out = tmp_path_factory.mktemp("tiny")
    simulate(out, n_particles=200, box_px=32, pixel_size_angstrom=4.0, snr=0.5, motion="hinge", seed=3)
    return out


@pytest.fixture(scope="session")
def clean_project(tmp_path_factory) -> Path:
    """A noise-free, static 800-particle, 32-px dataset (for comparisons with RELION)."""
    out = tmp_path_factory.mktemp("clean")
    simulate(out, n_particles=800, box_px=32, pixel_size_angstrom=4.0, snr=0.0, motion="none", seed=5)
    return out


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)
