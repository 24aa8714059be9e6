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
With ``--refine-poses``, each particle's pose correction (:mod:`.poses`) is a free parameter too,
learnt like its code once the warm-up is over, its prior added to the codes' term.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist

from ..data.batches import ParticleBatch, group_batches, load_batch, read_ahead
from ..data.images import ParticleImages
from ..data.particles import ParticleTable
from ..distributed import all_reduce_sum, shard
from ..model.graph import DistancePrior
from ..reconstruction.imaging import batch_ctf, centred_spectra
from .losses import NoiseSpectrum, data_term
from .model import ForwardModel
from .poses import corrected, pose_prior

log = logging.getLogger(__name__)
LAMBDA_EVERY = 10
TERMS = ("data", "kl", "prior")  # the loss terms logged per epoch


@dataclass
class HalfState:
    """Everything that changes while one half trains."""

    model: ForwardModel
    runner: torch.nn.Module  # ``model``, or ``model`` wrapped in DistributedDataParallel
    prior: DistancePrior
    noise: NoiseSpectrum
    optimiser: torch.optim.Optimizer
    regularization_factor: float
    latents: torch.nn.Embedding
    latent_optimiser: torch.optim.Optimizer
    latent_noise: float = 0.1
    poses: torch.nn.Embedding | None = None  # per-particle pose corrections (``--refine-poses``; :mod:`.poses`)
    pose_optimiser: torch.optim.Optimizer | None = None
    codes_fixed: bool = False  # the codes stay at their initial values (the first epochs; set per epoch)
    lam: float = 0.0
    step: int = 0
    chunks: int = 1  # each batch is processed in this many chunks (CPU caches; more after out-of-memory errors)
    history: list[dict] = field(default_factory=list)

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimiser": self.optimiser.state_dict(),
                "noise": self.noise.state_dict(), "lambda": self.lam, "step": self.step,
                "history": self.history, "latents": self.latents.weight.detach().cpu(),
                "latent_optimiser": self.latent_optimiser.state_dict(),
                **({"poses": self.poses.weight.detach().cpu(), "pose_optimiser": self.pose_optimiser.state_dict()}
                   if self.poses is not None else {})}

    def tables(self) -> list[tuple[torch.nn.Embedding, torch.optim.Optimizer]]:
        """The per-particle tables (codes, and pose corrections when refined) with their optimisers."""
        pairs = [(self.latents, self.latent_optimiser)]
        return pairs + ([(self.poses, self.pose_optimiser)] if self.poses is not None else [])

    def learnt_tables(self) -> list[tuple[torch.nn.Embedding, torch.optim.Optimizer]]:
        """The tables stepped now: :meth:`tables` without the codes while they are held fixed."""
        return [(e, o) for e, o in self.tables() if not (self.codes_fixed and e is self.latents)]

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimiser.load_state_dict(state["optimiser"])
        self.noise.load_state_dict(state["noise"])
        self.lam, self.step, self.history = float(state["lambda"]), int(state["step"]), list(state["history"])
        with torch.no_grad():
            self.latents.weight.copy_(state["latents"])
        self.latent_optimiser.load_state_dict(state["latent_optimiser"])
        if self.poses is not None and "poses" in state:  # a run resumed with --refine-poses added starts from zeros
            with torch.no_grad():
                self.poses.weight.copy_(state["poses"])
            self.pose_optimiser.load_state_dict(state["pose_optimiser"])


def _gradient_norm(loss: torch.Tensor, params: list[torch.Tensor]) -> float:
    """Norm of the gradient of ``loss`` summed over the processes (``loss`` is this process's share)."""
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    flat = torch.cat([g.flatten() for g in grads if g is not None] or [loss.new_zeros(1)])
    return float(all_reduce_sum(flat).norm())


def _sync_latents(state: HalfState, batch_indices: np.ndarray, local: np.ndarray) -> None:
    """After a distributed step: every process's per-particle tables (codes, pose corrections, and
    SparseAdam's moments) get the rows the other processes updated, so that all copies stay identical."""
    if not dist.is_initialized():
        return
    device = state.latents.weight.device
    rows = torch.as_tensor(batch_indices, device=device)
    mine = torch.as_tensor(np.isin(batch_indices, local), device=device)
    for embedding, optimiser in state.learnt_tables():
        weight = embedding.weight
        moments = optimiser.state.get(weight)
        if not moments:  # never stepped (pose corrections during the warm-up)
            continue
        tables = [weight.data, moments["exp_avg"], moments["exp_avg_sq"]]
        gathered = all_reduce_sum(torch.cat([t[rows] * mine[:, None] for t in tables], dim=1))
        for t, part in zip(tables, gathered.chunk(len(tables), dim=1)):
            t[rows] = part


def train_batch(state: HalfState, batch: ParticleBatch, generator: torch.Generator,
                use_prior: bool = True, full_batch: np.ndarray | None = None) -> dict[str, float]:
    """One optimisation step on one batch (``use_prior=False`` during warm-up: lambda = 0).

    In a distributed run ``batch`` is this process's share (:func:`~dynamight.distributed.shard`)
    of ``full_batch``; each term is then scaled so that the gradients averaged by DDP equal those
    of the whole batch, and the latent noise is drawn for the whole batch, so that the step is the
    one a single process would take. If the batch does not fit in the GPU's memory it is split
    into chunks whose gradients add up to the same step (on CPUs from the start when its tensors would
    not fit in the caches, :func:`~dynamight.memory.cache_chunks`; more on out-of-memory errors, only
    in a single-process run, where no other process waits in a collective). Returns the share's
    summed loss terms and its size ``n``.
    """
    full = batch.indices if full_batch is None else full_batch
    eps = torch.randn((len(full), state.latents.embedding_dim), generator=generator)
    eps = eps[torch.as_tensor(np.flatnonzero(np.isin(full, batch.indices)))].to(batch.images.device)
    while True:
        noise = state.noise.mark()
        try:
            return _step(state, batch, eps, full, use_prior)
        except torch.OutOfMemoryError:
            if dist.is_initialized() or state.chunks >= len(batch.indices):
                raise
            state.noise.rollback(noise)
            state.chunks *= 2
            log.warning("out of memory on a batch of %d: splitting each batch into %d chunks", len(full), state.chunks)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


def _step(state: HalfState, batch: ParticleBatch, eps: torch.Tensor, full: np.ndarray,
          use_prior: bool) -> dict[str, float]:
    world = dist.get_world_size() if dist.is_initialized() else 1
    if not use_prior:
        state.lam = 0.0
    state.optimiser.zero_grad()
    for _, optimiser in state.tables():
        optimiser.zero_grad()
    size = -(-len(batch.indices) // state.chunks)
    totals = {"data": 0.0, "kl": 0.0, "prior": 0.0, "n": len(batch.indices)}
    for first in range(0, len(batch.indices), size):
        rows = slice(first, first + size)
        terms = _backward(state, batch.part(rows), eps[rows], len(batch.indices[rows]) / len(full) * world,
                          use_prior and first == 0, world, refine_poses=use_prior)
        for k, v in terms.items():
            totals[k] += v
    state.optimiser.step()
    for _, optimiser in state.learnt_tables():
        optimiser.step()
    _sync_latents(state, full, batch.indices)
    state.step += 1
    return totals


def _backward(state: HalfState, batch: ParticleBatch, eps: torch.Tensor, share: float, rebalance: bool,
              world: int, refine_poses: bool = False) -> dict[str, float]:
    """Loss of (part of) a batch, scaled by ``share`` (its fraction of the batch times the number of
    processes), back-propagated; re-balances lambda first when due; ``refine_poses``: with the
    particles' pose corrections (when the state has them; their prior counts in ``kl``). Returns
    summed terms."""
    ctf = batch_ctf(batch)
    spectra, rotations = centred_spectra(batch), batch.rotations
    rows = torch.as_tensor(batch.indices, device=spectra.device)
    free = state.latents(rows)
    if world > 1:  # DDP averages the network's gradients; the codes' own gradients are local
        free.register_hook(lambda g: g / world)
    z = free + state.latent_noise * eps
    kl = 0.5 * free.pow(2).sum(-1).mean() * share  # the N(0, I) prior on the codes
    if state.poses is not None and refine_poses:
        pose = state.poses(rows)
        if world > 1:
            pose.register_hook(lambda g: g / world)
        rotations, spectra = corrected(pose, rotations, spectra, batch.pixel_size_angstrom)
        kl = kl + pose_prior(pose, batch.pixel_size_angstrom).mean() * share
    mu, deformed, predicted = state.runner(spectra, ctf, rotations, z)
    amortisation = (mu - free.detach()).pow(2).sum(-1).mean() * share
    data = data_term(spectra, predicted, state.noise.weights().to(spectra.device)).mean() * share
    prior = state.prior(deformed) * share
    if rebalance and (state.step % LAMBDA_EVERY == 0 or state.lam == 0.0):
        decoder_params = [p for p in state.model.decoder.parameters() if p.requires_grad]
        prior_norm = _gradient_norm(prior, decoder_params)
        if prior_norm > 0:
            state.lam = state.regularization_factor * _gradient_norm(data, decoder_params) / prior_norm
    (data + kl + state.lam * prior + amortisation).backward()
    state.noise.accumulate(spectra - predicted)
    n = len(batch.indices)
    return {"data": float(data.detach()) / share * n / spectra[0].numel(), "kl": float(kl.detach()) / share * n,
            "prior": float(prior.detach()) / share * n}


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
    state.model.train()
    world = dist.get_world_size() if dist.is_initialized() else 1
    batches = (idx for idx in group_batches(table, order, batch_size) if len(idx) >= world)  # a share for each
    box = state.model.box_px  # the training box
    for idx, batch in read_ahead(batches, lambda idx: load_batch(table, images, shard(idx), device, box)):
        terms = train_batch(state, batch, generator, use_prior, idx)
        for k, v in terms.items():
            totals[k] = totals.get(k, 0.0) + v
        if on_batch is not None:
            on_batch(len(idx))
    state.noise.update()
    summed = all_reduce_sum(torch.tensor([totals.get(k, 0.0) for k in TERMS + ("n",)], dtype=torch.float64,
                                         device=device)).tolist()
    result = {k: v / max(summed[-1], 1) for k, v in zip(TERMS, summed)}
    result.update({"lambda": state.lam, "seconds": time.time() - start, "epoch": epoch})
    state.history.append(result)
    return result
