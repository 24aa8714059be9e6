"""Data-parallel training with 2 gloo processes (torchrun) against 1 process, on the CPU."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import starfile
import torch

from dynamight.distributed import Launch, launch_from_environment

TINY = ["--n-gaussians", "120", "--n-latent-dimensions", "2", "--batch-size", "32", "--gpu-id", "-1",
        "--n-threads", "1", "--n-epochs", "2"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dynamight(processes: int, *args: str) -> subprocess.CompletedProcess:
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(processes),
                 "--master-port", str(_free_port()), "-m", "dynamight.cli"] if processes > 1
                else [sys.executable, "-m", "dynamight.cli"])
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    done = subprocess.run([*launcher, *args], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def _train(project: Path, out: Path, processes: int) -> subprocess.CompletedProcess:
    return _dynamight(processes, "optimize-deformations", "--refinement-star-file", str(project / "particles.star"),
                      "--output-directory", str(out), "--initial-model", str(project / "map.mrc"),
                      "--pipeline-control", str(out), "--refine-poses", "--n-warmup-epochs", "1", *TINY)


def _files(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory).parent / ("<events>" if p.name.startswith("events.") else p.name))
                  for p in directory.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def runs(tiny_project, tmp_path_factory) -> dict[int, tuple[Path, subprocess.CompletedProcess]]:
    root = tmp_path_factory.mktemp("ddp")
    result = {}
    for processes in (1, 2):
        out = root / f"p{processes}"
        done = _train(tiny_project, out, processes)
        result[processes] = (out, done)
    return result


def test_two_processes_match_one(runs):
    (one, _), (two, _) = runs[1], runs[2]
    a = torch.load(one / "forward_deformations" / "checkpoints" / "checkpoint_final.pth", weights_only=True)
    b = torch.load(two / "forward_deformations" / "checkpoints" / "checkpoint_final.pth", weights_only=True)
    for half in ("1", "2"):
        for key, value in a["halves"][half]["model"].items():
            assert torch.allclose(value, b["halves"][half]["model"][key], rtol=1e-3, atol=1e-4), key
        assert torch.allclose(a["halves"][half]["latents"], b["halves"][half]["latents"], rtol=1e-3, atol=1e-4)
        assert a["halves"][half]["poses"].abs().max() > 0  # refined in the second epoch, the same by both runs
        assert torch.allclose(a["halves"][half]["poses"], b["halves"][half]["poses"], rtol=1e-3, atol=1e-4)
        assert abs(a["halves"][half]["lambda"] - b["halves"][half]["lambda"]) <= 1e-3 * abs(a["halves"][half]["lambda"])
    za = starfile.read(one / "forward_deformations" / "latents.star")["particles"]
    zb = starfile.read(two / "forward_deformations" / "latents.star")["particles"]
    for column in ("rlnDynaMightLatent1", "rlnDynaMightLatent2", "rlnDynaMightDisplacementRms"):
        assert (za[column] - zb[column]).abs().max() < 1e-3, column
    pa = starfile.read(one / "forward_deformations" / "refined_poses.star")["particles"]
    pb = starfile.read(two / "forward_deformations" / "refined_poses.star")["particles"]
    for column in ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi", "rlnOriginXAngst", "rlnOriginYAngst"):
        assert ((pa[column] - pb[column] + 180) % 360 - 180).abs().max() < 1e-2, column  # angles: modulo 360°
    estimated = za["rlnDynaMightIsValidation"].astype(bool)  # codes refined and spreads computed by both ranks
    assert estimated.sum() > 0
    difference = (za["rlnDynaMightErrorEstimate"] - zb["rlnDynaMightErrorEstimate"])[estimated].abs()
    assert difference.max() < 1e-3 * za["rlnDynaMightErrorEstimate"][estimated].abs().max() + 1e-4


def test_only_rank_zero_writes(runs):
    (one, _), (two, done) = runs[1], runs[2]
    assert _files(two) == _files(one)  # one TensorBoard event file, one exit file, no per-rank copies
    assert len(list((two / "forward_deformations" / "tensorboard").glob("events.*"))) == 1
    assert sorted(p.name for p in two.glob("RELION_JOB_EXIT_*")) == ["RELION_JOB_EXIT_SUCCESS"]
    assert "process 0 of 2 (gloo, cpu)" in done.stdout
    assert done.stdout.count("epoch 2/2") == 1  # one log line per epoch, from rank 0


def test_inverse_and_backprojection_with_two_processes_match_one(runs, tmp_path):
    trained = runs[1][0]
    outputs = {}
    for processes in (1, 2):
        out = tmp_path / f"p{processes}"
        shutil.copytree(trained / "forward_deformations", out / "forward_deformations")
        _dynamight(processes, "optimize-inverse-deformations", str(out), "--n-epochs", "3", "--gpu-id", "-1",
                   "--n-threads", "1")
        _dynamight(processes, "deformable-backprojection", str(out), "--gpu-id", "-1", "--n-threads", "1",
                   "--particles-per-cluster", "25")  # 4 clusters per half: both ranks take rounds
        outputs[processes] = out
    one, two = (torch.load(outputs[p] / "inverse_deformations" / "inv_chkpt.pth", weights_only=True) for p in (1, 2))
    for half in ("1", "2"):
        for key, value in one["halves"][half]["model"].items():
            assert torch.allclose(value, two["halves"][half]["model"][key], rtol=1e-3, atol=1e-5), key
    for name in ("map_half1.mrc", "map_half2.mrc", "map.mrc"):
        a, b = (mrcfile.read(outputs[p] / "backprojection" / name) for p in (1, 2))
        assert np.abs(a - b).max() <= 1e-4 * np.abs(a).max(), name
    assert not (outputs[2] / "backprojection" / "progress.pth").exists()


def test_launch_from_the_environment():
    assert launch_from_environment({}) == Launch(0, 1, 0)
    assert launch_from_environment({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"}) == Launch(3, 4, 1)
    mpi = {"OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_LOCAL_RANK": "1"}
    assert launch_from_environment(mpi) == Launch(1, 2, 1)
    assert launch_from_environment({"PMI_SIZE": "2", "PMI_RANK": "0"}) == Launch(0, 2, 0)


def test_relion_external_train_under_torchrun(tiny_project, tmp_path):
    """One External job, several processes: RELION's command with ``torchrun`` in front of the
    executable; rank 0 alone writes outputs, logfile, nodes and the exit file."""
    job = tmp_path / "External" / "job012"
    executable = Path(sys.executable).parent / "relion_dynamight_train"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(port),
               str(executable), "--o", str(job), "--in_parts", str(tiny_project / "particles.star"),
               "--in_3dref", str(tiny_project / "map.mrc"), "--n_gaussians", "120", "--n_latent_dimensions", "2",
               "--n_epochs", "2", "--batch_size", "32", "--gpu_id", "-1", "--j", "1", "--pipeline_control", str(job)]
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(p.name for p in job.glob("RELION_JOB_EXIT_*")) == ["RELION_JOB_EXIT_SUCCESS"]
    for name in ("RELION_OUTPUT_NODES.star", "logfile.pdf", "checkpoint.pth", "latents.star", "particles.star"):
        assert (job / name).is_file(), name
    assert len(list((job / "forward_deformations" / "tensorboard").glob("events.*"))) == 1
    assert "process 0 of 2 (gloo, cpu)" in done.stdout and done.stdout.count("epoch 2/2") == 1
