"""``dynamight explore-latent-space --headless`` on a tiny trained run, in-process: every output,
half-sets 1 and 0, RELION reading a cluster subset, and the one-line errors."""

from __future__ import annotations

import shutil

import gemmi
import mrcfile
import numpy as np
import pytest
import starfile

from dynamight.cli import main as dynamight
from dynamight.data.particles import read_particles

from .helpers import needs_relion, run_relion
from .test_analysis_support import trained_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    project, trained = trained_run(tmp_path_factory)
    copy = tmp_path_factory.mktemp("headless") / "run"
    shutil.copytree(trained, copy)
    return project, copy


@pytest.mark.parametrize("half_set", [1, 0])
def test_headless_writes_the_whole_analysis(run, half_set):
    project, out = run
    argv = ["explore-latent-space", str(out), "--half-set", str(half_set), "--headless", "--gpu-id", "-1",
            "--n-clusters", "3", "--pipeline-control", str(out)]
    assert dynamight(argv) == 0
    assert (out / "RELION_JOB_EXIT_SUCCESS").exists()
    latents = starfile.read(out / "forward_deformations" / "latents.star", always_dict=True)
    table = latents["particles"]
    chosen = table[(table["rlnDynaMightIsValidation"] == 1) if half_set == 0 else (table["rlnDynaMightHalfSet"] == 1)]
    prefix, folder = ("validation_", "validation") if half_set == 0 else ("half1_", "half1")
    report = out / "latent_space" / folder
    space = starfile.read(report / "latent_space.star", always_dict=True)
    assert space["optics"].equals(latents["optics"])
    rows = space["particles"]
    assert list(rows["rlnImageName"]) == list(chosen["rlnImageName"])
    assert np.allclose(rows["rlnDynaMightLatent1"], chosen["rlnDynaMightLatent1"])
    for column in ("rlnDynaMightEmbedding1", "rlnDynaMightPrincipal2", "rlnDynaMightMovementAmount",
                   "rlnDynaMightMovementDirection", "rlnDynaMightMovementLocation", "rlnDynaMightLocalDensity"):
        assert np.isfinite(rows[column]).all(), column
    assert sorted(set(rows["rlnDynaMightCluster"])) == [1, 2, 3]
    keys = ["amount", "direction", "location", "tilt", "rot", "shift", "density", "cluster"]
    keys += ["error", "half"] if half_set == 0 else []
    assert sorted(p.name for p in report.glob("*.png")) == sorted(f"embedding_{k}.png" for k in keys)
    assert (report / "embedding.pdf").read_bytes().startswith(b"%PDF")
    if half_set == 0:
        assert set(rows["rlnDynaMightHalfSet"]) == {1, 2} and "rlnDynaMightCommonLatent1" in rows.columns
    names = []
    for k in (1, 2, 3):
        subset = read_particles(out / "subsets" / f"{prefix}cluster_{k:02d}.star")
        assert subset.optics is not None and subset.optics_groups[0].box_px == 32
        assert not [c for c in subset.particles.columns if c.startswith("rlnDynaMight")]
        expected = rows.loc[rows["rlnDynaMightCluster"] == k, "rlnImageName"]
        assert list(subset.particles["rlnImageName"]) == list(expected)
        names += list(expected)
        with mrcfile.open(out / "maps" / f"{prefix}cluster_{k:02d}.mrc") as mrc:
            assert mrc.data.shape == (32, 32, 32) and abs(float(mrc.voxel_size.x) - 4.0) < 1e-4
        model = gemmi.read_structure(str(out / "maps" / f"{prefix}cluster_{k:02d}.cif"))  # the 150 Gaussians as pseudo-atoms
        assert len(model) == 1 and model[0].count_atom_sites() == 150
    assert sorted(names) == sorted(chosen["rlnImageName"])
    for pc in ("pc1", "pc2"):
        frames = sorted((out / "movies" / f"{prefix}{pc}").glob("frame_*.mrc"))
        assert [f.name for f in frames] == [f"frame_{i:03d}.mrc" for i in range(10)]
        assert len(gemmi.read_structure(str(out / "movies" / f"{prefix}{pc}" / "model.pdb"))) == 10


@needs_relion("relion_reconstruct")
def test_relion_reconstructs_a_cluster_subset(run, tmp_path):
    project, out = run
    assert dynamight(["explore-latent-space", str(out), "--headless", "--gpu-id", "-1", "--n-clusters", "2"]) == 0
    subset = out / "subsets" / "half1_cluster_01.star"
    shutil.copy(subset, project / "subset.star")
    run_relion(["relion_reconstruct", "--i", "subset.star", "--o", str(tmp_path / "subset.mrc"), "--ctf"], cwd=project)
    assert mrcfile.read(tmp_path / "subset.mrc").shape == (32, 32, 32)


def test_errors_are_one_line(run, tmp_path, monkeypatch, caplog):
    project, out = run
    assert dynamight(["explore-latent-space", str(tmp_path), "--headless", "--gpu-id", "-1"]) == 1
    assert "checkpoint_final.pth: checkpoint not found" in caplog.text
    monkeypatch.setitem(__import__("sys").modules, "umap", None)
    assert dynamight(["explore-latent-space", str(out), "--headless", "--gpu-id", "-1",
                      "--dimensionality-reduction-method", "UMAP"]) == 1
    assert "umap-learn" in caplog.text
    for variable in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(variable, raising=False)
    assert dynamight(["explore-latent-space", str(out), "--gpu-id", "-1"]) == 1
    assert "--headless" in caplog.text
    assert dynamight(["explore-latent-space", str(out), "--half-set", "3", "--headless"]) == 2  # argparse choices
