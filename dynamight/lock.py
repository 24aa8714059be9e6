"""One run at a time per output directory.

A run that writes into a directory holds an exclusive ``flock`` on ``DIR/.dynamight.lock``, a file
that names it (host, process id, start time, command line). A second run in the same directory is
refused with one line naming the first. The lock is released when the run ends, however it ends:
the kernel drops the ``flock`` of a dead process, so the file left behind by a killed run is taken
over (with a warning naming the dead run). In a distributed run only rank 0 takes the lock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import socket
import sys
from datetime import datetime
from pathlib import Path
from typing import Iterator

from .distributed import launch_from_environment
from .errors import OutputDirectoryBusy

log = logging.getLogger(__name__)

LOCK_NAME = ".dynamight.lock"
_NO_LOCKING = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS)  # filesystems without flock (some network mounts)


def locked_directory(config) -> Path | None:
    """The directory a command's ``config`` writes into and locks: its ``output_directory``, except
    for the interactive explorer (several windows may look at one run at once)."""
    if getattr(config, "headless", True) is False:
        return None
    return getattr(config, "output_directory", None)


@contextlib.contextmanager
def output_lock(directory: Path | None) -> Iterator[None]:
    """Hold ``directory``'s lock while the block runs (``None``, or not rank 0: no lock).

    Raises:
        OutputDirectoryBusy: another live run holds it (the message names that run).
    """
    if directory is None or not launch_from_environment().is_main:
        yield
        return
    path = Path(directory) / LOCK_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _acquire(path)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # while still locked: a waiting run then sees a new file (see _acquire)
        os.close(fd)


def _acquire(path: Path) -> int:
    """Open and lock ``path``, write this run's record into it, return the descriptor."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _record(fd) or "a run that has not written its name yet"
            os.close(fd)
            raise OutputDirectoryBusy(path.parent, f"{path.parent}: another dynamight run is writing in this directory "
                                      f"({holder}); wait for it to end, or use another output directory") from None
        except OSError as exc:
            if exc.errno not in _NO_LOCKING:
                os.close(fd)
                raise
            log.warning("%s: this filesystem cannot lock files (%s): a second run in this directory would not be "
                        "refused", path.parent, exc.strerror)
            break
        try:
            current = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        os.close(fd)  # the previous run removed the file as we locked it: lock the new one
    previous = _record(fd)
    if previous:
        log.warning("%s: taking over the lock of a run that has ended without releasing it (%s)", path.parent, previous)
    record = (f"host {socket.gethostname()}, process {os.getpid()}, started {datetime.now().isoformat(timespec='seconds')}"
              f": {' '.join(sys.argv)}")
    os.ftruncate(fd, 0)
    os.pwrite(fd, record.encode(), 0)
    return fd


def _record(fd: int) -> str:
    """The run named in the lock file (empty if none)."""
    return os.pread(fd, 4096, 0).decode(errors="replace").strip()
