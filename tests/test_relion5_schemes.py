"""Each shipped Scheme runs to the end under real RELION 5 (``relion_schemer``, ``relion_pipeliner``
and the programs its jobs call) with its own defaults: only the input files and the epoch counts are
set. Every job must end *Succeeded*, PostProcess included, on a CPU-only machine.

RELION 5 is taken from ``../shared/relion5/bin`` (or ``$RELION5_BIN``); the test is skipped, with
the reason, where it is absent or does not run. ``dynamight`` starts with RELION's 3D auto-refine
(3 MPI processes), so Open MPI is allowed to run as root and to put several processes on one core
(machine settings, not Scheme values). That refinement, from scratch with RELION's own defaults,
takes tens of minutes on two CPU cores (more than 30 min here: iterations of 1-8 min), so the
``dynamight`` case runs only with ``DYNAMIGHT_SLOW_TESTS=1``; ``dynamight_from_refine`` (the same
DynaMight jobs, mask and PostProcess) always runs: about 45 s on two idle cores.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import starfile

from dynamight.simulate.dataset import simulate
from relion_external.install_schemes import main as install_main

RELION5 = Path(os.environ.get("RELION5_BIN", Path(__file__).resolve().parents[2] / "shared" / "relion5" / "bin"))
COMMON = ("relion_schemer", "relion_pipeliner", "relion_mask_create", "relion_postprocess")
SCHEMES = {  # scheme -> (its input variables, the extra programs its jobs call)
    "dynamight_from_refine": ({"particles": "particles.star", "consensus_map": "map.mrc"}, ()),
    "dynamight": ({"particles": "particles.star", "reference": "map.mrc"}, ("relion_refine_mpi", "mpirun")),
}
EPOCHS = {"train_epochs": "2", "inverse_epochs": "2"}


def relion5_problem(programs: tuple[str, ...]) -> str | None:
    """Why RELION 5 cannot run these programs here (``None`` if it can)."""
    if not RELION5.is_dir():
        return f"RELION 5 not found at {RELION5}"
    missing = [p for p in programs if not (RELION5 / p).is_file() and shutil.which(p) is None]
    if missing:
        return f"RELION 5 programs missing: {missing}"
    probe = subprocess.run([str(RELION5 / "relion_schemer")], capture_output=True, text=True)
    if "error while loading shared libraries" in probe.stderr or probe.returncode in (126, 127):
        return f"relion_schemer does not run here: {probe.stderr.strip()[:200]}"
    return None


def environment() -> dict[str, str]:
    bin_dir = Path(sys.executable).parent  # our executables (relion_dynamight_*)
    env = {**os.environ, "PATH": os.pathsep.join([str(RELION5), str(bin_dir), os.environ.get("PATH", "")]),
           "OMPI_MCA_rmaps_base_oversubscribe": "1"}
    if os.geteuid() == 0:
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    return env


def schemer(project: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([str(RELION5 / "relion_schemer"), *args], cwd=project, env=environment(),
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("name", list(SCHEMES))
def test_shipped_scheme_runs_to_the_end_with_its_defaults(name, tmp_path):
    inputs, programs = SCHEMES[name]
    if name == "dynamight" and os.environ.get("DYNAMIGHT_SLOW_TESTS") != "1":
        pytest.skip("RELION's 3D auto-refine from scratch takes tens of minutes on a CPU; set DYNAMIGHT_SLOW_TESTS=1")
    problem = relion5_problem(COMMON + programs)
    if problem:
        pytest.skip(problem)
    project = tmp_path
    simulate(project, n_particles=200, box_px=32, pixel_size_angstrom=4.0, snr=0.5, motion="hinge", seed=3)
    assert install_main(["--project", str(project), "--scheme", name]) == 0
    for variable, value in {**inputs, **EPOCHS}.items():
        result = schemer(project, "--scheme", name, "--set_var", variable, "--value", value, "--original_value", value)
        assert result.returncode == 0, result.stderr
    started = time.time()
    result = schemer(project, "--scheme", name, "--run", "--pipeline_control", f"Schemes/{name}/", timeout=3000)
    took = time.time() - started
    log = result.stdout + result.stderr
    print(f"{name}: relion_schemer ran for {took:.0f} s")

    processes = starfile.read(project / "default_pipeline.star", always_dict=True)["pipeline_processes"]
    status = dict(zip(processes["rlnPipeLineProcessName"], processes["rlnPipeLineProcessStatusLabel"]))
    failed = {job: s for job, s in status.items() if s != "Succeeded"}
    detail = "".join(f"\n{job}run.err: {(project / job / 'run.err').read_text()[-1500:]}" for job in failed
                     if (project / job / "run.err").is_file())
    assert not failed, f"{name}: {failed}\n{log[-3000:]}{detail}"
    jobs = starfile.read(project / "Schemes" / name / "scheme.star", always_dict=True)["scheme_jobs"]
    assert len(status) == len(jobs), f"{name}: ran {sorted(status)}, the Scheme has {list(jobs['rlnSchemeJobName'])}"
    assert any(job.startswith("PostProcess/") for job in status), status
    assert (project / "Schemes" / name / "RELION_JOB_EXIT_SUCCESS").is_file() and "reached an exit point" in log
    train = next(job for job in status if "relion_dynamight_train" in (project / job / "note.txt").read_text())
    run_out = (project / train / "run.out").read_text()
    assert re.search(r"--gpu_id\s+--j", (project / train / "note.txt").read_text())  # the Scheme's empty default
    assert "Gaussians instead of the default" in run_out  # capped by the small map, with a warning
