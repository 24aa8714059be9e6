"""The napari window: the conformation in 3D on the left (a map, or the Gaussians as points), the
latent-space panel docked on the right.

Layers: "consensus map" (hidden at first), "conformation" (the clicked particle's map, or the
movie's frames along the first axis) and "Gaussians" (the deformed Gaussian centres, coloured by
how far each moved from the consensus). Coordinates are Å: voxel ``i`` of a map is at ``i * p``,
and a Gaussian at ``r`` Å from the box centre at ``r + (d // 2) p``.
"""

from __future__ import annotations

from pathlib import Path

import napari
import numpy as np
import torch
from matplotlib import colormaps

from ..analysis.space import LatentSpace
from .panel import EmbeddingPanel
from .state import ExplorerState


class Explorer:
    """An open explorer: ``viewer`` (napari), ``state`` (:class:`ExplorerState`), ``panel``."""

    def __init__(self, space: LatentSpace, output_directory: Path, n_frames: int = 10, show: bool = True):
        self.state = ExplorerState(space, output_directory, n_frames)
        half = {0: "validation set", 1: "half-set 1", 2: "half-set 2"}[space.latents.half_set]
        self.viewer = napari.Viewer(title=f"DynaMight latent space: {half} ({output_directory})", ndisplay=3, show=show)
        self.pixel = space.pixel_size_angstrom
        self.origin = (space.box_px // 2) * self.pixel
        consensus = space.volume(space.decoder.consensus(space.reference_half)).numpy()
        self.viewer.add_image(consensus, name="consensus map", scale=(self.pixel,) * 3, visible=False,
                              rendering="mip", colormap="gray")
        self.iso_threshold = float(0.3 * consensus.max())
        self.panel = EmbeddingPanel(self.state, self.update_view)
        self.viewer.window.add_dock_widget(self.panel, area="right", name="latent space")
        if show:
            self.viewer.window.resize(1500, 850)
        self.update_view()
        self.viewer.layers.selection.active = self.viewer.layers["conformation"]

    def _points(self, positions: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """``(f, n, 3)`` centres (Å, xyz) -> napari points ``(f n, 3 or 4)`` [frame,] z, y, x and
        their ``(f n, 4)`` colours (distance from the consensus, 0 to the largest)."""
        f, n, _ = positions.shape
        moved = (positions - self.state.space.decoder.consensus(self.state.space.reference_half)).norm(dim=-1)
        colours = colormaps["plasma"]((moved / moved.max().clamp(min=1e-6)).flatten().numpy())
        zyx = positions.flip(-1).reshape(f * n, 3).numpy() + self.origin
        if f > 1:
            zyx = np.concatenate([np.repeat(np.arange(f), n)[:, None], zyx], axis=1)
        return zyx, colours

    def _replace(self, name: str, data, add) -> None:
        """Set a layer's data, re-creating the layer when its dimensionality changes."""
        layers = self.viewer.layers
        if name in layers and layers[name].data.ndim == data.ndim and layers[name].data.shape[-1] == data.shape[-1]:
            layers[name].data = data
            return
        if name in layers:
            layers.remove(name)
        add()

    def update_view(self) -> None:
        """Show the state's conformation(s) as the chosen representation."""
        state = self.state
        display = state.display()
        volume_mode = state.representation == "volume"
        if volume_mode:
            volumes = display.volumes.numpy()
            data = volumes[0] if len(volumes) == 1 else volumes
            scale = (1.0,) * (data.ndim - 3) + (self.pixel,) * 3
            self._replace("conformation", data, lambda: self.viewer.add_image(
                data, name="conformation", scale=scale, rendering="iso", iso_threshold=self.iso_threshold,
                colormap="bop orange"))
            self.viewer.layers["conformation"].contrast_limits = (0.0, float(max(volumes.max(), 1e-6)))
        zyx, colours = self._points(display.positions)
        size = float(2 * state.space.decoder.models[state.space.reference_half].sigma.mean()) * 0.6
        self._replace("Gaussians", zyx, lambda: self.viewer.add_points(
            zyx, name="Gaussians", size=size, face_color=colours, border_width=0))
        self.viewer.layers["Gaussians"].face_color = colours
        self.viewer.layers["Gaussians"].visible = not volume_mode
        if "conformation" in self.viewer.layers:
            self.viewer.layers["conformation"].visible = volume_mode
        self.viewer.dims.ndisplay = 3
        if display.positions.shape[0] > 1:
            self.viewer.dims.set_current_step(0, 0)

    def screenshot(self, path: Path) -> np.ndarray:
        """Save a PNG of the whole window (3D view and panel) once every pending redraw is done;
        returns the ``(h, w, 4)`` image."""
        from qtpy.QtWidgets import QApplication

        self.panel.canvas.draw()
        for _ in range(3):
            QApplication.processEvents()
        return self.viewer.screenshot(str(path), canvas_only=False, flash=False)

    def close(self) -> None:
        self.viewer.close()


def open_explorer(space: LatentSpace, output_directory: Path, n_frames: int = 10,
                  screenshot: Path | None = None) -> None:
    """Open the explorer and return when its window is closed; with ``screenshot``, show the
    particle that moves most, save a screenshot of the window there, and close."""
    explorer = Explorer(space, output_directory, n_frames)
    if screenshot is None:
        napari.run()
        return
    explorer.state.click(space.embedding.coords[int(np.argmax(space.properties["amount"]))])
    explorer.panel.refresh()
    explorer.screenshot(screenshot)
    explorer.close()
