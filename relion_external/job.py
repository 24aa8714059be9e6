"""The lifecycle of a RELION External-job executable (relion-contract.md §1 to §3).

:func:`run_step` is the whole ``main`` of every executable::

    argv -> exit-file directory (before parsing, so that even a bad command line leaves one)
         -> parse and check (:mod:`.spec`) -> abort request? -> the step (one engine call)
         -> declared outputs present? -> logfile.pdf -> RELION_OUTPUT_NODES.star -> RELION_JOB_EXIT_SUCCESS

Exit files, abort requests and SIGTERM are :class:`dynamight.runtime.JobControl`'s (the ``dynamight``
command uses the same): exactly one of SUCCESS, FAILURE, ABORTED on every way out. Exit status: 0
success or abort, 1 bad input or crash, 143 SIGTERM, 130 Ctrl-C. A second run in the same job
directory while one runs is refused (:mod:`dynamight.lock`) and leaves the running job's exit files
alone.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable

from dynamight import __version__
from dynamight.errors import InputError
from dynamight.distributed import finish, launch_from_environment
from dynamight.lock import output_lock
from dynamight.runtime import JobAborted, JobControl, Terminated, format_error, setup_logging

from .logfile import Report, write_logfile
from .nodes import NODES_FILE, node_name, pipeline_star_version, write_output_nodes
from .spec import Arguments, StepSpec, check_files, parse_arguments

log = logging.getLogger("relion_external")

LOGFILE_NAME = "logfile.pdf"
_CONTINUE = re.compile(r"^\s*_rlnJobIsContinue\s+(\S+)", re.MULTILINE)


@dataclass(frozen=True)
class StepContext:
    """What a step function gets.

    Attributes:
        args: the parsed command line (``args.params[label]``, ``args.inputs["in_parts"]``, ``args.threads``).
        directory: the job directory (``--o``); every output is written directly in it.
        control: RELION's control files; hand it to the engine (``run(config, control)``,
            ``progress(control, ...)``) so that an abort request stops the step within one batch.
        is_continue: RELION re-runs this job as a continuation (``_rlnJobIsContinue 1`` in its
            ``job.star``): resume from the job's own checkpoint instead of starting over.
        project_directory: RELION's project directory (the working directory).
        main_process: ``False`` on the other processes of a distributed run (``torchrun
            --nproc-per-node N relion_dynamight_train ...``): they take part in the engine call,
            then return an empty report; rank 0 alone writes outputs, logfile, nodes and exit files.
    """

    args: Arguments
    directory: Path
    control: JobControl
    is_continue: bool
    project_directory: Path
    main_process: bool = True


StepFunction = Callable[[StepContext], Report]


def run_step(spec: StepSpec, step: StepFunction, argv: list[str] | None = None) -> int:
    """Run one executable: parse ``argv`` (default ``sys.argv[1:]``), run ``step``, declare the
    outputs, leave one exit file. Returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--help" in argv or "-h" in argv:
        print(spec.usage())
        return 0
    main_process = launch_from_environment().is_main
    control = JobControl(exit_file_directory(argv) if main_process else None)
    setup_logging(quiet=not main_process)
    try:
        with control.lifecycle(), output_lock(flag_value(argv, "--o")):  # one run per job directory
            log.info("%s %s", spec.executable, " ".join(argv))
            if control.directory is not None:  # a stale declaration must not outlive a failed rerun
                (control.directory / NODES_FILE).unlink(missing_ok=True)
            _run(spec, step, argv, control, main_process)
    except JobAborted:  # another process of a distributed run; rank 0 wrote RELION_JOB_EXIT_ABORTED
        return 0
    except Terminated:
        print(f"ERROR: {spec.executable} terminated (SIGTERM)", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print(f"ERROR: {spec.executable} interrupted", file=sys.stderr)
        return 130
    except InputError as exc:
        print(format_error(exc), file=sys.stderr)
        return 1
    except Exception as exc:  # a bug: keep the traceback
        print(format_error(exc), file=sys.stderr)
        return 1
    finally:
        finish()
    return 0


def exit_file_directory(argv: list[str]) -> Path | None:
    """``--pipeline_control DIR`` if given, else ``--o DIR`` (an External job's directory is where
    RELION waits for the exit files, even when it appended no ``--pipeline_control``)."""
    return flag_value(argv, "--pipeline_control") or flag_value(argv, "--o")


def flag_value(argv: list[str], flag: str) -> Path | None:
    """The path after ``flag`` in ``argv`` before parsing (``None`` if absent or empty)."""
    if flag in argv[:-1]:
        value = argv[argv.index(flag) + 1]
        if not value.startswith("--"):
            return Path(value)
    return None


def job_is_continue(job_star: Path) -> bool:
    """``True`` when RELION's ``job.star`` says ``_rlnJobIsContinue 1`` (absent file: ``False``)."""
    try:
        match = _CONTINUE.search(job_star.read_text(errors="replace"))
    except OSError:
        return False
    return bool(match) and match.group(1).lower() in ("1", "true", "yes")


def _run(spec: StepSpec, step: StepFunction, argv: list[str], control: JobControl, main_process: bool) -> None:
    started = time.time()
    project = Path.cwd()
    args = parse_arguments(spec, argv)
    check_files(spec, args, project)
    control.check_abort()
    directory = args.output_directory
    if main_process:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / NODES_FILE).unlink(missing_ok=True)
    context = StepContext(args, directory, control, job_is_continue(directory / "job.star"), project, main_process)
    if context.is_continue:
        log.info("continuing this job (_rlnJobIsContinue 1 in %s)", directory / "job.star")
    report = step(context)
    if not main_process:
        return
    for line in report.lines:
        log.info("%s", line)
    missing = [o.name for o in spec.outputs if o.name != LOGFILE_NAME and not (directory / o.name).is_file()]
    if missing:
        raise RuntimeError(f"{spec.executable} finished without writing {', '.join(missing)} in {directory}")
    write_logfile(directory / LOGFILE_NAME, spec.executable, _header(spec, argv, context, started), report)
    version = pipeline_star_version(project)
    nodes = [(node_name(directory / o.name, project), o.node) for o in spec.outputs if o.node is not None]
    write_output_nodes(directory, nodes, version)
    log.info("done in %.1f s; declared %d output node(s) for RELION (STAR version %d)", time.time() - started,
             len(nodes), version)


def _header(spec: StepSpec, argv: list[str], context: StepContext, started: float) -> list[str]:
    """The logfile's record of the run: command, inputs, every parameter, outputs, timing."""
    args = context.args
    lines = [spec.summary, "", f"command: {spec.executable} {' '.join(argv)}",
             f"project directory: {context.project_directory}", f"job directory: {context.directory}",
             f"continued job: {'yes' if context.is_continue else 'no'}", f"threads: {args.threads}", "", "inputs:"]
    lines += [f"  --{flag} {path}" for flag, path in args.inputs.items() if path is not None] or ["  (none)"]
    lines += ["", "parameters:"]
    for p in spec.params:
        value = args.params[p.label]
        lines.append(f"  {p.label} = {'(not set)' if value is None else value}"
                     + ("  (default)" if value == p.default else "") + f"    {p.help}")
    lines += ["", "outputs (in the job directory):"] + [f"  {o.name}: {o.help}" for o in spec.outputs]
    lines += ["", f"dynamight {__version__}; started {datetime.fromtimestamp(started).isoformat(timespec='seconds')},"
              f" took {time.time() - started:.1f} s"]
    return lines
