"""The napari explorer in a real window (Xvfb when there is no display), driven by Qt mouse events
on the embedding: click, draw a region, draw a trajectory, save, switch the dropdowns, screenshot.
Expected maps are computed independently, from the checkpoint and latents.star."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import starfile
import torch

pytest.importorskip("napari")
pytest.importorskip("qtpy")

from dynamight.analysis.space import open_latent_space  # noqa: E402
from dynamight.model.render import render_volume  # noqa: E402
from dynamight.training.restore import load_forward_models  # noqa: E402

from .test_analysis_support import trained_run  # noqa: E402


PROBE = "import napari; v = napari.Viewer(show=True); v.dims.ndisplay = 3; v.screenshot(flash=False); v.close()"


def _probe() -> None:
    """Open a napari window in a child process first: Qt aborts the whole process when its platform
    plugin cannot load (missing xcb libraries) or the display is unusable, so skip instead."""
    child = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300)
    if child.returncode != 0:
        pytest.skip(f"napari cannot open a window here (CI installs what it needs: .ci/run): {child.stderr[-300:]}")


@pytest.fixture(scope="module")
def display():
    """A display: the existing one, else a private Xvfb for this module (skip if neither)."""
    if os.environ.get("DISPLAY"):
        _probe()
        yield os.environ["DISPLAY"]
        return
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        pytest.skip("no display and no Xvfb (apt-get install xvfb libgl1-mesa-dri)")
    number = next(n for n in range(99, 1000) if not Path(f"/tmp/.X11-unix/X{n}").exists()
                  and not Path(f"/tmp/.X{n}-lock").exists())
    server = subprocess.Popen([xvfb, f":{number}", "-screen", "0", "1600x1000x24", "-nolisten", "tcp"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while not Path(f"/tmp/.X11-unix/X{number}").exists() and server.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    if server.poll() is not None or not Path(f"/tmp/.X11-unix/X{number}").exists():
        server.kill()
        pytest.skip("Xvfb did not start")
    os.environ["DISPLAY"] = f":{number}"
    _probe()
    yield os.environ["DISPLAY"]
    from qtpy.QtWidgets import QApplication

    if QApplication.instance() is not None:
        QApplication.instance().processEvents()
    del os.environ["DISPLAY"]
    server.terminate()
    server.wait(10)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    project, trained = trained_run(tmp_path_factory)
    return trained


@pytest.fixture
def explorer_of(display, run, tmp_path):
    from dynamight.viewer.window import Explorer

    opened = []

    def open_one(half_set: int):
        space = open_latent_space(run / "forward_deformations" / "checkpoints" / "checkpoint_final.pth", None, half_set, n_clusters=3)
        opened.append(Explorer(space, tmp_path / "out", n_frames=10))
        process()
        return opened[-1]

    yield open_one
    for explorer in opened:
        explorer.close()
    process()


def process(times: int = 3) -> None:
    from qtpy.QtWidgets import QApplication

    for _ in range(times):
        QApplication.processEvents()


def widget_point(panel, xy):
    """Data coordinates of the embedding -> the canvas widget's pixel position."""
    from qtpy.QtCore import QPoint

    panel.canvas.draw()
    x, y = panel.axes.transData.transform(np.asarray(xy, dtype=float))
    ratio = panel.canvas.device_pixel_ratio
    return QPoint(int(round(x / ratio)), int(round((panel.figure.bbox.height - y) / ratio)))


def click_at(panel, xy) -> None:
    from qtpy.QtCore import Qt
    from qtpy.QtTest import QTest

    QTest.mouseClick(panel.canvas, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, widget_point(panel, xy))
    process()


def drag(panel, vertices, steps: int = 6) -> None:
    """Press at the first vertex, move through the others (``steps`` moves per edge), release at the last."""
    from qtpy.QtCore import Qt
    from qtpy.QtTest import QTest

    vertices = np.asarray(vertices, dtype=float)
    left, none = Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier
    QTest.mousePress(panel.canvas, left, none, widget_point(panel, vertices[0]))
    for a, b in zip(vertices[:-1], vertices[1:]):
        for t in np.linspace(0, 1, steps + 1)[1:]:
            QTest.mouseMove(panel.canvas, widget_point(panel, a + t * (b - a)))
    QTest.mouseRelease(panel.canvas, left, none, widget_point(panel, vertices[-1]))
    process()


def choose(box, data) -> None:
    box.setCurrentIndex(box.findData(data))
    process()


def inside(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Ray casting: ``(m, 2)`` points inside the closed ``(q, 2)`` polygon."""
    result = np.zeros(len(points), dtype=bool)
    for (x1, y1), (x2, y2) in zip(polygon, np.roll(polygon, -1, axis=0)):
        crosses = (y1 > points[:, 1]) != (y2 > points[:, 1])
        with np.errstate(divide="ignore", invalid="ignore"):
            x_at = x1 + (points[:, 1] - y1) * (x2 - x1) / (y2 - y1)
        result ^= crosses & (points[:, 0] < x_at)
    return result


class Truth:
    """Maps and Gaussians straight from the checkpoint and latents.star (not through dynamight.analysis)."""

    def __init__(self, run):
        self.models, _ = load_forward_models(run / "forward_deformations" / "checkpoints" / "checkpoint_final.pth", 32, 4.0,
                                             torch.device("cpu"))
        self.table = starfile.read(run / "forward_deformations" / "latents.star", always_dict=True)
        particles = self.table["particles"]
        self.z = particles[["rlnDynaMightLatent1", "rlnDynaMightLatent2"]].to_numpy(np.float32)
        self.half = particles["rlnDynaMightHalfSet"].to_numpy()

    @torch.no_grad()
    def positions(self, z, half: int) -> torch.Tensor:
        model = self.models[half]
        return model.positions + model.displacements(torch.as_tensor(np.atleast_2d(z), dtype=torch.float32))

    def volume(self, positions, half: int) -> np.ndarray:
        model = self.models[half]
        return render_volume(positions, model.amplitudes, model.sigma, 32, 4.0).numpy()


def isolated(panel, coords) -> int:
    """The particle farthest (in screen pixels) from its nearest neighbour: a click cannot miss it."""
    panel.canvas.draw()  # the final layout
    pixels = panel.axes.transData.transform(coords)
    distance = np.linalg.norm(pixels[:, None] - pixels[None], axis=-1) + np.eye(len(coords)) * 1e9
    return int(distance.min(1).argmax())


@pytest.mark.parametrize("half_set", [1, 0])
def test_click_shows_the_decoded_conformation(explorer_of, run, half_set):
    explorer = explorer_of(half_set)
    truth, space, panel = Truth(run), explorer.state.space, explorer.panel
    before = np.array(explorer.viewer.layers["conformation"].data)
    i = isolated(panel, space.embedding.coords)
    click_at(panel, space.embedding.coords[i])
    assert explorer.state.selected == i
    row, half = space.latents.rows[i], int(truth.half[space.latents.rows[i]])
    positions = truth.positions(truth.z[row], half)[0]
    expected = truth.volume(positions, half)
    shown = np.asarray(explorer.viewer.layers["conformation"].data)
    assert shown.shape == (32, 32, 32) and np.allclose(shown, expected, rtol=1e-5, atol=1e-5 * expected.max())
    assert not np.allclose(shown, before, rtol=1e-6, atol=0)  # the map changed on the click
    points = explorer.viewer.layers["Gaussians"].data
    assert np.allclose(points, positions.flip(-1).numpy() + 16 * 4.0, atol=1e-4)
    other = int(np.argmax(np.linalg.norm(space.embedding.coords - space.embedding.coords[i], axis=1)))
    click_at(panel, space.embedding.coords[other])
    if explorer.state.selected != i:
        j = explorer.state.selected
        expected_j = truth.volume(truth.positions(truth.z[space.latents.rows[j]], int(space.latents.half[j]))[0],
                                  int(space.latents.half[j]))
        assert np.allclose(explorer.viewer.layers["conformation"].data, expected_j, rtol=1e-5,
                           atol=1e-5 * expected_j.max())
    assert f"particle {explorer.state.space.latents.rows[explorer.state.selected] + 1} " in panel.status.text()


@pytest.mark.parametrize("half_set", [1, 0])
def test_regions_count_and_write_star_subsets(explorer_of, run, half_set):
    explorer = explorer_of(half_set)
    space, panel, state = explorer.state.space, explorer.panel, explorer.state
    coords = space.embedding.coords
    low, high = coords.min(0), coords.max(0)
    pad = 0.02 * (high - low)
    cut = float(np.median(coords[:, 0])) if half_set == 1 else high[0] + pad[0]  # half-set 0: the whole set
    rectangle = np.array([[low[0] - pad[0], low[1] - pad[1]], [cut, low[1] - pad[1]], [cut, high[1] + pad[1]],
                          [low[0] - pad[0], high[1] + pad[1]]])
    choose(panel.action_box, "count")
    drag(panel, np.vstack([rectangle, rectangle[:1]]))
    expected = inside(coords, panel.last_vertices)
    assert 0 < expected.sum() and state.last_count == expected.sum()
    assert panel.status.text() == f"{expected.sum()} particles in the region"
    choose(panel.action_box, "subset")
    drag(panel, np.vstack([rectangle, rectangle[:1]]))
    expected = inside(coords, panel.last_vertices)
    prefix = "validation" if half_set == 0 else "half1"
    path = explorer.state.output_directory / "subsets" / f"{prefix}_region_001.star"
    assert state.last_written == [path]
    written = starfile.read(path, always_dict=True)
    truth = Truth(run).table
    assert written["optics"].equals(truth["optics"])
    rows = truth["particles"].iloc[space.latents.rows[expected]]
    assert len(written["particles"]) == expected.sum()
    assert list(written["particles"]["rlnImageName"]) == list(rows["rlnImageName"])
    assert np.allclose(written["particles"]["rlnDefocusU"], rows["rlnDefocusU"])
    if half_set == 0:
        validation = truth["particles"]["rlnDynaMightIsValidation"] == 1
        assert expected.all() and len(written["particles"]) == validation.sum()
        assert set(written["particles"]["rlnRandomSubset"]) == {1, 2}


def test_trajectory_movie_save_points_colourings_and_screenshot(explorer_of, run, tmp_path):
    explorer = explorer_of(1)
    truth, space, panel, viewer = Truth(run), explorer.state.space, explorer.panel, explorer.viewer
    coords = space.embedding.coords
    choose(panel.action_box, "trajectory")
    start = [coords[:, 0].min(), 0.0]
    end = [coords[:, 0].max(), 0.0]
    drag(panel, [start, end], steps=12)
    movie = np.asarray(viewer.layers["conformation"].data)
    assert movie.shape == (10, 32, 32, 32)
    # the expected frames: a PCA of the codes computed here, the drawn path resampled here
    z = truth.z[space.latents.rows].astype(np.float64)
    mean = z.mean(0)
    vt = np.linalg.svd(z - mean, full_matrices=False)[2]
    vt *= np.sign(vt[np.arange(2), np.abs(vt).argmax(1)])[:, None]
    drawn = panel.last_vertices
    arc = np.concatenate([[0], np.cumsum(np.linalg.norm(np.diff(drawn, axis=0), axis=1))])
    keep = np.concatenate([[True], np.diff(arc) > 0])
    t = np.linspace(0, arc[-1], 10)
    points = np.stack([np.interp(t, arc[keep], drawn[keep, k]) for k in range(2)], axis=1)
    frames = truth.positions((mean + points @ vt[:2]).astype(np.float32), 1)
    for k in range(10):
        expected = truth.volume(frames[k], 1)
        assert np.allclose(movie[k], expected, rtol=1e-4, atol=1e-4 * expected.max()), k
    assert not np.allclose(movie[0], movie[-1], rtol=1e-6, atol=0)
    from qtpy.QtCore import Qt
    from qtpy.QtTest import QTest

    QTest.mouseClick(panel.save_button, Qt.MouseButton.LeftButton)
    process()
    saved = sorted((explorer.state.output_directory / "movies" / "half1_movie_001").glob("frame_*.mrc"))
    assert [p.name for p in saved] == [f"frame_{k:03d}.mrc" for k in range(10)]
    assert all(np.allclose(mrcfile.read(p), movie[k]) for k, p in enumerate(saved))
    assert "frame_000.mrc" in panel.status.text()

    choose(panel.representation_box, "points")
    gaussians = viewer.layers["Gaussians"]
    assert gaussians.visible and not viewer.layers["conformation"].visible
    assert gaussians.data.shape == (10 * frames.shape[1], 4)
    assert np.allclose(gaussians.data[-frames.shape[1]:, 1:], frames[-1].flip(-1).numpy() + 16 * 4.0, atol=1e-4)
    canvas = viewer.screenshot(canvas_only=True, flash=False)
    assert (np.abs(canvas[..., :3].astype(int) - canvas[0, 0, :3]).sum(-1) > 30).mean() > 1e-4  # points drawn

    for index in range(panel.colour_box.count()):
        panel.colour_box.setCurrentIndex(index)
        process(1)
        key = panel.colour_box.currentData()
        values = explorer.state.colours()
        shown = np.ma.masked_invalid(panel.points.get_array())
        assert explorer.state.colour_by == key and np.allclose(shown.filled(np.nan), values, equal_nan=True)
        assert panel.colourbar.ax.get_ylabel() == panel.colour_box.currentText()
    choose(panel.representation_box, "volume")
    assert viewer.layers["conformation"].visible and not gaussians.visible

    image = explorer.screenshot(tmp_path / "explorer.png")
    assert (tmp_path / "explorer.png").stat().st_size > 10_000
    assert image.shape[0] > 400 and image.shape[1] > 800 and image[..., :3].std() > 20
    assert len(np.unique(image[..., :3].reshape(-1, 3), axis=0)) > 200  # not blank: plot, colours, map


@pytest.mark.parametrize("half_set", ["1", "0"])
def test_command_opens_the_window_and_screenshots_it(display, run, tmp_path, half_set):
    from dynamight.cli import main as dynamight

    path = tmp_path / "explorer.png"
    assert dynamight(["explore-latent-space", str(run), "--half-set", half_set, "--gpu-id", "-1",
                      "--screenshot", str(path)]) == 0
    from matplotlib.image import imread

    image = imread(path)
    assert image.shape[0] > 400 and image[..., :3].std() > 0.05
    assert len(np.unique((image[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0)) > 200
