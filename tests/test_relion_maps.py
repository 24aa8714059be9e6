"""Our maps against RELION's from the same particles: ``relion_project``-rendered particles at low
SNR, reconstructed by ``dynamight reconstruct`` and by ``relion_reconstruct`` (with and without
``--fsc``), judged by their FSC against the true map; our resolution against ``relion_postprocess``'s
on the same half-maps and mask."""

from __future__ import annotations

import mrcfile
import numpy as np
import pytest
import starfile
import torch

from dynamight.cli import main
from dynamight.data.fourier import fsc
from dynamight.data.images import ParticleImages
from dynamight.data.particles import read_particles
from dynamight.data.volumes import read_map
from dynamight.reconstruction.masking import fsc_curves, randomise_phases_beyond, soft_mask_outside_map
from dynamight.reconstruction.plain import reconstruct_half_maps
from dynamight.reconstruction.report import fsc_table

from .helpers import needs_relion, run_relion
from .test_relion_crosscheck import BOX, PIXEL, _angles_star

SNR = 0.05


def band_mean(volume: torch.Tensor, truth: torch.Tensor) -> float:
    """Mean FSC against the truth from half Nyquist to Nyquist."""
    return float(fsc(volume, truth)[BOX // 4:].mean())


def test_soft_mask_outside_map_is_relions():
    """Inside radius d/2 nothing changes; beyond d/2 + 3 every voxel is one background value, the
    edge-weighted mean of the region outside d/2; a constant map stays constant."""
    torch.manual_seed(1)
    volume = torch.randn(BOX, BOX, BOX)
    masked = soft_mask_outside_map(volume)
    axis = torch.arange(BOX) - BOX // 2
    r = (axis[:, None, None] ** 2 + axis[None, :, None] ** 2 + axis[None, None, :] ** 2).float().sqrt()
    assert torch.equal(masked[r < BOX / 2], volume[r < BOX / 2])
    far = masked[r > BOX / 2 + 3]
    assert float(far.std()) < 1e-6 and abs(float(far.mean())) < 0.1
    assert torch.allclose(soft_mask_outside_map(torch.full((BOX,) * 3, 2.5)), torch.full((BOX,) * 3, 2.5))


def test_phase_randomisation_keeps_amplitudes_and_low_frequencies():
    torch.manual_seed(2)
    volume = torch.randn(BOX, BOX, BOX)
    randomised = randomise_phases_beyond(volume, 6, seed=3)
    curve = fsc(volume, randomised)
    assert float(curve[:5].min()) > 0.999 and float(curve[8:].abs().max()) < 0.3
    # amplitudes kept (off the kx = 0 and Nyquist planes, whose Hermitian pairs the real transform
    # averages, in RELION's randomisation as in ours)
    amplitude = lambda v: torch.fft.rfftn(v.double()).abs()[..., 1:-1]  # noqa: E731
    assert torch.allclose(amplitude(volume), amplitude(randomised), rtol=1e-4, atol=1e-6)


@pytest.fixture(scope="module")
def noisy_relion_particles(clean_project, tmp_path_factory):
    """1,000 particles rendered by ``relion_project --ctf`` from the clean project's map, white
    Gaussian noise added at SNR 0.05 (seeded), fractional origins, RELION's half-sets."""
    work = tmp_path_factory.mktemp("relion_maps")
    _angles_star(work / "angles.star", 1000, seed=11)
    run_relion(["relion_project", "--i", str(clean_project / "map.mrc"), "--o", "proj", "--ang", "angles.star",
                "--ctf", "--angpix", str(PIXEL)], work)
    with mrcfile.open(work / "proj.mrcs", mode="r+") as mrc:
        signal = mrc.data.astype(np.float32)
        noise = np.random.default_rng(12).normal(0, signal.std() / np.sqrt(SNR), signal.shape).astype(np.float32)
        mrc.data[...] = signal + noise
    return work


@needs_relion("relion_project", "relion_reconstruct", "relion_postprocess")
def test_maps_at_least_as_good_as_relions(noisy_relion_particles, clean_project):
    work = noisy_relion_particles
    truth = read_map(clean_project / "map.mrc").data
    mask = clean_project / "mask.mrc"
    assert main(["reconstruct", "--refinement-star-file", str(work / "proj.star"), "--output-directory",
                 str(work / "ours"), "--mask-file", str(mask), "--gpu-id", "-1"]) == 0
    table = read_particles(work / "proj.star")
    plain = reconstruct_half_maps(table, ParticleImages(table), torch.device("cpu"), regularise=False)
    starfile.write({"fsc": fsc_table({"rlnGoldStandardFsc": fsc(plain.half1, plain.half2)}, BOX, PIXEL)},
                   work / "gold.star", overwrite=True)
    run_relion(["relion_reconstruct", "--i", "proj.star", "--o", "relion.mrc", "--ctf"], work)
    run_relion(["relion_reconstruct", "--i", "proj.star", "--o", "relion_fsc.mrc", "--ctf", "--fsc", "gold.star"], work)
    scores = {"ours": band_mean(read_map(work / "ours" / "map.mrc").data, truth),
              "ours, unregularised": band_mean(plain.merged, truth),
              "relion": band_mean(read_map(work / "relion.mrc").data, truth),
              "relion --fsc": band_mean(read_map(work / "relion_fsc.mrc").data, truth)}
    print(scores)
    assert scores["relion"] < 0.8  # the noise matters at these frequencies
    assert scores["ours"] >= scores["relion"] - 0.005 and scores["ours"] >= scores["relion --fsc"] - 0.005, scores
    assert scores["ours, unregularised"] >= scores["relion"] - 0.01, scores
    # the corners are RELION's: one background value beyond the inscribed sphere's soft edge
    ours, relion = read_map(work / "ours" / "map.mrc").data, read_map(work / "relion.mrc").data
    axis = torch.arange(BOX) - BOX // 2
    r = (axis[:, None, None] ** 2 + axis[None, :, None] ** 2 + axis[None, None, :] ** 2).float().sqrt()
    corner = r > BOX / 2 + 3
    assert float(ours[corner].std()) <= 2 * float(relion[corner].std()) + 1e-3 * float(relion.std())


@needs_relion("relion_project", "relion_postprocess")
def test_resolution_matches_relion_postprocess(noisy_relion_particles, clean_project):
    """The corrected FSC's 0.143 crossing within one shell of ``relion_postprocess`` on the same
    half-maps and mask; the curves written with RELION's column names."""
    work = noisy_relion_particles
    out = work / "ours_pp"
    assert main(["reconstruct", "--refinement-star-file", str(work / "proj.star"), "--output-directory",
                 str(out), "--mask-file", str(clean_project / "mask.mrc"), "--gpu-id", "-1"]) == 0
    (work / "pp").mkdir(exist_ok=True)
    run_relion(["relion_postprocess", "--i", str(out / "half1.mrc"), "--i2", str(out / "half2.mrc"), "--mask",
                str(clean_project / "mask.mrc"), "--angpix", str(PIXEL), "--o", "pp/postprocess"], work)
    relion = starfile.read(work / "pp" / "postprocess.star", always_dict=True)
    ours = starfile.read(out / "fsc.star", always_dict=True)
    for column in ("rlnFourierShellCorrelationCorrected", "rlnFourierShellCorrelationUnmaskedMaps",
                   "rlnFourierShellCorrelationMaskedMaps", "rlnCorrectedFourierShellCorrelationPhaseRandomizedMaskedMaps"):
        assert column in ours["fsc"].columns and column in relion["fsc"].columns
        # the same maps and mask: the same curves (the randomised one up to its random phases)
        tolerance = 0.1 if "Random" in column or column.endswith("Corrected") else 1e-3
        assert np.abs(ours["fsc"][column].to_numpy() - relion["fsc"][column].to_numpy()).max() < tolerance, column

    def shell(general) -> float:
        return BOX * PIXEL / float(general["rlnFinalResolution"])

    assert abs(shell(ours["general"]) - shell(relion["general"])) <= 1.0, (ours["general"], relion["general"])
    assert float(ours["general"]["rlnRandomiseFrom"]) == pytest.approx(float(relion["general"]["rlnRandomiseFrom"]))
    curves = fsc_curves(read_map(out / "half1.mrc").data, read_map(out / "half2.mrc").data)
    assert curves.masked is None and torch.equal(curves.corrected, curves.unmasked)
