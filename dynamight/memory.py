"""Predicted peak memory of an ``optimize-deformations`` training step, the memory a device has
free, and the largest batch that fits.

A training step's memory is dominated by what autograd keeps for the backward pass, per particle
of the batch: the decoder's ``(n, hidden)`` activations in each of its layers, the renderer's
``(n, d)`` Gaussian profiles (two axes, their arguments, their gradients) or, for Gaussians narrow
against the box, their ``(n, w)`` windowed profiles and ``(n, w, w)`` patches with their pixel
indices (:func:`dynamight.model.render.projection_window`), the per-Gaussian
rotations of the local-rigid decoder, and the ``(d, d)`` images, CTFs and complex spectra. The
constants below (float32 values kept per element) were calibrated by measuring real steps
(:mod:`dynamight.training.step_memory`; the table is in ``benchmarks/scale.py``) and chosen so
that the estimate bounds every measured peak, by at most about 2x. On top comes a fixed part:
both half-sets' networks with their gradients and Adam moments, both halves' ``(n_particles, l)``
code tables with SparseAdam's moments, and the read-ahead of three ``(b, d, d)`` float32 batches.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable

import torch

from .errors import InputError

log = logging.getLogger(__name__)

FLOAT_BYTES = 4
#: float32 values kept at the peak of a step, per particle and per element of the tensor named
PER_PROFILE = 10.0  # (n, d): render profiles, their arguments and gradients
PER_PATCH = 8.0  # (n, w, w): local projection patches, their int64 pixel indices and gradients
PER_ACTIVATION = 2.5  # (n, hidden) per decoder layer: activations and their gradients
PER_GAUSSIAN = 470.0  # (n,): positional terms, the modes' term, local-rigid rotations (3, 3), deformed positions, gradients
PER_PIXEL = 20.0  # (d, d): image, CTF, spectra, residuals
#: bytes: libraries' first-use buffers and autograd's bookkeeping in a step
STEP_OVERHEAD_BYTES = 8 * 2**20
READ_AHEAD_BATCHES = 3
MEMORY_FRACTION = 0.8  # of the device's free memory that a step may plan to use
#: the batch size when none is given, 128 on every device: at 32 an epoch on a CPU was 2x faster
#: per particle, but the 4,000-particle real-structure hinge (3hsy, 50 epochs, seed 0) learnt a worse
#: latent space (|Spearman| 0.946 / 0.906, held out 0.938 / 0.853, against 0.974 / 0.971 and
#: 0.971 / 0.967 at 128); large CPU steps are split into cache-sized chunks instead (cache_chunks)
AUTOMATIC_BATCH = 128


def _network_parameters(box_px: int, n_latent: int, n_layers: int, n_neurons: int, encoder_neurons: int,
                        n_frequencies: int = 6) -> int:
    """Parameters of one half's encoder (MLP on the 2x-binned image inside its mask, bounded by the
    whole binned image) and displacement decoder (its MLP and its modes' network)."""
    encoder_inputs = (box_px // 2) ** 2 + 9
    encoder = (encoder_inputs + 1) * encoder_neurons + 2 * (encoder_neurons + 1) * encoder_neurons \
        + (encoder_neurons + 1) * 2 * n_latent
    decoder = (6 * n_frequencies + 1 + n_latent) * n_neurons + (n_layers - 2) * (n_neurons + 1) * n_neurons \
        + (n_neurons + 1) * 6
    modes = (6 * n_frequencies + 1) * n_neurons + (n_neurons + 1) * n_neurons + (n_neurons + 1) * 6 * n_latent
    return encoder + decoder + modes


def training_step_bytes(box_px: int, n_gaussians: int, batch_size: int, n_latent: int = 6, n_layers: int = 8,
                        n_neurons: int = 32, encoder_neurons: int = 256, n_particles: int = 0,
                        window: int | None = None, chunks: int = 1) -> int:
    """Estimated peak memory (bytes) of ``optimize-deformations`` training at a batch size: one
    step's forward and backward pass plus what training holds throughout (both halves' networks
    with gradients and Adam moments, ``n_particles`` latent codes per half with SparseAdam's
    moments, the read-ahead batches). An upper bound on the CPU measurements, within about 2x.

    Args:
        box_px: ``d``, the box the images are trained at.
        n_gaussians: ``n``; batch_size: ``b`` particles per step (per process).
        n_latent, n_layers, n_neurons, encoder_neurons: the networks' sizes (the options of the same names).
        n_particles: particles in the whole data set (the code tables).
        window: the projections' patch side (:func:`~dynamight.model.render.projection_window`;
            ``None``: full profiles).
        chunks: the pieces each batch's step runs in (:func:`cache_chunks`): autograd holds one
            piece's tensors at a time.
    """
    b, n, d = -(-batch_size // chunks), n_gaussians, box_px
    render = PER_PROFILE * n * d if window is None else PER_PROFILE * n * window + PER_PATCH * n * window**2
    per_particle = (render + PER_ACTIVATION * n * n_neurons * (n_layers - 1) + PER_GAUSSIAN * n
                    + PER_PIXEL * d * d)
    step = FLOAT_BYTES * b * per_particle + STEP_OVERHEAD_BYTES
    networks = 2 * 4 * _network_parameters(d, n_latent, n_layers, n_neurons, encoder_neurons)  # + grad, 2 moments
    codes = 2 * 3 * n_particles * n_latent  # per half: codes, 2 moments
    buffers = 2 * 16 * n + READ_AHEAD_BATCHES * batch_size * d * d
    return int(step + FLOAT_BYTES * (networks + codes + buffers))


#: on CPUs a batch of more than CPU_CHUNK_ABOVE (particle, Gaussian, pixel) elements of the render's
#: (b, n, d) profiles (or (b, n, w, w) patches) is processed in chunks of at most CPU_CHUNK_ELEMENTS,
#: so that they and the decoder's (b, n, hidden) activations stay in the caches; measured at batch 32 on one core:
#: 10,000 Gaussians, box 64: 118 -> 60 ms per particle in 3 chunks. The usual 1,500 Gaussians at box
#: 64 and batch 128 (12 M elements) stay one chunk: the step whose prior weight was validated
#: (a chunked step balances the prior on its first chunk's gradients alone)
CPU_CHUNK_ABOVE = 16_000_000
CPU_CHUNK_ELEMENTS = 8_000_000


def cache_chunks(device: torch.device, batch_size: int, n_gaussians: int, box_px: int,
                 window: int | None = None) -> int:
    """Chunks each batch is split into (their gradients add up to the batch's step): 1 on GPUs and
    for batches of at most ``CPU_CHUNK_ABOVE`` render elements (``d`` per Gaussian, or ``w^2`` with
    the projections' patches of side ``window``); else, on CPUs, enough that each holds at most
    ``CPU_CHUNK_ELEMENTS``."""
    side = box_px if window is None else window * window
    if device.type != "cpu" or batch_size * n_gaussians * side <= CPU_CHUNK_ABOVE:
        return 1
    per_chunk = max(1, CPU_CHUNK_ELEMENTS // (n_gaussians * side))  # particles
    return -(-batch_size // per_chunk)


#: bytes the libraries (torch, MKL's FFT plans, numpy) and the read-ahead of images take in a reconstruction
RECONSTRUCTION_BASE_BYTES = 600 * 2**20
#: bytes per voxel ``V`` of the padded Hermitian half grid: both halves' accumulators (24), then the
#: Wiener term, the division and its inverse FFT (plain), or a cluster's accumulator, shells and
#: warp (deformable); with the terms below, calibrated to bound the measured peaks at box 64-400
#: (`benchmarks/scale.py --large-boxes`, tests/test_reconstruction_memory.py) by 1.2-1.5x
PLAIN_PER_VOXEL, DEFORMABLE_PER_VOXEL = 48, 56
INSERT_PER_PIXEL = 128  # bytes per image pixel of a batch being inserted (slice coordinates, corners)
MAP_PER_VOXEL = 64  # bytes per map voxel: half-maps, masks and the FSC's double-precision transforms


def reconstruction_bytes(box_px: int, deformable: bool = False, batch_size: int = 128, downsample: int = 2,
                         pad: int = 2) -> int:
    """Estimated peak memory (bytes) of ``reconstruct`` (plain) or ``deformable-backprojection``:
    a sum of parts, an upper bound on the measured peaks by 1.2-1.5x (box 64-400):
    ``PLAIN_PER_VOXEL`` (or ``DEFORMABLE_PER_VOXEL``) bytes per voxel of the padded (``D = pad d``)
    Hermitian half grid ``D^2 (D / 2 + 1)`` (box 400: 257 M voxels), the insertion of a batch of
    ``batch_size`` images, the maps, and for the deformable backprojection its deformation
    field's kernel (16 neighbours of 8 bytes per point of the ``(d / downsample)^3`` grid) and the
    dense field with its sampling grid (24 bytes per map voxel)."""
    padded = pad * box_px
    grid = padded * padded * (padded // 2 + 1)
    total = (DEFORMABLE_PER_VOXEL if deformable else PLAIN_PER_VOXEL) * grid \
        + INSERT_PER_PIXEL * batch_size * box_px**2 + MAP_PER_VOXEL * box_px**3 + RECONSTRUCTION_BASE_BYTES
    if deformable:
        total += 16 * 8 * max(2, box_px // downsample) ** 3 + 24 * box_px**3
    return total


def log_reconstruction_memory(box_px: int, device: torch.device, deformable: bool = False, batch_size: int = 128,
                              downsample: int = 2) -> None:
    """Log the estimated peak of a reconstruction step; warn when the device has less free."""
    need, free = reconstruction_bytes(box_px, deformable, batch_size, downsample), device_memory_bytes(device)
    what = "deformable backprojection" if deformable else "reconstruction"
    log.info("estimated peak memory of the %s at box %d: %s GiB (device has %s GiB free)", what, box_px, gib(need),
             gib(free))
    if need > free:
        log.warning("the %s at box %d needs an estimated %s GiB, more than the %s GiB free on %s: it may run out "
                    "of memory", what, box_px, gib(need), gib(free), device)


def proc_bytes(path: Path, key: str) -> int | None:
    """A ``key: N kB`` line of a ``/proc`` file (``/proc/meminfo``, ``/proc/self/status``) in bytes,
    or ``None`` where the file or the key is missing."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _cgroup_free_bytes() -> int | None:
    """Memory left under this process's cgroup (v2) limit, or ``None`` when there is none."""
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit == "max":
            return None
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
        return max(int(limit) - used, 0)
    except (OSError, ValueError):
        return None


def device_memory_bytes(device: torch.device | str) -> int:
    """Free memory of ``device``, bytes: a GPU's free memory (``torch.cuda.mem_get_info``); for the
    CPU the host's ``MemAvailable`` (``/proc/meminfo``), less where a cgroup limit leaves less."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    available = proc_bytes(Path("/proc/meminfo"), "MemAvailable")
    if available is None:  # no /proc (macOS): free physical pages
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    limited = _cgroup_free_bytes()
    return available if limited is None else min(available, limited)


def gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.2f}"


def choose_batch_size(estimate_fn: Callable[[int], int], device: torch.device | str, cap: int) -> int:
    """The largest power of two ``<= cap`` whose ``estimate_fn(batch)`` (bytes, growing with the
    batch) fits in :data:`MEMORY_FRACTION` of ``device``'s free memory.

    Raises:
        InputError: not even a batch of one fits.
    """
    free = device_memory_bytes(device)
    budget = MEMORY_FRACTION * free
    if estimate_fn(1) > budget:
        raise InputError(f"a training step needs an estimated {gib(estimate_fn(1))} GiB even with one particle per "
                         f"batch, more than {MEMORY_FRACTION:.0%} of the {gib(free)} GiB free on "
                         f"{torch.device(device)}: "
                         f"use fewer Gaussians (--n-gaussians), a smaller decoder or a device with more memory")
    batch = 1
    while 2 * batch <= cap and estimate_fn(2 * batch) <= budget:
        batch *= 2
    return batch


def training_estimate(config, box_px: int, n_gaussians: int, n_particles: int,
                       device: torch.device, world: int = 1, window: int | None = None) -> Callable[[int], int]:
    """:func:`training_step_bytes` of an ``optimize-deformations`` config as a function of the
    batch size; in a run of ``world`` processes each takes its share of a batch, and on the CPU
    they share the host's memory."""
    def estimate(batch_size: int) -> int:
        share = -(-batch_size // world)
        one = training_step_bytes(box_px, n_gaussians, share, config.n_latent_dimensions,
                                  config.n_linear_layers, config.n_neurons_per_layer, config.n_encoder_neurons,
                                  n_particles, window, cache_chunks(device, share, n_gaussians, box_px, window))
        return one * (world if device.type == "cpu" else 1)
    return estimate


def training_batch_size(requested: int | None, estimate_fn: Callable[[int], int], device: torch.device) -> int:
    """The batch size of a training run: ``requested`` when given (with a warning if its estimate
    exceeds the device's free memory), else :data:`AUTOMATIC_BATCH` capped by
    :func:`choose_batch_size`. Logs the estimated peak memory at the batch size chosen."""
    free = device_memory_bytes(device)
    if requested is not None:
        batch = requested
        if estimate_fn(batch) > free:
            log.warning("--batch-size %d: a training step needs an estimated %s GiB, more than the %s GiB free on %s",
                        batch, gib(estimate_fn(batch)), gib(free), device)
    else:
        batch = choose_batch_size(estimate_fn, device, AUTOMATIC_BATCH)
    log.info("estimated peak memory per training step: %s GiB at batch %d (device has %s GiB free)",
             gib(estimate_fn(batch)), batch, gib(free))
    return batch
