"""Every bad input gets one clear message naming the file, and RELION_JOB_EXIT_FAILURE."""

from __future__ import annotations

import shutil

import mrcfile
import numpy as np
import pytest
import starfile
import torch

from dynamight.cli import main
from dynamight.data.volumes import write_map


@pytest.fixture
def project(tiny_project, tmp_path):
    """A private copy of the tiny project, to break."""
    shutil.copytree(tiny_project, tmp_path / "p")
    return tmp_path / "p"


def _edit_star(project, edit):
    raw = starfile.read(project / "particles.star")
    edit(raw)
    starfile.write(raw, project / "particles.star", overwrite=True)


def _break_missing_column(project):
    def edit(raw):
        raw["particles"] = raw["particles"].drop(columns=["rlnAngleTilt"])
    _edit_star(project, edit)
    return "particles.star", "rlnAngleTilt"


def _break_index(project):
    def edit(raw):
        raw["particles"].loc[3, "rlnImageName"] = "000999@Particles/particles_0000.mrcs"
    _edit_star(project, edit)
    return "particles.star", "beyond the stack"


def _break_dimensionality(project):
    path = project / "Particles" / "particles_0000.mrcs"
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(np.zeros((2, 32, 32, 32), dtype=np.float32))  # a stack of volumes
    return "particles_0000.mrcs", "dimensionality"


def _break_optics(project):
    def edit(raw):
        raw["particles"].loc[5, "rlnOpticsGroup"] = 7
    _edit_star(project, edit)
    return "particles.star", "optics group"


def _break_nan(project):
    with mrcfile.open(project / "Particles" / "particles_0000.mrcs", mode="r+") as mrc:
        mrc.data[4, 10, 10] = np.nan
    return "particles_0000.mrcs", "NaN"


def _break_nan_angle(project):
    def edit(raw):
        raw["particles"].loc[6, "rlnAngleTilt"] = np.nan
    _edit_star(project, edit)
    return "particles.star", "particle row 7 (000007@"


def _break_nan_origin(project):
    def edit(raw):
        raw["particles"].loc[9, "rlnOriginXAngst"] = np.nan
    _edit_star(project, edit)
    return "particles.star", "row 10 (000010@"


def _break_missing_file(project):
    (project / "particles.star").unlink()
    return "particles.star", "not found"


def _break_mask_box(project):
    write_map(project / "mask.mrc", torch.zeros(24, 24, 24), 4.0)
    return "mask.mrc", "box 24"


def _break_mask_pixel(project):
    with mrcfile.open(project / "mask.mrc", mode="r+") as mrc:
        mrc.voxel_size = 3.0
    return "mask.mrc", "3.0000 Å/px"


def _break_missing_stack(project):
    (project / "Particles" / "particles_0000.mrcs").unlink()
    return "particles_0000.mrcs", "not found"


@pytest.mark.parametrize("breaker", [
    _break_missing_file, _break_missing_column, _break_index, _break_dimensionality, _break_optics, _break_nan,
    _break_nan_angle, _break_nan_origin, _break_mask_box, _break_mask_pixel, _break_missing_stack,
])
def test_bad_input_fails_clearly(project, tmp_path, breaker, caplog):
    file_name, expected = breaker(project)
    job = tmp_path / "job"
    code = main(["reconstruct", "--refinement-star-file", str(project / "particles.star"), "--output-directory",
                 str(job), "--mask-file", str(project / "mask.mrc"), "--gpu-id", "-1", "--pipeline-control", str(job)])
    assert code == 1
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "\n" not in errors[0]
    assert file_name in errors[0] and expected in errors[0], errors[0]
    assert sorted(p.name for p in job.glob("RELION_JOB_EXIT_*")) == ["RELION_JOB_EXIT_FAILURE"]
    assert not (job / "map.mrc").exists()


def test_missing_random_subset_is_a_warning(project, tmp_path, caplog):
    def edit(raw):
        raw["particles"] = raw["particles"].drop(columns=["rlnRandomSubset"])
    _edit_star(project, edit)
    assert main(["reconstruct", "--refinement-star-file", str(project / "particles.star"), "--output-directory",
                 str(tmp_path / "job"), "--gpu-id", "-1"]) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("rlnRandomSubset" in w for w in warnings), warnings


def test_wrong_flag_still_leaves_one_exit_file(tmp_path, capsys):
    job = tmp_path / "job"
    assert main(["reconstruct", "--refinement-star-file", "x.star", "--output-directory", str(job),
                 "--no-such-flag", "1", "--pipeline-control", str(job)]) == 2
    assert sorted(p.name for p in job.glob("RELION_JOB_EXIT_*")) == ["RELION_JOB_EXIT_FAILURE"]
    assert "--no-such-flag" in capsys.readouterr().err
