"""Latent codes and displacements of particles after training.

Every particle's code is refined against the final, frozen decoder by a few Adam steps on
``whitened data term + |z|^2 / 2`` (the objective the training codes minimised): a training
particle's code starts from the code learnt for it (updated once per epoch while the decoder was
still changing; ``REFINE_STEPS_LEARNT`` steps), any other particle's (validation, or another
half's) from whichever fits its image best of the encoder's code and ``N_STARTS`` codes learnt for
training particles (``REFINE_STEPS``). The encoder alone is a poor start when several motions
share the latent space: on two independent hinges of a real structure (1BD2, 4,000 particles), the
held-out particles' final codes followed the stronger motion at |Spearman| 0.915 / 0.903 per half
from the encoder's codes, and at 0.989 / 0.987 from the best of the 33 starts.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import numpy as np
import torch

from ..data.batches import ParticleBatch, group_batches, load_batch
from ..data.images import ParticleImages
from ..data.particles import ParticleTable
from ..distributed import all_reduce_sum, shard
from ..reconstruction.imaging import batch_ctf, centred_spectra
from .losses import data_term
from .model import ForwardModel
from .poses import corrected, pose_prior

REFINE_STEPS = 12  # from the encoder's code
REFINE_STEPS_LEARNT = 4  # from a code learnt in training
N_STARTS = 32  # learnt training codes tried as starting points for any other particle


@contextlib.contextmanager
def frozen(model: torch.nn.Module) -> Iterator[None]:
    """No gradients for the model's parameters inside (only the codes are differentiated: the
    networks' weight gradients, a third of a training step's work, are skipped)."""
    previous = {p: p.requires_grad for p in model.parameters()}
    for p in previous:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in previous.items():
            p.requires_grad_(flag)


def observed(batch: ParticleBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """``(b, d, d)`` centred spectra and ``(b, d, d)`` CTFs of a batch's images: computed once per
    batch, then shared by every evaluation of :func:`_objective` on it."""
    return centred_spectra(batch), batch_ctf(batch)


def _objective(model: ForwardModel, batch: ParticleBatch, images: tuple[torch.Tensor, torch.Tensor],
               weights: torch.Tensor, z: torch.Tensor, pose: torch.Tensor | None,
               deformed: torch.Tensor | None = None) -> torch.Tensor:
    """``(b,)`` the training objective of each particle of a batch (``images``: its
    :func:`observed` spectra and CTFs): whitened data term, the codes' ``|z|^2 / 2`` and, with
    ``(b, 5)`` pose corrections, their prior (:mod:`.poses`). ``deformed``: the ``(b, n, 3)`` (or
    ``(1, n, 3)``, shared) positions of ``z`` when already decoded (Å)."""
    (spectra, ctf), rotations = images, batch.rotations
    penalty = 0.5 * z.pow(2).sum(-1)
    if pose is not None:
        rotations, spectra = corrected(pose, rotations, spectra, batch.pixel_size_angstrom)
        penalty = penalty + pose_prior(pose, batch.pixel_size_angstrom)
    if deformed is None:
        deformed = model.positions + model.displacements(z)
    predicted = model.predict(deformed.expand(len(rotations), -1, -1), rotations, ctf)
    return data_term(spectra, predicted, weights) + penalty


def refine_latents(model: ForwardModel, batch: ParticleBatch, weights: torch.Tensor, z0: torch.Tensor,
                   steps: int = REFINE_STEPS, lr: float = 0.1, pose0: torch.Tensor | None = None,
                   images: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(b, l)`` codes (and, from ``(b, 5)`` ``pose0``, pose corrections refined with them)
    minimising the training objective for a batch, from ``z0`` (``images``: the batch's
    :func:`observed`, when already computed)."""
    z = z0.detach().clone().requires_grad_(True)
    pose = None if pose0 is None else pose0.detach().clone().requires_grad_(True)
    optimiser = torch.optim.Adam([z] + ([pose] if pose is not None else []), lr=lr)
    images = images or observed(batch)
    with frozen(model):
        for _ in range(steps):
            optimiser.zero_grad()
            _objective(model, batch, images, weights, z, pose).sum().backward()
            optimiser.step()
    return z.detach(), None if pose is None else pose.detach()


def particle_latents(model: ForwardModel, weights: torch.Tensor, learnt: torch.Tensor, trained: np.ndarray,
                     table: ParticleTable, images: ParticleImages, indices: np.ndarray, batch_size: int,
                     device: torch.device, learnt_steps: int = REFINE_STEPS_LEARNT,
                     poses: torch.Tensor | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Codes of the given particles (``learnt_steps``: refinement steps from a learnt code; 0 keeps it),
    and with ``poses`` their pose corrections, refined with the codes.

    Args:
        weights: ``(d, d)`` noise whitening weights of this model.
        learnt: ``(n_particles, l)`` the model's learnt codes (valid where ``trained``).
        trained: ``(n_particles,)`` bool, particles whose code in ``learnt`` is the starting point
            (the ones this model trained on, or codes already refined); the others start from the
            best fitting of the encoder's code and a seeded sample of the trained ones' codes.
        poses: ``(n_particles, 5)`` pose corrections to start from where ``trained`` (zeros, the
            consensus pose, elsewhere), or ``None``: consensus poses, not refined.

    Returns:
        ``(len(indices), l)`` codes and ``(len(indices), 5)`` pose corrections (``None`` without
        ``poses``) in the order of ``indices``. In a distributed run every process refines its
        share (every ``world``-th particle) and all receive all of them (collective).
    """
    model.eval()
    width = learnt.shape[1]
    out = torch.zeros((len(indices), width + (0 if poses is None else poses.shape[1])), dtype=torch.float32,
                      device=device)
    starts = _sample_codes(learnt, trained).to(device)
    for rows, idx in shared_batches(table, indices, batch_size):
        z = learnt[torch.as_tensor(idx)].to(device)
        new = ~trained[idx]
        pose = None
        if poses is not None:
            pose = poses[torch.as_tensor(idx)].to(device)
            pose[torch.as_tensor(new, device=device)] = 0.0
        batch = load_batch(table, images, idx, device, model.box_px)
        for rows_of, steps, from_encoder in ((new, REFINE_STEPS, True), (~new, learnt_steps, False)):
            if not rows_of.any() or steps == 0:  # learnt codes start close: fewer steps
                continue
            part, sel = batch.part(np.flatnonzero(rows_of)), torch.as_tensor(rows_of, device=device)
            seen, start = observed(part), z[sel]  # (not ``images``: that is the particles' stack reader)
            if from_encoder:
                start = best_start(model, part, weights.to(device), starts, seen)
            z[sel], refined = refine_latents(model, part, weights.to(device), start, steps,
                                             pose0=None if pose is None else pose[sel], images=seen)
            if pose is not None:
                pose[sel] = refined
        out[torch.as_tensor(rows, device=device)] = z if pose is None else torch.cat([z, pose], dim=1)
    out = all_reduce_sum(out).cpu().numpy()
    return out[:, :width], None if poses is None else out[:, width:]


def _sample_codes(learnt: torch.Tensor, trained: np.ndarray, n: int = N_STARTS) -> torch.Tensor:
    """``(k, l)`` up to ``n`` codes of trained particles, drawn with a fixed seed (the same in every
    process of a distributed run)."""
    pool = np.flatnonzero(trained)
    chosen = np.random.default_rng(0).choice(pool, min(n, len(pool)), replace=False)
    return learnt[torch.as_tensor(np.sort(chosen), dtype=torch.long)]


@torch.no_grad()
def best_start(model: ForwardModel, batch: ParticleBatch, weights: torch.Tensor, candidates: torch.Tensor,
               images: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """``(b, l)`` for each particle the code, of its encoder's code and the ``(k, l)`` candidates,
    with the lowest training objective (one render per candidate, no gradients; each candidate
    decoded once for the whole batch; ``images``: the batch's :func:`observed`, when already
    computed)."""
    images = images or observed(batch)
    encoded, _ = model.encode(*images, batch.rotations)
    best, lowest = encoded, _objective(model, batch, images, weights, encoded, None)
    decoded = model.positions + model.displacements(candidates)  # (k, n, 3)
    for code, deformed in zip(candidates, decoded):
        z = code.expand_as(encoded)
        value = _objective(model, batch, images, weights, z, None, deformed[None])
        better = value < lowest
        best, lowest = torch.where(better[:, None], z, best), torch.minimum(value, lowest)
    return best


def shared_batches(table: ParticleTable, indices: np.ndarray, batch_size: int):
    """Yield ``(rows, particles)``: this process's share of ``indices`` (every ``world``-th) in
    batches of one optics group, and their positions in ``indices``."""
    position = {int(p): i for i, p in enumerate(indices)}
    for idx in group_batches(table, shard(indices), batch_size):
        yield [position[int(p)] for p in idx], idx


@torch.no_grad()
def displacements_of(model: ForwardModel, z: np.ndarray, batch_size: int, device: torch.device):
    """Yield ``(rows, (b, n, 3) displacements in Å)`` for codes ``(m, l)`` in batches."""
    for start in range(0, len(z), batch_size):
        rows = np.arange(start, min(start + batch_size, len(z)))
        yield rows, model.displacements(torch.as_tensor(z[rows], device=device))


def movable_mask(model: ForwardModel) -> torch.Tensor:
    """``(n,)`` bool, Gaussians that can move."""
    return (model.body >= 0) if model.rigid else (model.movable > 0)


def rms_displacement(model: ForwardModel, z: np.ndarray, batch_size: int, device: torch.device) -> np.ndarray:
    """``(m,)`` RMS displacement over movable Gaussians (Å) for codes ``(m, l)``."""
    out = np.zeros(len(z), dtype=np.float32)
    movable = movable_mask(model)
    for rows, delta in displacements_of(model, z, batch_size, device):
        out[rows] = delta[:, movable].pow(2).sum(-1).mean(-1).sqrt().cpu().numpy()
    return out


def posterior_spread(model: ForwardModel, weights: torch.Tensor, table: ParticleTable, images: ParticleImages,
                     indices: np.ndarray, codes: np.ndarray, batch_size: int, device: torch.device,
                     step: float = 1e-2, poses: np.ndarray | None = None) -> np.ndarray:
    """``(m,)`` RMS displacement uncertainty (Å, movable Gaussians) of each particle's code.

    Laplace approximation: the code's covariance is the inverse of the Gauss-Newton Hessian
    (:func:`gauss_newton_hessian`) of ``whitened data term + |z|^2 / 2`` at ``codes`` (``(m, l)``;
    with ``poses``, ``(m, 5)`` corrections held fixed), carried to the displacements by their
    Jacobian ``J`` (central differences): ``sqrt(mean_j tr(J_j H^-1 J_j^T))``. Collective in a
    distributed run, as :func:`particle_latents`.
    """
    model.eval()
    movable = movable_mask(model)
    out = torch.zeros(len(indices), dtype=torch.float32, device=device)
    for rows, idx in shared_batches(table, indices, batch_size):
        batch = load_batch(table, images, idx, device, model.box_px)
        z = torch.as_tensor(codes[rows], device=device)
        pose = None if poses is None else torch.as_tensor(poses[rows], device=device)
        hessian, jacobian = gauss_newton_hessian(model, batch, observed(batch), weights.to(device), z, pose, step)
        eye = torch.eye(z.shape[1], device=device)
        covariance = torch.linalg.inv(hessian + 1e-6 * eye)
        jacobian = jacobian[:, movable]  # (b, n', 3, l)
        variance = torch.einsum("bnkl,blm,bnkm->bn", jacobian, covariance, jacobian).clamp(min=0)
        out[torch.as_tensor(rows, device=device)] = variance.mean(-1).sqrt()
    return all_reduce_sum(out).cpu().numpy()


@torch.no_grad()
def gauss_newton_hessian(model: ForwardModel, batch: ParticleBatch, images: tuple[torch.Tensor, torch.Tensor],
                         weights: torch.Tensor, z: torch.Tensor, pose: torch.Tensor | None,
                         step: float = 1e-2) -> tuple[torch.Tensor, torch.Tensor]:
    """``(b, l, l)`` Gauss-Newton Hessian of the training objective in the codes ``z`` ``(b, l)``
    (``pose``: ``(b, 5)`` corrections, held fixed), and ``(b, n, 3, l)`` the displacements'
    Jacobian (Å per unit code), both from central differences of step ``step``.

    ``H = sum_k w_k Re(conj(dM_k/dz) dM_k/dz^T) + I``, ``M`` the predicted spectrum: the expected
    (Fisher) curvature of the data term, always positive definite, and exactly the Hessian where the
    prediction fits the image; it costs ``2 l`` forward passes (double backpropagation through the
    renderer cost about three times as much).
    """
    (spectra, ctf), rotations = images, batch.rotations
    if pose is not None:
        rotations, _ = corrected(pose, rotations, spectra, batch.pixel_size_angstrom)
    eye = torch.eye(z.shape[1], device=z.device)
    spectrum_slopes, displacement_slopes = [], []
    for e in eye:
        plus, minus = model.displacements(z + step * e), model.displacements(z - step * e)
        displacement_slopes.append((plus - minus) / (2 * step))
        spectrum_slopes.append((model.predict(model.positions + plus, rotations, ctf)
                                - model.predict(model.positions + minus, rotations, ctf)) / (2 * step))
    slopes = torch.stack(spectrum_slopes, dim=1)  # (b, l, d, d)
    weighted = slopes * weights
    hessian = torch.einsum("blxy,bmxy->blm", weighted.conj(), slopes).real + eye
    return 0.5 * (hessian + hessian.transpose(1, 2)), torch.stack(displacement_slopes, dim=-1)


def disagreement(models: tuple[ForwardModel, ForwardModel], z1: np.ndarray, z2: np.ndarray, batch_size: int,
                 device: torch.device) -> np.ndarray:
    """``(m,)`` RMS difference (Å, movable Gaussians) between the two half models' displacements of
    the same particles (codes ``z1`` under model 1, ``z2`` under model 2): the error estimate."""
    out = np.zeros(len(z1), dtype=np.float32)
    movable = movable_mask(models[0])
    with torch.no_grad():
        for start in range(0, len(z1), batch_size):
            rows = slice(start, start + batch_size)
            d1 = models[0].displacements(torch.as_tensor(z1[rows], device=device))
            d2 = models[1].displacements(torch.as_tensor(z2[rows], device=device))
            out[rows] = (d1 - d2)[:, movable].pow(2).sum(-1).mean(-1).sqrt().cpu().numpy()
    return out
