"""The right-hand panel: the latent embedding (matplotlib, one point per particle) and the
controls (colour by, 3d representation, action, save map/movie).

Mouse, in the embedding: with the action "click", a click selects the nearest particle; with
"trajectory", "count" or "subset", press, drag along a path or around a region, and release.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from qtpy.QtWidgets import QComboBox, QFormLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from ..analysis.plots import colour_limits, colour_map, point_size, shown_points
from ..analysis.properties import PROPERTIES
from .state import ACTIONS, REPRESENTATIONS, ExplorerState

ACTION_LABELS = {"click": "click: show a particle", "trajectory": "draw a trajectory: movie",
                 "count": "draw a region: count particles", "subset": "draw a region: write a subset"}


class EmbeddingPanel(QWidget):
    """Qt widget over an :class:`ExplorerState`; calls ``on_change()`` after every change that
    the 3D view must follow."""

    def __init__(self, state: ExplorerState, on_change: Callable[[], None]):
        super().__init__()
        self.state, self.on_change = state, on_change
        self.drawing: list[tuple[float, float]] | None = None
        self.last_vertices: np.ndarray | None = None
        self.background = None  # the plot without the path being drawn (blitting)
        self.colour_box, self.representation_box, self.action_box = QComboBox(), QComboBox(), QComboBox()
        for key in state.colour_keys:
            self.colour_box.addItem(PROPERTIES[key].label, key)
        for representation in REPRESENTATIONS:
            self.representation_box.addItem(representation, representation)
        for action in ACTIONS:
            self.action_box.addItem(ACTION_LABELS[action], action)
        self.save_button = QPushButton("save map/movie")
        self.status = QLabel(state.message)
        self.status.setWordWrap(True)
        self.figure = Figure(figsize=(5, 4.5), layout="constrained")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.axes = self.figure.add_subplot()
        form = QFormLayout()
        form.addRow("colour by", self.colour_box)
        form.addRow("3d representation", self.representation_box)
        form.addRow("action", self.action_box)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.canvas, stretch=1)
        layout.addWidget(self.save_button)
        layout.addWidget(self.status)
        self._plot()
        self.colour_box.currentIndexChanged.connect(self._colour_changed)
        self.representation_box.currentIndexChanged.connect(self._representation_changed)
        self.action_box.currentIndexChanged.connect(lambda _: self.state.set_action(self.action_box.currentData()))
        self.save_button.clicked.connect(self._save)
        self.canvas.mpl_connect("button_press_event", self._press)
        self.canvas.mpl_connect("motion_notify_event", self._move)
        self.canvas.mpl_connect("button_release_event", self._release)

    # drawing
    def _plot(self) -> None:
        coords = self.state.space.embedding.coords
        self.shown = shown_points(len(coords))  # beyond MAX_POINTS particles a sample is drawn; all are used
        self.figure.clear()
        self.axes = self.figure.add_subplot()
        self.points = self.axes.scatter(coords[self.shown, 0], coords[self.shown, 1],
                                        s=max(point_size(len(self.shown)), 2), linewidths=0)
        self.colourbar = self.figure.colorbar(self.points, ax=self.axes)
        (self.marker,) = self.axes.plot([], [], "o", ms=10, mfc="none", mec="red", mew=2)
        (self.path_line,) = self.axes.plot([], [], "-", color="red", lw=1.5)
        method = self.state.space.embedding.method
        self.axes.set_xlabel(f"{method} 1")
        self.axes.set_ylabel(f"{method} 2")
        self.recolour()

    def recolour(self) -> None:
        """Colour the points by the chosen property (NaN: grey)."""
        key, values = self.state.colour_by, self.state.colours()
        self.points.set_cmap(colormaps[colour_map(key)].with_extremes(bad="0.8"))
        self.points.set_array(np.ma.masked_invalid(values[self.shown]))
        self.points.set_clim(*colour_limits(key, values))
        self.colourbar.set_label(PROPERTIES[key].label)
        sample = f" ({len(self.shown)} drawn)" if len(self.shown) < len(values) else ""
        self.axes.set_title(f"{len(values)} particles{sample} coloured by {key}", fontsize=9)
        self.canvas.draw_idle()

    def refresh(self) -> None:
        """Show the selection, the trajectory or region, and the status; then update the 3D view."""
        state = self.state
        if state.selected is not None:
            self.marker.set_data(*state.space.embedding.coords[state.selected][:, None])
        shape = state.trajectory if state.showing == "movie" and state.action == "trajectory" else None
        if state.action in ("count", "subset") and state.last_region is not None:
            shape = np.vstack([state.last_region, state.last_region[:1]])
        if shape is not None:
            self.path_line.set_data(shape[:, 0], shape[:, 1])
        self.status.setText(state.message)
        self.canvas.draw_idle()
        self.on_change()

    def pixels_per_unit(self) -> np.ndarray:
        """``(2,)`` screen pixels per data unit along x and y (the nearest point is the nearest on screen)."""
        corners = self.axes.transData.transform([[0.0, 0.0], [1.0, 1.0]])
        return np.abs(corners[1] - corners[0])

    # events
    def _colour_changed(self, _: int) -> None:
        self.state.set_colour(self.colour_box.currentData())
        self.recolour()

    def _representation_changed(self, _: int) -> None:
        self.state.set_representation(self.representation_box.currentData())
        self.on_change()

    def _save(self) -> None:
        self.state.save()
        self.status.setText(self.state.message)

    def _press(self, event) -> None:
        if event.inaxes is not self.axes or event.button != 1 or event.xdata is None:
            return
        if self.state.action == "click":
            self.state.click((event.xdata, event.ydata), self.pixels_per_unit())
            self.refresh()
            return
        self.drawing = [(event.xdata, event.ydata)]
        self.path_line.set_data([], [])  # the background saved for blitting must not hold an old path
        self.canvas.draw()
        self.background = self.canvas.copy_from_bbox(self.axes.bbox)
        self.path_line.set_data([event.xdata], [event.ydata])

    def _move(self, event) -> None:
        if self.drawing is None or event.inaxes is not self.axes or event.xdata is None:
            return
        self.drawing.append((event.xdata, event.ydata))
        self.path_line.set_data(*np.asarray(self.drawing).T)
        if self.background is None:
            self.canvas.draw_idle()
            return
        # blit: the saved plot, then only the path on top (redrawing every point on each move is slow)
        self.canvas.restore_region(self.background)
        self.axes.draw_artist(self.path_line)
        self.canvas.blit(self.axes.bbox)

    def _release(self, event) -> None:
        if self.drawing is None:
            return
        if event.inaxes is self.axes and event.xdata is not None:
            self.drawing.append((event.xdata, event.ydata))
        self.last_vertices, self.drawing = np.asarray(self.drawing), None
        self.state.finish_shape(self.last_vertices)
        self.refresh()
