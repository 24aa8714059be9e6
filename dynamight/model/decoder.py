"""Decoders: latent z -> per-Gaussian displacements (free-form, or one rigid motion per body)."""

from __future__ import annotations

import math

import torch
import torch.nn as nn


def positional_encoding(positions: torch.Tensor, extent_angstrom: float, n_frequencies: int) -> torch.Tensor:
    """``(..., 3)`` positions (Å) -> ``(..., 6 F)`` sin/cos at ``pi 2^k / extent`` for ``k < F``."""
    scaled = positions / extent_angstrom
    freqs = math.pi * 2.0 ** torch.arange(n_frequencies, device=positions.device, dtype=positions.dtype)
    arg = (scaled[..., None] * freqs).flatten(-2)
    return torch.cat([torch.sin(arg), torch.cos(arg)], dim=-1)


class DisplacementDecoder(nn.Module):
    """``[PE(c_j), z] -> MLP -> delta_j`` with the last layer zero-initialised (no motion at start).

    ``local_rigid=True``: the MLP gives each Gaussian a rotation ``R_j`` (about the box centre) and
    a translation ``t_j``, and ``delta_j = R_j c_j + t_j - c_j``. A region that moves as one rigid
    body (a domain swinging about a hinge) then has a *constant* output, which the network makes as
    easily as a plain shift, and which leaves every distance inside it unchanged, so the distance
    prior does not pull the rotation towards a translation. ``local_rigid=False``: the MLP gives
    ``delta_j`` directly (upstream's decoder), where a rotation needs a field linear in position.

    The first layer is split into a per-Gaussian and a per-particle part, so the ``(b, n)``
    broadcast starts at the first hidden layer.

    Beside the MLP, a term linear in ``z``: ``M(c_j) z``, where a small network of the position
    gives each Gaussian one output vector per latent dimension (zero at start). Every latent
    dimension thus has output weights of its own, which only the particles' amounts along it train.
    In the MLP alone, where ``z`` enters at the first layer and every weight serves every motion, a
    strong motion dominates the optimiser's adaptive step sizes of all weights: on 1BD2 with the TCR
    and β2-microglobulin hinging independently, the MLP alone fed with the TRUE amounts of both
    motions as fixed codes learnt the TCR's (5.8 Å RMS) and, after 12 epochs, none of β2m's (0.4 Å,
    as the fixed domain's).
    """

    def __init__(self, n_latent: int, extent_angstrom: float, n_frequencies: int = 6, hidden: int = 32,
                 n_layers: int = 8, step_angstrom: float = 1.0, local_rigid: bool = False):
        super().__init__()
        self.extent_angstrom, self.n_frequencies, self.step_angstrom = extent_angstrom, n_frequencies, step_angstrom
        self.local_rigid = local_rigid
        self.from_position = nn.Linear(6 * n_frequencies, hidden)
        self.from_latent = nn.Linear(n_latent, hidden, bias=False)
        self.hidden = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(n_layers - 2))
        self.n_outputs = 6 if local_rigid else 3
        self.out = nn.Linear(hidden, self.n_outputs)
        self.modes = nn.Sequential(nn.Linear(6 * n_frequencies, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                                   nn.ReLU(), nn.Linear(hidden, self.n_outputs * n_latent))
        for layer in (self.out, self.modes[-1]):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, z: torch.Tensor, positions: torch.Tensor, movable: torch.Tensor) -> torch.Tensor:
        """Displacements.

        Args:
            z: ``(b, l)`` latent codes.
            positions: ``(n, 3)`` consensus positions, or ``(b, n, 3)`` per particle, Å.
            movable: ``(n,)`` 1 inside the deformation mask, 0 outside.

        Returns:
            ``(b, n, 3)`` displacements in Å (zero where ``movable`` is 0).
        """
        pe = positional_encoding(positions, self.extent_angstrom, self.n_frequencies)
        from_position = self.from_position(pe)
        if positions.ndim == 2:
            from_position = from_position[None]
        h = torch.relu(from_position + self.from_latent(z)[:, None])
        for layer in self.hidden:
            h = torch.relu(layer(h))
        modes = self.modes(pe).unflatten(-1, (self.n_outputs, z.shape[-1]))  # ([b,] n, k, l)
        out = self.out(h) + (torch.einsum("nkl,bl->bnk", modes, z) if modes.ndim == 3
                             else torch.einsum("bnkl,bl->bnk", modes, z))
        if not self.local_rigid:
            return out * self.step_angstrom * movable[None, :, None]
        # one output unit turns a point at the extent by about step_angstrom
        rotation = axis_angle_to_matrix(out[..., :3].float() * (self.step_angstrom / self.extent_angstrom))
        moved = torch.einsum("...ij,...j->...i", rotation, positions.expand(out.shape[:-1] + (3,)))
        return (moved - positions + out[..., 3:] * self.step_angstrom) * movable[None, :, None]


def axis_angle_to_matrix(v: torch.Tensor) -> torch.Tensor:
    """``(..., 3)`` rotation vectors (radians) -> ``(..., 3, 3)`` matrices (Rodrigues, safe at 0)."""
    theta2 = (v * v).sum(-1, keepdim=True)[..., None]
    theta = torch.sqrt(theta2 + 1e-12)
    x, y, z = v.unbind(-1)
    zero = torch.zeros_like(x)
    k = torch.stack([torch.stack([zero, -z, y], -1), torch.stack([z, zero, -x], -1),
                     torch.stack([-y, x, zero], -1)], -2)
    eye = torch.eye(3, device=v.device, dtype=v.dtype).expand(k.shape)
    a = torch.sin(theta) / theta
    b = (1 - torch.cos(theta)) / (theta2 + 1e-12)
    b = torch.where(theta2 < 1e-8, torch.full_like(b, 0.5), b)
    return eye + a * k + b * (k @ k)


class RigidBodyDecoder(nn.Module):
    """z -> one rotation and translation per body; each body rotates about its own centre."""

    def __init__(self, n_latent: int, n_bodies: int, hidden: int = 64, n_layers: int = 3, step_angstrom: float = 1.0):
        super().__init__()
        layers: list[nn.Module] = []
        width = n_latent
        for _ in range(n_layers - 1):
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        self.net = nn.Sequential(*layers)
        self.out = nn.Linear(width, 6 * n_bodies)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.n_bodies, self.step_angstrom = n_bodies, step_angstrom

    def forward(self, z: torch.Tensor, positions: torch.Tensor, body: torch.Tensor) -> torch.Tensor:
        """``(b, l)``, ``(n, 3)`` Å, ``(n,)`` body index (-1: no body) -> ``(b, n, 3)`` displacements, Å."""
        params = self.out(self.net(z)).reshape(z.shape[0], self.n_bodies, 6)
        rotation = axis_angle_to_matrix(params[..., :3] * 0.05)  # (b, k, 3, 3)
        translation = params[..., 3:] * self.step_angstrom  # (b, k, 3)
        inside = body >= 0
        index = body.clamp(min=0)
        counts = torch.zeros(self.n_bodies, device=positions.device).index_add_(0, index[inside], torch.ones_like(index[inside], dtype=positions.dtype))
        centres = torch.zeros(self.n_bodies, 3, device=positions.device).index_add_(0, index[inside], positions[inside])
        centres = centres / counts.clamp(min=1)[:, None]
        relative = positions - centres[index]  # (n, 3)
        moved = torch.einsum("bnij,nj->bni", rotation[:, index], relative) + translation[:, index]
        return (moved - relative) * inside[None, :, None]
