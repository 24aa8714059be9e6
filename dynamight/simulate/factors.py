"""How well a latent space finds a simulation's true factors (any number of them).

For each half-set and each true factor (``ground_truth.star``'s motion parts: the hinge angle, the
bend curvature, each of two hinge angles...), the best linear direction of the latent space is
fitted by least squares (codes plus a constant -> factor) and scored by |Spearman| between the
codes projected on it and the factor. ``all``: fitted and scored on every particle of the half;
``held_out``: fitted on the half's training particles, scored on its held-out ones
(``rlnDynaMightIsValidation``), whose codes come from the encoder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import starfile

from .evaluate import spearman
from .truth import GroundTruth


def direction_spearman(codes: np.ndarray, factor: np.ndarray, fit: np.ndarray, score: np.ndarray) -> float:
    """``(m, l)`` codes, ``(m,)`` true factor, ``(m,)`` bool rows to fit on and to score on ->
    |Spearman| of the best linear direction (NaN with fewer than 3 rows to score)."""
    design = np.concatenate([codes, np.ones((len(codes), 1))], axis=1)
    if score.sum() < 3 or fit.sum() <= design.shape[1]:
        return float("nan")
    coef, *_ = np.linalg.lstsq(design[fit], factor[fit], rcond=None)
    return abs(spearman(design[score] @ coef, factor[score]))


def _image_key(names: pd.Series) -> pd.Series:
    """``000012@Particles/particles_0000.mrcs`` -> ``12@particles_0000.mrcs`` (paths may differ)."""
    def key(name: str) -> str:
        index, _, stack = name.partition("@")
        return f"{int(index)}@{Path(stack).name}"

    return names.map(key)


def latent_factor_table(project: Path, latents_star: Path) -> tuple[pd.DataFrame, list[str], list[str]]:
    """The latent table joined with the true factors by image name (any row order).

    Returns the table, the latent columns and the factor columns."""
    factors, factor_names = true_factors(project)
    latents = starfile.read(latents_star, always_dict=True)["particles"].copy()
    latents["key"] = _image_key(latents["rlnImageName"])
    table = latents.merge(factors, on="key", how="inner", validate="one_to_one")
    codes = [c for c in latents.columns if c.startswith("rlnDynaMightLatent")]
    return table, codes, factor_names


def true_factors(project: Path) -> tuple[pd.DataFrame, list[str]]:
    """The simulation's true factors, one row per particle with the join ``key`` of its image name
    (``12@particles_0000.mrcs``), and the factor columns' names."""
    truth = GroundTruth.read(project)
    factors = truth.factors[truth.factor_names].copy()
    names = starfile.read(Path(project) / "ground_truth.star", always_dict=True)["particles"]["rlnImageName"]
    factors["key"] = _image_key(names).to_numpy()
    return factors, truth.factor_names


def accuracy_by_half(codes: np.ndarray, factors: pd.DataFrame, halves: np.ndarray,
                     held_out: np.ndarray) -> dict[int, dict[str, dict[str, float]]]:
    """``(m, l)`` codes, ``factors`` (m rows: one column per true factor), ``(m,)`` half-set labels,
    ``(m,)`` bool held-out rows -> ``{half: {factor: {"all": |Spearman|, "held_out": |Spearman|}}}``
    (each half's best linear direction; ``held_out``: fitted on the others, scored on these)."""
    codes = np.asarray(codes, dtype=np.float64)
    halves, held_out = np.asarray(halves), np.asarray(held_out).astype(bool)
    result: dict[int, dict[str, dict[str, float]]] = {}
    for half in sorted(int(h) for h in np.unique(halves)):
        rows = halves == half
        z, held = codes[rows], held_out[rows]
        everyone = np.ones(len(z), dtype=bool)
        result[half] = {name: {"all": direction_spearman(z, factors[name].to_numpy()[rows], everyone, everyone),
                               "held_out": direction_spearman(z, factors[name].to_numpy()[rows], ~held, held)}
                        for name in factors.columns if name != "key"}
    return result


def factor_accuracy(project: Path, run_directory: Path) -> dict[int, dict[str, dict[str, float]]]:
    """``{half: {factor: {"all": |Spearman|, "held_out": |Spearman|}}}`` for a run of
    ``optimize-deformations`` (``run_directory/forward_deformations/latents.star``) on a simulated
    ``project``."""
    table, codes, factor_names = latent_factor_table(project, Path(run_directory) / "forward_deformations" / "latents.star")
    half_column = "rlnDynaMightHalfSet" if "rlnDynaMightHalfSet" in table else "rlnRandomSubset"
    held = table["rlnDynaMightIsValidation"].to_numpy().astype(bool) if "rlnDynaMightIsValidation" in table \
        else np.zeros(len(table), dtype=bool)
    return accuracy_by_half(table[codes].to_numpy(np.float64), table[factor_names], table[half_column].to_numpy(),
                            held)


def format_factor_accuracy(result: dict[int, dict[str, dict[str, float]]]) -> str:
    """One line per half and factor, for benchmarks."""
    return "\n".join(f"half {half} {name}: |Spearman| {v['all']:.3f} (held out {v['held_out']:.3f})"
                     for half, factors in result.items() for name, v in factors.items())
