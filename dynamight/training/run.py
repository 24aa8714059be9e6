"""The ``optimize-deformations`` step: set up, train both halves epoch by epoch with a checkpoint
after every epoch, then write latents and models."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from ..data.batches import load_batch
from ..data.fourier import cropped_pixel_size
from ..data.images import ParticleImages
from ..data.particles import read_configured_particles
from .layout import final_checkpoint_path
from ..distributed import all_reduce_sum, barrier, current, from_main, shard
from ..errors import InputError
from ..memory import cache_chunks, training_batch_size, training_estimate
from ..model.gaussians import GaussianModel
from ..model.graph import DistancePrior
from ..model.render import projection_window
from ..reconstruction.imaging import batch_ctf, centred_spectra
from ..runtime import JobControl, progress, save_config, start_process
from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .deformations import HalfState, train_epoch
from .initial_codes import initial_codes
from .inference import disagreement, particle_latents, posterior_spread, rms_displacement
from .losses import NoiseSpectrum, data_term
from .model import ForwardModel
from .outputs import write_gaussians, write_latents, write_refined_poses
from .poses import N_PARAMETERS as N_POSE_PARAMETERS, REFINED_POSES_NAME, pose_change_summary
from .setup import body_assignment, consensus_gaussians, mask_values, training_box, validation_split

log = logging.getLogger(__name__)


def _initialise(state: HalfState, batch, device) -> None:
    """Encoder input scale, image scale (least squares) and noise spectrum from a first batch (in a
    distributed run, each process holds its share of that batch and the sums are taken over all)."""
    model = state.model
    with torch.no_grad():
        ctf = batch_ctf(batch)
        spectra = centred_spectra(batch)
        predicted = model.predict(model.positions.expand(len(batch.indices), -1, -1), batch.rotations, ctf)
        inputs = model.encoder_input(spectra, ctf, batch.rotations).double()
        sums = all_reduce_sum(torch.stack([(spectra * predicted.conj()).real.sum().double(),
                                           predicted.abs().pow(2).sum().double(), inputs.sum(),
                                           inputs.pow(2).sum(), torch.tensor(inputs.numel(), device=device)]))
        scale, (s1, s2, count) = sums[0] / sums[1].clamp(min=1e-30), sums[2:]
        model.log_scale.fill_(float(torch.log(scale.clamp(min=1e-6))))
        model.input_scale.fill_(float(((count - 1) / (s2 - s1 * s1 / count)).sqrt()))
        state.noise.accumulate(spectra - predicted * scale.float())
        state.noise.update()


def _fixed_code_epochs(config) -> int:
    """Epochs at the start in which the codes are not learnt (``--n-fixed-code-epochs``)."""
    if config.n_fixed_code_epochs is not None:
        return config.n_fixed_code_epochs
    return config.n_epochs // 10 if config.initial_codes == "forces" else 0


def _chunk_size(config, state: HalfState) -> int:
    """Particles per batch of the passes outside training that differentiate a particle's own terms
    (its forces, its code's refinement): a training step's chunk, which the memory estimate counts
    (each particle's result is its own, so the batching does not change it)."""
    return -(-config.batch_size // state.chunks)


def _codes_from_forces(state: HalfState, config, table, images, indices: np.ndarray, device, seed: int,
                       half: int) -> None:
    """Start the training particles' codes on the force components (:mod:`.initial_codes`)."""
    start = time.perf_counter()
    codes = initial_codes(state.model, state.noise.weights(), table, images, indices, config.n_latent_dimensions,
                          _chunk_size(config, state), device, seed)
    with torch.no_grad():
        state.latents.weight[torch.as_tensor(indices, device=device), :codes.shape[1]] = codes.to(device)
    log.info("half %d: codes of %d particles start on %d force components (%.1f s)", half, len(indices),
             codes.shape[1], time.perf_counter() - start)


def _new_state(config, gaussians: GaussianModel, movable, body, n_bodies, box, pixel, radius_px, device,
               n_particles: int, seed: int) -> HalfState:
    torch.manual_seed(seed)  # network initialisation
    model = ForwardModel(gaussians, movable, box, pixel, config.n_latent_dimensions, radius_px, body, n_bodies,
                         config.n_positional_encoding_dimensions, config.n_linear_layers, config.n_neurons_per_layer,
                         config.n_encoder_neurons, config.decoder_motion == "local-rigid").to(device)
    model.mixed_precision = config.mixed_precision
    optimiser = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    latents = torch.nn.Embedding(n_particles, config.n_latent_dimensions, sparse=True).to(device)
    with torch.no_grad():
        latents.weight.copy_(0.1 * torch.randn(latents.weight.shape, generator=torch.Generator().manual_seed(seed)))
    latent_optimiser = torch.optim.SparseAdam(list(latents.parameters()), lr=config.latent_learning_rate)
    poses = pose_optimiser = None
    if config.refine_poses:  # zero corrections: the consensus poses
        poses = torch.nn.Embedding(n_particles, N_POSE_PARAMETERS, sparse=True, _weight=torch.zeros(
            n_particles, N_POSE_PARAMETERS)).to(device)
        pose_optimiser = torch.optim.SparseAdam(list(poses.parameters()), lr=config.latent_learning_rate)
    runner = model
    if dist.is_initialized():
        runner = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    return HalfState(model, runner, DistancePrior(gaussians.positions_angstrom.to(device)), NoiseSpectrum(box, device),
                     optimiser, config.regularization_factor, latents, latent_optimiser,
                     latent_noise=config.latent_noise, poses=poses, pose_optimiser=pose_optimiser,
                     chunks=cache_chunks(device, config.batch_size, len(gaussians), box,
                                         projection_window(gaussians.sigma_angstrom, pixel, box)))


def optimize_deformations(config, job: JobControl, deformation_masks: Path | None) -> None:
    device, main = start_process(config.gpu_id, config.n_threads)  # only the main process writes files
    final = final_checkpoint_path(config.output_directory)
    out, checkpoints = final.parent.parent, final.parent
    table = read_configured_particles(config)
    if len({(g.box_px, g.pixel_size_angstrom) for g in table.optics_groups}) > 1:
        raise InputError(f"{config.refinement_star_file}: optics groups have different box or pixel sizes; "
                         f"training needs one (re-extract or rescale the particles)")
    box, pixel = table.optics_groups[0].box_px, table.optics_groups[0].pixel_size_angstrom
    images = ParticleImages(table, preload=config.preload_images)

    resume = config.checkpoint_file or latest_checkpoint(checkpoints)
    if resume is not None:
        saved = load_checkpoint(resume)
        gaussians = GaussianModel.from_state_dict(saved["gaussians"])
        validation = saved["validation"].numpy()
        movable, body, n_bodies = saved["movable"], saved["body"], int(saved["n_bodies"])
        start_epoch = int(saved["epoch"]) + 1
        work_box = int(saved.get("training_box_px", box))
        log.info("resuming from %s (epoch %d done)", resume, start_epoch)
    else:
        gaussians, movable, body, n_bodies = from_main(lambda: _consensus(config, deformation_masks, box, pixel))
        validation = validation_split(table.half_set, config.validation_fraction, config.seed)
        start_epoch = 0
        work_box = training_box(box, pixel, gaussians.sigma_angstrom, config.training_box)
        if main:
            out.mkdir(parents=True, exist_ok=True)
            write_gaussians(out / "consensus_gaussians.star", gaussians)

    work_pixel = cropped_pixel_size(pixel, box, work_box)  # images are Fourier-cropped to the training box
    if main and work_box != box:
        log.info("learning the deformations at box %d (%.3f Å/px), Fourier-cropped from %d (%.3f Å/px)",
                 work_box, work_pixel, box, pixel)
    # the batch size, resolved once (the option; else the resumed run's; else automatic) and kept in the config
    requested = config.batch_size if config.batch_size is not None or resume is None else saved["config"]["batch_size"]
    estimate = training_estimate(config, work_box, len(gaussians), len(table), device, current().world,
                                 projection_window(gaussians.sigma_angstrom, work_pixel, work_box))
    batch_size = from_main(lambda: training_batch_size(requested, estimate, device))
    config = config.model_copy(update={"batch_size": batch_size})
    extent = float((gaussians.positions_angstrom.norm(dim=-1) + 2 * gaussians.sigma_angstrom).max())
    diameter = config.particle_diameter or 2 * extent
    radius_px = min(diameter / 2 / work_pixel, work_box / 2)
    states = {h: _new_state(config, gaussians, movable, body, n_bodies, work_box, work_pixel, radius_px, device,
                            len(table), config.seed + h) for h in (1, 2)}
    train = {h: np.flatnonzero((table.half_set == h) & ~validation) for h in (1, 2)}
    if any(len(t) == 0 for t in train.values()):
        raise InputError(f"{config.refinement_star_file}: a half-set has no training particles")
    if resume is not None:
        for h in (1, 2):
            states[h].load_state_dict(saved["halves"][str(h)])
    else:
        for h in (1, 2):
            _initialise(states[h], load_batch(table, images, shard(train[h][: config.batch_size]), device, work_box),
                        device)
            if config.initial_codes == "forces":
                _codes_from_forces(states[h], config, table, images, train[h], device, config.seed + h, h)
    if main:
        save_config(config.output_directory / "config.json", config)
    writer = _tensorboard(out / "tensorboard") if main else None

    def payload(epoch: int) -> dict:
        return {"epoch": epoch, "config": config.model_dump(mode="json"), "gaussians": gaussians.state_dict(),
                "validation": torch.from_numpy(validation), "movable": movable, "body": body, "n_bodies": n_bodies,
                "mask_radius_px": radius_px, "training_box_px": work_box,
                "halves": {str(h): states[h].state_dict() for h in (1, 2)}}

    n_per_epoch = len(train[1]) + len(train[2])
    with progress(job, "training", n_per_epoch * (config.n_epochs - start_epoch), log_lines=False) as advance:
        for epoch in range(start_epoch, config.n_epochs):
            warm = epoch < config.n_warmup_epochs if config.n_warmup_epochs is not None else epoch < config.n_epochs // 2
            for h in (1, 2):
                states[h].codes_fixed = epoch < _fixed_code_epochs(config)
            results = {h: train_epoch(states[h], table, images, train[h], epoch, h, config.seed, config.batch_size,
                                      device, advance, use_prior=not warm) for h in (1, 2)}
            log.info("epoch %d/%d | %s", epoch + 1, config.n_epochs, " | ".join(
                f"half {h}: data {r['data']:.4f} kl {r['kl']:.2f} prior {r['prior']:.3g} lambda {r['lambda']:.3g} "
                f"{r['seconds']:.1f} s" for h, r in results.items()))
            if writer is not None:
                for h, r in results.items():
                    for key in ("data", "kl", "prior", "lambda"):
                        writer.add_scalar(f"half{h}/{key}", r[key], epoch)
                writer.flush()
            if main:
                save_checkpoint(checkpoints / f"{epoch:03d}.pth", payload(epoch))
    if main:
        save_checkpoint(final, payload(config.n_epochs - 1))
    trained = {h: np.isin(np.arange(len(table)), train[h]) for h in (1, 2)}
    _write_latents(config, table, images, states, validation, trained, device, out, main)
    if writer is not None:
        writer.close()
    barrier()  # the others leave once the outputs are complete


def _consensus(config, deformation_masks: Path | None, box: int, pixel: float):
    """The consensus Gaussians, which of them may move (mask) and their bodies (rigid mode)."""
    gaussians, _, _ = consensus_gaussians(config.initial_model, config.atomic_model, config.initial_threshold,
                                          config.n_gaussians, box, pixel, config.seed)
    movable = torch.ones(len(gaussians))
    if config.mask_file is not None:
        movable = (mask_values(config.mask_file, gaussians, box, pixel, "mask") >= 0.5).float()
    body, n_bodies = (body_assignment(deformation_masks, gaussians, box, pixel) if deformation_masks
                      else (torch.full((len(gaussians),), -1), 0))
    return gaussians, movable, body, n_bodies


def _write_latents(config, table, images, states, validation, trained, device, out: Path, main: bool) -> None:
    """Each particle's code under its own half's model (refined against the final decoder); error
    estimates for validation particles: the RMS difference of the two halves' displacements (the
    models' uncertainty) and each code's posterior spread (the image's), added in quadrature. With
    ``--refine-poses`` the pose corrections are refined with the codes and written to
    ``refined_poses.star``. Collective: every process refines its share of the codes; the main one
    writes the files."""
    n = len(table)
    latents = np.zeros((n, config.n_latent_dimensions), dtype=np.float32)
    poses = np.zeros((n, N_POSE_PARAMETERS), dtype=np.float32) if config.refine_poses else None
    rms = np.zeros(n, dtype=np.float32)
    codes, held_out_poses = {}, {}
    held_out = np.flatnonzero(validation)
    batch = _chunk_size(config, states[1])
    if main:
        log.info("refining the codes of %d particles against the final decoders", n)
    for h in (1, 2):
        state = states[h]
        model, weights, learnt = state.model, state.noise.weights(), state.latents.weight.detach().cpu()
        learnt_poses = None if state.poses is None else state.poses.weight.detach().cpu()
        codes[h], held_out_poses[h] = particle_latents(model, weights, learnt, trained[h], table, images, held_out,
                                                       batch, device, poses=learnt_poses)
        members = np.flatnonzero(table.half_set == h)
        known = learnt.clone()
        known[torch.as_tensor(held_out)] = torch.as_tensor(codes[h])  # validation codes: refined from here on
        if learnt_poses is not None:
            learnt_poses = learnt_poses.clone()
            learnt_poses[torch.as_tensor(held_out)] = torch.as_tensor(held_out_poses[h])
        latents[members], member_poses = particle_latents(model, weights, known, trained[h] | validation, table,
                                                          images, members, batch, device,
                                                          config.latent_refinement_steps, poses=learnt_poses)
        if poses is not None:
            poses[members] = member_poses
        rms[members] = rms_displacement(model, latents[members], batch, device)
    errors = np.full(n, np.nan, dtype=np.float32)
    if len(held_out):  # the two models' disagreement, and the codes' own uncertainty under each
        spread2 = sum(posterior_spread(states[h].model, states[h].noise.weights(), table, images, held_out, codes[h],
                                       batch, device, poses=held_out_poses[h]) ** 2 for h in (1, 2)) / 2
        errors[held_out] = np.sqrt(disagreement((states[1].model, states[2].model), codes[1], codes[2],
                                                batch, device) ** 2 + spread2)
    if main:
        write_latents(out / "latents.star", table, latents, validation, rms, errors)
        log.info("wrote %s (%d particles, %d for validation)", out / "latents.star", n, int(validation.sum()))
        if poses is not None:
            write_refined_poses(out / REFINED_POSES_NAME, table, poses, states[1].model.pixel_size_angstrom)
            log.info("wrote %s: %s", out / REFINED_POSES_NAME, pose_change_summary(table, poses,
                                                                                   states[1].model.pixel_size_angstrom))


def _tensorboard(directory: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.warning("tensorboard is not installed: no TensorBoard event files")
        return None
    return SummaryWriter(str(directory))
