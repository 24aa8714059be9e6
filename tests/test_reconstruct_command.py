"""``dynamight reconstruct`` end to end, in-process, with RELION's exit files."""

from __future__ import annotations

import json

import mrcfile
import pytest
import starfile
import torch

from dynamight.cli import main
from dynamight.data.fourier import fsc
from dynamight.data.volumes import read_map


def test_reconstruct_writes_maps_fsc_and_success(tiny_project, tmp_path):
    out = tmp_path / "rec"
    code = main(["reconstruct", "--refinement-star-file", str(tiny_project / "particles.star"), "--output-directory",
                 str(out), "--mask-file", str(tiny_project / "mask.mrc"), "--gpu-id", "-1", "--pipeline-control", str(out)])
    assert code == 0
    for name in ("half1.mrc", "half2.mrc", "map.mrc"):
        with mrcfile.open(out / name) as mrc:
            assert mrc.data.shape == (32, 32, 32) and float(mrc.voxel_size.x) == pytest.approx(4.0)
    table = starfile.read(out / "fsc.star")
    fsc_table = table["fsc"]
    for column in ("rlnResolution", "rlnAngstromResolution", "rlnFourierShellCorrelationCorrected"):
        assert column in fsc_table.columns
    assert fsc_table["rlnResolution"].iloc[16] == pytest.approx(1 / 8.0)  # Nyquist at 4 Å/px
    assert fsc_table["rlnFourierShellCorrelationCorrected"].iloc[1] > 0.9
    assert (out / "fsc.pdf").stat().st_size > 1000
    assert sorted(p.name for p in out.glob("RELION_JOB_EXIT_*")) == ["RELION_JOB_EXIT_SUCCESS"]
    config = json.loads((out / "config.json").read_text())
    assert config["config"]["gpu_id"] == -1 and "dynamight_version" in config
    truth = read_map(tiny_project / "map.mrc").data
    assert fsc(read_map(out / "map.mrc").data, truth)[1:6].min() > 0.8


def test_relion5_job_star_is_the_sign_without_pipeline_control(tiny_project, tmp_path):
    out = tmp_path / "DynaMight" / "job001"
    out.mkdir(parents=True)
    (out / "job.star").write_text("# version 50001\n\ndata_job\n\n_rlnJobTypeLabel dynamight\n")
    code = main(["reconstruct", "--refinement-star-file", str(tiny_project / "particles.star"), "--output-directory",
                 str(out), "--gpu-id", "-1"])
    assert code == 0
    assert sorted(p.name for p in out.glob("RELION_JOB_EXIT_*")) == ["RELION_JOB_EXIT_SUCCESS"]


def test_abort_request_is_honoured(tiny_project, tmp_path):
    out = tmp_path / "job"
    out.mkdir()
    (out / "RELION_JOB_ABORT_NOW").touch()
    code = main(["reconstruct", "--refinement-star-file", str(tiny_project / "particles.star"), "--output-directory",
                 str(out), "--gpu-id", "-1", "--batch-size", "16", "--pipeline-control", str(out)])
    assert code == 0
    assert sorted(p.name for p in out.glob("RELION_JOB_EXIT_*")) == ["RELION_JOB_EXIT_ABORTED"]
    assert not (out / "RELION_JOB_ABORT_NOW").exists() and not (out / "map.mrc").exists()


def test_missing_gpu_is_a_clear_error(tiny_project, tmp_path, caplog):
    if torch.cuda.is_available():
        pytest.skip("machine has GPUs")
    code = main(["reconstruct", "--refinement-star-file", str(tiny_project / "particles.star"), "--output-directory",
                 str(tmp_path), "--gpu-id", "0"])
    assert code == 1 and "GPU 0 requested" in caplog.text
