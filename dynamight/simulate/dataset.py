"""Write a complete small RELION project with known per-particle conformations.

Everything random is drawn first, from one seeded generator, in a fixed order: poses, shifts, CTF,
half-sets, the motion variable, then the noise (one generator per batch, seeded from the seed and
the batch number). A run with ``motion="none"`` and the same seed is therefore the static twin of a
moving dataset: the same poses, CTF and noise, every particle in the consensus conformation.

SNR is the ratio of the mean variance of the noise-free CTF-modulated images (over the whole box,
consensus conformation, first 200 particles) to the noise variance.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Literal

import mrcfile
import numpy as np
import pandas as pd
import starfile
import torch

from ..data.ctf import CtfParameters, ctf_image
from ..data.files import atomic_path
from ..data.fourier import fft_centred
from ..data.geometry import euler_angles_to_matrix
from ..data.volumes import soft_mask, write_map
from ..model.render import project_gaussians, render_volume
from ..reconstruction.imaging import observe
from .molecule import Molecule, hinge_positions, interpolated_positions, two_domain_molecule

log = logging.getLogger(__name__)

Motion = Literal["hinge", "interpolate", "none"]
ATOM_SIGMA_ANGSTROM = 2.0
STACK_SIZE = 1000


def draw_particles(n: int, seed: int, box_px: int, pixel_size_angstrom: float, max_hinge_deg: float) -> pd.DataFrame:
    """The random per-particle values (RELION columns plus the motion variables)."""
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
    return pd.DataFrame({
        "rlnAngleRot": angles[:, 0], "rlnAngleTilt": angles[:, 1], "rlnAnglePsi": angles[:, 2],
        "rlnOriginXAngst": origins[:, 0], "rlnOriginYAngst": origins[:, 1],
        "rlnDefocusU": defocus_u, "rlnDefocusV": defocus_v, "rlnDefocusAngle": defocus_angle,
        "rlnOpticsGroup": 1, "rlnRandomSubset": half, "hinge": hinge, "fraction": fraction,
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


def conformations(molecule: Molecule, motion: Motion, rows: pd.DataFrame) -> torch.Tensor:
    """``(b, n, 3)`` atom positions of the given particles."""
    if motion == "hinge":
        return hinge_positions(molecule, torch.as_tensor(rows["hinge"].to_numpy(copy=True)))
    if motion == "interpolate":
        return interpolated_positions(molecule, torch.as_tensor(rows["fraction"].to_numpy(copy=True)))
    return molecule.positions_angstrom[None].expand(len(rows), -1, -1)


def clean_images(molecule: Molecule, positions: torch.Tensor, rows: pd.DataFrame, box_px: int,
                 pixel_size_angstrom: float, voltage_kv: float, cs_mm: float, q0: float) -> torch.Tensor:
    """``(b, d, d)`` noise-free images: Gaussian projections, CTF, shifted by ``-origin``."""
    b, n = positions.shape[:2]
    angles = torch.as_tensor(rows[["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]].to_numpy(copy=True))
    rot = euler_angles_to_matrix(angles).float()
    amplitudes = torch.ones(n)
    sigma = torch.full((n,), ATOM_SIGMA_ANGSTROM)
    projections = torch.stack([project_gaussians(positions[i], amplitudes, sigma, rot[i:i + 1], box_px,
                                                 pixel_size_angstrom)[0] for i in range(b)])

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
             batch_size: int = 100, on_batch: Callable[[int], None] | None = None) -> None:
    """Write ``particles.star``, ``Particles/*.mrcs``, ``map.mrc`` (consensus conformation),
    ``mask.mrc``, ``masks/{fixed,moving}_domain.mrc`` and ``ground_truth.star`` into ``output_directory``."""
    out = Path(output_directory)
    out.mkdir(parents=True, exist_ok=True)
    molecule = two_domain_molecule()
    rows = draw_particles(n_particles, seed, box_px, pixel_size_angstrom, max_hinge_deg)
    if motion == "none":
        rows["hinge"] = 0.0
        rows["fraction"] = 0.0
    optics = dict(voltage_kv=300.0, cs_mm=2.7, q0=0.1)

    reference = rows.iloc[: min(200, n_particles)]
    signal = clean_images(molecule, conformations(molecule, "none", reference), reference, box_px,
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
            images = clean_images(molecule, conformations(molecule, motion, batch), batch, box_px,
                                  pixel_size_angstrom, **optics)
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

    _write_star(out, rows, names, box_px, pixel_size_angstrom, optics)
    _write_maps(out, molecule, box_px, pixel_size_angstrom)
    _write_ground_truth(out, rows, names, molecule, motion, snr, seed, noise_sigma)


def _write_star(out: Path, rows: pd.DataFrame, names: list[str], box_px: int, pixel: float, optics: dict) -> None:
    optics_table = pd.DataFrame({
        "rlnOpticsGroup": [1], "rlnOpticsGroupName": ["opticsGroup1"], "rlnAmplitudeContrast": [optics["q0"]],
        "rlnSphericalAberration": [optics["cs_mm"]], "rlnVoltage": [optics["voltage_kv"]],
        "rlnImagePixelSize": [pixel], "rlnImageSize": [box_px], "rlnImageDimensionality": [2],
        "rlnCtfDataAreCtfPremultiplied": [0],
    })
    particles = rows.drop(columns=["hinge", "fraction"]).copy()
    particles.insert(0, "rlnImageName", names)
    with atomic_path(out / "particles.star") as tmp:
        starfile.write({"optics": optics_table, "particles": particles}, tmp, overwrite=True)


def _write_maps(out: Path, molecule: Molecule, box_px: int, pixel: float) -> None:
    n = len(molecule.moving)
    amplitudes, sigma = torch.ones(n), torch.full((n,), ATOM_SIGMA_ANGSTROM)
    consensus = render_volume(molecule.positions_angstrom, amplitudes, sigma, box_px, pixel)
    write_map(out / "map.mrc", consensus, pixel)
    threshold = 0.1 * float(consensus.max())
    write_map(out / "mask.mrc", soft_mask(consensus, threshold, extend_px=2, soft_edge_px=4), pixel)
    for name, keep in (("fixed_domain", ~molecule.moving), ("moving_domain", molecule.moving)):
        part = render_volume(molecule.positions_angstrom[keep], amplitudes[keep], sigma[keep], box_px, pixel)
        write_map(out / "masks" / f"{name}.mrc", soft_mask(part, threshold, extend_px=2, soft_edge_px=3), pixel)


def _write_ground_truth(out: Path, rows: pd.DataFrame, names: list[str], molecule: Molecule, motion: str,
                        snr: float, seed: int, noise_sigma: float) -> None:
    truth = pd.DataFrame({"rlnImageName": names, "dmTrueHingeAngleDeg": rows["hinge"].to_numpy(),
                          "dmTrueInterpolationFraction": rows["fraction"].to_numpy()})
    p = molecule.positions_angstrom.numpy()
    atoms = pd.DataFrame({"dmAtomX": p[:, 0], "dmAtomY": p[:, 1], "dmAtomZ": p[:, 2],
                          "dmAtomMoving": molecule.moving.numpy().astype(int)})
    general = {"dmMotion": motion, "dmSnr": snr, "dmSeed": seed, "dmNoiseSigma": noise_sigma,
               "dmAtomSigmaAngstrom": ATOM_SIGMA_ANGSTROM,
               "dmHingePointX": float(molecule.hinge_point_angstrom[0]),
               "dmHingePointY": float(molecule.hinge_point_angstrom[1]),
               "dmHingePointZ": float(molecule.hinge_point_angstrom[2])}
    with atomic_path(out / "ground_truth.star") as tmp:
        starfile.write({"general": general, "particles": truth, "atoms": atoms}, tmp, overwrite=True)
