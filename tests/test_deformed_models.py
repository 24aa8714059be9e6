"""Deformed models beside the analysis' maps, on a run whose Gaussians are the atoms of the
simulator's adenylate kinase (1ake, chain A) and whose decoder is a known rigid motion of its LID
domain (A:122-159) about the simulator's hinge: models read back by gemmi, each fitting its own map
better than the consensus model does, atoms where the motion puts them, bond lengths kept."""

from __future__ import annotations

import mrcfile
import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from dynamight.analysis.atom_motion import AtomMotion
from dynamight.analysis.decoding import ConformationDecoder
from dynamight.analysis.latents import read_latent_set
from dynamight.analysis.model_fit import map_model_correlation
from dynamight.analysis.report import write_report
from dynamight.analysis.space import analyse
from dynamight.training.setup import centred_atoms

from .atomic_support import DEG_PER_UNIT, lid_swing, placed_1ake, rigid_decoder, true_motion
from .test_analysis_support import hinge_latents

BOX, PIXEL = 36, 2.0


@pytest.fixture(scope="module")
def structure(tmp_path_factory):
    """1ake chain A placed in a 36-px, 2-Å map, its atoms (Å from the box centre), LID-domain flags and hinge."""
    path = tmp_path_factory.mktemp("atomic") / "1ake_A.pdb"
    placed_1ake(path, BOX, PIXEL)
    return (path, *lid_swing(path, BOX, PIXEL))


def _decoder(structure, n_gaussians: int | None, atomic: bool = True) -> ConformationDecoder:
    return rigid_decoder(structure[0], BOX, PIXEL, n_gaussians, atomic)


@pytest.fixture(scope="module")
def report(structure, tiny_project, tmp_path_factory):
    """The headless report of the rigid-domain run (all atoms as Gaussians) on the tiny project's codes."""
    root = tmp_path_factory.mktemp("models_report")
    space = analyse(read_latent_set(hinge_latents(tiny_project, root), 1), _decoder(structure, None), n_clusters=3,
                    batch_size=64)
    return space, write_report(space, root, root / "report", n_frames=4)


def _bonds(atoms: np.ndarray) -> np.ndarray:
    """``(m, 2)`` atom pairs closer than 1.9 Å (the covalent bonds of a model without hydrogens)."""
    return np.array(sorted(cKDTree(atoms).query_pairs(1.9)))


def test_models_are_written_beside_every_map_and_read_back(structure, report):
    import gemmi

    space, files = report
    n_atoms = len(structure[1])
    names = sorted(p.name for p in files.models)
    assert names == sorted(["half1_consensus.pdb", "half1_consensus.cif", "model.pdb", "model.cif", "model.pdb",
                            "model.cif"] + [f"half1_cluster_{k:02d}.{s}" for k in (1, 2, 3) for s in ("pdb", "cif")])
    for path in files.models:
        st = gemmi.read_structure(str(path))
        frames = 4 if path.parent.name.startswith("half1_pc") else 1
        assert len(st) == frames and all(m.count_atom_sites() == n_atoms for m in st), path
    assert files.models[0].with_suffix(".mrc") == files.consensus_map


def test_each_model_fits_its_own_map_better_than_the_consensus(structure, report):
    import gemmi

    path, atoms, lid, point, axis = structure
    space, files = report
    consensus = centred_atoms(gemmi.read_structure(str(files.consensus_map.with_suffix(".pdb"))), BOX, PIXEL)
    gains = []
    for k, map_path in enumerate(files.cluster_maps):
        volume = torch.from_numpy(mrcfile.read(map_path).copy())
        model = gemmi.read_structure(str(map_path.with_suffix(".cif")))
        own = centred_atoms(model, BOX, PIXEL)
        degrees = DEG_PER_UNIT * torch.tensor(space.centres[k, :1])
        expected = atoms + true_motion(atoms, lid, point, axis, degrees)[0]
        assert (own - expected).norm(dim=1).max() < 1e-3  # every atom where the rigid motion puts it
        fit, before = map_model_correlation(own, volume, PIXEL), map_model_correlation(consensus, volume, PIXEL)
        print(f"cluster {k + 1}: {float(degrees):+.1f} deg, map-model correlation {fit:.4f} "
              f"(consensus model {before:.4f})")
        assert fit > before
        gains.append(fit - before)
    assert max(gains) > 0.02  # the extreme clusters: a clear gain
    movie_model = next(p for p in files.models if p.parent.name == "half1_pc1" and p.suffix == ".pdb")
    movie = gemmi.read_structure(str(movie_model))
    frames = [centred_atoms(movie, BOX, PIXEL, model=f) for f in range(len(movie))]
    for f, frame in enumerate(files.movies["pc1"]):
        volume = torch.from_numpy(mrcfile.read(frame).copy())
        assert map_model_correlation(frames[f], volume, PIXEL) > 0.99 * max(
            map_model_correlation(other, volume, PIXEL) for other in frames)


@pytest.mark.parametrize("n_gaussians", [None, 800])
def test_bond_lengths_survive_a_rigid_domain_motion(structure, n_gaussians):
    path, atoms, lid, point, axis = structure
    decoder = _decoder(structure, n_gaussians)
    writer = writer_of(decoder)
    assert writer.atomic and writer.n_atoms == len(atoms)
    consensus = decoder.consensus(1)
    degrees = torch.tensor([20.0])
    positions = consensus[None] + decoder.displacements(np.array([[20.0 / DEG_PER_UNIT, 0, 0]]), 1)
    moved = torch.from_numpy(writer.coordinates(positions, consensus)[0]).float() - (BOX // 2) * PIXEL
    truth = atoms + true_motion(atoms, lid, point, axis, degrees)[0]
    bonds = _bonds(atoms.numpy())
    length = lambda xyz: (xyz[bonds[:, 0]] - xyz[bonds[:, 1]]).norm(dim=1)  # noqa: E731
    change = length(moved) - length(atoms)
    inside = lid[bonds[:, 0]] == lid[bonds[:, 1]]
    rms_inside, rms_all = float(change[inside].pow(2).mean().sqrt()), float(change.pow(2).mean().sqrt())
    rms_truth = float((length(moved) - length(truth)).pow(2).mean().sqrt())
    position_error = float((moved - truth).norm(dim=1).pow(2).mean().sqrt())
    print(f"{n_gaussians or len(atoms)} Gaussians for {len(atoms)} atoms, 20 deg: bond length change RMS "
          f"{rms_inside:.4f} Å "
          f"inside the domains, {rms_all:.4f} Å over all {len(bonds)} bonds (the true motion's: "
          f"{float((length(truth) - length(atoms)).pow(2).mean().sqrt()):.4f}); against the true motion's bonds "
          f"{rms_truth:.4f} Å; atom RMS error {position_error:.4f} Å")
    assert rms_inside < 0.1 and rms_truth < 0.1
    if n_gaussians is None:
        assert position_error < 1e-3


def writer_of(decoder):
    """The model writer the analysis would use for this run."""
    from dynamight.analysis.deformed_models import model_writer

    return model_writer(decoder.config, decoder.consensus(1), decoder.models[1].sigma, BOX, PIXEL)


def test_without_an_atomic_model_the_gaussians_are_pseudo_atoms(structure, tmp_path):
    import gemmi

    decoder = _decoder(structure, 300, atomic=False)
    writer = writer_of(decoder)
    assert not writer.atomic and writer.n_atoms == 300
    consensus = decoder.consensus(1)
    positions = consensus[None] + decoder.displacements(np.array([[1.0, 0, 0], [-1.0, 0, 0]]), 1)
    paths = writer.write(tmp_path / "x", positions, consensus)
    for path in paths:
        st = gemmi.read_structure(str(path))
        assert len(st) == 2 and st[0].count_atom_sites() == 300
        atom = st[1][0][0][0]
        assert atom.name == "CA" and atom.element.name == "C" and abs(atom.b_iso - 8 * np.pi**2 * 1.5**2) < 0.01
        for f in range(2):
            assert torch.allclose(centred_atoms(st, BOX, PIXEL, model=f), positions[f], atol=2e-3)


def test_atom_motion_is_exact_for_affine_motions():
    rng = np.random.default_rng(0)
    centres = torch.from_numpy(rng.uniform(-20, 20, (400, 3))).float()
    atoms = torch.cat([centres[:50], torch.from_numpy(rng.uniform(-15, 15, (300, 3))).float()])
    motion = AtomMotion(atoms, centres)
    assert motion.exact[:50].all() and not motion.exact[50:].any() and motion.every_gaussian_is_an_atom is False
    matrix = torch.tensor([[0.9, -0.2, 0.1], [0.25, 0.95, 0.0], [-0.1, 0.05, 1.1]])
    field = lambda x: x @ (matrix - torch.eye(3)).T + torch.tensor([1.0, -2.0, 0.5])  # noqa: E731
    moved = motion.displacements(field(centres)[None])[0]
    assert torch.allclose(moved, field(atoms), atol=1e-3)


def test_a_trained_run_with_an_atomic_model_writes_deformed_atomic_models(tiny_project, tmp_path):
    """The real path: optimize-deformations --atomic-model (800 of its 1656 atoms as Gaussians, 1
    epoch), then explore-latent-space --headless: every map comes with the whole deformed model."""
    import gemmi

    from dynamight.cli import main as dynamight
    from dynamight.training.layout import final_checkpoint_path

    pdb = tmp_path / "1ake_A.pdb"
    n_atoms = placed_1ake(pdb, 32, 4.0)[0].count_atom_sites()
    run = tmp_path / "run"
    assert dynamight(["optimize-deformations", "--refinement-star-file", str(tiny_project / "particles.star"),
                      "--output-directory", str(run), "--initial-model", str(tiny_project / "map.mrc"),
                      "--atomic-model", str(pdb), "--n-gaussians", "800", "--n-latent-dimensions", "2",
                      "--n-epochs", "1", "--batch-size", "100", "--gpu-id", "-1"]) == 0
    assert dynamight(["explore-latent-space", str(run), "--headless", "--gpu-id", "-1", "--n-clusters", "2",
                      "--n-movie-frames", "3"]) == 0
    decoder = ConformationDecoder.load(final_checkpoint_path(run), 32, 4.0, torch.device("cpu"))
    consensus = centred_atoms(gemmi.read_structure(str(pdb)), 32, 4.0)
    exact = "donot_use_mm_for_euclid_dist"
    gaussian_atoms = torch.cdist(decoder.consensus(1), consensus, compute_mode=exact).min(1)
    assert float(gaussian_atoms.values.max()) < 1e-3  # the Gaussians are atoms of the model
    for name in ("half1_cluster_01.pdb", "half1_cluster_02.cif"):
        model = gemmi.read_structure(str(run / "maps" / name))
        assert len(model) == 1 and model[0].count_atom_sites() == n_atoms
    movie = gemmi.read_structure(str(run / "movies" / "half1_pc1" / "model.cif"))
    assert len(movie) == 3 and all(m.count_atom_sites() == n_atoms for m in movie)
    space = read_latent_set(run / "forward_deformations" / "latents.star", 1)
    assert len(space) > 0
    frame = centred_atoms(movie, 32, 4.0, model=0)
    rows = gaussian_atoms.indices  # the Gaussians' atoms move as the Gaussians
    moved = frame[rows] - consensus[rows]
    codes = analyse(space, decoder, n_clusters=2, batch_size=100).embedding.direction_codes(0, 3)
    assert torch.allclose(moved, decoder.displacements(codes[:1], 1)[0], atol=2e-3)
