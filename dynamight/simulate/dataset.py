"""Write a complete small RELION project with known per-particle conformations.

Everything random is drawn first, from one seeded generator, in a fixed order: poses, shifts, CTF,
half-sets, the motion variables (hinge angle, interpolation fraction, second hinge angle, bend;
all drawn whatever the motion), then the noise (one generator per batch, seeded from the seed and
the batch number). A run with ``motion="none"`` and the same seed (and the same molecule) is
therefore the static twin of a moving dataset: the same poses, CTF and noise, every particle in the
consensus conformation.

SNR is the ratio of the mean variance of the noise-free CTF-modulated images (over the whole box,
consensus conformation, first 200 particles) to the noise variance.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import mrcfile
import numpy as np
import pandas as pd
import torch

from ..data.ctf import CtfParameters, ctf_image
from ..data.files import atomic_path
from ..data.fourier import fft_centred
from ..data.geometry import euler_angles_to_matrix
from ..model.render import project_gaussians
from ..reconstruction.imaging import observe
from .molecule import Molecule
from .motions import Part, apply_parts
from .scenario import COLUMNS, Motion, SyntheticMolecule, arm_length, build, check_fits
from .truth import write_ground_truth
from .writers import write_maps, write_star

log = logging.getLogger(__name__)

ATOM_SIGMA_ANGSTROM = 2.0
STACK_SIZE = 1000


def draw_particles(n: int, seed: int, box_px: int, pixel_size_angstrom: float, max_hinge_deg: float) -> pd.DataFrame:
    """The random per-particle values: RELION columns, then the motion variables (``hinge`` and
    ``hinge2`` in degrees, ``fraction`` in [0, 1], ``bend`` in [-1, 1], independent draws)."""
    rng = np.random.default_rng(seed)
    quaternions = rng.normal(size=(n, 4))  # uniform rotations
    quaternions /= np.linalg.norm(quaternions, axis=1, keepdims=True)
    angles = _quaternion_to_relion_angles(quaternions)
    origins = rng.uniform(-1.5, 1.5, size=(n, 2)) * pixel_size_angstrom
    defocus_u = rng.uniform(6000.0, 20000.0, n)
    defocus_v = defocus_u - rng.uniform(0.0, 600.0, n)
    defocus_angle = rng.uniform(0.0, 180.0, n)
    half = rng.permutation(np.arange(n) % 2 + 1)
    hinge = rng.uniform(-max_hinge_deg, max_hinge_deg, n)
    fraction = rng.uniform(0.0, 1.0, n)
    hinge2 = rng.uniform(-max_hinge_deg, max_hinge_deg, n)
    bend = rng.uniform(-1.0, 1.0, n)
    return pd.DataFrame({
        "rlnAngleRot": angles[:, 0], "rlnAngleTilt": angles[:, 1], "rlnAnglePsi": angles[:, 2],
        "rlnOriginXAngst": origins[:, 0], "rlnOriginYAngst": origins[:, 1],
        "rlnDefocusU": defocus_u, "rlnDefocusV": defocus_v, "rlnDefocusAngle": defocus_angle,
        "rlnOpticsGroup": 1, "rlnRandomSubset": half, "hinge": hinge, "fraction": fraction,
        "hinge2": hinge2, "bend": bend,
    })


def _quaternion_to_relion_angles(q: np.ndarray) -> np.ndarray:
    from ..data.geometry import matrix_to_euler_angles

    w, x, y, z = q.T
    m = np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
        np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
        np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
    ], -2)
    return matrix_to_euler_angles(torch.from_numpy(m)).numpy()


def true_factors(rows: pd.DataFrame, motion: Motion, max_bend_deg: float, arm_length_angstrom: float) -> pd.DataFrame:
    """The ground-truth columns of ``motion`` (:data:`~dynamight.simulate.scenario.COLUMNS`) from
    the drawn variables (all 0 for ``none``): the bend's tip angle is ``bend * max_bend_deg``, its
    curvature (1/Å, for the record) that angle in radians over the arm's length."""
    bend_deg = rows["bend"] * max_bend_deg
    values = {"dmTrueHingeAngleDeg": rows["hinge"], "dmTrueInterpolationFraction": rows["fraction"],
              "dmTrueHinge2AngleDeg": rows["hinge2"], "dmTrueBendAngleDeg": bend_deg,
              "dmTrueBendCurvature": np.deg2rad(bend_deg) / arm_length_angstrom}
    scale = 0.0 if motion == "none" else 1.0
    return pd.DataFrame({name: values[name].to_numpy() * scale for name in COLUMNS[motion]})


def conformations(molecule: Molecule, parts: list[Part], factors: pd.DataFrame) -> torch.Tensor:
    """``(b, n, 3)`` atom positions of the particles whose true factors are ``factors``."""
    if not parts:
        return molecule.positions_angstrom[None].expand(len(factors), -1, -1)
    values = {p.factor: torch.as_tensor(factors[p.factor].to_numpy(copy=True)) for p in parts}
    return apply_parts(molecule.positions_angstrom, molecule.domain, parts, values)


def clean_images(molecule: Molecule, positions: torch.Tensor, rows: pd.DataFrame, box_px: int,
                 pixel_size_angstrom: float, voltage_kv: float, cs_mm: float, q0: float) -> torch.Tensor:
    """``(b, d, d)`` noise-free images: Gaussian projections, CTF, shifted by ``-origin``."""
    b, n = positions.shape[:2]
    angles = torch.as_tensor(rows[["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]].to_numpy(copy=True))
    rot = euler_angles_to_matrix(angles).float()
    amplitudes = molecule.amplitudes
    sigma = torch.full((n,), ATOM_SIGMA_ANGSTROM)
    projections = project_gaussians(positions, amplitudes, sigma, rot, box_px, pixel_size_angstrom)

    def col(name):
        return torch.as_tensor(rows[name].to_numpy(copy=True), dtype=torch.float64)

    ctf = CtfParameters(col("rlnDefocusU"), col("rlnDefocusV"), col("rlnDefocusAngle"),
                        torch.full((b,), voltage_kv, dtype=torch.float64), torch.full((b,), cs_mm, dtype=torch.float64),
                        torch.full((b,), q0, dtype=torch.float64), torch.zeros(b, dtype=torch.float64),
                        torch.zeros(b, dtype=torch.float64), torch.ones(b, dtype=torch.float64))
    origin_px = torch.as_tensor(rows[["rlnOriginXAngst", "rlnOriginYAngst"]].to_numpy(copy=True)).float() / pixel_size_angstrom
    return observe(fft_centred(projections, 2), ctf_image(ctf, box_px, pixel_size_angstrom), origin_px)


def simulate(output_directory: Path, n_particles: int = 1000, box_px: int = 64, pixel_size_angstrom: float = 2.0,
             snr: float = 0.1, motion: Motion = "hinge", max_hinge_deg: float = 25.0, seed: int = 0,
             batch_size: int = 100, on_batch: Callable[[int], None] | None = None, *,
             atomic_model: Path | None = None, moving_chain: str | None = None,
             second_moving_chain: str | None = None, molecule: SyntheticMolecule | None = None,
             max_bend_deg: float = 45.0) -> None:
    """Write ``particles.star``, ``Particles/*.mrcs``, ``map.mrc`` (consensus conformation),
    ``mask.mrc``, ``masks/{fixed,moving}_domain.mrc`` (and ``masks/domain_K.mrc`` per moving part
    when there are several) and ``ground_truth.star`` into ``output_directory``.

    The molecule: the synthetic one (``molecule``; see :func:`dynamight.simulate.scenario.build`)
    or the heavy atoms of ``atomic_model`` (a file, or a shipped structure's name) with
    ``moving_chain`` (and ``second_moving_chain``) moving. Hinge angles are uniform in
    ``±max_hinge_deg``; a bending arm's tip turns by up to ``±max_bend_deg``."""
    out = Path(output_directory)
    out.mkdir(parents=True, exist_ok=True)
    molecule, parts = build(motion, atomic_model, moving_chain, second_moving_chain, molecule)
    check_fits(molecule, box_px, pixel_size_angstrom, ATOM_SIGMA_ANGSTROM)
    rows = draw_particles(n_particles, seed, box_px, pixel_size_angstrom, max_hinge_deg)
    factors = true_factors(rows, motion, max_bend_deg, arm_length(parts))
    optics = dict(voltage_kv=300.0, cs_mm=2.7, q0=0.1)

    reference = rows.iloc[: min(200, n_particles)]
    signal = clean_images(molecule, conformations(molecule, [], reference), reference, box_px,
                          pixel_size_angstrom, **optics)
    noise_sigma = float(torch.sqrt(signal.var(dim=(-1, -2)).mean() / snr)) if snr > 0 else 0.0

    names = []
    (out / "Particles").mkdir(exist_ok=True)
    for stack_start in range(0, n_particles, STACK_SIZE):
        stack_name = f"Particles/particles_{stack_start // STACK_SIZE:04d}.mrcs"
        stack_rows = range(stack_start, min(stack_start + STACK_SIZE, n_particles))
        data = np.empty((len(stack_rows), box_px, box_px), dtype=np.float32)
        for start in range(stack_rows.start, stack_rows.stop, batch_size):
            batch = rows.iloc[start:min(start + batch_size, stack_rows.stop)]
            positions = conformations(molecule, parts, factors.iloc[start:start + len(batch)])
            images = clean_images(molecule, positions, batch, box_px, pixel_size_angstrom, **optics)
            noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed * 100003 + start))
            data[start - stack_start:start - stack_start + len(batch)] = (images + noise_sigma * noise).numpy()
            if on_batch is not None:
                on_batch(len(batch))
        with atomic_path(out / stack_name) as tmp:
            with mrcfile.new(tmp, overwrite=True) as mrc:
                mrc.set_data(data)
                mrc.set_image_stack()
                mrc.voxel_size = pixel_size_angstrom
        names += [f"{i - stack_start + 1:06d}@{stack_name}" for i in stack_rows]

    write_star(out, rows, names, box_px, pixel_size_angstrom, optics)
    write_maps(out, molecule, box_px, pixel_size_angstrom, ATOM_SIGMA_ANGSTROM)
    general = {"dmMotion": motion, "dmSnr": snr, "dmSeed": seed, "dmNoiseSigma": noise_sigma,
               "dmAtomSigmaAngstrom": ATOM_SIGMA_ANGSTROM}
    write_ground_truth(out, factors, names, molecule, parts, general)
