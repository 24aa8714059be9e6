"""Checkpoints: a versioned header plus state dicts, written atomically, loadable with
``torch.load(weights_only=True)``."""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from ..data.files import atomic_path
from ..errors import InputError

FORMAT = "dynamight-forward-deformations"
VERSION = 1


def save_checkpoint(path: Path, payload: dict) -> None:
    """Write ``{"format", "version", **payload}`` to ``path`` atomically (``payload`` may set its own
    ``format``), on disk before it replaces ``path``. A full disk stops with one line naming ``path``
    and leaves the previous file as it was (:func:`~dynamight.data.files.atomic_path`)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as file:  # a file object: write errors keep their errno
        torch.save({"format": FORMAT, "version": VERSION, **payload}, file)
        file.flush()
        os.fsync(file.fileno())


def load_checkpoint(path: Path, expected_format: str = FORMAT) -> dict:
    """Load and check the header; raise :class:`InputError` naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: checkpoint not found")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for foreign or corrupt files
        raise InputError(f"{path}: not a readable checkpoint ({exc})") from exc
    if not isinstance(data, dict) or data.get("format") != expected_format:
        raise InputError(f"{path}: not a {expected_format} checkpoint")
    if data.get("version", 0) > VERSION:
        raise InputError(f"{path}: checkpoint version {data['version']} is newer than this program ({VERSION})")
    return data


def latest_checkpoint(directory: Path) -> Path | None:
    """The highest-numbered ``NNN.pth`` in ``directory``, if any."""
    numbered = [p for p in directory.glob("*.pth") if re.fullmatch(r"\d+\.pth", p.name)]
    return max(numbered, key=lambda p: int(p.stem)) if numbered else None
