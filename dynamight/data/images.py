"""Particle images from MRC stacks: read lazily, image by image, in batches; validated up front.

Images are read with positional reads (``os.pread``) rather than memory maps: a memory map's pages
stay in the process's resident memory once touched, so a pass over a dataset larger than RAM
would grow with the dataset. Here a process holds only the batches it is working on.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import mrcfile
import mrcfile.utils
import numpy as np

from ..errors import InputError
from ..memory import proc_bytes
from .particles import ParticleTable, search_folders

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


@dataclass
class _Stack:
    """An open MRC stack: file descriptor, data offset (bytes), image dtype and shape."""

    fd: int
    offset: int
    dtype: np.dtype
    shape: tuple[int, int]

    @classmethod
    def open(cls, path: Path) -> "_Stack":
        with mrcfile.open(path, header_only=True, permissive=True) as mrc:
            header = mrc.header
            dtype = mrcfile.utils.data_dtype_from_header(header)
            offset = header.nbytes + int(header.nsymbt)
            shape = (int(header.ny), int(header.nx))
        return cls(os.open(path, os.O_RDONLY), offset, dtype, shape)

    def read(self, image: int) -> np.ndarray:
        size = self.shape[0] * self.shape[1] * self.dtype.itemsize
        data = os.pread(self.fd, size, self.offset + image * size)
        return np.frombuffer(data, dtype=self.dtype).reshape(self.shape)

    def close(self) -> None:
        os.close(self.fd)


def available_memory_bytes() -> int | None:
    """``MemAvailable`` of ``/proc/meminfo`` (``None`` where there is no such file)."""
    return proc_bytes(Path("/proc/meminfo"), "MemAvailable")


class ParticleImages:
    """Read particle images by particle index, lazily, with positional reads from the stacks.

    At most ``max_open`` stacks stay open. With ``preload=True`` every image is read once into
    one contiguous float32 array (the size is logged before reading; if it would take more than
    80% of the available memory the images stay on disk, with a warning).
    """

    def __init__(self, table: ParticleTable, preload: bool = False, max_open: int = 128):
        self.table = table
        self.max_open = max_open
        self._open: OrderedDict[int, _Stack] = OrderedDict()
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
                                 f"{', '.join(str(f) for f in search_folders(t.star_path))})")
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
        needed, available = len(self.table) * d * d * 4, available_memory_bytes()
        if available is not None and needed > 0.8 * available:
            log.warning("not preloading: %d images of %d px need %.2f GB, more than 80%% of the %.2f GB of memory "
                        "available; reading them from disk instead", len(self.table), d, needed / 1e9, available / 1e9)
            return
        log.info("preloading %d images of %d px: %.2f GB in memory", len(self.table), d, needed / 1e9)
        preloaded = np.empty((len(self.table), d, d), dtype=np.float32)
        for start in range(0, len(self.table), 4096):
            rows = np.arange(start, min(start + 4096, len(self.table)))
            preloaded[rows] = self.read(rows)
        self._preloaded = preloaded

    def _stack(self, s: int) -> _Stack:
        stack = self._open.get(s)
        if stack is None:
            stack = _Stack.open(self.table.stack_paths[s])
            self._open[s] = stack
            if len(self._open) > self.max_open:
                self._open.popitem(last=False)[1].close()
        else:
            self._open.move_to_end(s)
        return stack

    def read(self, indices: np.ndarray) -> np.ndarray:
        """Images of the given particles.

        Args:
            indices: ``(b,)`` particle indices into the table (all of one box size).

        Returns:
            ``(b, d, d)`` float32 images as stored, times the table's ``image_sign`` (not centred,
            not CTF-corrected).

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
            out[i] = self._stack(int(t.stack_index[p])).read(int(t.image_index[p]))
        if t.image_sign is not None:
            out *= t.image_sign[indices, None, None].astype(np.float32)
        if not np.isfinite(out).all():
            bad = indices[~np.isfinite(out).reshape(len(indices), -1).all(1)][0]
            raise InputError(f"{t.stack_paths[t.stack_index[bad]]}: image {t.image_index[bad] + 1} contains NaN or "
                             f"infinite values (particle {bad + 1} of {t.star_path})")
        return out

    def close(self) -> None:
        for stack in self._open.values():
            stack.close()
        self._open.clear()

    def __del__(self) -> None:
        self.close()
