"""optimize-deformations end to end on a tiny simulated project: outputs, resume, bad input."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import starfile
import torch

from dynamight.cli import main
from dynamight.simulate.dataset import simulate

TINY = ["--n-gaussians", "120", "--n-latent-dimensions", "2", "--batch-size", "32", "--gpu-id", "-1",
        "--n-threads", "1"]


def _train(project: Path, out: Path, epochs: int = 2, extra: list[str] | None = None) -> int:
    return main(["optimize-deformations", "--refinement-star-file", str(project / "particles.star"),
                 "--output-directory", str(out), "--initial-model", str(project / "map.mrc"),
                 "--n-epochs", str(epochs), *TINY, *(extra or [])])


@pytest.fixture(scope="module")
def trained(tiny_project, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("trained")
    assert _train(tiny_project, out, extra=["--pipeline-control", str(out)]) == 0
    return out


def test_outputs(trained, tiny_project):
    fd = trained / "forward_deformations"
    assert sorted(p.name for p in (fd / "checkpoints").glob("*.pth")) == ["000.pth", "001.pth", "checkpoint_final.pth"]
    assert not (fd / "checkpoint_final.pth").exists()  # upstream's layout: the final one beside the epochs' ones
    final = torch.load(fd / "checkpoints" / "checkpoint_final.pth", weights_only=True)
    assert final["format"] == "dynamight-forward-deformations" and final["version"] == 1
    assert set(final["halves"]) == {"1", "2"} and final["epoch"] == 1
    assert list((fd / "tensorboard").glob("events.out.tfevents.*"))
    latents = starfile.read(fd / "latents.star")
    assert "optics" in latents and len(latents["particles"]) == 200
    p = latents["particles"]
    for column in ("rlnDynaMightLatent1", "rlnDynaMightLatent2", "rlnDynaMightHalfSet", "rlnDynaMightIsValidation",
                   "rlnDynaMightDisplacementRms", "rlnDynaMightErrorEstimate"):
        assert column in p.columns
    original = starfile.read(tiny_project / "particles.star")["particles"]
    assert (p["rlnDynaMightHalfSet"].to_numpy() == original["rlnRandomSubset"].to_numpy()).all()
    validation = p["rlnDynaMightIsValidation"].to_numpy() == 1
    assert validation.sum() == 20  # 10% of each half
    assert (p.loc[validation, "rlnDynaMightErrorEstimate"] > 0).all()
    assert (fd / "consensus_gaussians.star").is_file()
    assert sorted(x.name for x in trained.glob("RELION_JOB_EXIT_*")) == ["RELION_JOB_EXIT_SUCCESS"]
    config = (trained / "config.json").read_text()
    assert '"seed": 0' in config and "optimize-deformations" not in config or "command_line" in config


def test_halves_are_independent_models(trained):
    final = torch.load(trained / "forward_deformations" / "checkpoints" / "checkpoint_final.pth", weights_only=True)
    one, two = final["halves"]["1"]["model"], final["halves"]["2"]["model"]
    assert torch.equal(one["positions"], two["positions"])  # the same consensus Gaussians
    assert not torch.equal(one["decoder.hidden.0.weight"], two["decoder.hidden.0.weight"])


def test_later_steps_find_the_final_checkpoint_in_both_layouts(trained, tmp_path):
    """Upstream's forward_deformations/checkpoints/checkpoint_final.pth, and one folder up (runs made before)."""
    from dynamight.commands.explore_latent_space import Config as ExploreConfig, checkpoint_of
    from dynamight.inverse.run import load_run

    old = tmp_path / "old"
    shutil.copytree(trained / "forward_deformations", old / "forward_deformations")
    (old / "forward_deformations" / "checkpoints" / "checkpoint_final.pth").rename(
        old / "forward_deformations" / "checkpoint_final.pth")
    for run, final in ((trained, trained / "forward_deformations" / "checkpoints" / "checkpoint_final.pth"),
                       (old, old / "forward_deformations" / "checkpoint_final.pth")):
        assert checkpoint_of(ExploreConfig(output_directory=run)) == final
        table, models, saved, latents, _ = load_run(run, None, torch.device("cpu"))  # inverse and backprojection
        assert set(models) == {1, 2} and latents.shape == (len(table), 2)


def _command(project: Path, out: Path, epochs: int) -> list[str]:
    return [sys.executable, "-m", "dynamight.cli", "optimize-deformations", "--refinement-star-file",
            str(project / "particles.star"), "--output-directory", str(out), "--initial-model", str(project / "map.mrc"),
            "--n-epochs", str(epochs), *TINY]


def test_sigkill_then_resume_gives_the_uninterrupted_result(tiny_project, tmp_path):
    epochs = 4
    assert subprocess.run(_command(tiny_project, tmp_path / "a", epochs), capture_output=True).returncode == 0
    process = subprocess.Popen(_command(tiny_project, tmp_path / "b", epochs), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    first = tmp_path / "b" / "forward_deformations" / "checkpoints" / "000.pth"
    deadline = time.time() + 120
    while not first.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert first.exists() and not (tmp_path / "b" / "forward_deformations" / "checkpoints" / "checkpoint_final.pth").exists()
    assert subprocess.run(_command(tiny_project, tmp_path / "b", epochs), capture_output=True).returncode == 0
    a = torch.load(tmp_path / "a" / "forward_deformations" / "checkpoints" / "checkpoint_final.pth", weights_only=True)
    b = torch.load(tmp_path / "b" / "forward_deformations" / "checkpoints" / "checkpoint_final.pth", weights_only=True)
    for half in ("1", "2"):
        for key, value in a["halves"][half]["model"].items():
            assert torch.equal(value, b["halves"][half]["model"][key]), key
        assert torch.equal(a["halves"][half]["latents"], b["halves"][half]["latents"])


def _fail(args, out, caplog):
    code = main(args + ["--pipeline-control", str(out)])
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert code == 1 and len(errors) == 1
    assert sorted(x.name for x in out.glob("RELION_JOB_EXIT_*")) == ["RELION_JOB_EXIT_FAILURE"]
    return errors[0]


def _base(project, out):
    return ["optimize-deformations", "--refinement-star-file", str(project / "particles.star"),
            "--output-directory", str(out), "--n-epochs", "1", *TINY]


def test_bad_inputs(tiny_project, clean_project, tmp_path, caplog):
    message = _fail(_base(tiny_project, tmp_path / "1"), tmp_path / "1", caplog)
    assert "--initial-model" in message and "--atomic-model" in message
    caplog.clear()
    other = tmp_path / "other.mrc"
    from dynamight.data.volumes import write_map
    write_map(other, torch.zeros(40, 40, 40), 4.0)
    message = _fail(_base(tiny_project, tmp_path / "2") + ["--initial-model", str(other)], tmp_path / "2", caplog)
    assert "other.mrc" in message and "box 40" in message
    caplog.clear()
    message = _fail(_base(tiny_project, tmp_path / "3") + ["--initial-model", str(tiny_project / "map.mrc"),
                                                           "--mask-file", str(other)], tmp_path / "3", caplog)
    assert "other.mrc" in message and "mask" in message
    caplog.clear()
    message = _fail(_base(tiny_project, tmp_path / "4") + ["--initial-model", str(tiny_project / "map.mrc"),
                                                           "--n-gaussians", "100000"], tmp_path / "4", caplog)
    assert "--n-gaussians" in message
    caplog.clear()
    (tmp_path / "empty").mkdir()
    args = ["optimize-deformations-rigid"] + _base(tiny_project, tmp_path / "5")[1:] + [
        "--initial-model", str(tiny_project / "map.mrc"), "--deformation-masks", str(tmp_path / "empty")]
    message = _fail(args, tmp_path / "5", caplog)
    assert "empty" in message and "deformation masks" in message


def test_rigid_bodies_move_rigidly(tiny_project, tmp_path):
    out = tmp_path / "rigid"
    code = main(["optimize-deformations-rigid", "--refinement-star-file", str(tiny_project / "particles.star"),
                 "--output-directory", str(out), "--initial-model", str(tiny_project / "map.mrc"),
                 "--deformation-masks", str(tiny_project / "masks"), "--n-epochs", "2", *TINY])
    assert code == 0
    from dynamight.training.restore import load_forward_models
    models, _ = load_forward_models(out / "forward_deformations" / "checkpoints" / "checkpoint_final.pth", 32, 4.0, torch.device("cpu"))
    model = models[1]
    z = torch.randn(3, 2)
    with torch.no_grad():
        moved = model.positions + model.displacements(z)
    for body in range(2):
        members = model.body == body
        exact = "donot_use_mm_for_euclid_dist"
        before = torch.cdist(model.positions[members], model.positions[members], compute_mode=exact)
        after = torch.cdist(moved[0][members], moved[0][members], compute_mode=exact)
        assert (before - after).abs().max() < 1e-3  # distances within a body are kept


def test_out_of_memory_splits_batches_into_chunks(tiny_project, tmp_path, monkeypatch, caplog):
    """A batch that does not fit is processed in chunks that add up to the same step (with the prior
    off: lambda's re-balancing reads the first chunk's gradients); other errors are not caught."""
    from dynamight.training.model import ForwardModel

    no_prior = ["--n-warmup-epochs", "2"]
    assert _train(tiny_project, tmp_path / "whole", extra=no_prior) == 0
    original = ForwardModel.forward

    def small_only(self, spectra, *args):
        if spectra.shape[0] > 8:
            raise torch.OutOfMemoryError("simulated: batch too large")
        return original(self, spectra, *args)

    monkeypatch.setattr(ForwardModel, "forward", small_only)
    assert _train(tiny_project, tmp_path / "chunked", extra=no_prior) == 0
    assert any("splitting each batch into 4 chunks" in r.getMessage() for r in caplog.records)
    a = torch.load(tmp_path / "whole" / "forward_deformations" / "checkpoints" / "checkpoint_final.pth", weights_only=True)
    b = torch.load(tmp_path / "chunked" / "forward_deformations" / "checkpoints" / "checkpoint_final.pth", weights_only=True)
    for half in ("1", "2"):
        for key, value in a["halves"][half]["model"].items():
            assert torch.allclose(value, b["halves"][half]["model"][key], rtol=1e-3, atol=1e-4), key
        assert torch.allclose(a["halves"][half]["latents"], b["halves"][half]["latents"], rtol=1e-3, atol=1e-4)

    def broken(self, spectra, *args):
        raise RuntimeError("not a memory problem")

    monkeypatch.setattr(ForwardModel, "forward", broken)
    with pytest.raises(RuntimeError, match="not a memory problem"):
        from dynamight.commands import optimize_deformations
        from dynamight.commands.options import build_config
        from dynamight.runtime import JobControl
        config = build_config(optimize_deformations.Config, {
            "refinement_star_file": tiny_project / "particles.star", "output_directory": tmp_path / "broken",
            "initial_model": tiny_project / "map.mrc", "n_gaussians": 120, "n_latent_dimensions": 2,
            "batch_size": 32, "gpu_id": -1, "n_epochs": 1})
        optimize_deformations.run(config, JobControl(None))


def test_learns_the_hinge_motion(tmp_path):
    """The issue's accuracy property at test size (800 particles, 32 px, SNR 0.5, 30 epochs, the
    default 6 latent dimensions): in each half the best linear latent direction follows the true
    hinge angle, the moving domain's displacements are recovered, and the validation error estimate
    follows the true error. (At the issue's size, benchmarks/deformation_accuracy.py: |Spearman| >=
    0.9, error <= 35%.) With only 2 latent dimensions, about one half in three settles at this size
    in a wrong motion (the moving domain spinning about its own length) and stays there; with 6 the
    right motion also emerges in those halves (seeds 11 and 14: 0.97 / 0.91 and 0.97 / 0.97)."""
    from dynamight.simulate.evaluate import hinge_accuracy

    project = tmp_path / "project"
    simulate(project, n_particles=800, box_px=32, pixel_size_angstrom=4.0, snr=0.5, motion="hinge", seed=11)
    assert main(["optimize-deformations", "--refinement-star-file", str(project / "particles.star"),
                 "--output-directory", str(tmp_path / "run"), "--initial-model", str(project / "map.mrc"),
                 "--n-gaussians", "200", "--n-epochs", "30", "--batch-size", "32",
                 "--gpu-id", "-1", "--n-threads", "1"]) == 0
    results = hinge_accuracy(project, tmp_path / "run")
    for half, result in results.items():
        assert result["latent_spearman"] >= 0.85, (half, result)  # measured 0.97 / 0.91
        assert result["relative_rms_error"] <= 0.7, (half, result)  # measured 0.37 / 0.55
    # 40 validation particles per half: the rank correlation is noisy (about +-0.15) per half
    assert np.mean([r["error_estimate_spearman"] for r in results.values()]) > 0.1, results
