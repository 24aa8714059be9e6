"""The ``dynamight`` command: upstream-compatible subcommands, and RELION's exit files.

Exit files go to ``--pipeline-control DIR`` (also spelled ``--pipeline_control``) or, when RELION 5
ran us without it (its "DynaMight executable" field pointing here), to the output directory if it
holds RELION's ``job.star`` (relion-contract.md §8).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import types
from pathlib import Path

from . import __version__
from .commands.options import add_config_arguments, build_config
from .errors import InputError
from .lock import locked_directory, output_lock
from .distributed import finish, launch_from_environment
from .runtime import JobAborted, JobControl, Terminated, format_error, setup_logging

COMMANDS = {
    "deformable-backprojection": "deformable_backprojection",
    "explore-latent-space": "explore_latent_space",
    "optimize-deformations": "optimize_deformations",
    "optimize-deformations-rigid": "optimize_deformations_rigid",
    "optimize-inverse-deformations": "optimize_inverse_deformations",
    "reconstruct": "reconstruct",
    "simulate": "simulate",
}

log = logging.getLogger("dynamight")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dynamight", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"dynamight {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        try:
            module = importlib.import_module(f".commands.{module_name}", __package__)
        except ModuleNotFoundError as exc:  # a command still being written
            if exc.name != f"{__package__}.commands.{module_name}":
                raise
            continue
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        add_config_arguments(p, module.Config)
        p.add_argument("--pipeline-control", "--pipeline_control", dest="pipeline_control", type=Path,
                       default=None, help="RELION job directory for the exit files")
    return parser


def _job_directory(argv: list[str]) -> Path | None:
    """Find the exit-file directory before parsing, so that even a bad command line leaves one."""
    for flag in ("--pipeline-control", "--pipeline_control"):
        if flag in argv[:-1]:
            return Path(argv[argv.index(flag) + 1])
    candidates = []
    if "--output-directory" in argv[:-1]:
        candidates.append(argv[argv.index("--output-directory") + 1])
    if len(argv) > 1 and not argv[1].startswith("-"):
        candidates.append(argv[1])
    for c in candidates:
        if (Path(c) / "job.star").is_file():
            return Path(c)
    return None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    main_process = launch_from_environment().is_main  # in a distributed run, only rank 0 writes files
    job = JobControl(_job_directory(argv) if main_process else None)
    setup_logging(quiet=not main_process)
    try:
        with job.lifecycle():
            args = vars(build_parser().parse_args(argv))
            module = importlib.import_module(f".commands.{COMMANDS[args['command']]}", __package__)
            config = build_config(module.Config, args)
            with output_lock(locked_directory(config)):  # one run per output directory
                module.run(config, job)
    except SystemExit as exc:
        return int(exc.code or 0)
    except JobAborted:  # rank 0 of a distributed run wrote RELION_JOB_EXIT_ABORTED
        return 0
    except Terminated:
        log.error("terminated (SIGTERM)")
        return 143
    except InputError as exc:
        log.error(format_error(exc))
        return 1
    except Exception as exc:  # a bug: keep the traceback
        print(format_error(exc), file=sys.stderr)
        return 1
    finally:
        finish()
    return 0


def console() -> None:
    """Console-script entry point."""
    sys.exit(main())


class _CallableModule(types.ModuleType):
    """RELION 5's wrapper runs ``from dynamight import cli; exit(cli())``: the module is callable."""

    def __call__(self, argv: list[str] | None = None) -> int:
        return main(argv)


sys.modules[__name__].__class__ = _CallableModule

if __name__ == "__main__":
    console()
