"""The latent-space analysis and the explorer at 100,000-1,000,000 particles: time and peak memory
of writing and reading latents.star, of the headless analysis (``explore-latent-space --headless``:
embedding, clusters, properties, plots, maps, subsets), of opening the explorer window and of its
interactions; and how far the movement properties interpolated from a sample of the particles
(:mod:`dynamight.analysis.sampling`) are from the exactly decoded ones.

A small run is trained first (the 3hsy hinge, 400 particles, box 64, 3 Å/px, 2 epochs), or ``--run``
names a trained one (e.g. ``real_structure.py --keep``'s, whose codes hold a learnt motion); its
latents.star is then grown to each size: the rows repeated, each with a code drawn from the trained
codes plus noise (0.05 per dimension), a random half-set and 10% validation particles.

    python benchmarks/explorer_scale.py [--particles 100000 1000000] [--n-gaussians 1500] [--keep DIR]
        [--run RUN] [--skip-window]

The window part needs a display (``xvfb-run -a python benchmarks/explorer_scale.py``); without one it is skipped.

Measured on the 2-core CPU (``--run`` = the 3hsy hinge run of ``real_structure.py --seed 1``: 1,500
Gaussians, 6 dimensions; two 1-thread trainings sharing the cores, so times are upper bounds), at
1,000,000 particles: latents.star written in 43 s (197 MB); headless analysis of half-set 1 (500,642
particles) 154 s and of half-set 0 (100,000 validation particles) 489 s, peak memory 2.0 GB each;
interpolated movement amount against the decoded one: median error 0.066 Å, 90th percentile 0.18 Å
(the amounts' 10-90% spread 3.3 Å); the window opened in 91 s, a recolouring 0.6 s, a click 4.3 s,
each mouse move while drawing 0.02 s, counting a region of 169,684 particles 2.5 s. Before the
sampling: decoding every particle's movement alone took about 15 minutes (hours at 30,000 Gaussians),
the report's PDF 190 s, and every mouse move while drawing redrew the plot (4 s at 1,000,000 points).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import starfile

from dynamight.cli import main as dynamight

from scale import measure


def trained_run(root: Path, n_gaussians: int) -> Path:
    run = root / "run"
    if not (run / "forward_deformations" / "latents.star").is_file():
        assert dynamight(["simulate", "--output-directory", str(root / "data"), "--n-particles", "400",
                          "--box-size", "64", "--pixel-size", "3", "--snr", "0.3", "--motion", "hinge",
                          "--atomic-model", "3hsy", "--moving-chain", "B", "--seed", "0"]) == 0
        assert dynamight(["optimize-deformations", "--refinement-star-file", str(root / "data" / "particles.star"),
                          "--output-directory", str(run), "--initial-model", str(root / "data" / "map.mrc"),
                          "--n-gaussians", str(n_gaussians), "--n-epochs", "2", "--batch-size", "64"]) == 0
    return run


def grown_latents(run: Path, m: int, out: Path) -> float:
    """Write ``out``: the run's latents.star grown to ``m`` particles; returns the seconds it took."""
    start = time.perf_counter()
    tables = starfile.read(run / "forward_deformations" / "latents.star")
    small = tables["particles"]
    rng = np.random.default_rng(0)
    big = small.iloc[np.arange(m) % len(small)].reset_index(drop=True)
    latent = [c for c in small.columns if c.startswith("rlnDynaMightLatent")]
    codes = small[latent].to_numpy()
    big[latent] = codes[rng.integers(0, len(small), m)] + 0.05 * rng.standard_normal((m, len(latent)))
    big["rlnDynaMightHalfSet"] = rng.integers(1, 3, m)
    big["rlnDynaMightIsValidation"] = (rng.random(m) < 0.1).astype(int)
    big["rlnRandomSubset"] = big["rlnDynaMightHalfSet"]
    starfile.write({"optics": tables["optics"], "particles": big}, out)
    return time.perf_counter() - start


def interpolation_error(run: Path, latents: Path, n_check: int = 1000) -> str:
    """Interpolated against exactly decoded movement of ``n_check`` particles outside the sample."""
    import torch

    from dynamight.analysis.decoding import ConformationDecoder
    from dynamight.analysis.latents import read_latent_set
    from dynamight.analysis.properties import MOVEMENT_SAMPLE, movement
    from dynamight.analysis.sampling import reference_sample

    chosen = read_latent_set(latents, 1)
    group = chosen.table.optics_groups[0]
    decoder = ConformationDecoder.load(run / "forward_deformations" / "checkpoints" / "checkpoint_final.pth",
                                       group.box_px, group.pixel_size_angstrom, torch.device("cpu"))
    interpolated = movement(decoder, chosen, 512)
    outside = np.setdiff1d(np.arange(len(chosen)), reference_sample(len(chosen), MOVEMENT_SAMPLE))
    if len(outside) == 0:
        return f"movement of {len(chosen)} particles: every one decoded (at most {MOVEMENT_SAMPLE} per half)"
    check = np.random.default_rng(1).choice(outside, min(n_check, len(outside)), replace=False)
    exact = movement(decoder, _subset(chosen, check), 512, sample=len(check))
    lines = []
    for key in ("amount", "location"):
        error = np.abs(interpolated[key][check] - exact[key])
        spread = np.subtract(*np.percentile(exact[key], [90, 10]))
        lines.append(f"{key}: median |interpolated - exact| {np.median(error):.3f} Å, 90th percentile "
                     f"{np.percentile(error, 90):.3f} Å (10-90% spread of the exact values {spread:.3f} Å)")
    return f"movement of {len(chosen)} particles (exact for {MOVEMENT_SAMPLE} per half): " + "; ".join(lines)


def _subset(latents, rows: np.ndarray):
    from dataclasses import replace

    return replace(latents, rows=latents.rows[rows], z=latents.z[rows], half=latents.half[rows],
                   validation=latents.validation[rows], error_estimate=latents.error_estimate[rows])


def window(run: Path, latents: Path) -> str:
    """Open the explorer on half-set 1 of ``latents``; time the opening, a recolouring, a click and
    a drawn region (press, 30 moves, release)."""
    from qtpy.QtCore import QPoint, Qt
    from qtpy.QtTest import QTest
    from qtpy.QtWidgets import QApplication

    from dynamight.analysis.space import open_latent_space
    from dynamight.viewer.window import Explorer

    start = time.perf_counter()
    space = open_latent_space(run / "forward_deformations" / "checkpoints" / "checkpoint_final.pth", latents, 1)
    explorer = Explorer(space, run / "explorer_scale", show=True)
    QApplication.processEvents()
    panel = explorer.panel
    panel.canvas.draw()
    opened = time.perf_counter() - start

    def at(xy) -> QPoint:
        x, y = panel.axes.transData.transform(np.asarray(xy, dtype=float))
        ratio = panel.canvas.device_pixel_ratio
        return QPoint(int(round(x / ratio)), int(round((panel.figure.bbox.height - y) / ratio)))

    timings = {}
    start = time.perf_counter()
    panel.colour_box.setCurrentIndex(panel.colour_box.findData("density"))
    panel.canvas.draw()
    timings["recolour"] = time.perf_counter() - start
    coords = space.embedding.coords
    centre, spread = np.median(coords, 0), coords.std(0)
    start = time.perf_counter()
    QTest.mouseClick(panel.canvas, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, at(centre))
    QApplication.processEvents()
    timings["click (decode and show the particle)"] = time.perf_counter() - start
    panel.action_box.setCurrentIndex(panel.action_box.findData("count"))
    angles = np.linspace(0, 2 * np.pi, 31)
    ring = centre + 0.8 * spread * np.stack([np.cos(angles), np.sin(angles)], 1)
    start = time.perf_counter()
    QTest.mousePress(panel.canvas, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, at(ring[0]))
    QApplication.processEvents()
    timings["press (start drawing)"] = time.perf_counter() - start
    start = time.perf_counter()
    for point in ring[1:]:
        QTest.mouseMove(panel.canvas, at(point))
        QApplication.processEvents()
    timings["per mouse move while drawing"] = (time.perf_counter() - start) / (len(ring) - 1)
    start = time.perf_counter()
    QTest.mouseRelease(panel.canvas, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, at(ring[-1]))
    QApplication.processEvents()
    timings["release (count the region)"] = time.perf_counter() - start
    status = panel.status.text()
    explorer.close()
    return (f"window on {len(space.latents)} particles: opened in {opened:.1f} s; "
            + "; ".join(f"{k} {v:.2f} s" for k, v in timings.items()) + f" ({status})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--particles", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--n-gaussians", type=int, default=1500)
    parser.add_argument("--keep", type=Path, default=None)
    parser.add_argument("--run", type=Path, default=None,
                        help="an existing optimize-deformations run to grow (default: train the small one); "
                             "its latent_space/ is overwritten")
    parser.add_argument("--skip-window", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        run = args.run or trained_run(root, args.n_gaussians)
        for m in args.particles:
            latents = root / f"latents_{m}.star"
            seconds = grown_latents(run, m, latents)
            print(f"\n{m} particles: latents.star written in {seconds:.1f} s ({latents.stat().st_size / 2**20:.0f} MB)",
                  flush=True)
            for half in (1, 0):
                cost = measure(["explore-latent-space", str(run), "--latents-file", str(latents), "--half-set",
                                 str(half), "--headless"])
                print(f"  headless analysis of half-set {half}: {cost['seconds']:.1f} s, peak memory "
                      f"{cost['peak_rss_mb']:.0f} MB", flush=True)
            print("  " + interpolation_error(run, latents), flush=True)
            if args.skip_window or not os.environ.get("DISPLAY"):
                print("  window: skipped (no display; run under xvfb-run -a)")
            else:
                print("  " + window(run, latents), flush=True)


if __name__ == "__main__":
    main()
