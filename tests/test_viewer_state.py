"""The explorer's Qt-free state on a latent space decoded by the true hinge motion: clicks,
trajectories, regions, subsets, saving, and the dropdowns (no napari, no display)."""

from __future__ import annotations

import gemmi
import mrcfile
import numpy as np
import pytest
import starfile
import torch

from dynamight.analysis.latents import read_latent_set
from dynamight.analysis.space import analyse
from dynamight.model.render import render_volume
from dynamight.simulate.dataset import simulate
from dynamight.simulate.evaluate import true_hinge_displacements
from dynamight.training.setup import centred_atoms
from dynamight.viewer.state import ExplorerState, resample_path

from .test_analysis_support import HINGE_DEG_PER_UNIT, hinge_decoder, hinge_latents


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("viewer_state")
    simulate(root / "project", n_particles=200, box_px=32, pixel_size_angstrom=4.0, snr=0.5, motion="hinge", seed=11)
    return root / "project", hinge_latents(root / "project", root)


@pytest.fixture(scope="module")
def spaces(project):
    path, latents = project
    return {h: analyse(read_latent_set(latents, h), hinge_decoder(path), n_clusters=3, batch_size=64) for h in (1, 0)}


def true_positions(project, degrees: float) -> torch.Tensor:
    """``(n, 3)`` atoms of the simulated molecule with the hinge at ``degrees``."""
    truth = starfile.read(project / "ground_truth.star")
    atoms, general = truth["atoms"], truth["general"]
    xyz = torch.tensor(atoms[["dmAtomX", "dmAtomY", "dmAtomZ"]].to_numpy(), dtype=torch.float32)
    hinge = torch.tensor([general["dmHingePointX"], general["dmHingePointY"], general["dmHingePointZ"]]).float()
    moving = torch.tensor(atoms["dmAtomMoving"].to_numpy().astype(np.float32))
    return xyz + true_hinge_displacements(xyz, torch.tensor([degrees]), hinge)[0] * moving[:, None]


@pytest.mark.parametrize("half_set", [1, 0])
def test_click_shows_the_particles_own_conformation(spaces, project, tmp_path, half_set):
    space = spaces[half_set]
    state = ExplorerState(space, tmp_path)
    assert state.showing == "consensus" and state.display().volumes.shape == (1, 32, 32, 32)
    i = int(np.argmax(np.abs(space.latents.z[:, 0])))
    assert state.click(space.embedding.coords[i] + 1e-9) == i and state.showing == "particle"
    half = space.latents.half[i]
    degrees = space.latents.z[i, 0] * HINGE_DEG_PER_UNIT * (1 if half == 1 else -2)  # its own half's model
    expected = true_positions(project[0], float(degrees))
    shown = state.display()
    assert torch.allclose(shown.positions[0], expected, atol=1e-3)
    reference = render_volume(expected, torch.ones(len(expected)), torch.full((len(expected),), 2.0), 32, 4.0)
    assert torch.allclose(shown.volumes[0], reference, rtol=1e-4, atol=1e-5 * float(reference.max()))
    assert f"half-set {half}" in state.message


def test_trajectory_is_a_movie_along_the_drawn_path(spaces, project, tmp_path):
    space = spaces[1]
    state = ExplorerState(space, tmp_path, n_frames=7)
    state.set_action("trajectory")
    low, high = int(np.argmin(space.embedding.coords[:, 0])), int(np.argmax(space.embedding.coords[:, 0]))
    a, b = space.embedding.coords[low], space.embedding.coords[high]
    path = np.stack([a, a + 0.3 * (b - a), b])  # straight, drawn with an extra vertex
    state.finish_shape(path)
    assert state.showing == "movie" and np.allclose(state.trajectory[[0, -1]], path[[0, -1]])
    steps = np.linalg.norm(np.diff(state.trajectory, axis=0), axis=1)
    assert np.allclose(steps, steps.mean(), rtol=1e-6)  # equally spaced along the path
    shown = state.display()
    assert shown.positions.shape[0] == 7 and shown.volumes.shape == (7, 32, 32, 32)
    degrees = space.embedding.to_latent(state.trajectory)[:, 0] * HINGE_DEG_PER_UNIT
    for frame in range(7):  # each frame: the hinge at its point's code
        assert torch.allclose(shown.positions[frame], true_positions(project[0], float(degrees[frame])), atol=1e-3)
    assert np.all(np.diff(degrees) > 0) or np.all(np.diff(degrees) < 0)  # swinging one way along the path
    angles = starfile.read(project[0] / "ground_truth.star")["particles"]["dmTrueHingeAngleDeg"].to_numpy()
    rows = space.latents.rows[[low, high]]
    assert abs(degrees[0] - angles[rows[0]]) < 5 and abs(degrees[-1] - angles[rows[1]]) < 5  # from one end to the other
    paths = state.save()
    assert [p.name for p in paths] == [f"frame_{k:03d}.mrc" for k in range(7)] + ["model.pdb", "model.cif"]
    assert {p.parent for p in paths} == {tmp_path / "movies" / "half1_movie_001"}
    assert np.allclose(mrcfile.read(paths[3]), shown.volumes[3].numpy())
    movie = gemmi.read_structure(str(paths[-2]))  # the Gaussians as pseudo-atoms (no atomic model), one model per frame
    assert len(movie) == 7 and movie[0].count_atom_sites() == shown.positions.shape[1]
    assert torch.allclose(centred_atoms(movie, 32, 4.0, model=3), shown.positions[3], atol=2e-3)


@pytest.mark.parametrize("half_set", [1, 0])
def test_regions_count_and_write_star_subsets(spaces, project, tmp_path, half_set):
    space = spaces[half_set]
    state = ExplorerState(space, tmp_path)
    coords = space.embedding.coords
    polygon = np.array([[coords[:, 0].min() - 1, coords[:, 1].min() - 1], [np.median(coords[:, 0]), coords[:, 1].min() - 1],
                        [np.median(coords[:, 0]), coords[:, 1].max() + 1], [coords[:, 0].min() - 1, coords[:, 1].max() + 1]])
    inside = np.flatnonzero(coords[:, 0] < np.median(coords[:, 0]))
    state.set_action("count")
    state.finish_shape(polygon)
    assert state.last_count == len(inside) and f"{len(inside)} particles" in state.message
    state.set_action("subset")
    state.finish_shape(polygon)
    state.finish_shape(polygon)
    prefix = "validation" if half_set == 0 else "half1"
    assert state.last_written == [tmp_path / "subsets" / f"{prefix}_region_002.star"]
    written = starfile.read(state.last_written[0], always_dict=True)
    latents = starfile.read(project[1], always_dict=True)
    assert written["optics"].equals(latents["optics"])
    expected = latents["particles"].iloc[space.latents.rows[inside]]
    assert list(written["particles"]["rlnImageName"]) == list(expected["rlnImageName"])
    assert np.allclose(written["particles"]["rlnAngleRot"], expected["rlnAngleRot"])
    assert not [c for c in written["particles"].columns if c.startswith("rlnDynaMight")]
    if half_set == 0:
        assert set(written["particles"]["rlnRandomSubset"]) == {1, 2}  # both half-sets' particles


def test_dropdowns_save_and_representation(spaces, tmp_path):
    state = ExplorerState(spaces[0], tmp_path)
    assert state.colour_keys == ["amount", "direction", "location", "tilt", "rot", "shift", "density", "cluster",
                                 "error", "half"]
    for key in state.colour_keys:
        state.set_colour(key)
        assert state.colours() is spaces[0].properties[key]
    with pytest.raises(ValueError):
        state.set_colour("hinge")
    with pytest.raises(ValueError):
        state.set_action("lasso")
    state.set_representation("points")
    state.click(spaces[0].embedding.coords[0])
    assert state.display().volumes is None and state.display(with_volumes=True).volumes.shape == (1, 32, 32, 32)
    first, second = state.save(), state.save()
    assert [p.name for p in first + second] == [f"validation_map_00{k}.{s}" for k in (1, 2) for s in ("mrc", "pdb", "cif")]
    assert np.allclose(mrcfile.read(first[0]), state.display(with_volumes=True).volumes[0].numpy())
    model = gemmi.read_structure(str(first[2]))  # the model beside the map: the clicked particle's Gaussians
    assert len(model) == 1 and torch.allclose(centred_atoms(model, 32, 4.0), state.display().positions[0], atol=2e-3)
    state.set_action("click")
    state.finish_shape(np.array([[0.0, 0.0], spaces[0].embedding.coords[5]]))
    assert state.selected == state.nearest(spaces[0].embedding.coords[5])
    state.set_action("trajectory")  # half-set 0: movies through the common (half 1) space
    state.finish_shape(spaces[0].embedding.coords[[0, 7]])
    frames = state.save()[:-2]
    assert len(frames) == 10 and frames[0].parent.name == "validation_movie_001"
    assert np.allclose(mrcfile.read(frames[-1]), state.display(with_volumes=True).volumes[-1].numpy())


def test_resample_path_keeps_ends_and_spacing():
    points = resample_path(np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 2.0]]), 4)
    assert np.allclose(points, [[0, 0], [1, 0], [1, 1], [1, 2]])
    assert np.allclose(resample_path(np.array([[3.0, 4.0]]), 3), [[3, 4]] * 3)
