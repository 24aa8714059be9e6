"""The napari latent-space explorer: the only package that imports napari or Qt.

``state`` is the explorer's Qt-free state (selection, trajectory, regions, colouring, what to
render and save), tested without a display; ``panel`` (the embedding plot and controls) and
``window`` (the napari viewer) are thin Qt layers over it. Importing this package imports neither
napari nor Qt: :func:`missing_requirements` says whether the window can open.
"""

from __future__ import annotations

import importlib.util
import os
import sys


def missing_requirements() -> str | None:
    """Why the explorer window cannot open here (napari or a Qt binding missing, no display), or ``None``."""
    if importlib.util.find_spec("napari") is None:
        return "the explorer needs napari: pip install 'dynamight-suite[viewer]'"
    if not any(importlib.util.find_spec(b) for b in ("PySide6", "PyQt6", "PyQt5", "PySide2")):
        return "the explorer needs a Qt binding: pip install 'dynamight-suite[viewer]' (PySide6)"
    if sys.platform.startswith("linux") and not any(
            os.environ.get(v) for v in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")):
        return "no display (DISPLAY is not set): run it on a machine with a screen, or under xvfb-run"
    return None
