"""Predicted training memory: it bounds a measured step, the batch chosen fits, the CLI's automatic batch."""

from __future__ import annotations

import json
import logging
from functools import partial
from pathlib import Path

import pytest
import torch

from dynamight import memory
from dynamight.cli import main
from dynamight.errors import InputError
from dynamight.memory import choose_batch_size, training_step_bytes
from dynamight.training.step_memory import measure


def test_estimate_bounds_a_measured_step():
    """Two real steps in a fresh process (box 32, 200 Gaussians, batch 8): the estimate is above the
    peak resident memory's increase, and within 3x of it. (``ru_maxrss``'s increase can be 0 where
    the set-up's own peak was higher, which the reset high-water mark is not: it is only bounded.)"""
    measured = measure(32, 200, 8, n_particles=1000)
    predicted = training_step_bytes(32, 200, 8, n_particles=1000)
    assert measured["peak_increase_bytes"] <= predicted, (measured, predicted)
    if measured["high_water_reset"]:  # else the peak is ru_maxrss's increase, which may hide the step's
        assert predicted <= 3 * measured["peak_increase_bytes"], (measured, predicted)
    assert measured["maxrss_increase_bytes"] <= predicted, (measured, predicted)


def test_estimate_bounds_a_measured_step_with_local_patches_in_chunks():
    """As above, with Gaussians narrow enough (0.6 px at box 128) to be projected as local patches,
    and enough of them (10,000, batch 32) that the CPU step runs in cache-sized chunks: the estimate
    for that path and those chunks bounds the measured step within 3x."""
    from dynamight.memory import cache_chunks
    from dynamight.model.render import projection_window

    window = projection_window(torch.tensor([0.6]), 1.0, 128)
    chunks = cache_chunks(torch.device("cpu"), 32, 10000, 128, window)
    assert window is not None and chunks > 1
    measured = measure(128, 10000, 32, n_particles=1000, sigma_px=0.6)
    predicted = training_step_bytes(128, 10000, 32, n_particles=1000, window=window, chunks=chunks)
    assert measured["peak_increase_bytes"] <= predicted, (measured, predicted)
    if measured["high_water_reset"]:
        assert predicted <= 3 * measured["peak_increase_bytes"], (measured, predicted)


@pytest.mark.parametrize("free_gib", [0.25, 1.0, 3.0, 64.0])
@pytest.mark.parametrize("cap", [1, 32, 100, 128])
def test_chosen_batch_fits(monkeypatch, free_gib, cap):
    free = int(free_gib * 2**30)
    monkeypatch.setattr(memory, "device_memory_bytes", lambda device: free)
    estimate = partial(training_step_bytes, 64, 1500, n_particles=100_000)
    batch = choose_batch_size(lambda b: estimate(batch_size=b), "cpu", cap)
    assert batch <= cap and batch & (batch - 1) == 0
    assert estimate(batch_size=batch) <= free
    assert batch == cap or 2 * batch > cap or estimate(batch_size=2 * batch) > memory.MEMORY_FRACTION * free


def test_nothing_fits(monkeypatch):
    monkeypatch.setattr(memory, "device_memory_bytes", lambda device: 2**20)
    with pytest.raises(InputError, match="even with one particle per batch"):
        choose_batch_size(lambda b: training_step_bytes(64, 1500, b), "cpu", 32)


def test_device_memory_is_positive():
    assert 0 < memory.device_memory_bytes(torch.device("cpu"))


def _train(project: Path, out: Path, epochs: int) -> int:
    return main(["optimize-deformations", "--refinement-star-file", str(project / "particles.star"),
                 "--output-directory", str(out), "--initial-model", str(project / "map.mrc"), "--n-epochs", str(epochs),
                 "--n-gaussians", "60", "--n-latent-dimensions", "2", "--gpu-id", "-1", "--n-threads", "1",
                 "--latent-refinement-steps", "0"])


def test_cli_chooses_the_batch_and_a_resumed_run_keeps_it(tiny_project, tmp_path, monkeypatch, caplog):
    """No --batch-size: the automatic one (here made 16), logged, written to config.json and the
    checkpoints; resumed later where the automatic choice would be 32, the run keeps 16."""
    caplog.set_level(logging.INFO)
    monkeypatch.setattr(memory, "AUTOMATIC_BATCH", 16)
    assert _train(tiny_project, tmp_path, 1) == 0
    assert any("estimated peak memory per training step" in r.getMessage() and "at batch 16" in r.getMessage()
               for r in caplog.records)
    assert json.loads((tmp_path / "config.json").read_text())["config"]["batch_size"] == 16
    monkeypatch.setattr(memory, "AUTOMATIC_BATCH", 32)
    assert _train(tiny_project, tmp_path, 2) == 0
    for name in ("000.pth", "001.pth", "checkpoint_final.pth"):
        saved = torch.load(tmp_path / "forward_deformations" / "checkpoints" / name, weights_only=True)
        assert saved["config"]["batch_size"] == 16, name


def test_cache_chunks():
    """CPUs: one chunk up to CPU_CHUNK_ABOVE (b, n, d) elements (the usual 1,500 Gaussians at box
    64, batch 128), else chunks of at most CPU_CHUNK_ELEMENTS, never more than the batch; GPUs: one."""
    from dynamight.memory import CPU_CHUNK_ELEMENTS, cache_chunks

    cpu = torch.device("cpu")
    assert cache_chunks(cpu, 128, 1500, 64) == 1
    assert cache_chunks(cpu, 32, 10000, 64) == 3
    assert cache_chunks(cpu, 32, 30000, 256) == 32
    assert cache_chunks(cpu, 32, 30000, 256, window=7) == 7  # local patches: 49 elements per Gaussian
    for b, n, d in ((32, 10000, 64), (128, 4000, 128), (7, 30000, 400)):
        chunks = cache_chunks(cpu, b, n, d)
        assert -(-b // chunks) * n * d <= CPU_CHUNK_ELEMENTS or chunks == b
        assert cache_chunks(cpu, b, n, d) <= b
    assert cache_chunks(torch.device("cuda"), 128, 30000, 256) == 1
