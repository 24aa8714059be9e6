"""``relion_dynamight_reconstruct`` run exactly as RELION runs an External job (relion-contract.md §1-§3).

Each test builds a RELION-style project (working directory = project, ``default_pipeline.star``,
``External/job012/`` made beforehand), builds the command line token for token as RELION's
``getCommandsExternalJob`` does (unquoted values, a bare ``--label`` for an empty value, ``--j``,
``other_args``, then ``--pipeline_control`` because the text contains ``relion_``), runs it through
``/bin/sh`` with output appended to ``run.out``/``run.err``, and checks what RELION would look at.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import starfile

from dynamight.data.volumes import write_map
from dynamight.simulate.dataset import simulate

EXE = "relion_dynamight_reconstruct"
JOB = "External/job012/"
EXIT_FILES = ("RELION_JOB_EXIT_SUCCESS", "RELION_JOB_EXIT_FAILURE", "RELION_JOB_EXIT_ABORTED")
BIN = Path(sys.executable).parent


def relion_command(fn_exe: str, outdir: str, inputs: dict[str, str], params: list[tuple[str, str]],
                   threads: int = 1, other_args: str = "") -> str:
    """The command line RELION 4/5 build for an External job (``getCommandsExternalJob``)."""
    command = f"{fn_exe} --o {outdir}"
    for flag in ("in_movies", "in_mics", "in_parts", "in_coords", "in_3dref", "in_mask"):
        if inputs.get(flag):
            command += f" --{flag} {inputs[flag]}"
    for label, value in params:
        command += f" --{label} {value}"
    command += f" --j {threads} {other_args}"
    if "relion_" in command:
        command += f" --pipeline_control {outdir}"
    return command


def environment() -> dict[str, str]:
    """RELION finds the executable on PATH: put this Python's scripts folder first."""
    assert (BIN / EXE).exists(), f"{BIN / EXE} is not installed: run `pip install -e .`"
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("relion_external_data")
    simulate(out, n_particles=200, box_px=32, pixel_size_angstrom=4.0, snr=0.5, seed=3)
    return out


def make_project(root: Path, dataset: Path, star_version: int) -> Path:
    """A RELION project holding the dataset, with RELION's job directory already made."""
    project = root / "project"
    project.mkdir()
    for name in ("particles.star", "mask.mrc"):
        shutil.copy(dataset / name, project / name)
    shutil.copytree(dataset / "Particles", project / "Particles")
    (project / "default_pipeline.star").write_text(
        f"\n# version {star_version}\n\ndata_pipeline_general\n\n_rlnPipeLineJobCounter 13\n")
    (project / JOB).mkdir(parents=True)
    return project


@pytest.fixture
def project(tmp_path, dataset) -> Path:
    return make_project(tmp_path, dataset, 50001)


def run_job(project: Path, command: str) -> int:
    """Run like RELION's local queue: through /bin/sh, output appended to run.out / run.err."""
    line = f"{command} >> {JOB}run.out 2>> {JOB}run.err"
    return subprocess.run(["/bin/sh", "-c", line], cwd=project, env=environment(), timeout=120).returncode


def exit_files(project: Path) -> list[str]:
    return sorted(p.name for p in (project / JOB).glob("RELION_JOB_EXIT_*"))


def error_lines(project: Path) -> list[str]:
    return [line for line in (project / JOB / "run.err").read_text().splitlines() if line.strip()]


def standard_command(**changes) -> str:
    inputs = {"in_parts": "particles.star", **changes.pop("inputs", {})}
    params = changes.pop("params", [("gpu_id", "-1"), ("batch_size", "64")])
    return relion_command(EXE, JOB, inputs, params, **changes)


@pytest.mark.parametrize("star_version", [50001, 30001])
def test_success_declares_nodes_before_the_exit_file(tmp_path, dataset, star_version):
    project = make_project(tmp_path, dataset, star_version)
    inputs = {"in_mask": "mask.mrc"} if star_version == 50001 else {}
    command = standard_command(inputs=inputs, params=[("gpu_id", "-1"), ("preload_images", ""), ("batch_size", "64")])
    assert "--preload_images  --batch_size" in command and command.endswith(f"--pipeline_control {JOB}")
    assert run_job(project, command) == 0, (project / JOB / "run.err").read_text()
    job = project / JOB
    assert exit_files(project) == ["RELION_JOB_EXIT_SUCCESS"]
    nodes_file = job / "RELION_OUTPUT_NODES.star"
    assert nodes_file.read_text().startswith(f"# version {star_version}\n")
    assert nodes_file.stat().st_mtime_ns <= (job / "RELION_JOB_EXIT_SUCCESS").stat().st_mtime_ns
    nodes = starfile.read(nodes_file, always_dict=True)["output_nodes"]
    rows = {r.rlnPipeLineNodeName: (r.rlnPipeLineNodeTypeLabel, r.rlnPipeLineNodeType) for r in nodes.itertuples()}
    assert rows == {f"{JOB}half1.mrc": ("DensityMap.mrc.halfmap", 10), f"{JOB}half2.mrc": ("DensityMap.mrc.halfmap", 10),
                    f"{JOB}map.mrc": ("DensityMap.mrc", 6), f"{JOB}logfile.pdf": ("LogFile.pdf.relion", 13)}
    for name in rows:
        assert (project / name).stat().st_size > 1000, name
    fsc = starfile.read(job / "fsc.star", always_dict=True)
    assert ("rlnFourierShellCorrelationMaskedMaps" in fsc["fsc"].columns) == bool(inputs)
    assert float(fsc["general"]["rlnFinalResolution"]) < 16.0
    pdf = (job / "logfile.pdf").read_bytes()
    assert pdf.startswith(b"%PDF") and len(re.findall(rb"/Type\s*/Page\b(?!s)", pdf)) >= 2


def test_abort_request_before_start(project):
    (project / JOB / "RELION_JOB_ABORT_NOW").touch()
    assert run_job(project, standard_command()) == 0
    assert exit_files(project) == ["RELION_JOB_EXIT_ABORTED"]
    assert not (project / JOB / "RELION_JOB_ABORT_NOW").exists()
    assert not (project / JOB / "RELION_OUTPUT_NODES.star").exists() and not (project / JOB / "map.mrc").exists()


@pytest.mark.parametrize("problem", ["missing particles", "mask of another box"])
def test_bad_input_fails_in_one_line(project, problem):
    if problem == "missing particles":
        command, culprit = standard_command(inputs={"in_parts": "Refine3D/job004/run_data.star"}), "run_data.star"
    else:
        import torch

        write_map(project / "small_mask.mrc", torch.ones(16, 16, 16), 4.0)
        command, culprit = standard_command(inputs={"in_mask": "small_mask.mrc"}), "small_mask.mrc"
    assert run_job(project, command) == 1
    assert exit_files(project) == ["RELION_JOB_EXIT_FAILURE"]
    assert not (project / JOB / "RELION_OUTPUT_NODES.star").exists()
    lines = error_lines(project)
    assert len(lines) == 1 and lines[0].startswith("ERROR:") and culprit in lines[0], lines


def test_crash_keeps_traceback_and_fails(project):
    (project / JOB / "half1.mrc").mkdir()  # the engine cannot write its output: an unexpected OSError
    assert run_job(project, standard_command()) == 1
    assert exit_files(project) == ["RELION_JOB_EXIT_FAILURE"]
    assert not (project / JOB / "RELION_OUTPUT_NODES.star").exists()
    errors = "\n".join(error_lines(project))
    assert "Traceback" in errors and "half1.mrc" in errors


def test_unknown_argument_is_rejected_with_the_valid_ones(project):
    command = standard_command(params=[("gpu_id", "-1"), ("n_gaussians", "5000")], other_args="--verbose")
    assert run_job(project, command) == 1
    assert exit_files(project) == ["RELION_JOB_EXIT_FAILURE"]
    [line] = error_lines(project)
    assert "unknown argument(s) --n_gaussians --verbose" in line
    for valid in ("--o DIR/", "--in_parts FILE", "--in_mask FILE", "--gpu_id INT", "--batch_size INT",
                  "--preload_images,", "--j THREADS", "--pipeline_control DIR/"):
        assert valid in line, valid


def test_sigterm_leaves_failure(project):
    stack = project / "Particles" / "particles_0000.mrcs"
    stack.unlink()
    os.mkfifo(stack)  # reading the stack blocks, like a hung file system, until the signal comes
    job = project / JOB
    with open(job / "run.out", "ab") as out, open(job / "run.err", "ab") as err:
        process = subprocess.Popen(standard_command().split(), cwd=project, env=environment(), stdout=out, stderr=err)
    try:
        deadline = time.time() + 60
        while f"INFO {EXE}" not in (job / "run.out").read_text() and time.time() < deadline:
            assert process.poll() is None, (job / "run.err").read_text()
            time.sleep(0.05)
        time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 143
    finally:
        if process.poll() is None:
            process.kill()
    assert exit_files(project) == ["RELION_JOB_EXIT_FAILURE"]
    assert not (job / "RELION_OUTPUT_NODES.star").exists()
    assert "terminated (SIGTERM)" in (job / "run.err").read_text()


@pytest.mark.skipif(shutil.which("relion_pipeliner") is None, reason="Debian's relion package is not installed")
def test_real_relion31_pipeliner_runs_the_job(tmp_path, dataset):
    project = make_project(tmp_path, dataset, 30001)
    shutil.rmtree(project / "External")
    (project / "default_pipeline.star").write_text(
        "\n# version 30001\n\ndata_pipeline_general\n\n_rlnPipeLineJobCounter 1\n")
    options = (f"fn_exe == {EXE};in_part == particles.star;in_mask == mask.mrc;param1_label == gpu_id;"
               "param1_value == -1;param2_label == preload_images;param2_value == ;nr_threads == 1")
    for args in (["--addJob", "External", "--addJobOptions", options],
                 ["--RunJobs", "External/job001/", "--sec_wait_after", "0"]):
        result = subprocess.run(["relion_pipeliner", *args], cwd=project, env=environment(), capture_output=True,
                                text=True, timeout=180)
        assert result.returncode == 0, result.stdout + result.stderr
    job = project / "External" / "job001"
    assert sorted(p.name for p in job.glob("RELION_JOB_EXIT_*")) == ["RELION_JOB_EXIT_SUCCESS"], (job / "run.err").read_text()
    assert "--preload_images  --j 1  --pipeline_control External/job001/" in (job / "note.txt").read_text()
    pipeline = starfile.read(project / "default_pipeline.star", always_dict=True)
    [status] = pipeline["pipeline_processes"]["rlnPipeLineProcessStatus"]
    assert status == 2  # RELION 3.1: finished successfully
    nodes = dict(zip(pipeline["pipeline_nodes"]["rlnPipeLineNodeName"], pipeline["pipeline_nodes"]["rlnPipeLineNodeType"]))
    for name, kind in (("half1.mrc", 10), ("half2.mrc", 10), ("map.mrc", 6), ("logfile.pdf", 13)):
        assert nodes[f"External/job001/{name}"] == kind
        assert (project / ".Nodes" / str(kind) / "External" / "job001" / name).exists()
