"""The gold-standard training loop: one :class:`ForwardModel` per half-set, trained on that half's
particles minus a validation set held out of both halves.

Latent codes are learnt per particle (an auto-decoder, as in cryoSPARC's 3DFlex: each training
particle's ``z`` is a free parameter with a ``N(0, I)`` prior and noise injection), which uses every
image's evidence directly and learns far faster from few particles than a VAE encoder. The encoder
is trained alongside to predict those codes from the image and pose (amortisation); it gives the
codes of particles never trained on (the validation set), refined against the frozen decoder.

Per batch: centre the images (``+origin``), look up ``z`` (plus noise), decode displacements,
project the deformed Gaussians with the consensus pose and CTF, and minimise
``whitened data term + |z|^2 / 2 + lambda * distance prior + encoder regression``. After the
warm-up epochs (``lambda = 0``: a prior balanced against the data from the start slows the first
motions down to the factor ``1 - regularization_factor``), ``lambda`` is re-balanced every
``LAMBDA_EVERY`` batches so the prior's gradient norm on the decoder equals the data term's times
``regularization_factor``. All randomness of an epoch comes from ``(seed, epoch, half)``, so a run
resumed from the checkpoint of epoch ``k`` repeats exactly what an uninterrupted run does next.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from ..data.batches import ParticleBatch, group_batches, load_batch
from ..data.images import ParticleImages
from ..data.particles import ParticleTable
from ..model.graph import DistancePrior
from ..reconstruction.imaging import batch_ctf, centred_spectra
from .losses import NoiseSpectrum, data_term
from .model import ForwardModel

log = logging.getLogger(__name__)
LAMBDA_EVERY = 10


@dataclass
class HalfState:
    """Everything that changes while one half trains."""

    model: ForwardModel
    prior: DistancePrior
    noise: NoiseSpectrum
    optimiser: torch.optim.Optimizer
    regularization_factor: float
    latents: torch.nn.Embedding
    latent_optimiser: torch.optim.Optimizer
    latent_noise: float = 0.1
    lam: float = 0.0
    step: int = 0
    history: list[dict] = field(default_factory=list)

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimiser": self.optimiser.state_dict(),
                "noise": self.noise.state_dict(), "lambda": self.lam, "step": self.step,
                "history": self.history, "latents": self.latents.weight.detach().cpu(),
                "latent_optimiser": self.latent_optimiser.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimiser.load_state_dict(state["optimiser"])
        self.noise.load_state_dict(state["noise"])
        self.lam, self.step, self.history = float(state["lambda"]), int(state["step"]), list(state["history"])
        with torch.no_grad():
            self.latents.weight.copy_(state["latents"])
        self.latent_optimiser.load_state_dict(state["latent_optimiser"])


def _gradient_norm(loss: torch.Tensor, params: list[torch.Tensor]) -> float:
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return float(torch.sqrt(sum((g.pow(2).sum() for g in grads if g is not None), torch.tensor(0.0))))


def train_batch(state: HalfState, batch: ParticleBatch, generator: torch.Generator,
                use_prior: bool = True) -> dict[str, float]:
    """One optimisation step on one batch (``use_prior=False`` during warm-up: lambda = 0);
    returns the batch's mean loss terms."""
    model = state.model
    ctf = batch_ctf(batch)
    spectra = centred_spectra(batch)
    mu, _ = model.encode(spectra, ctf, batch.rotations)
    eps = torch.randn(mu.shape, generator=generator).to(mu.device)
    free = state.latents(torch.as_tensor(batch.indices, device=mu.device))
    z = free + state.latent_noise * eps
    kl = 0.5 * free.pow(2).sum(-1).mean()  # the N(0, I) prior on the codes
    amortisation = (mu - free.detach()).pow(2).sum(-1).mean()
    deformed = model.positions + model.displacements(z)
    predicted = model.predict(deformed, batch.rotations, ctf)
    data = data_term(spectra, predicted, state.noise.weights().to(spectra.device)).mean()
    prior = state.prior(deformed)
    if not use_prior:
        state.lam = 0.0
    elif state.step % LAMBDA_EVERY == 0 or state.lam == 0.0:
        decoder_params = [p for p in model.decoder.parameters() if p.requires_grad]
        prior_norm = _gradient_norm(prior, decoder_params)
        if prior_norm > 0:
            state.lam = state.regularization_factor * _gradient_norm(data, decoder_params) / prior_norm
    loss = data + kl + state.lam * prior + amortisation
    state.optimiser.zero_grad()
    state.latent_optimiser.zero_grad()
    loss.backward()
    state.optimiser.step()
    state.latent_optimiser.step()
    state.noise.accumulate(spectra - predicted)
    state.step += 1
    return {"data": float(data.detach()) / spectra[0].numel(), "kl": float(kl.detach()), "prior": float(prior.detach())}


def epoch_generator(seed: int, epoch: int, half: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch * 7 + half)


def train_epoch(state: HalfState, table: ParticleTable, images: ParticleImages, indices: np.ndarray, epoch: int,
                half: int, seed: int, batch_size: int, device: torch.device,
                on_batch: Callable[[int], None] | None = None, use_prior: bool = True) -> dict[str, float]:
    """Train one half for one epoch in a seeded order; returns mean loss terms and timing."""
    generator = epoch_generator(seed, epoch, half)
    order = indices[torch.randperm(len(indices), generator=generator).numpy()]
    start = time.time()
    totals: dict[str, float] = {}
    n = 0
    state.model.train()
    for idx in group_batches(table, order, batch_size):
        terms = train_batch(state, load_batch(table, images, idx, device), generator, use_prior)
        for k, v in terms.items():
            totals[k] = totals.get(k, 0.0) + v * len(idx)
        n += len(idx)
        if on_batch is not None:
            on_batch(len(idx))
    state.noise.update()
    result = {k: v / max(n, 1) for k, v in totals.items()}
    result.update({"lambda": state.lam, "seconds": time.time() - start, "epoch": epoch})
    state.history.append(result)
    return result
