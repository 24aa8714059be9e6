"""Where a training run's files are: upstream DynaMight's layout.

``OUTPUT_DIRECTORY/forward_deformations/checkpoints/NNN.pth`` after every epoch and
``.../checkpoints/checkpoint_final.pth`` at the end (upstream's path); ``latents.star``,
``consensus_gaussians.star`` and ``tensorboard/`` in ``forward_deformations/``. Runs made before
this layout kept ``checkpoint_final.pth`` one folder up, in ``forward_deformations/``; the later
steps still find it there.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError

FORWARD = "forward_deformations"
CHECKPOINTS = "checkpoints"
FINAL_NAME = "checkpoint_final.pth"
LATENTS_NAME = "latents.star"


def final_checkpoint_path(output_directory: str | Path) -> Path:
    """Where training writes its final checkpoint (upstream's path)."""
    return Path(output_directory) / FORWARD / CHECKPOINTS / FINAL_NAME


def find_final_checkpoint(output_directory: str | Path) -> Path:
    """The final checkpoint of the run in ``output_directory``: upstream's path, else the older
    ``forward_deformations/checkpoint_final.pth`` when only that exists (else upstream's path, for
    the caller's "not found" message)."""
    path = final_checkpoint_path(output_directory)
    legacy = Path(output_directory) / FORWARD / FINAL_NAME
    return legacy if not path.is_file() and legacy.is_file() else path


def find_latents_file(checkpoint: str | Path) -> Path:
    """The ``latents.star`` of the training run that wrote ``checkpoint``.

    Looked for beside it (a train job's ``checkpoint.pth``, or an older run's
    ``forward_deformations/checkpoint_final.pth``), one folder up (``forward_deformations/checkpoints/``
    ``checkpoint_final.pth`` or ``NNN.pth``), and as a train job's ``particles.star``.

    Raises:
        InputError: none of them exists.
    """
    checkpoint = Path(checkpoint)
    for candidate in (checkpoint.parent / LATENTS_NAME, checkpoint.parent.parent / LATENTS_NAME,
                      checkpoint.parent / "particles.star"):
        if candidate.is_file():
            return candidate
    raise InputError(f"{checkpoint}: no latents.star beside this checkpoint (expected the training run's "
                     f"{FORWARD}/{LATENTS_NAME}; give it with --latents-file)")
