"""RELION pipeline node types and ``RELION_OUTPUT_NODES.star`` (relion-contract.md §2).

The file carries two type columns: ``_rlnPipeLineNodeTypeLabel`` (RELION 4 and 5; the label set of
the running RELION, told apart by the ``# version`` line of the project's ``default_pipeline.star``)
and ``_rlnPipeLineNodeType`` (RELION 3.1's integers). Each version reads its own column and ignores
the other with a warning. RELION reads the file once, when it sees ``RELION_JOB_EXIT_SUCCESS``, so it
is written atomically and before that file.
"""

from __future__ import annotations

import enum
import logging
import os
import re
from pathlib import Path

from dynamight.data.files import atomic_path

log = logging.getLogger(__name__)

NODES_FILE = "RELION_OUTPUT_NODES.star"
PIPELINE_FILE = "default_pipeline.star"
RELION5_STAR_VERSION = 50001
RELION4_STAR_VERSION = 30001


class NodeKind(enum.Enum):
    """What a declared output is, for RELION's pipeline (and its GUI's input browsers)."""

    PARTICLES = "particles"
    MAP = "map"
    HALFMAP = "halfmap"
    MASK = "mask"
    LOGFILE = "logfile"


LABELS_RELION5 = {
    NodeKind.PARTICLES: "ParticleGroupMetadata.star.relion",
    NodeKind.MAP: "DensityMap.mrc",
    NodeKind.HALFMAP: "DensityMap.mrc.halfmap",
    NodeKind.MASK: "Mask3D.mrc",
    NodeKind.LOGFILE: "LogFile.pdf.relion",
}
LABELS_RELION4 = {**LABELS_RELION5, NodeKind.PARTICLES: "ParticlesData.star.relion"}
RELION31_TYPES = {NodeKind.PARTICLES: 3, NodeKind.MAP: 6, NodeKind.MASK: 7, NodeKind.HALFMAP: 10, NodeKind.LOGFILE: 13}

_VERSION_LINE = re.compile(r"^#\s*version\s+(\d+)\s*$")


def pipeline_star_version(project_directory: Path) -> int:
    """The STAR ``# version`` of ``default_pipeline.star`` in ``project_directory``: 50001 (RELION 5)
    or 30001 (RELION 4, and 3.1). RELION 5 when the file is missing or has no version line."""
    path = Path(project_directory) / PIPELINE_FILE
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            head = [next(f, "") for _ in range(5)]
    except OSError:
        log.info("no readable %s in %s: writing RELION 5 node labels", PIPELINE_FILE, project_directory)
        return RELION5_STAR_VERSION
    for line in head:
        match = _VERSION_LINE.match(line.strip())
        if match:
            version = int(match.group(1))
            if version not in (RELION4_STAR_VERSION, RELION5_STAR_VERSION):
                log.warning("%s: unknown STAR version %d; writing RELION 5 node labels", path, version)
                return RELION5_STAR_VERSION
            return version
        if line.strip():
            break
    log.warning("%s does not start with a '# version' line; writing RELION 5 node labels", path)
    return RELION5_STAR_VERSION


def node_label(kind: NodeKind, star_version: int) -> str:
    """The RELION 4/5 type label of ``kind`` for a project of ``star_version``."""
    labels = LABELS_RELION5 if star_version >= RELION5_STAR_VERSION else LABELS_RELION4
    return labels[kind]


def node_name(path: Path, project_directory: Path) -> str:
    """``path`` as RELION names nodes: relative to the project directory, ``/``-separated.

    A path outside the project stays absolute (RELION accepts it, though its GUI browsers will not
    list it)."""
    path = Path(path)
    if path.is_absolute():
        try:
            path = path.resolve().relative_to(Path(project_directory).resolve())
        except ValueError:
            return path.as_posix()
    return Path(os.path.normpath(path)).as_posix()


def write_output_nodes(job_directory: Path, nodes: list[tuple[str, NodeKind]], star_version: int) -> Path:
    """Write ``job_directory/RELION_OUTPUT_NODES.star`` atomically; return its path.

    Args:
        nodes: ``(name, kind)`` pairs; names relative to the project directory (see :func:`node_name`).
        star_version: 50001 or 30001 (from :func:`pipeline_star_version`); picks the label set and the
            file's ``# version`` line.
    """
    rows = [f"{name} {node_label(kind, star_version)} {RELION31_TYPES[kind]}" for name, kind in nodes]
    for name, _ in nodes:
        if not name or any(c.isspace() for c in name):
            raise ValueError(f"node name {name!r}: RELION cannot read names that are empty or contain spaces")
    text = "\n".join([
        f"# version {star_version}", "", "data_output_nodes", "", "loop_",
        "_rlnPipeLineNodeName #1", "_rlnPipeLineNodeTypeLabel #2", "_rlnPipeLineNodeType #3", *rows, "", "",
    ])
    path = Path(job_directory) / NODES_FILE
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path
