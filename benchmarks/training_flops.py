"""Where a training step's time goes, against the floating-point work it does and this device's
measured matrix-multiply rate.

For each (box, Gaussians, batch): one full training step (``train_batch``: encoder, decoder over
every Gaussian, rendering of the consensus and the deformed model, FFTs, CTF, losses, backward,
Adam) timed on synthetic particles, and each part timed alone (forward + backward): decoder,
rendering (+ FFT and CTF), encoder. Beside each time, the part's floating-point operations
(counted from the shapes, below) and the achieved fraction of the device's float32 matrix-multiply
rate (a 4096 x 4096 product), so the table says which part is the bottleneck and how far it is
from the hardware's bound.

    python benchmarks/training_flops.py [--gpu-id -1] [--boxes 64 128 256] [--gaussians 1500 10000 30000]
        [--batches 32] [--repeats 3]

FLOP counts per step (b particles, n Gaussians, box d, decoder width h with L layers, latent l,
encoder width H on m pixels); backward counted as twice the forward:
    decoder   3 * b * n * (2 h^2 (L - 2) + 2 h * 6)              (the per-Gaussian MLP)
    render    2 b n d^2 (consensus, forward) + 3 * 2 b n d^2 (deformed) + 3 * 2 * 10 b n d (profiles);
              with local patches (``render.project_gaussians``: window w, w^2 <= 2 d) w in place of d
    FFT       5 FFTs of 5 d^2 log2(d^2) per particle
    encoder   3 * 2 b (m H + 2 H^2 + 2 H l)
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch

from dynamight.commands.optimize_deformations import Config
from dynamight.data.batches import ParticleBatch
from dynamight.data.ctf import CtfParameters
from dynamight.model.gaussians import GaussianModel
from dynamight.reconstruction.imaging import batch_ctf, centred_spectra
from dynamight.model.render import projection_window
from dynamight.runtime import resolve_device
from dynamight.training.deformations import train_batch
from dynamight.training.run import _new_state


SIGMA_PX = 1.2  # the synthetic Gaussians' width, pixels


def matmul_rate(device: torch.device, size: int = 4096) -> float:
    """Measured float32 matrix-multiply rate, FLOP/s."""
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    a @ b
    seconds = _timed(lambda: a @ b, device, 3)
    return 2 * size**3 / seconds


def _timed(fn, device: torch.device, repeats: int) -> float:
    """Median seconds of ``fn()`` after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def synthetic_state(box: int, n: int, batch: int, device: torch.device, config: Config):
    """A training state on ``n`` Gaussians filling a sphere of 0.35 box, 1.5 Å/px, and a batch of
    random images with random poses, defoci and shifts (the cost does not depend on the content)."""
    pixel = 1.5
    generator = torch.Generator().manual_seed(0)
    direction = torch.nn.functional.normalize(torch.randn((n, 3), generator=generator), dim=-1)
    radius = 0.35 * box * pixel * torch.rand((n, 1), generator=generator) ** (1 / 3)
    gaussians = GaussianModel(direction * radius, torch.ones(n), torch.full((n,), SIGMA_PX * pixel))
    config = config.model_copy(update={"batch_size": batch})  # as training resolves it (chunks on CPUs follow)
    state = _new_state(config, gaussians, torch.ones(n), torch.full((n,), -1), 0, box, pixel, box / 2, device,
                       batch, 0)
    rotations = torch.linalg.qr(torch.randn((batch, 3, 3), generator=generator))[0]

    def f64(values):
        return torch.as_tensor(values, dtype=torch.float64, device=device)

    ctf = CtfParameters(f64(np.full(batch, 15000.0)), f64(np.full(batch, 14000.0)), f64(np.zeros(batch)),
                        f64(np.full(batch, 300.0)), f64(np.full(batch, 2.7)), f64(np.full(batch, 0.1)),
                        f64(np.zeros(batch)), f64(np.zeros(batch)), f64(np.ones(batch)))
    data = ParticleBatch(np.arange(batch), torch.randn((batch, box, box), generator=generator).to(device),
                         rotations.float().to(device), torch.zeros((batch, 2), device=device), ctf, pixel)
    return state, data


def flops(box: int, n: int, batch: int, config: Config) -> dict[str, float]:
    """The counts of the module docstring."""
    h, layers, latent, wide = (config.n_neurons_per_layer, config.n_linear_layers, config.n_latent_dimensions,
                               config.n_encoder_neurons)
    pixels = math.pi * (box / 4) ** 2  # the encoder's 2x-binned disc
    side = projection_window(torch.tensor([SIGMA_PX]), 1.0, box) or box  # the projection's own choice
    return {
        "decoder": 3 * batch * n * (2 * h * h * (layers - 2) + 2 * h * 6),
        "render": 2 * batch * n * side**2 * 4 + 3 * 2 * 10 * batch * n * side,
        "fft": 5 * batch * 5 * box**2 * math.log2(box**2),
        "encoder": 3 * 2 * batch * (pixels * wide + 2 * wide * wide + 2 * wide * latent),
    }


def part_times(state, data, device: torch.device, repeats: int) -> dict[str, float]:
    """Forward + backward of the decoder, the rendering (with FFT and CTF) and the encoder alone."""
    model = state.model
    z = torch.randn((len(data.indices), model.decoder.from_latent.in_features), device=device, requires_grad=True)
    ctf, spectra = batch_ctf(data), centred_spectra(data)

    def decoder():
        model.displacements(z).square().sum().backward()

    deformed = (model.positions + 0.1).expand(len(data.indices), -1, -1).clone().requires_grad_(True)

    def render():
        (model.predict(deformed, data.rotations, ctf) - spectra).abs().square().sum().backward()

    def encoder():
        model.encode(spectra, ctf, data.rotations)[0].square().sum().backward()

    return {name: _timed(fn, device, repeats) for name, fn in (("decoder", decoder), ("render", render),
                                                               ("encoder", encoder))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu-id", type=int, default=None)
    parser.add_argument("--boxes", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--gaussians", type=int, nargs="+", default=[1500, 10000, 30000])
    parser.add_argument("--batches", type=int, nargs="+", default=[32])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = resolve_device(args.gpu_id)
    torch.set_flush_denormal(True)
    rate = matmul_rate(device)
    print(f"device {device}: float32 matrix multiply {rate / 1e9:.0f} GFLOP/s")
    config = Config(refinement_star_file=Path("unused.star"), output_directory=Path("unused"))
    print("box  Gaussians batch | step s  ms/ptcl  GFLOP  of-bound | decoder s (frac) | render s (frac) | "
          "encoder s | bottleneck")
    for box in args.boxes:
        for n in args.gaussians:
            for batch in args.batches:
                state, data = synthetic_state(box, n, batch, device, config)
                generator = torch.Generator().manual_seed(0)
                step = _timed(lambda: train_batch(state, data, generator, True), device, args.repeats)
                parts = part_times(state, data, device, args.repeats)
                work = flops(box, n, batch, config)
                total = sum(work.values())
                frac = {k: work[k] / (parts[k] * rate) for k in ("decoder", "render", "encoder")}
                print(f"{box:4d} {n:9d} {batch:5d} | {step:6.3f} {1000 * step / batch:8.2f} {total / 1e9:6.1f} "
                      f"{total / (step * rate):8.1%} | {parts['decoder']:8.3f} ({frac['decoder']:4.0%}) | "
                      f"{parts['render']:7.3f} ({frac['render']:4.0%}) | {parts['encoder']:8.3f} | "
                      f"{max(parts, key=parts.get)}", flush=True)
                del state, data


if __name__ == "__main__":
    main()
