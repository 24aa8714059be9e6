"""The exception type for mistakes in the user's input, and the user-facing failures built on it."""

from __future__ import annotations

import errno
import os
from pathlib import Path


class InputError(Exception):
    """Bad input from the user: a missing file, a wrong column, a mismatched box size...

    The message names the file and what was expected; entry points print it in one line and exit
    with status 1 (and write ``RELION_JOB_EXIT_FAILURE`` under RELION). Any other exception is a
    bug and keeps its traceback.
    """


class OutputDirectoryBusy(InputError):
    """Another run holds ``directory``'s lock (:mod:`dynamight.lock`). Its RELION exit files belong to
    that run, so a refused run writes none there."""

    def __init__(self, directory: Path, message: str):
        super().__init__(message)
        self.directory = Path(directory)


#: the ``errno`` of a full disk or an exhausted quota
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def disk_full(path: str | os.PathLike, code: int = errno.ENOSPC) -> InputError:
    """The one-line error for a write of ``path`` that failed with ``code``, one of :data:`DISK_FULL`."""
    return InputError(f"{path}: cannot write it: {os.strerror(code)} (the disk is full or the quota is used "
                      f"up); the previous version of this file, if any, is untouched; free some space and run again")
