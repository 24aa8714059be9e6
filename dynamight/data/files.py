"""Atomic file writing: an output either exists complete or not at all.

A write that fails because the disk is full (or the quota is used up) stops with one line naming
the file (:func:`dynamight.errors.disk_full`); the temporary file is removed and the previous
version of the file, e.g. the last checkpoint, is left as it was.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from ..errors import DISK_FULL, disk_full

#: below this many free bytes, a write error without an ``errno`` (numpy's ``tofile``, torch's zip
#: writer) is taken for a full disk
_NEARLY_FULL_BYTES = 1 << 20


def is_disk_full(exc: BaseException, directory: Path) -> bool:
    """``True`` when ``exc``, raised while writing into ``directory``, comes from a full disk."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return exc.errno in DISK_FULL
    if not isinstance(exc, (OSError, RuntimeError)):
        return False
    try:
        stats = os.statvfs(directory)
    except OSError:
        return False
    return stats.f_bavail * stats.f_frsize < _NEARLY_FULL_BYTES


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; rename it onto ``path`` when the block succeeds.

    Raises:
        InputError: the disk is full (the temporary file is removed, ``path`` untouched).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:
        if is_disk_full(exc, path.parent):
            raise disk_full(path, getattr(exc, "errno", None) or DISK_FULL[0]) from exc
        raise
    finally:
        tmp.unlink(missing_ok=True)
