"""What every command needs at run time: the device, logging, progress, abort checks, saved configs.

RELION's lifecycle (exit files, abort requests) is handled here because the ``dynamight`` command
itself is run by RELION 5's DynaMight job; the rules are in relion-contract.md §3 and §8.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

import torch
from pydantic import BaseModel

from . import __version__
from .distributed import any_rank, initialise, launch_from_environment
from .errors import DISK_FULL, InputError, OutputDirectoryBusy, disk_full

log = logging.getLogger("dynamight")

EXIT_SUCCESS, EXIT_FAILURE, EXIT_ABORTED = "RELION_JOB_EXIT_SUCCESS", "RELION_JOB_EXIT_FAILURE", "RELION_JOB_EXIT_ABORTED"
ABORT_NOW = "RELION_JOB_ABORT_NOW"


class JobAborted(Exception):
    """RELION asked the job to stop (``RELION_JOB_ABORT_NOW``)."""


class Terminated(Exception):
    """The process received SIGTERM (e.g. from a queue system)."""


def resolve_device(gpu_id: int | None) -> torch.device:
    """``None``: the first GPU if there is one, else the CPU; ``-1``: the CPU; ``N``: GPU ``N``.

    In a distributed launch (see :mod:`dynamight.distributed`) the process with local rank ``k``
    takes the ``k``-th GPU from there on (``N + k``; ``k`` with no GPU given).
    """
    local = launch_from_environment().local_rank
    if gpu_id is None:
        return torch.device(f"cuda:{local}" if torch.cuda.is_available() else "cpu")
    if gpu_id < 0:
        return torch.device("cpu")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpu_id + local >= count:
        raise InputError(f"GPU {gpu_id + local} requested (gpu id {gpu_id}, local process {local}), but this "
                         f"machine has {count} GPU(s); use -1 for the CPU")
    return torch.device(f"cuda:{gpu_id + local}")


def start_process(gpu_id: int | None, n_threads: int) -> tuple[torch.device, bool]:
    """The device of this process (:func:`resolve_device`), torch's CPU threads (0: torch's
    default), and joining the process group of a distributed launch. Returns the device and
    whether this is the main process (the one that writes files)."""
    device = resolve_device(gpu_id)
    if n_threads:
        torch.set_num_threads(n_threads)
    torch.set_flush_denormal(True)  # CPUs: arithmetic on numbers below 1e-38 is 10-100x slower, and worthless here
    return device, initialise(device).is_main


def setup_logging(log_file: Path | None = None, quiet: bool = False) -> None:
    """Rich log lines on a terminal, plain lines otherwise (RELION's ``run.out``); ``quiet``: only
    warnings and errors (the other processes of a distributed run)."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_dynamight", False)]:
        root.removeHandler(old)
        old.close()
    root.setLevel(logging.WARNING if quiet else logging.INFO)
    handlers: list[logging.Handler] = []
    if sys.stdout.isatty():
        from rich.logging import RichHandler

        handlers.append(RichHandler(show_path=False, rich_tracebacks=False))
    else:
        handlers.append(logging.StreamHandler(sys.stdout))
        handlers[-1].setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file))
        handlers[-1].setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    for handler in handlers:
        handler._dynamight = True
        root.addHandler(handler)


class JobControl:
    """RELION's control files in one directory (or nothing, when ``directory`` is ``None``)."""

    def __init__(self, directory: Path | None):
        self.directory = directory

    def abort_requested(self) -> bool:
        """``True`` once RELION asked the job to stop."""
        return self.directory is not None and (self.directory / ABORT_NOW).exists()

    def check_abort(self) -> None:
        """Raise :class:`JobAborted` if RELION asked to stop."""
        if self.abort_requested():
            raise JobAborted()

    @contextlib.contextmanager
    def lifecycle(self) -> Iterator[None]:
        """Run a job body; leave exactly one exit file whatever happens (success, bad input, abort,
        crash, SIGTERM). Exceptions other than :class:`JobAborted` propagate."""
        if self.directory is None:
            yield
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        for name in (EXIT_SUCCESS, EXIT_FAILURE, EXIT_ABORTED):
            (self.directory / name).unlink(missing_ok=True)

        def on_sigterm(signum, frame):
            raise Terminated()

        previous = signal.signal(signal.SIGTERM, on_sigterm)
        try:
            yield
        except JobAborted:
            log.warning("aborted on request (%s)", ABORT_NOW)
            self._touch(EXIT_ABORTED)
            (self.directory / ABORT_NOW).unlink(missing_ok=True)
            return
        except OutputDirectoryBusy as exc:  # the exit files there are the running job's
            if exc.directory.resolve() != self.directory.resolve():
                self._touch(EXIT_FAILURE)
            raise
        except BaseException:
            self._touch(EXIT_FAILURE)
            raise
        finally:
            signal.signal(signal.SIGTERM, previous)
        self._touch(EXIT_SUCCESS)

    def _touch(self, name: str) -> None:
        (self.directory / name).touch()


class Progress:
    """Counts work done; a rich bar on a terminal, else one log line per ``report_every`` fraction.

    Every :meth:`advance` also checks for an abort request; in a distributed run it is collective
    (rank 0 reads the request, every process stops at the same step), so every process must
    advance the same number of times.
    """

    def __init__(self, job: JobControl, description: str, total: int, log_lines: bool = True):
        self.job, self.description, self.total, self.done = job, description, total, 0
        self.log_lines = log_lines
        self._bar = None
        self._next_report = 0.1
        self._start = time.time()
        if sys.stderr.isatty() and total > 0:
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(transient=True)
            self._task = self._bar.add_task(description, total=total)
            self._bar.start()

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(self._task, advance=n)
        elif self.log_lines and self.total and self.done / self.total >= self._next_report:
            log.info("%s: %d/%d (%.0f s)", self.description, self.done, self.total, time.time() - self._start)
            self._next_report += 0.1
        if any_rank(self.job.abort_requested()):
            raise JobAborted()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


@contextlib.contextmanager
def progress(job: JobControl, description: str, total: int, log_lines: bool = True) -> Iterator[Callable[[int], None]]:
    """``with progress(job, "reconstructing", n) as advance: ... advance(k)``; ``log_lines=False``
    when the caller logs its own line per epoch."""
    p = Progress(job, description, total, log_lines)
    try:
        yield p.advance
    finally:
        p.close()


def save_config(path: Path, config: BaseModel, argv: list[str] | None = None) -> None:
    """Write ``config.json``: the validated config, package and torch versions, time, command line."""
    from .data.files import atomic_path

    record = {
        "dynamight_version": __version__, "torch_version": torch.__version__,
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command_line": list(sys.argv if argv is None else argv),
        "config": json.loads(config.model_dump_json()),
    }
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n")


def format_error(exc: BaseException) -> str:
    """One line for a user mistake or a full disk; the full traceback for anything else."""
    if isinstance(exc, InputError):
        return f"ERROR: {exc}"
    if isinstance(exc, OSError) and exc.errno in DISK_FULL:
        return f"ERROR: {disk_full(exc.filename or 'an output file', exc.errno)}"
    return "".join(traceback.format_exception(exc))
