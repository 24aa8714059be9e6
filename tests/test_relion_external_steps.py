"""train -> invert -> backproject run as RELION runs External jobs, with the shipped Scheme's options.

The command lines are built from ``schemes/dynamight_from_refine/{train,invert,backproject}/job.star``
as ``relion_schemer`` hands them to RELION (relion-contract.md §5: ``$$var`` replaced by the
variable's value, ``Schemes/<name>/<job>/<file>`` by that job's directory), then token for token as
RELION's ``getCommandsExternalJob`` builds them (§1: inputs, ``--<label> <value>``, ``--j``,
``other_args``, ``--pipeline_control``), and run through ``/bin/sh`` from the project directory with
output appended to ``run.out`` / ``run.err``. So invert's ``checkpoint`` is
``External/job012/checkpoint.pth``, exactly what the Scheme passes. Continued jobs are RELION's
"Continue": ``_rlnJobIsContinue 1`` in ``job.star``, control files deleted, the same command again.
"""

from __future__ import annotations

import filecmp
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import starfile

from relion_external.spec import JOBSTAR_INPUT_KEYS

SCHEME = "dynamight_from_refine"
SCHEME_DIR = Path(__file__).resolve().parents[1] / "schemes" / SCHEME
BIN = Path(sys.executable).parent
EXIT_FILES = ("RELION_JOB_EXIT_SUCCESS", "RELION_JOB_EXIT_FAILURE", "RELION_JOB_EXIT_ABORTED")
# the Scheme's variables, shrunk for a 200-particle, 32-px dataset on the CPU; gpu_id, n_gaussians and
# train_batch_size keep the Scheme's empty defaults (the first GPU, else the CPU; Gaussians capped by the
# small map; the automatic batch size)
VARIABLES = {"particles": "Refine3D/job010/run_data.star", "consensus_map": "Refine3D/job010/run_class001.mrc",
             "n_gaussians": "", "n_latent_dimensions": "2", "regularization_factor": "1", "train_epochs": "2",
             "train_batch_size": "", "batch_size": "32", "inverse_epochs": "3", "backproject_batch_size": "10",
             "gpu_id": "", "threads": "1", "do_queue": "No"}
JOBS = {"mask": "MaskCreate/job011/", "train": "External/job012/", "invert": "External/job013/",
        "backproject": "External/job014/"}
STEPS = ("train", "invert", "backproject")
REFERENCE = re.compile(r"Schemes/([^/\s]+)/([^/\s]+)/(\S*)")


def substitute(value: str) -> str:
    """What the schemer does to a job option's value."""
    value = re.sub(r"\$\$(\S+)", lambda m: VARIABLES[m.group(1)], value)
    return REFERENCE.sub(lambda m: JOBS[m.group(2)] + m.group(3), value)


def scheme_command(step: str) -> str:
    """RELION's command line for the Scheme's ``step`` job (``getCommandsExternalJob``)."""
    star = starfile.read(SCHEME_DIR / step / "job.star", always_dict=True)["joboptions_values"]
    options = dict(zip(star["rlnJobOptionVariable"], star["rlnJobOptionValue"].fillna("").astype(str)))
    options = {k: "" if v == '""' else substitute(v) for k, v in options.items()}
    outdir = JOBS[step]
    command = f"{options['fn_exe']} --o {outdir}"
    for flag, key in JOBSTAR_INPUT_KEYS.items():
        if options.get(key):
            command += f" --{flag} {options[key]}"
    for i in range(1, 11):
        if options.get(f"param{i}_label"):
            command += f" --{options[f'param{i}_label']} {options[f'param{i}_value']}"
    command += f" --j {options['nr_threads']} {options.get('other_args', '')}"
    if "relion_" in command:
        command += f" --pipeline_control {outdir}"
    return command


def run_job(project: Path, step: str, command: str) -> int:
    """Like RELION's local queue: through /bin/sh, output appended to run.out / run.err."""
    job = JOBS[step]
    assert (BIN / command.split()[0]).exists(), f"{command.split()[0]} is not installed: run `pip install -e .`"
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    line = f"{command} >> {job}run.out 2>> {job}run.err"
    return subprocess.run(["/bin/sh", "-c", line], cwd=project, env=env, timeout=300).returncode


def continue_job(project: Path, step: str, command: str) -> int:
    """RELION's "Continue": job.star says so, the control files go, the same command runs again."""
    job = project / JOBS[step]
    (job / "job.star").write_text("# version 50001\n\ndata_job\n\n_rlnJobTypeLabel    relion.external\n"
                                  "_rlnJobIsContinue   1\n_rlnJobIsTomo       0\n\n")
    for name in (*EXIT_FILES, "RELION_JOB_ABORT_NOW"):
        (job / name).unlink(missing_ok=True)
    return run_job(project, step, command)


def exit_files(project: Path, step: str) -> list[str]:
    return sorted(p.name for p in (project / JOBS[step]).glob("RELION_JOB_EXIT_*"))


def nodes(project: Path, step: str) -> dict[str, tuple[str, int]]:
    job = project / JOBS[step]
    path = job / "RELION_OUTPUT_NODES.star"
    assert path.stat().st_mtime_ns <= (job / "RELION_JOB_EXIT_SUCCESS").stat().st_mtime_ns
    table = starfile.read(path, always_dict=True)["output_nodes"]
    return {r.rlnPipeLineNodeName: (r.rlnPipeLineNodeTypeLabel, r.rlnPipeLineNodeType) for r in table.itertuples()}


def pdf_pages(path: Path) -> int:
    data = path.read_bytes()
    assert data.startswith(b"%PDF")
    return len(re.findall(rb"/Type\s*/Page\b(?!s)", data))


def new_log(project: Path, step: str, since: int) -> str:
    return (project / JOBS[step] / "run.out").read_text()[since:]


@pytest.fixture(scope="module")
def chain(tiny_project, tmp_path_factory) -> tuple[Path, dict[str, str], dict[str, int]]:
    """A RELION 5 project with a refinement and a mask (``tiny_project``'s 200 simulated particles,
    copied), and the Scheme's three jobs run in order."""
    data = tiny_project
    project = tmp_path_factory.mktemp("steps") / "project"
    (project / "Refine3D" / "job010").mkdir(parents=True)
    shutil.copytree(data / "Particles", project / "Particles")
    shutil.copy(data / "particles.star", project / VARIABLES["particles"])  # image paths are project-relative
    shutil.copy(data / "map.mrc", project / VARIABLES["consensus_map"])
    (project / JOBS["mask"]).mkdir(parents=True)
    shutil.copy(data / "mask.mrc", project / JOBS["mask"] / "mask.mrc")
    (project / "default_pipeline.star").write_text(
        "\n# version 50001\n\ndata_pipeline_general\n\n_rlnPipeLineJobCounter 15\n")
    commands, codes = {}, {}
    for step in STEPS:
        (project / JOBS[step]).mkdir(parents=True)
        commands[step] = scheme_command(step)
        codes[step] = run_job(project, step, commands[step])
    return project, commands, codes


def check_success(project: Path, step: str, codes: dict[str, int]) -> None:
    err = (project / JOBS[step] / "run.err").read_text()
    assert codes[step] == 0, err
    assert exit_files(project, step) == ["RELION_JOB_EXIT_SUCCESS"], err


def test_command_lines_are_the_schemes(chain):
    _, commands, _ = chain
    assert commands["train"] == (
        "relion_dynamight_train --o External/job012/ --in_parts Refine3D/job010/run_data.star "
        "--in_3dref Refine3D/job010/run_class001.mrc --n_gaussians  --n_latent_dimensions 2 "
        "--regularization_factor 1 --n_epochs 2 --batch_size  --gpu_id  --j 1  "
        "--pipeline_control External/job012/")
    assert commands["invert"] == (
        "relion_dynamight_invert --o External/job013/ --checkpoint External/job012/checkpoint.pth --n_epochs 3 "
        "--batch_size 32 --gpu_id  --j 1  --pipeline_control External/job013/")
    assert commands["backproject"] == (
        "relion_dynamight_backproject --o External/job014/ --in_mask MaskCreate/job011/mask.mrc "
        "--checkpoint External/job012/checkpoint.pth --inverse External/job013/inverse.pth --batch_size 10 "
        "--gpu_id  --j 1  --pipeline_control External/job014/")


def test_train_publishes_checkpoint_and_particles(chain):
    project, _, codes = chain
    check_success(project, "train", codes)
    job = project / JOBS["train"]
    forward = job / "forward_deformations"
    assert filecmp.cmp(job / "checkpoint.pth", forward / "checkpoints" / "checkpoint_final.pth", shallow=False)
    for name in ("latents.star", "particles.star"):  # latents.star beside checkpoint.pth for the later steps
        assert filecmp.cmp(job / name, forward / "latents.star", shallow=False), name
    assert sorted(p.name for p in (forward / "checkpoints").glob("*.pth")) == ["000.pth", "001.pth", "checkpoint_final.pth"]
    blocks = starfile.read(job / "particles.star", always_dict=True)
    particles = blocks["particles"]
    assert "optics" in blocks and len(particles) == 200
    assert {"rlnDynaMightLatent1", "rlnDynaMightLatent2", "rlnImageName", "rlnAngleRot"} <= set(particles.columns)
    assert "rlnDynaMightLatent3" not in particles.columns
    assert nodes(project, "train") == {"External/job012/particles.star": ("ParticleGroupMetadata.star.relion", 3),
                                       "External/job012/logfile.pdf": ("LogFile.pdf.relion", 13)}
    assert pdf_pages(job / "logfile.pdf") >= 7  # text, 4 loss curves, latent space, displacements
    assert "trained from scratch" in (job / "run.out").read_text()


def test_invert_publishes_inverse(chain):
    project, _, codes = chain
    check_success(project, "invert", codes)
    job = project / JOBS["invert"]
    assert filecmp.cmp(job / "inverse.pth", job / "inverse_deformations" / "inv_chkpt.pth", shallow=False)
    assert nodes(project, "invert") == {"External/job013/logfile.pdf": ("LogFile.pdf.relion", 13)}
    assert pdf_pages(job / "logfile.pdf") >= 2
    assert "held-out RMS of forward then inverse deformation" in (job / "run.out").read_text()


def test_backproject_publishes_half_maps_and_fsc(chain):
    project, _, codes = chain
    check_success(project, "backproject", codes)
    job = project / JOBS["backproject"]
    for source, target in (("map_half1.mrc", "half1.mrc"), ("map_half2.mrc", "half2.mrc"), ("map.mrc", "map.mrc"),
                           ("fsc.star", "fsc.star")):
        assert filecmp.cmp(job / target, job / "backprojection" / source, shallow=False), target
    assert nodes(project, "backproject") == {
        "External/job014/half1.mrc": ("DensityMap.mrc.halfmap", 10),
        "External/job014/half2.mrc": ("DensityMap.mrc.halfmap", 10),
        "External/job014/map.mrc": ("DensityMap.mrc", 6), "External/job014/logfile.pdf": ("LogFile.pdf.relion", 13)}
    fsc = starfile.read(job / "fsc.star", always_dict=True)
    assert "rlnFourierShellCorrelationMaskedMaps" in fsc["fsc"].columns  # the Scheme passes the mask
    assert float(fsc["general"]["rlnFinalResolution"]) < 16.0
    assert not (job / "backprojection" / "progress.pth").exists()
    assert pdf_pages(job / "logfile.pdf") >= 2
    assert "inverse deformations, half 2: held-out RMS" in (job / "run.out").read_text()


@pytest.fixture
def copied(chain, tmp_path) -> tuple[Path, dict[str, str]]:
    """A copy of the finished chain's project (so that tests may change it)."""
    project, commands, codes = chain
    assert all(code == 0 for code in codes.values())
    shutil.copytree(project, tmp_path / "project", symlinks=True)
    return tmp_path / "project", commands


def test_continue_after_success_resumes_without_retraining(copied):
    project, commands = copied
    (project / "default_pipeline.star").write_text("\n# version 30001\n\ndata_pipeline_general\n\n")  # RELION 4
    forward = project / JOBS["train"] / "forward_deformations"
    kept = [*(forward / "checkpoints").glob("*.pth"), project / JOBS["train"] / "checkpoint.pth"]
    stamps = {p: p.stat().st_mtime_ns for p in kept}
    since = len((project / JOBS["train"] / "run.out").read_text())
    started = time.time()
    assert continue_job(project, "train", commands["train"]) == 0, (project / JOBS["train"] / "run.err").read_text()
    assert time.time() - started < 30
    assert exit_files(project, "train") == ["RELION_JOB_EXIT_SUCCESS"]
    log = new_log(project, "train", since)
    assert "continuing this job" in log and "training had finished" in log and "epoch 1/2" not in log
    for path in kept:
        assert path.stat().st_mtime_ns == stamps[path], path  # nothing retrained, nothing rewritten
    assert sorted(p.name for p in (forward / "checkpoints").glob("*.pth")) == ["000.pth", "001.pth", "checkpoint_final.pth"]
    assert nodes(project, "train")["External/job012/particles.star"] == ("ParticlesData.star.relion", 3)

    since = len((project / JOBS["invert"] / "run.out").read_text())
    assert continue_job(project, "invert", commands["invert"]) == 0, (project / JOBS["invert"] / "run.err").read_text()
    assert exit_files(project, "invert") == ["RELION_JOB_EXIT_SUCCESS"]
    log = new_log(project, "invert", since)
    assert "reusing" in log and "epoch 1/3" not in log


def test_continue_after_interruption_resumes_from_the_last_epoch(copied):
    project, commands = copied
    job = project / JOBS["train"]
    forward = job / "forward_deformations"
    # as if the queue had stopped the job during epoch 2: only epoch 1's checkpoint, no final outputs
    for path in (forward / "checkpoints" / "001.pth", forward / "checkpoints" / "checkpoint_final.pth", forward / "latents.star",
                 job / "checkpoint.pth", job / "latents.star", job / "particles.star", job / "logfile.pdf",
                 job / "RELION_OUTPUT_NODES.star"):
        path.unlink()
    first = (forward / "checkpoints" / "000.pth").stat().st_mtime_ns
    since = len((job / "run.out").read_text())
    assert continue_job(project, "train", commands["train"]) == 0, (job / "run.err").read_text()
    assert exit_files(project, "train") == ["RELION_JOB_EXIT_SUCCESS"]
    log = new_log(project, "train", since)
    assert "resuming from External/job012/forward_deformations/checkpoints/000.pth (epoch 1 done)" in log
    assert "epoch 2/2" in log and "epoch 1/2" not in log
    assert (forward / "checkpoints" / "000.pth").stat().st_mtime_ns == first
    assert (forward / "checkpoints" / "001.pth").is_file()
    assert filecmp.cmp(job / "checkpoint.pth", forward / "checkpoints" / "checkpoint_final.pth", shallow=False)
    assert set(nodes(project, "train")) == {"External/job012/particles.star", "External/job012/logfile.pdf"}


def test_swapped_checkpoint_and_inverse_fail_in_one_line(copied):
    project, commands = copied
    right = "--checkpoint External/job012/checkpoint.pth --inverse External/job013/inverse.pth"
    command = commands["backproject"].replace(right, "--checkpoint External/job013/inverse.pth "
                                                     "--inverse External/job012/checkpoint.pth")
    assert command != commands["backproject"]
    job = project / JOBS["backproject"]
    for name in EXIT_FILES:
        (job / name).unlink(missing_ok=True)
    (job / "run.err").write_text("")
    assert run_job(project, "backproject", command) == 1
    assert exit_files(project, "backproject") == ["RELION_JOB_EXIT_FAILURE"]
    assert not (job / "RELION_OUTPUT_NODES.star").exists()
    [line] = [x for x in (job / "run.err").read_text().splitlines() if x.strip()]
    assert line.startswith("ERROR:") and "External/job013/inverse.pth" in line and "latents.star" in line, line
