"""2D embeddings of latent codes (PCA, or UMAP when ``umap-learn`` is installed), and the way
back from a 2D point to a latent code."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError

METHODS = ("PCA", "UMAP")


@dataclass
class Embedding:
    """A 2D embedding of ``m`` codes, and the PCA of the codes (the main latent directions).

    Attributes:
        method: "PCA" or "UMAP".
        coords: ``(m, 2)`` embedded points (PCA: scores along the first two principal directions).
        codes: ``(m, l)`` the embedded codes.
        mean: ``(l,)`` mean code.
        components: ``(2, l)`` unit principal directions (a zero row when ``l == 1``).
        std: ``(2,)`` standard deviation of the codes along each direction.
        explained: ``(2,)`` fraction of the codes' variance along each direction.
    """

    method: str
    coords: np.ndarray
    codes: np.ndarray
    mean: np.ndarray
    components: np.ndarray
    std: np.ndarray
    explained: np.ndarray

    def scores(self, z: np.ndarray) -> np.ndarray:
        """``(p, l)`` codes -> ``(p, 2)`` coordinates along the principal directions."""
        return (np.asarray(z, dtype=np.float64) - self.mean) @ self.components.T

    def to_latent(self, points: np.ndarray, k: int = 10) -> np.ndarray:
        """``(p, 2)`` points of the embedding -> ``(p, l)`` codes.

        PCA: the exact inverse (the mean plus the two directions). UMAP: the inverse-distance
        weighted mean of the ``k`` nearest embedded particles' codes.
        """
        points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        if self.method == "PCA":
            return (self.mean + points @ self.components).astype(np.float32)
        k = min(k, len(self.coords))
        distance = np.linalg.norm(points[:, None] - self.coords[None], axis=-1)
        nearest = np.argsort(distance, axis=1)[:, :k]
        weight = 1.0 / (np.take_along_axis(distance, nearest, 1) + 1e-9)
        weight /= weight.sum(1, keepdims=True)
        return np.einsum("pk,pkl->pl", weight, self.codes[nearest]).astype(np.float32)

    def direction_codes(self, direction: int, n_frames: int, extent_std: float = 2.0) -> np.ndarray:
        """``(n_frames, l)`` codes from ``-extent_std`` to ``+extent_std`` standard deviations along
        principal direction ``direction`` (0 or 1) through the mean code."""
        steps = np.linspace(-extent_std, extent_std, n_frames) * self.std[direction]
        return (self.mean + steps[:, None] * self.components[direction]).astype(np.float32)


def principal_directions(z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """PCA of ``(m, l)`` codes: mean ``(l,)``, components ``(2, l)`` (each with its largest
    loading positive), std ``(2,)`` and explained variance fractions ``(2,)``."""
    z = np.asarray(z, dtype=np.float64)
    mean = z.mean(0)
    _, s, vt = np.linalg.svd(z - mean, full_matrices=False)
    signs = np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(1)])
    vt = vt * np.where(signs == 0, 1.0, signs)[:, None]
    components = np.zeros((2, z.shape[1]))
    std = np.zeros(2)
    explained = np.zeros(2)
    n = min(2, len(vt))
    components[:n] = vt[:n]
    variance = s**2 / max(len(z) - 1, 1)
    std[:n] = np.sqrt(variance[:n])
    explained[:n] = variance[:n] / max(variance.sum(), 1e-30)
    return mean, components, std, explained


def embed(z: np.ndarray, method: str = "PCA", seed: int = 0, basis: np.ndarray | None = None) -> Embedding:
    """Embed ``(m, l)`` codes in 2D.

    ``basis``: ``(p, l)`` codes whose principal directions are used (default: ``z``'s own), e.g. all
    of the reference model's particles when ``z`` is the smaller validation set.

    Raises:
        InputError: an unknown method, or UMAP without ``umap-learn`` installed.
    """
    if method not in METHODS:
        raise InputError(f"--dimensionality-reduction-method {method}: expected one of {', '.join(METHODS)}")
    z = np.asarray(z, dtype=np.float32)
    mean, components, std, explained = principal_directions(z if basis is None else basis)
    if method == "PCA":
        coords = (z - mean) @ components.T
    else:
        coords = _umap(z, seed)
    return Embedding(method, np.asarray(coords, dtype=np.float64), z, mean, components, std, explained)


def _umap(z: np.ndarray, seed: int) -> np.ndarray:
    try:
        import umap
    except ImportError as exc:
        raise InputError("--dimensionality-reduction-method UMAP needs the umap-learn package "
                         "(pip install umap-learn); PCA works without it") from exc
    if len(z) < 4:
        raise InputError(f"UMAP needs at least 4 particles; this half-set has {len(z)} (use PCA)")
    reducer = umap.UMAP(n_components=2, n_neighbors=min(15, len(z) - 1), random_state=seed)
    return reducer.fit_transform(z)
