"""Particle subsets in the input's own format: a STAR subset that Debian's RELION reconstructs, and a
cryoSPARC ``.cs`` subset that holds exactly the original rows (read back by cryosparc-tools)."""

from __future__ import annotations

import mrcfile
import numpy as np
import pytest
from cryosparc.dataset import Dataset

from dynamight.analysis.latents import read_latent_set
from dynamight.analysis.report import write_report
from dynamight.analysis.space import analyse
from dynamight.analysis.subsets import ParticleSource, write_subset
from dynamight.data.cryosparc import UID_COLUMN
from dynamight.data.particles import read_particles
from dynamight.errors import InputError
from dynamight.training.outputs import write_latents
from dynamight.viewer.state import ExplorerState

from .cryosparc_files import write_cryosparc_project
from .helpers import needs_relion, run_relion
from .test_analysis_support import hinge_decoder, hinge_latents


@pytest.fixture(scope="module")
def cs_run(tiny_project, tmp_path_factory):
    """A cryoSPARC project of the tiny project's particles and a latents.star written from the
    ``.cs`` as training writes it (codes: the simulated hinge angle / 10, and noise)."""
    root = tmp_path_factory.mktemp("cs_subsets")
    cs = write_cryosparc_project(tiny_project / "particles.star", root / "P1")
    table = read_particles(cs)
    rng = np.random.default_rng(0)
    z = rng.normal(0, 1, (len(table), 3)).astype(np.float32)
    validation = rng.random(len(table)) < 0.2
    latents = root / "run" / "forward_deformations" / "latents.star"
    write_latents(latents, table, z, validation, np.ones(len(table)), np.ones(len(table)))
    return cs, latents


def _original(cs):
    main, passthrough = Dataset.load(cs), Dataset.load(cs.with_name("J5_passthrough_particles.cs"))
    return main, passthrough


def _assert_rows(written: Dataset, original: Dataset, uids: np.ndarray) -> None:
    rows = [int(np.flatnonzero(original["uid"] == u)[0]) for u in uids]
    for field in original.fields():
        assert np.array_equal(np.asarray(written[field]), np.asarray(original[field])[rows]), field


def test_cs_subset_holds_the_original_rows(cs_run, tmp_path):
    cs, latents_path = cs_run
    latents = read_latent_set(latents_path, 1)
    uid_column = latents.table.particles[UID_COLUMN].to_numpy()
    main, passthrough = _original(cs)
    assert np.array_equal(uid_column.astype(np.uint64), main["uid"])  # the uid travelled to latents.star
    members = np.arange(0, len(latents), 3)
    path = tmp_path / "subset.cs"
    assert write_subset(path, latents, members, ParticleSource(cs)) == len(members)
    written = Dataset.load(path)
    chosen = main["uid"][latents.rows[members]]
    assert len(written) == len(members) and np.array_equal(written["uid"], chosen)
    _assert_rows(written, main, chosen)  # every original field, the original values
    _assert_rows(written, passthrough, chosen)  # plus the passthrough's fields (the CTF), its values
    assert set(written.fields()) == set(main.fields()) | set(passthrough.fields())
    assert all(str(p).startswith("J2/extract/") for p in written["blob/path"])  # the original stacks, as written
    again = read_particles(path, cs_passthrough_file=None, cs_project_directory=cs.parent.parent)
    assert again.has_ctf and list(again.particles[UID_COLUMN]) == list(chosen)  # our own reader takes it too


def test_cs_subset_of_a_run_without_the_uid_column_goes_by_order(cs_run, tmp_path):
    cs, latents_path = cs_run
    latents = read_latent_set(latents_path, 2)
    latents.table.particles = latents.table.particles.drop(columns=[UID_COLUMN])
    path = tmp_path / "subset.cs"
    write_subset(path, latents, np.arange(4), ParticleSource(cs))
    assert np.array_equal(Dataset.load(path)["uid"], _original(cs)[0]["uid"][latents.rows[:4]])
    with pytest.raises(InputError, match="missing.cs: cryoSPARC particle file not found"):
        write_subset(tmp_path / "x.cs", latents, np.arange(4), ParticleSource(tmp_path / "missing.cs"))


def test_cryosparc_runs_write_cs_subsets_from_the_explorer_and_the_report(tiny_project, cs_run, tmp_path):
    cs, latents_path = cs_run
    decoder = hinge_decoder(tiny_project)
    decoder.config = {"refinement_star_file": str(cs)}
    space = analyse(read_latent_set(latents_path, 0), decoder, n_clusters=2, batch_size=64)
    state = ExplorerState(space, tmp_path)
    state.set_action("subset")
    coords = space.embedding.coords
    box = np.array([[-1e3, -1e3], [0.0, -1e3], [0.0, 1e3], [-1e3, 1e3]])
    state.finish_shape(box)
    assert state.last_written == [tmp_path / "subsets" / "validation_region_001.cs"]
    inside = np.flatnonzero(coords[:, 0] < 0)
    uids = _original(cs)[0]["uid"][space.latents.rows[inside]]
    assert np.array_equal(Dataset.load(state.last_written[0])["uid"], uids)
    files = write_report(space, tmp_path, tmp_path / "report", n_frames=2)
    assert [p.name for p in files.subsets] == ["validation_cluster_01.cs", "validation_cluster_02.cs"]
    together = np.concatenate([Dataset.load(p)["uid"] for p in files.subsets])
    assert sorted(together) == sorted(_original(cs)[0]["uid"][space.latents.rows])


@needs_relion("relion_reconstruct")
def test_relion_reconstructs_a_region_subset(tiny_project, tmp_path):
    latents_path = hinge_latents(tiny_project, tmp_path)
    space = analyse(read_latent_set(latents_path, 1), hinge_decoder(tiny_project), n_clusters=2, batch_size=64)
    state = ExplorerState(space, tmp_path)
    path = state.write_subset(np.array([[-1e3, -1e3], [0.0, -1e3], [0.0, 1e3], [-1e3, 1e3]]))
    assert path.suffix == ".star" and state.last_count > 10
    target = tiny_project / f"subset_{tmp_path.name}.star"  # stack paths are relative to the project
    target.write_bytes(path.read_bytes())
    try:
        run_relion(["relion_reconstruct", "--i", target.name, "--o", str(tmp_path / "x.mrc"), "--ctf"],
                   cwd=tiny_project)
    finally:
        target.unlink()
    assert mrcfile.read(tmp_path / "x.mrc").shape == (32, 32, 32)
