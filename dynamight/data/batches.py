"""Batches of particles as tensors: images, poses, centring shifts and CTF parameters."""

from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, TypeVar

import numpy as np
import torch

from .ctf import CtfParameters
from .fourier import cropped_pixel_size, fourier_crop
from .geometry import centring_shift_px, euler_angles_to_matrix
from .images import ParticleImages
from .particles import ParticleTable

T = TypeVar("T")


@dataclass
class ParticleBatch:
    """A batch of particles that share one optics group's box and pixel size.

    Attributes:
        indices: ``(b,)`` particle indices into the table.
        images: ``(b, d, d)`` float32 images as stored.
        rotations: ``(b, 3, 3)`` RELION matrices ``A`` (map -> image coordinates).
        centring_shift_px: ``(b, 2)`` shift (xy, pixels) that centres each image (``+origin``).
        ctf: ``(b,)`` CTF parameters (``None`` when the data carry no CTF).
        pixel_size_angstrom: the group's pixel size.
    """

    indices: np.ndarray
    images: torch.Tensor
    rotations: torch.Tensor
    centring_shift_px: torch.Tensor
    ctf: CtfParameters | None
    pixel_size_angstrom: float

    @property
    def box_px(self) -> int:
        return self.images.shape[-1]

    def part(self, rows: slice) -> "ParticleBatch":
        """The particles ``rows`` of this batch."""
        return ParticleBatch(self.indices[rows], self.images[rows], self.rotations[rows], self.centring_shift_px[rows],
                             None if self.ctf is None else self.ctf[rows], self.pixel_size_angstrom)


def ctf_parameters(table: ParticleTable, indices: np.ndarray, device=None) -> CtfParameters:
    """``(b,)`` CTF parameters of the given particles as float64 tensors."""
    def t(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(a[indices], dtype=torch.float64, device=device)

    return CtfParameters(
        defocus_u_angstrom=t(table.defocus_u_angstrom), defocus_v_angstrom=t(table.defocus_v_angstrom),
        defocus_angle_deg=t(table.defocus_angle_deg), voltage_kv=t(table.voltage_kv),
        spherical_aberration_mm=t(table.spherical_aberration_mm), amplitude_contrast=t(table.amplitude_contrast),
        phase_shift_deg=t(table.phase_shift_deg), bfactor_angstrom2=t(table.bfactor_angstrom2),
        scale=t(table.ctf_scale),
    )


def group_batches(table: ParticleTable, indices: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    """Split ``indices`` into batches of at most ``batch_size``, never mixing optics groups."""
    indices = np.asarray(indices, dtype=np.int64)
    for group in np.unique(table.optics_index[indices]):
        members = indices[table.optics_index[indices] == group]
        for start in range(0, len(members), batch_size):
            yield members[start:start + batch_size]


def load_batch(table: ParticleTable, images: ParticleImages, indices: np.ndarray, device=None,
               box_px: int | None = None) -> ParticleBatch:
    """Read and convert one batch (all of one optics group, see :func:`group_batches`).

    ``box_px``: a smaller working box; the images are Fourier-cropped to it and the batch's pixel
    size (and so its CTF and centring shifts) is the group's times ``d / box_px``.
    """
    group = table.optics_groups[int(table.optics_index[indices[0]])]
    box = box_px or group.box_px
    pixel = cropped_pixel_size(group.pixel_size_angstrom, group.box_px, box)
    angles = torch.as_tensor(table.angles_deg[indices], dtype=torch.float64)
    origins = torch.as_tensor(table.origins_angstrom[indices], dtype=torch.float64)
    return ParticleBatch(
        indices=indices,
        images=fourier_crop(torch.from_numpy(images.read(indices)).to(device), box),
        rotations=euler_angles_to_matrix(angles).float().to(device),
        centring_shift_px=centring_shift_px(origins, pixel).float().to(device),
        ctf=ctf_parameters(table, indices, device) if table.has_ctf else None,
        pixel_size_angstrom=pixel,
    )


def read_ahead(batches: Iterable[np.ndarray], load: Callable[[np.ndarray], T], depth: int = 2) -> Iterator[tuple[np.ndarray, T]]:
    """``(indices, load(indices))`` for each batch, loading up to ``depth`` batches ahead in a
    background thread (reading overlaps computing; memory stays bounded by ``depth`` batches)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending: deque = deque()
        for indices in batches:
            pending.append((indices, pool.submit(load, indices)))
            if len(pending) > depth:
                done, future = pending.popleft()
                yield done, future.result()
        while pending:
            done, future = pending.popleft()
            yield done, future.result()
