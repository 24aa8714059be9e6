"""One half-set's forward model: consensus Gaussians + encoder + decoder + image scale."""

from __future__ import annotations

import torch
import torch.nn as nn

from ..data.fourier import fft_centred, ifft_centred
from ..model.decoder import DisplacementDecoder, RigidBodyDecoder
from ..model.encoder import Encoder
from ..model.gaussians import GaussianModel
from ..model.render import project_gaussians


class ForwardModel(nn.Module):
    """Image -> z -> deformed Gaussians -> predicted image spectrum.

    Buffers: ``positions`` ``(n, 3)`` Å, ``amplitudes`` ``(n,)``, ``sigma`` ``(n,)`` Å,
    ``movable`` ``(n,)`` (1 inside the deformation mask), ``body`` ``(n,)`` (rigid mode: body index
    or -1), ``input_scale`` (encoder input normalisation).
    """

    def __init__(self, gaussians: GaussianModel, movable: torch.Tensor, box_px: int, pixel_size_angstrom: float,
                 n_latent: int, mask_radius_px: float, body: torch.Tensor | None = None, n_bodies: int = 0,
                 n_frequencies: int = 6, n_layers: int = 8, n_neurons: int = 32, encoder_hidden: int = 256,
                 local_rigid: bool = False):
        super().__init__()
        self.box_px, self.pixel_size_angstrom = box_px, pixel_size_angstrom
        self.register_buffer("positions", gaussians.positions_angstrom.clone())
        self.register_buffer("amplitudes", gaussians.amplitudes.clone())
        self.register_buffer("sigma", gaussians.sigma_angstrom.clone())
        self.register_buffer("movable", movable.float().clone())
        self.register_buffer("body", body.clone() if body is not None else torch.full((len(movable),), -1))
        self.register_buffer("input_scale", torch.tensor(1.0))
        self.log_scale = nn.Parameter(torch.zeros(()))
        self.encoder = Encoder(box_px, n_latent, mask_radius_px, hidden=encoder_hidden, n_extra=9)
        extent = box_px * pixel_size_angstrom / 2
        if n_bodies:
            self.decoder: nn.Module = RigidBodyDecoder(n_latent, n_bodies, step_angstrom=pixel_size_angstrom)
        else:
            self.decoder = DisplacementDecoder(n_latent, extent, n_frequencies, n_neurons, n_layers,
                                               step_angstrom=pixel_size_angstrom, local_rigid=local_rigid)
        self.rigid = bool(n_bodies)
        self.mixed_precision = False

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """As :meth:`torch.nn.Module.load_state_dict`; a checkpoint written before the decoder had its
        modes (:class:`~dynamight.model.decoder.DisplacementDecoder`) loads with them at their
        initial zero output, which gives exactly the decoder it was trained with."""
        own = self.state_dict()
        absent = {k: v for k, v in own.items() if k.startswith("decoder.modes.") and k not in state_dict}
        return super().load_state_dict({**state_dict, **absent}, strict, assign)

    def encoder_input(self, spectra: torch.Tensor, ctf: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
        """``(b, d, d)`` real images for the encoder: the residual of the centred image after
        subtracting the consensus model's prediction, CTF-phase-flipped (what the deformation
        must explain)."""
        with torch.no_grad():
            consensus = self.predict(self.positions.expand(rotations.shape[0], -1, -1), rotations, ctf)
        return ifft_centred((spectra - consensus) * torch.sign(ctf), 2)

    def encode(self, spectra: torch.Tensor, ctf: torch.Tensor, rotations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior of z.

        Args:
            spectra: ``(b, d, d)`` centred image spectra; ``ctf``: ``(b, d, d)``;
            rotations: ``(b, 3, 3)`` poses (given to the encoder too).

        Returns:
            ``(b, l)`` mean and ``(b, l)`` log-variance.
        """
        images = self.encoder_input(spectra, ctf, rotations) * self.input_scale
        with self._networks_precision(images.device):
            mu, logvar = self.encoder(images, rotations.flatten(1))
        return mu.float(), logvar.float()

    def displacements(self, z: torch.Tensor) -> torch.Tensor:
        """``(b, l)`` -> ``(b, n, 3)`` displacements, Å."""
        with self._networks_precision(z.device):
            delta = self.decoder(z, self.positions, self.body if self.rigid else self.movable)
        return delta.float()

    def _networks_precision(self, device: torch.device):
        """bfloat16 autocast of the encoder and decoder networks when ``mixed_precision`` is set and
        they run on a GPU; rendering, CTF, FFTs and losses always stay float32."""
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.mixed_precision and device.type == "cuda")

    def predict(self, deformed: torch.Tensor, rotations: torch.Tensor, ctf: torch.Tensor) -> torch.Tensor:
        """Predicted centred spectra.

        Args:
            deformed: ``(b, n, 3)`` Gaussian positions, Å.
            rotations: ``(b, 3, 3)`` RELION matrices.
            ctf: ``(b, d, d)`` CTF.

        Returns:
            ``(b, d, d)`` complex spectra (centred images, CTF applied, times the learnt scale).
        """
        images = project_gaussians(deformed, self.amplitudes, self.sigma, rotations, self.box_px,
                                   self.pixel_size_angstrom)
        return fft_centred(images, 2) * ctf * self.log_scale.exp()

    def forward(self, spectra: torch.Tensor, ctf: torch.Tensor, rotations: torch.Tensor,
                z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One training pass (what :class:`~torch.nn.parallel.DistributedDataParallel` wraps).

        Args:
            spectra: ``(b, d, d)`` centred image spectra; ``ctf``: ``(b, d, d)``;
            rotations: ``(b, 3, 3)``; z: ``(b, l)`` the particles' latent codes.

        Returns:
            ``(b, l)`` the encoder's code, ``(b, n, 3)`` deformed positions (Å) and ``(b, d, d)``
            the predicted spectra.
        """
        mu, _ = self.encode(spectra, ctf, rotations)
        deformed = self.positions + self.displacements(z)
        return mu, deformed, self.predict(deformed, rotations, ctf)
