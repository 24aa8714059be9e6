"""The contrast transfer function, exactly as RELION's ``CTF::getCTF`` (CTFFIND 4.1 convention)."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch

from .fourier import frequency_grid


@dataclass
class CtfParameters:
    """CTF parameters of a batch of particles; every field is a ``(b,)`` tensor.

    Defocus is positive for underfocus (Å); the astigmatism angle and phase shift are in degrees;
    the B-factor is in Å²; Cs in mm; voltage in kV.
    """

    defocus_u_angstrom: torch.Tensor
    defocus_v_angstrom: torch.Tensor
    defocus_angle_deg: torch.Tensor
    voltage_kv: torch.Tensor
    spherical_aberration_mm: torch.Tensor
    amplitude_contrast: torch.Tensor
    phase_shift_deg: torch.Tensor
    bfactor_angstrom2: torch.Tensor
    scale: torch.Tensor

    def to(self, device) -> "CtfParameters":
        return CtfParameters(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def __getitem__(self, index) -> "CtfParameters":
        return CtfParameters(**{f.name: getattr(self, f.name)[index] for f in fields(self)})


def electron_wavelength_angstrom(voltage_kv: torch.Tensor) -> torch.Tensor:
    """Relativistic electron wavelength. ``(b,)`` kV -> ``(b,)`` Å."""
    volts = voltage_kv * 1e3
    return 12.2643247 / torch.sqrt(volts * (1 + 0.978466e-6 * volts))


def ctf_from_frequencies(params: CtfParameters, freq_per_angstrom: torch.Tensor) -> torch.Tensor:
    """CTF values at given spatial frequencies.

    Args:
        params: ``(b,)`` parameters.
        freq_per_angstrom: ``(b, ..., 2)`` frequencies in 1/Å, xy.

    Returns:
        ``(b, ...)`` CTF = ``-sin(gamma) * exp(-B u^2 / 4) * scale``.
    """
    b = params.defocus_u_angstrom.shape[0]
    extra = freq_per_angstrom.ndim - 2

    def per_particle(t: torch.Tensor) -> torch.Tensor:
        return t.reshape((b,) + (1,) * extra).to(freq_per_angstrom.dtype)

    kx, ky = freq_per_angstrom[..., 0], freq_per_angstrom[..., 1]
    u2 = kx**2 + ky**2
    wavelength = per_particle(electron_wavelength_angstrom(params.voltage_kv.double()))
    cs = per_particle(params.spherical_aberration_mm) * 1e7
    du, dv = per_particle(params.defocus_u_angstrom), per_particle(params.defocus_v_angstrom)
    azimuth = torch.deg2rad(per_particle(params.defocus_angle_deg))
    defocus = 0.5 * ((du + dv) + (du - dv) * torch.cos(2 * (torch.atan2(ky, kx) - azimuth)))
    q0 = per_particle(params.amplitude_contrast)
    amplitude_phase = torch.atan(q0 / torch.sqrt(1 - q0**2))
    gamma = (
        -math.pi * wavelength * defocus * u2
        + 0.5 * math.pi * cs * wavelength**3 * u2**2
        - torch.deg2rad(per_particle(params.phase_shift_deg))
        - amplitude_phase
    )
    envelope = torch.exp(-per_particle(params.bfactor_angstrom2) * u2 / 4)
    return -torch.sin(gamma) * envelope * per_particle(params.scale)


def ctf_image(params: CtfParameters, box_px: int, pixel_size_angstrom: float | torch.Tensor) -> torch.Tensor:
    """Centred CTF images for a batch.

    Args:
        params: ``(b,)`` parameters.
        box_px: image size ``d``.
        pixel_size_angstrom: scalar or ``(b,)`` pixel size.

    Returns:
        ``(b, d, d)`` CTF on the centred frequency grid of a ``d``-box image (zero frequency at
        ``[d // 2, d // 2]``), float32.
    """
    device = params.defocus_u_angstrom.device
    k = frequency_grid(box_px, 2, device=device, dtype=torch.float64)
    b = params.defocus_u_angstrom.shape[0]
    pix = torch.as_tensor(pixel_size_angstrom, dtype=torch.float64, device=device).reshape(-1, 1, 1, 1)
    freq = (k[None] / pix).expand(b, box_px, box_px, 2)
    return ctf_from_frequencies(params, freq).float()
