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
    truth = GroundTruth.read(project)
    factors = truth.factors.copy()
    factors["key"] = _image_key(starfile.read(Path(project) / "ground_truth.star", always_dict=True)["particles"]["rlnImageName"])
    latents = starfile.read(latents_star, always_dict=True)["particles"].copy()
    latents["key"] = _image_key(latents["rlnImageName"])
    table = latents.merge(factors[["key", *truth.factor_names]], on="key", how="inner", validate="one_to_one")
    codes = [c for c in latents.columns if c.startswith("rlnDynaMightLatent")]
    return table, codes, truth.factor_names


def factor_accuracy(project: Path, run_directory: Path) -> dict[int, dict[str, dict[str, float]]]:
    """``{half: {factor: {"all": |Spearman|, "held_out": |Spearman|}}}`` for a run of
    ``optimize-deformations`` (``run_directory/forward_deformations/latents.star``) on a simulated
    ``project``."""
    table, codes, factor_names = latent_factor_table(project, Path(run_directory) / "forward_deformations" / "latents.star")
    half_column = "rlnDynaMightHalfSet" if "rlnDynaMightHalfSet" in table else "rlnRandomSubset"
    result: dict[int, dict[str, dict[str, float]]] = {}
    for half in sorted(int(h) for h in table[half_column].unique()):
        rows = table[table[half_column] == half]
        z = rows[codes].to_numpy(np.float64)
        held = rows["rlnDynaMightIsValidation"].to_numpy().astype(bool) if "rlnDynaMightIsValidation" in rows \
            else np.zeros(len(rows), dtype=bool)
        everyone = np.ones(len(rows), dtype=bool)
        result[half] = {name: {"all": direction_spearman(z, rows[name].to_numpy(), everyone, everyone),
                               "held_out": direction_spearman(z, rows[name].to_numpy(), ~held, held)}
                        for name in factor_names}
    return result


def format_factor_accuracy(result: dict[int, dict[str, dict[str, float]]]) -> str:
    """One line per half and factor, for benchmarks."""
    return "\n".join(f"half {half} {name}: |Spearman| {v['all']:.3f} (held out {v['held_out']:.3f})"
                     for half, factors in result.items() for name, v in factors.items())
