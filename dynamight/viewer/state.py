"""The explorer's state, without Qt: what is selected, drawn, coloured, shown and saved.

The window forwards user actions here (a click at a point of the embedding, a finished drawn
shape, a dropdown choice, the save button) and then redraws from :meth:`ExplorerState.display`.
Output files go to ``<output>/maps``, ``movies`` and ``subsets``, numbered, prefixed by the
half-set (``half1_map_001.mrc``, ``validation_region_002.star``...).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.path import Path as Polygon

from ..analysis.outputs import MOVIE_MODEL, next_numbered, write_movie
from ..analysis.report import prefix_of
from ..analysis.space import LatentSpace
from ..analysis.subsets import write_subset
from ..data.volumes import write_map

ACTIONS = ("click", "trajectory", "count", "subset")
REPRESENTATIONS = ("volume", "points")


@dataclass
class Display:
    """What the 3D view shows: ``positions`` ``(f, n, 3)`` Gaussian centres (Å from the box
    centre) and ``volumes`` ``(f, d, d, d)`` maps (``None`` unless asked for); ``f`` is 1, or the
    movie's frames."""

    positions: torch.Tensor
    volumes: torch.Tensor | None


class ExplorerState:
    """State and actions of the explorer on one :class:`LatentSpace`.

    Attributes:
        colour_by, representation, action: the three dropdowns' choices.
        selected: the clicked particle (index into the set), or ``None``.
        showing: "consensus", "particle" or "movie".
        trajectory: ``(f, 2)`` the movie's points in the embedding (resampled drawn path).
        last_region: ``(q, 2)`` the last drawn region; ``last_count`` its particle count.
        last_written: the files the last action wrote; ``message``: a status line for the user.
    """

    def __init__(self, space: LatentSpace, output_directory: Path, n_frames: int = 10):
        self.space, self.output_directory, self.n_frames = space, Path(output_directory), n_frames
        self.prefix = prefix_of(space.latents.half_set)
        self.colour_by = "amount"
        self.representation, self.action = "volume", "click"
        self.selected: int | None = None
        self.showing = "consensus"
        self.trajectory: np.ndarray | None = None
        self.last_region: np.ndarray | None = None
        self.last_count: int | None = None
        self.last_written: list[Path] = []
        self._positions = space.decoder.consensus(space.reference_half)[None]
        self._volumes: torch.Tensor | None = None
        self.message = f"{len(space.latents)} particles; click a point to see its conformation"

    # the dropdowns
    @property
    def colour_keys(self) -> list[str]:
        return list(self.space.properties)

    def set_colour(self, key: str) -> None:
        if key not in self.space.properties:
            raise ValueError(f"colour by {key!r}: expected one of {self.colour_keys}")
        self.colour_by = key

    def set_representation(self, representation: str) -> None:
        if representation not in REPRESENTATIONS:
            raise ValueError(f"3d representation {representation!r}: expected one of {REPRESENTATIONS}")
        self.representation = representation

    def set_action(self, action: str) -> None:
        if action not in ACTIONS:
            raise ValueError(f"action {action!r}: expected one of {ACTIONS}")
        self.action = action

    def colours(self) -> np.ndarray:
        """``(m,)`` values of the chosen property."""
        return self.space.properties[self.colour_by]

    # what the 3D view shows
    def display(self, with_volumes: bool | None = None) -> Display:
        """The current conformation(s); maps are rendered (and cached) when ``with_volumes`` or,
        by default, when the representation is "volume"."""
        if with_volumes is None:
            with_volumes = self.representation == "volume"
        if with_volumes and self._volumes is None:
            half = int(self.space.latents.half[self.selected]) if self.showing == "particle" else None
            self._volumes = torch.stack([self.space.volume(p, half) for p in self._positions])
        return Display(self._positions, self._volumes if with_volumes else None)

    def _show(self, positions: torch.Tensor, showing: str) -> None:
        self._positions, self._volumes, self.showing = positions, None, showing

    # actions
    def nearest(self, point, scale=(1.0, 1.0)) -> int:
        """Index of the particle nearest to ``point`` ``(2,)`` of the embedding, distances measured
        after scaling the axes by ``scale`` ``(2,)`` (e.g. screen pixels per unit, as the plot shows them)."""
        offset = (self.space.embedding.coords - np.asarray(point, dtype=np.float64)) * np.asarray(scale)
        return int(np.linalg.norm(offset, axis=1).argmin())

    def click(self, point, scale=(1.0, 1.0)) -> int:
        """Select the particle nearest to ``point`` (see :meth:`nearest`); show its conformation.
        Returns its index."""
        self.selected = self.nearest(point, scale)
        self._show(self.space.particle_positions(self.selected)[None], "particle")
        row = self.space.latents.rows[self.selected]
        name = self.space.latents.table.particles["rlnImageName"].iloc[row]
        self.message = f"particle {row + 1} ({name}), half-set {self.space.latents.half[self.selected]}: " \
                       f"{self.colour_by} = {self.colours()[self.selected]:.3g}"
        return self.selected

    def draw_trajectory(self, vertices: np.ndarray) -> np.ndarray:
        """Show the movie of ``n_frames`` conformations equally spaced along the drawn path
        ``(p, 2)``; returns those ``(n_frames, 2)`` points."""
        self.trajectory = resample_path(np.asarray(vertices, dtype=np.float64), self.n_frames)
        self._show(self.space.positions_at(self.trajectory), "movie")
        self.message = f"movie of {self.n_frames} conformations along the drawn path; 'save' writes its frames"
        return self.trajectory

    def members(self, polygon: np.ndarray) -> np.ndarray:
        """Indices (into the set, ascending) of the particles inside the closed ``(q, 2)`` polygon."""
        polygon = np.asarray(polygon, dtype=np.float64)
        if len(polygon) < 3:
            return np.zeros(0, dtype=np.int64)
        return np.flatnonzero(Polygon(polygon).contains_points(self.space.embedding.coords))

    def count(self, polygon: np.ndarray) -> int:
        self.last_region, self.last_count = np.asarray(polygon), len(self.members(polygon))
        self.message = f"{self.last_count} particles in the region"
        return self.last_count

    def write_subset(self, polygon: np.ndarray) -> Path:
        """Write the particles inside the polygon as ``subsets/<prefix>region_NNN.star`` (or ``.cs``
        for a cryoSPARC run: the input's format, :mod:`dynamight.analysis.subsets`)."""
        members, source = self.members(polygon), self.space.source
        path = next_numbered(self.output_directory / "subsets", f"{self.prefix}region", source.suffix)
        self.last_region = np.asarray(polygon)
        self.last_count = write_subset(path, self.space.latents, members, source)
        self.last_written = [path]
        self.message = f"wrote {self.last_count} particles to {path}"
        return path

    def finish_shape(self, vertices: np.ndarray, scale=(1.0, 1.0)) -> None:
        """A shape drawn in the embedding, read according to the action (``scale``: see :meth:`nearest`)."""
        vertices = np.asarray(vertices, dtype=np.float64).reshape(-1, 2)
        if self.action == "click":
            self.click(vertices[-1], scale)
        elif self.action == "trajectory":
            self.draw_trajectory(vertices)
        elif self.action == "count":
            self.count(vertices)
        else:
            self.write_subset(vertices)

    def save(self) -> list[Path]:
        """Write what is shown: the movie's frames (``movies/<prefix>movie_NNN/frame_XXX.mrc``, and
        ``model.pdb``/``model.cif`` with one model per frame) or the map (``maps/<prefix>map_NNN.mrc``,
        and its model ``maps/<prefix>map_NNN.pdb``/``.cif``): the deformed atomic model, or the
        Gaussians as pseudo-atoms (:mod:`dynamight.analysis.deformed_models`). Returns the maps'
        paths, then the models'."""
        volumes = self.display(with_volumes=True).volumes
        pixel = self.space.pixel_size_angstrom
        half = int(self.space.latents.half[self.selected]) if self.showing == "particle" else self.space.reference_half
        consensus = self.space.decoder.consensus(half)
        if self.showing == "movie":
            folder = next_numbered(self.output_directory / "movies", f"{self.prefix}movie")
            self.last_written = write_movie(folder, list(volumes), pixel)
            stem = folder / MOVIE_MODEL
        else:
            path = next_numbered(self.output_directory / "maps", f"{self.prefix}map", ".mrc")
            write_map(path, volumes[0], pixel)
            self.last_written = [path]
            stem = path.with_suffix("")
        self.last_written += self.space.models.write(stem, self._positions, consensus)
        self.message = f"wrote {', '.join(p.name for p in self.last_written[:3])}" \
                       f"{' ...' if len(self.last_written) > 3 else ''} in {self.last_written[0].parent}"
        return self.last_written


def resample_path(vertices: np.ndarray, n: int) -> np.ndarray:
    """``(p, 2)`` polyline -> ``(n, 2)`` points equally spaced along it by arc length (ends kept)."""
    vertices = vertices.reshape(-1, 2)
    steps = np.linalg.norm(np.diff(vertices, axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(steps)])
    if arc[-1] <= 0:
        return np.repeat(vertices[:1], n, axis=0)
    keep = np.concatenate([[True], steps > 0])
    target = np.linspace(0.0, arc[-1], n)
    return np.stack([np.interp(target, arc[keep], vertices[keep, k]) for k in range(2)], axis=1)
