"""RELION 5's DynaMight job, verbatim (relion-contract.md §8): its command lines, through both ways
RELION 5 can start us, give the half-maps and exactly one exit file per stage."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def _exit_files(job: Path) -> list[str]:
    return sorted(p.name for p in job.glob("RELION_JOB_EXIT_*"))


@pytest.mark.parametrize("launcher", ["wrapper", "executable_field"])
def test_relion5_command_lines(tiny_project, tmp_path, launcher):
    project = tmp_path / "project"
    shutil.copytree(tiny_project, project)
    job = "DynaMight/job005/"
    (project / job).mkdir(parents=True)
    (project / job / "job.star").write_text("# version 50001\n\ndata_job\n\n_rlnJobTypeLabel dynamight\n"
                                            "_rlnJobIsContinue 0\n")
    if launcher == "wrapper":  # relion_python_dynamight: python -c "from dynamight import cli; exit(cli())" "$@"
        prefix = f'{sys.executable} -c "from dynamight import cli; exit(cli())"'
        control = f" --pipeline-control {job}"
    else:  # the "DynaMight executable" field points at our command: no --pipeline-control (no 'relion_' in it)
        prefix = str(Path(sys.executable).parent / "dynamight")
        control = ""
    stages = [
        f"optimize-deformations --refinement-star-file particles.star --output-directory {job} --initial-model map.mrc "
        f"--n-gaussians 120 --regularization-factor 1 --n-threads 1 --gpu-id -1",
        f"optimize-inverse-deformations {job} --n-epochs 5 --gpu-id -1",
        f"deformable-backprojection {job} --batch-size 10 --gpu-id -1",
    ]
    for stage in stages:
        for name in ("RELION_JOB_EXIT_SUCCESS", "RELION_JOB_EXIT_FAILURE", "RELION_JOB_EXIT_ABORTED"):
            (project / job / name).unlink(missing_ok=True)  # RELION deletes them before each run
        result = subprocess.run(f"{prefix} {stage}{control}", shell=True, cwd=project, capture_output=True, text=True,
                                env={"PATH": "/usr/bin:/bin"})
        assert result.returncode == 0, result.stderr[-2000:]
        assert _exit_files(project / job) == ["RELION_JOB_EXIT_SUCCESS"], stage
    for name in ("map_half1.mrc", "map_half2.mrc"):
        assert (project / job / "backprojection" / name).stat().st_size > 32**3 * 4
