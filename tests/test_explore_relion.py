"""``relion_dynamight_explore`` run as RELION runs an External job: through /bin/sh in the project
directory, with the command line RELION builds, on a tiny trained run laid out as a train job."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import starfile

from relion_external.explore import main as explore_main

from .test_analysis_support import trained_run
from .test_relion_external import BIN, environment, exit_files, relion_command

JOB = "External/job012/"
TRAIN = "External/job011/"


@pytest.fixture
def project(tmp_path_factory, tmp_path):
    dataset, run = trained_run(tmp_path_factory)
    project = tmp_path / "project"
    shutil.copytree(dataset, project)
    (project / "default_pipeline.star").write_text("\n# version 50001\n\ndata_pipeline_general\n\n"
                                                   "_rlnPipeLineJobCounter 13\n")
    (project / TRAIN).mkdir(parents=True)
    shutil.copy(run / "forward_deformations" / "checkpoints" / "checkpoint_final.pth", project / TRAIN / "checkpoint.pth")
    shutil.copy(run / "forward_deformations" / "latents.star", project / TRAIN / "particles.star")
    (project / JOB).mkdir(parents=True)
    return project


def run_job(project, params) -> int:
    command = relion_command("relion_dynamight_explore", JOB, {}, params)
    assert (BIN / "relion_dynamight_explore").exists(), "relion_dynamight_explore is not installed: pip install -e ."
    line = f"{command} >> {JOB}run.out 2>> {JOB}run.err"
    return subprocess.run(["/bin/sh", "-c", line], cwd=project, env=environment(), timeout=300).returncode


@pytest.mark.parametrize("half_set", ["1", "0"])
def test_explore_writes_latent_space_and_logfile(project, half_set):
    params = [("checkpoint", f"{TRAIN}checkpoint.pth"), ("half_set", half_set), ("gpu_id", "-1")]
    assert run_job(project, params) == 0, (project / JOB / "run.err").read_text()
    job = project / JOB
    assert exit_files(project) == ["RELION_JOB_EXIT_SUCCESS"]
    latents = starfile.read(project / TRAIN / "particles.star")["particles"]
    space = starfile.read(job / "latent_space.star", always_dict=True)
    selected = latents["rlnDynaMightIsValidation"] == 1 if half_set == "0" else latents["rlnDynaMightHalfSet"] == 1
    assert list(space["particles"]["rlnImageName"]) == list(latents.loc[selected, "rlnImageName"])
    assert "optics" in space and "rlnDynaMightEmbedding1" in space["particles"].columns
    nodes = starfile.read(job / "RELION_OUTPUT_NODES.star", always_dict=True)["output_nodes"]
    assert list(nodes["rlnPipeLineNodeName"]) == [f"{JOB}logfile.pdf"]
    pdf = (job / "logfile.pdf").read_bytes()
    n_properties = 10 if half_set == "0" else 8
    assert len(re.findall(rb"/Type\s*/Page\b(?!s)", pdf)) >= 1 + n_properties  # text, then one plot per property
    assert len(list((job / "maps").glob("*cluster_*.mrc"))) == 6 and len(list((job / "subsets").glob("*.star"))) == 6
    assert "particles of" in (job / "run.out").read_text()


def test_missing_checkpoint_fails_in_one_line(project, capsys, monkeypatch):
    monkeypatch.chdir(project)
    code = explore_main(["--o", JOB, "--checkpoint", "External/job099/checkpoint.pth", "--gpu_id", "-1",
                         "--pipeline_control", JOB])
    assert code == 1 and exit_files(project) == ["RELION_JOB_EXIT_FAILURE"]
    err = capsys.readouterr().err.strip()
    assert "External/job099/checkpoint.pth" in err and "\n" not in err
