"""Defaults that run: a default chooses well (the first GPU, else the CPU; as many Gaussians as the
map supports, up to the default, with a warning); only a value the user typed that cannot work is
an error."""

from __future__ import annotations

import logging

import pytest
import torch

from dynamight.commands import optimize_deformations
from dynamight.errors import InputError
from dynamight.model.gaussians import DEFAULT_N_GAUSSIANS, fit_gaussians, gaussian_count
from dynamight.runtime import resolve_device
from relion_external.registry import SPECS
from relion_external.spec import parse_arguments

from .test_schemes import read_scheme, substitute


def test_default_gaussians_are_capped_by_the_map_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        assert gaussian_count(None, 326, 0.5) == 326
    assert "only 326 voxels above the threshold 0.5: fitting 326 Gaussians instead of the default" in caplog.text
    assert gaussian_count(None, 10**6, 0.5) == DEFAULT_N_GAUSSIANS
    assert gaussian_count(5000, 10**6, 0.5) == 5000


def test_a_typed_number_of_gaussians_the_map_cannot_hold_is_an_error():
    with pytest.raises(InputError, match="--n-gaussians 10000: only 3226 voxels of the consensus map are above"):
        gaussian_count(10000, 3226, 0.1)
    with pytest.raises(InputError, match="only 1 voxel"):
        gaussian_count(None, 1, 0.1)


def test_fit_with_the_default_count_on_a_small_map():
    volume = torch.zeros(16, 16, 16)
    volume[6:10, 6:10, 6:10] = 1.0  # 64 voxels of density
    gaussians, _ = fit_gaussians(volume, 4.0, None, threshold=0.5, n_steps=10)
    assert len(gaussians) == 64
    atoms = torch.randn(100, 3) * 4  # an atomic model: one Gaussian per atom, whatever the map's size
    assert len(fit_gaussians(volume, 4.0, None, threshold=0.5, n_steps=10, fixed_positions=atoms)[0]) == 100


def test_the_engine_tells_a_default_from_a_typed_value(tmp_path):
    given = {"refinement_star_file": tmp_path / "p.star", "output_directory": tmp_path}
    assert optimize_deformations.Config(**given).n_gaussians is None
    assert optimize_deformations.Config(**given, n_gaussians=DEFAULT_N_GAUSSIANS).n_gaussians == DEFAULT_N_GAUSSIANS
    assert optimize_deformations.Config(**given).gpu_id is None


def test_default_device_is_the_first_gpu_else_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert resolve_device(None) == torch.device("cpu") and resolve_device(-1) == torch.device("cpu")
    with pytest.raises(InputError, match="GPU 0 requested .* this machine has 0 GPU"):
        resolve_device(0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device(None) == torch.device("cuda:0") and resolve_device(1) == torch.device("cuda:1")


@pytest.mark.parametrize("name", ["dynamight", "dynamight_from_refine"])
def test_the_schemes_leave_device_and_gaussians_to_the_defaults(name):
    """The Schemes' ``gpu_id`` and ``n_gaussians`` are empty: RELION passes a bare ``--gpu_id``,
    which the executables read as "not given"."""
    scheme = read_scheme(name)
    assert scheme.variables["gpu_id"] == scheme.variables["n_gaussians"] == ("strings", "")
    for job, (label, options) in scheme.jobs.items():
        if label != "relion.external":
            continue
        spec = SPECS[options["fn_exe"]]
        argv = ["--o", "External/job099/", *(w for i in spec.inputs if i.required for w in (f"--{i.flag}", "in"))]
        for i in range(1, 11):
            if options.get(f"param{i}_label"):
                argv += [f"--{options[f'param{i}_label']}", *substitute(scheme, options[f"param{i}_value"]).split()]
        params = parse_arguments(spec, argv).params
        assert params["gpu_id"] is None and params.get("n_gaussians") is None, f"{name}/{job}: {params}"
