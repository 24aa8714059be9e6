"""Measured peak memory of ``optimize-deformations`` training steps, on the CPU, in a fresh process.

The calibration of :func:`dynamight.memory.training_step_bytes` (and its test and benchmark):
``python -m dynamight.training.step_memory --box-px 64 --n-gaussians 1500 --batch-size 32`` builds
one half's training state (the real :class:`ForwardModel`, optimisers and code table) on a
synthetic batch (random images, poses and CTFs: a step's memory does not depend on the values),
takes a baseline, runs two real steps of :func:`~dynamight.training.deformations.train_batch`
(warm-up, then with the distance prior and its re-balancing) and prints one JSON line: the increase
of the peak resident memory over the baseline, in bytes. The peak is reset at the baseline where
Linux allows it (``/proc/self/clear_refs``, ``VmHWM``), so the set-up's own peak cannot hide the
steps'; ``ru_maxrss``'s increase is reported too.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np

from ..memory import proc_bytes


def _high_water_bytes() -> int | None:
    """``VmHWM`` of this process, bytes (``None`` where ``/proc`` has none)."""
    return proc_bytes(Path("/proc/self/status"), "VmHWM")


def _reset_high_water() -> bool:
    """Return the freed heap to the system (glibc ``malloc_trim``: memory the set-up freed would
    otherwise be reused by the steps unseen), then reset ``VmHWM`` to the current resident size."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _synthetic_batch(box_px: int, batch_size: int, pixel: float):
    import torch
    from ..data.batches import ParticleBatch
    from ..data.ctf import CtfParameters
    from ..data.geometry import euler_angles_to_matrix

    g = torch.Generator().manual_seed(0)

    def full(value: float) -> torch.Tensor:
        return torch.full((batch_size,), value, dtype=torch.float64)

    ctf = CtfParameters(defocus_u_angstrom=full(15000.0), defocus_v_angstrom=full(14000.0),
                        defocus_angle_deg=full(30.0), voltage_kv=full(300.0), spherical_aberration_mm=full(2.7),
                        amplitude_contrast=full(0.1), phase_shift_deg=full(0.0), bfactor_angstrom2=full(0.0),
                        scale=full(1.0))
    angles = torch.rand((batch_size, 3), generator=g, dtype=torch.float64) * 360 - 180
    return ParticleBatch(np.arange(batch_size), torch.randn((batch_size, box_px, box_px), generator=g),
                         euler_angles_to_matrix(angles).float(), torch.zeros((batch_size, 2)), ctf, pixel)


def measure_here(box_px: int, n_gaussians: int, batch_size: int, n_latent: int = 6, n_layers: int = 8,
                 n_neurons: int = 32, encoder_neurons: int = 256, n_particles: int = 1000,
                 sigma_px: float = 1.5) -> dict:
    """Two training steps in this process (call it in a fresh one: :func:`measure`); the Gaussians
    ``sigma_px`` pixels wide (narrow ones are projected as local patches)."""
    import torch
    from ..commands.optimize_deformations import Config
    from ..model.gaussians import GaussianModel
    from .deformations import train_batch
    from .run import _initialise, _new_state

    torch.set_num_threads(1)
    pixel = 128.0 / box_px
    g = torch.Generator().manual_seed(1)
    radius = box_px * pixel / 4
    direction = torch.randn((n_gaussians, 3), generator=g)
    positions = direction / direction.norm(dim=1, keepdim=True) * radius * torch.rand((n_gaussians, 1), generator=g)
    gaussians = GaussianModel(positions, torch.ones(n_gaussians), torch.full((n_gaussians,), sigma_px * pixel))
    config = Config(refinement_star_file=Path("unused.star"), output_directory=Path("unused"), gpu_id=-1,
                    batch_size=batch_size, n_latent_dimensions=n_latent, n_linear_layers=n_layers,
                    n_neurons_per_layer=n_neurons, n_encoder_neurons=encoder_neurons)
    state = _new_state(config, gaussians, torch.ones(n_gaussians), torch.full((n_gaussians,), -1), 0, box_px, pixel,
                       box_px / 2 * 0.9, torch.device("cpu"), max(n_particles, batch_size), 0)
    batch = _synthetic_batch(box_px, batch_size, pixel)
    _initialise(state, batch, torch.device("cpu"))
    generator = torch.Generator().manual_seed(0)
    gc.collect()
    reset = _reset_high_water()
    base_hwm, base_maxrss = _high_water_bytes(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    for use_prior in (False, True):
        train_batch(state, batch, generator, use_prior, batch.indices)
    hwm, maxrss = _high_water_bytes(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    peak = hwm - base_hwm if reset and hwm is not None and base_hwm is not None else maxrss - base_maxrss
    return {"peak_increase_bytes": int(peak), "maxrss_increase_bytes": int(maxrss - base_maxrss),
            "high_water_reset": reset}


def measure(box_px: int, n_gaussians: int, batch_size: int, n_latent: int = 6, n_layers: int = 8,
            n_neurons: int = 32, encoder_neurons: int = 256, n_particles: int = 1000, timeout_s: float = 600,
            sigma_px: float = 1.5) -> dict:
    """:func:`measure_here` in a fresh Python process (one CPU thread)."""
    args = [sys.executable, "-m", __name__, "--box-px", str(box_px), "--n-gaussians", str(n_gaussians),
            "--batch-size", str(batch_size), "--n-latent", str(n_latent), "--n-layers", str(n_layers),
            "--n-neurons", str(n_neurons), "--encoder-neurons", str(encoder_neurons), "--n-particles", str(n_particles),
            "--sigma-px", str(sigma_px)]
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=timeout_s)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, default in (("box-px", 64), ("n-gaussians", 1500), ("batch-size", 32), ("n-latent", 6),
                          ("n-layers", 8), ("n-neurons", 32), ("encoder-neurons", 256), ("n-particles", 1000)):
        parser.add_argument(f"--{name}", type=int, default=default)
    parser.add_argument("--sigma-px", type=float, default=1.5)
    a = parser.parse_args(argv)
    print(json.dumps(measure_here(a.box_px, a.n_gaussians, a.batch_size, a.n_latent, a.n_layers, a.n_neurons,
                                  a.encoder_neurons, a.n_particles, a.sigma_px)))


if __name__ == "__main__":
    main()
