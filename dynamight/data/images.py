"""Particle images from MRC stacks: memory-mapped, read lazily in batches, validated up front."""

from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path

import mrcfile
import numpy as np

from ..errors import InputError
from .particles import ParticleTable

log = logging.getLogger(__name__)


def stack_shape(path: Path) -> tuple[int, int, int]:
    """``(n_images, h, w)`` of an MRC stack from its header; a 2D file is one image."""
    try:
        with mrcfile.open(path, header_only=True, permissive=True) as mrc:
            header = mrc.header
            nx, ny, nz = int(header.nx), int(header.ny), int(header.nz)
            is_volume_stack = int(header.ispg) >= 401 or (int(header.mz) not in (0, 1) and int(header.mz) != nz)
    except (ValueError, OSError) as exc:
        raise InputError(f"{path}: not a readable MRC image stack ({exc})") from exc
    if is_volume_stack or nx <= 0 or ny <= 0:
        raise InputError(f"{path}: image stack has the wrong dimensionality (nx={nx}, ny={ny}, nz={nz}, "
                         f"ispg={int(header.ispg)}); expected a stack of 2D images")
    return max(nz, 1), ny, nx


class ParticleImages:
    """Read particle images by particle index, lazily from memory-mapped stacks.

    At most ``max_open`` stacks stay open. With ``preload=True`` every image is read once into
    one contiguous float32 array per box size (the size is logged before reading).
    """

    def __init__(self, table: ParticleTable, preload: bool = False, max_open: int = 128):
        self.table = table
        self.max_open = max_open
        self._open: OrderedDict[int, mrcfile.mrcmemmap.MrcMemmap] = OrderedDict()
        self._validate()
        self._preloaded: np.ndarray | None = None
        if preload:
            self._preload()

    def _validate(self) -> None:
        """Check every stack's header once: found, 2D images of the optics group's box, long enough.
        O(particles + stacks)."""
        t = self.table
        n_stacks = len(t.stack_paths)
        last = np.full(n_stacks, -1, dtype=np.int64)
        np.maximum.at(last, t.stack_index, t.image_index)
        box = np.zeros(n_stacks, dtype=np.int64)
        box[t.stack_index] = t.box_px  # one optics group's box per stack (checked below)
        for s, path in enumerate(t.stack_paths):
            if path is None:
                raise InputError(f"{t.star_path}: image stack '{t.stack_names[s]}' not found (looked in "
                                 f"{Path.cwd()} and {t.star_path.parent})")
            n, h, w = stack_shape(path)
            if h != w or h != box[s]:
                raise InputError(f"{path}: images are {w}x{h} px; expected {box[s]}x{box[s]} "
                                 f"(rlnImageSize of the optics group in {t.star_path})")
            if last[s] >= n:
                raise InputError(f"{t.star_path}: image {last[s] + 1}@{path} is beyond the stack, which holds {n} images")

    def _preload(self) -> None:
        sizes = set(self.table.box_px.tolist())
        if len(sizes) > 1:
            log.warning("not preloading: optics groups have different box sizes %s", sorted(sizes))
            return
        d = sizes.pop()
        log.info("preloading %d images of %d px: %.2f GB in memory", len(self.table), d, len(self.table) * d * d * 4 / 1e9)
        self._preloaded = self.read(np.arange(len(self.table)))

    def _stack(self, s: int):
        mrc = self._open.get(s)
        if mrc is None:
            mrc = mrcfile.mmap(self.table.stack_paths[s], mode="r", permissive=True)
            self._open[s] = mrc
            if len(self._open) > self.max_open:
                self._open.popitem(last=False)[1].close()
        else:
            self._open.move_to_end(s)
        return mrc

    def read(self, indices: np.ndarray) -> np.ndarray:
        """Images of the given particles.

        Args:
            indices: ``(b,)`` particle indices into the table (all of one box size).

        Returns:
            ``(b, d, d)`` float32 images as stored (not centred, not CTF-corrected).

        Raises:
            InputError: an image contains NaN or infinite values.
        """
        indices = np.asarray(indices, dtype=np.int64)
        if self._preloaded is not None:
            return self._preloaded[indices]
        t = self.table
        d = int(t.box_px[indices[0]])
        out = np.empty((len(indices), d, d), dtype=np.float32)
        for i, p in enumerate(indices):
            mrc = self._stack(int(t.stack_index[p]))
            data = mrc.data
            out[i] = data[t.image_index[p]] if data.ndim == 3 else data
        if not np.isfinite(out).all():
            bad = indices[~np.isfinite(out).reshape(len(indices), -1).all(1)][0]
            raise InputError(f"{t.stack_paths[t.stack_index[bad]]}: image {t.image_index[bad] + 1} contains NaN or "
                             f"infinite values (particle {bad + 1} of {t.star_path})")
        return out

    def close(self) -> None:
        for mrc in self._open.values():
            mrc.close()
        self._open.clear()
