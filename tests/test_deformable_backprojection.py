"""Inverse deformations and deformable backprojection on a tiny trained run."""

from __future__ import annotations

import tempfile
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import starfile
import torch

from dynamight.cli import main
from dynamight.data.fourier import fsc
from dynamight.data.images import ParticleImages
from dynamight.data.particles import read_particles
from dynamight.data.volumes import read_map
from dynamight.reconstruction.cluster_scales import LowResolutionClusters, cluster_scales
from dynamight.reconstruction.clusters import deformation_clusters
from dynamight.reconstruction.deformable_run import deformable_half_maps
from dynamight.reconstruction.plain import reconstruct_half_maps
from dynamight.simulate.dataset import simulate
from dynamight.simulate.evaluate import true_hinge_displacements
from dynamight.training.restore import load_forward_models

from .test_optimize_deformations import TINY


@pytest.fixture(scope="module")
def run(tiny_project, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    assert main(["optimize-deformations", "--refinement-star-file", str(tiny_project / "particles.star"),
                 "--output-directory", str(out), "--initial-model", str(tiny_project / "map.mrc"),
                 "--n-epochs", "2", *TINY]) == 0
    return out


class _Still:
    """A model whose displacements are a tiny constant: forces the warp path with (nearly) no motion."""

    rigid = False

    def __init__(self, positions):
        self.positions = positions
        self.movable = torch.ones(len(positions))

    def displacements(self, z):
        return torch.full((z.shape[0],) + self.positions.shape, 1e-4)


def test_without_deformation_equals_plain_reconstruction(tiny_project):
    table = read_particles(tiny_project / "particles.star")
    images = ParticleImages(table)
    plain = reconstruct_half_maps(table, images, torch.device("cpu"))
    positions = torch.randn(100, 3) * 10
    models = {1: _Still(positions), 2: _Still(positions)}
    codes = np.random.default_rng(0).normal(size=(len(table), 2)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        deformable = deformable_half_maps(table, images, models, codes, torch.device("cpu"), 64, 2, Path(tmp),
                                          particles_per_cluster=25)
    limit = int(0.9 * 16)
    for ours, reference in ((deformable.half1, plain.half1), (deformable.merged, plain.merged)):
        assert fsc(ours, reference)[: limit + 1].min() >= 0.99


def test_inverse_then_backprojection_commands(run, tiny_project):
    job = run / "job"
    assert main(["optimize-inverse-deformations", str(run), "--n-epochs", "30", "--gpu-id", "-1",
                 "--save-deformations", "--pipeline-control", str(job)]) == 0
    saved = torch.load(run / "inverse_deformations" / "inv_chkpt.pth", weights_only=True)
    assert saved["format"] == "dynamight-inverse-deformations"
    for half in ("1", "2"):
        assert saved["halves"][half]["held_out_rms"] < 0.5  # Å, on the validation particles
    deformed = np.load(run / "inverse_deformations" / "deformations_half1.npy", mmap_mode="r")
    assert deformed.shape == (100, 120, 3)
    assert main(["deformable-backprojection", str(run), "--gpu-id", "-1", "--mask-file", str(tiny_project / "mask.mrc"),
                 "--particles-per-cluster", "25", "--pipeline-control", str(job)]) == 0
    for name in ("map_half1.mrc", "map_half2.mrc", "map.mrc"):
        with mrcfile.open(run / "backprojection" / name) as mrc:
            assert mrc.data.shape == (32, 32, 32) and float(mrc.voxel_size.x) == pytest.approx(4.0)
    table = starfile.read(run / "backprojection" / "fsc.star")["fsc"]
    assert table["rlnFourierShellCorrelationCorrected"].iloc[2] > 0.8
    assert sorted(p.name for p in job.glob("RELION_JOB_EXIT_*")) == ["RELION_JOB_EXIT_SUCCESS"]
    assert not (run / "backprojection" / "progress.pth").exists()


def test_each_half_uses_only_its_particles(run, tiny_project):
    models, _ = load_forward_models(run / "forward_deformations" / "checkpoints" / "checkpoint_final.pth", 32, 4.0, torch.device("cpu"))
    table = read_particles(tiny_project / "particles.star")
    only_half1 = table.half_set == 1
    codes = np.zeros((len(table), 2), dtype=np.float32)
    images = ParticleImages(table)
    with tempfile.TemporaryDirectory() as tmp:
        maps = deformable_half_maps(table, images, models, codes, torch.device("cpu"), 64, 2, Path(tmp))
    # the half-maps differ (independent particles) but agree at low resolution
    assert not torch.equal(maps.half1, maps.half2)
    assert fsc(maps.half1, maps.half2)[1:4].min() > 0.8
    assert only_half1.sum() == 100


class _TrueHinge:
    """The simulation's own hinge motion as a model: code = the true hinge angle (degrees)."""

    rigid = False

    def __init__(self, project: Path):
        truth = starfile.read(project / "ground_truth.star")
        general, atoms = truth["general"], truth["atoms"]
        self.hinge_point = torch.tensor([general[f"dmHingePoint{a}"] for a in "XYZ"], dtype=torch.float32)
        self.positions = torch.tensor(atoms[["dmAtomX", "dmAtomY", "dmAtomZ"]].to_numpy(), dtype=torch.float32)
        self.moving = torch.tensor(atoms["dmAtomMoving"].to_numpy().astype(bool))
        self.movable = self.moving.float()
        self.codes = truth["particles"]["dmTrueHingeAngleDeg"].to_numpy().astype(np.float32)[:, None]

    def displacements(self, z):
        return true_hinge_displacements(self.positions, z[:, 0], self.hinge_point) * self.moving[:, None]


def test_true_deformations_sharpen_the_moving_domain(tmp_path):
    """With the true deformations, the deformable backprojection recovers most of what the motion
    costs the moving domain (against the static twin: same poses, CTF and noise, no motion) and
    leaves the fixed domain as sharp as the plain reconstruction."""
    moving, twin = tmp_path / "moving", tmp_path / "twin"
    for path, motion in ((moving, "hinge"), (twin, "none")):
        simulate(path, n_particles=1000, box_px=32, pixel_size_angstrom=4.0, snr=0.5, motion=motion, seed=11)
    table, twin_table = read_particles(moving / "particles.star"), read_particles(twin / "particles.star")
    images = ParticleImages(table)
    model = _TrueHinge(moving)
    maps = {"plain": reconstruct_half_maps(table, images, torch.device("cpu")).merged,
            "twin": reconstruct_half_maps(twin_table, ParticleImages(twin_table), torch.device("cpu")).merged,
            "deformable": deformable_half_maps(table, images, {1: model, 2: model}, model.codes, torch.device("cpu"),
                                               64, 2, tmp_path).merged}
    truth = read_map(moving / "map.mrc").data
    band = {(name, domain): float(fsc(volume, truth, read_map(moving / "masks" / f"{domain}_domain.mrc").data)[3:].mean())
            for name, volume in maps.items() for domain in ("moving", "fixed")}
    gap = band["twin", "moving"] - band["plain", "moving"]
    assert gap > 0.05  # the motion blurs the moving domain
    assert band["deformable", "moving"] - band["plain", "moving"] >= 0.7 * gap, band
    assert band["deformable", "fixed"] >= band["plain", "fixed"] - 0.005, band


class _Interrupted(Exception):
    pass


def test_killed_backprojection_resumes_to_the_same_maps(run, tiny_project, tmp_path, monkeypatch, caplog):
    """Progress is saved after every round of clusters (here); a run stopped half-way resumes from
    it to the maps of an uninterrupted run, and a progress file made with other clusters is not used."""
    import dynamight.reconstruction.deformable_run as deformable_run

    models, _ = load_forward_models(run / "forward_deformations" / "checkpoints" / "checkpoint_final.pth", 32, 4.0, torch.device("cpu"))
    table = read_particles(tiny_project / "particles.star")
    images = ParticleImages(table)
    codes = np.random.default_rng(1).normal(size=(len(table), 2)).astype(np.float32)

    def maps(state: Path, per_cluster: int, on_batch=None):
        return deformable_half_maps(table, images, models, codes, torch.device("cpu"), 64, 2, state,
                                    on_batch=on_batch, particles_per_cluster=per_cluster)

    uninterrupted = maps(tmp_path / "a", 25)
    monkeypatch.setattr(deformable_run, "SAVE_EVERY_SECONDS", -1.0)
    seen = []

    def stop_half_way(n: int) -> None:
        seen.append(n)
        if sum(seen) > len(table) // 2:
            raise _Interrupted

    with pytest.raises(_Interrupted):
        maps(tmp_path / "b", 25, stop_half_way)
    assert (tmp_path / "b" / "progress.pth").is_file()
    resumed = maps(tmp_path / "b", 25)
    assert "resuming the backprojection" in caplog.text
    for a, b in ((uninterrupted.half1, resumed.half1), (uninterrupted.half2, resumed.half2)):
        assert torch.allclose(a, b, atol=1e-5 * float(a.abs().max()))
    caplog.clear()
    other = maps(tmp_path / "b", 40)  # the saved progress belongs to other clusters
    assert "starts over" in caplog.text
    fresh = maps(tmp_path / "c", 40)
    assert torch.allclose(other.half1, fresh.half1, atol=1e-5 * float(fresh.half1.abs().max()))


class _ScaledHinge(_TrueHinge):
    """The true hinge motion times ``factor`` (a model that learnt too small a motion)."""

    def __init__(self, project: Path, factor: float):
        super().__init__(project)
        self.factor = factor

    def displacements(self, z):
        return self.factor * super().displacements(z)


def test_cluster_scales_undo_a_too_small_motion(tmp_path):
    """Fitted to the data alone, the clusters' scales are about 1 for the true motion and about
    1 / 0.6 for a model whose motion is 60% of it."""
    simulate(tmp_path, n_particles=1000, box_px=32, pixel_size_angstrom=4.0, snr=0.5, motion="hinge", seed=11)
    table = read_particles(tmp_path / "particles.star")
    images, cpu = ParticleImages(table), torch.device("cpu")
    half = np.flatnonzero(table.half_set == 1)
    for factor in (1.0, 0.6):
        model = _ScaledHinge(tmp_path, factor)
        labels = deformation_clusters(model, model.codes[half], 100, 64, cpu)
        low = LowResolutionClusters(table, images, model, 32, 4.0, 2, cpu, read_map(tmp_path / "mask.mrc").data)
        scales, _ = cluster_scales(low, model, model.codes[half], labels, half, 64, cpu)
        assert abs(np.median(scales) - 1 / factor) <= 0.2, (factor, scales)
