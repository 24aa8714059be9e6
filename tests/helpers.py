"""Helpers shared by the tests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import torch


def needs_relion(*programs: str):
    """Skip unless Debian's RELION programs are on PATH (``.ci/run`` installs them)."""
    missing = [p for p in programs if shutil.which(p) is None]
    return pytest.mark.skipif(bool(missing), reason=f"RELION program(s) not installed: {missing}")


def run_relion(args: list[str], cwd: Path) -> None:
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 0, f"{args[0]} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"


def ncc(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(b, h, w)`` x2 -> ``(b,)`` normalised cross-correlation per image."""
    a = a - a.mean(dim=(-1, -2), keepdim=True)
    b = b - b.mean(dim=(-1, -2), keepdim=True)
    return (a * b).sum(dim=(-1, -2)) / (a.norm(dim=(-1, -2)) * b.norm(dim=(-1, -2)))
