"""The reconstruction steps' memory estimate (:func:`dynamight.memory.reconstruction_bytes`) bounds
the measured peak of the reconstruction itself (both halves' accumulators, a cluster's warp, the
Wiener-filtered division), measured in a fresh process at box 96."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from dynamight.memory import RECONSTRUCTION_BASE_BYTES, reconstruction_bytes

MEASURE = r"""
import json, sys, torch
from dynamight.training.step_memory import _high_water_bytes, _reset_high_water
from dynamight.reconstruction.deformable import ClusterWarper, DeformableAccumulator
from dynamight.reconstruction.fourier_slice import FourierBackprojector
from dynamight.reconstruction.plain import half_maps_from
from dynamight.memory import proc_bytes
from pathlib import Path

box, deformable = int(sys.argv[1]), sys.argv[2] == "deformable"
torch.manual_seed(0)
centres = torch.randn(500, 3) * box * 0.3
rotations = torch.linalg.qr(torch.randn(64, 3, 3))[0]
spectra = torch.randn(64, box, box, dtype=torch.complex64)
weights = torch.rand(64, box, box)
warper = ClusterWarper(centres, box, 2.0, 2, 6.0) if deformable else None
_reset_high_water()
start = _high_water_bytes()
if deformable:
    halves = [DeformableAccumulator(box) for _ in range(2)]
    for half in halves:
        for _ in range(2):  # two clusters
            half.cluster.insert(spectra, weights, rotations)
            half.finish_cluster(warper, torch.randn(500, 3))
        half.release_cluster()
else:
    halves = [FourierBackprojector(box) for _ in range(2)]
    for half in halves:
        half.insert(spectra, weights, rotations)
half_maps_from(halves[0], halves[1], box, 2.0)
print(json.dumps({"increase": _high_water_bytes() - start}))
"""


@pytest.mark.parametrize("kind", ["plain", "deformable"])
def test_estimate_bounds_the_measured_peak(kind):
    box = 96
    done = subprocess.run([sys.executable, "-c", MEASURE, str(box), kind], capture_output=True, text=True, check=True)
    measured = json.loads(done.stdout.strip().splitlines()[-1])["increase"]
    predicted = reconstruction_bytes(box, deformable=kind == "deformable", batch_size=64) - RECONSTRUCTION_BASE_BYTES
    assert measured <= predicted, (measured, predicted)
    assert predicted <= 2 * measured, (measured, predicted)
