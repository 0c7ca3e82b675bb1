"""Write a (C, H, W) float32 cube window by window into a file, atomically: the streaming counterpart of
:func:`csakd.data.write_cube` (the same formats, file names and metadata conventions, shared through
:func:`csakd.data.writers.output_targets` and the writers of :mod:`.io_tiff` and :mod:`.io_envi`).

Tiled fusion (:func:`csakd.inference.tiled.fuse_tiled_arrays`) hands its blocks to a :class:`CubeWriter`, so
that a scene's output is never held in memory.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from csakd.data.cube import Cube, GeoInfo
from csakd.data.io_common import atomic_paths
from csakd.data.writers import ENVI_WRITE_SUFFIXES, output_targets, write_cube
from csakd.errors import CsakdError, InputError

__all__ = ["CubeWriter"]

log = logging.getLogger(__name__)


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


class CubeWriter:
    """Write a (C, H, W) float32 cube window by window into a file, atomically (temporary file, renamed on
    :meth:`close`).

    Formats by extension: ``.tif``/``.tiff`` (rasterio, windowed writes into a tiled, band-interleaved
    GeoTIFF with crs / transform / nodata from ``geo``, band names as descriptions, wavelengths as band
    items; a planar tifffile TIFF without rasterio), ENVI ``.hdr``/``.img``/``.dat`` (float32 bsq, header
    written on close) and ``.npy``; the last three are laid out by a memory map and then filled by positioned
    writes, so written pages do not stay in the process's memory. ``.npz`` and
    ``.mat`` cannot be written in parts: the cube is then assembled in memory and written on close.
    The same metadata conventions as :func:`csakd.data.write_cube`.

    Use as a context manager (an exception removes the temporary file) or call :meth:`close` /
    :meth:`abort`. The instance is itself a ``writer`` for :func:`csakd.inference.tiled.fuse_tiled`.

    Raises:
        OutputExistsError: the output exists and ``overwrite`` is False (checked when opening).
        InputError: an unsupported extension or a bad shape.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        shape: tuple[int, int, int],
        *,
        wavelengths: np.ndarray | Sequence[float] | None = None,
        band_names: Sequence[str] | None = None,
        geo: GeoInfo | None = None,
        overwrite: bool = False,
    ) -> None:
        if len(shape) != 3 or not all(_is_int(v) and v > 0 for v in shape):
            raise InputError(f"output shape {shape!r}: expected three positive sizes (bands, height, width)")
        self.path = Path(path).expanduser()
        self.shape = (int(shape[0]), int(shape[1]), int(shape[2]))
        targets = self.check_path(self.path, overwrite=overwrite)
        suffix = self.path.suffix.lower()
        # the metadata, checked now through a Cube whose data are a zero-strided stand-in
        wl = None if wavelengths is None else np.asarray(wavelengths, dtype=np.float64)
        self._meta = Cube(np.broadcast_to(np.zeros((1, 1, 1), np.float32), self.shape), wavelengths=wl,
                          band_names=list(band_names) if band_names is not None else None, geo=geo)
        self._kind = "envi" if suffix in ENVI_WRITE_SUFFIXES else {
            ".tif": "tiff", ".tiff": "tiff", ".npy": "npy", ".npz": "memory", ".mat": "memory"}[suffix]
        self._overwrite = overwrite
        self._stack = contextlib.ExitStack()
        # .npz / .mat are assembled in memory and written by write_cube on close (atomic itself)
        self._temps: list[Path] = [] if self._kind == "memory" else self._stack.enter_context(atomic_paths(targets))
        self._array: np.ndarray | None = None
        self._planar: _PlanarFile | None = None
        self._dataset: Any = None
        self._written = 0
        self._closed = False
        try:
            self._open()
        except BaseException:
            self.abort()
            raise
        self.streaming = self._kind != "memory"
        if not self.streaming:
            log.info("%s cannot be written in parts: the %s cube is assembled in memory", suffix, self.shape)

    @staticmethod
    def check_path(path: str | os.PathLike[str], *, overwrite: bool = False) -> list[Path]:
        """Check that ``path`` has a writable extension and that its file(s) may be written; return the
        files that will be created (ENVI: the data file, then the header), as
        :func:`csakd.data.writers.output_targets` does for :func:`csakd.data.write_cube`.

        Raises:
            InputError: an unsupported extension, or a directory in the way.
            OutputExistsError: an output exists and ``overwrite`` is False.
        """
        return output_targets(path, overwrite=overwrite)

    def _open(self) -> None:
        if self._kind == "memory":
            self._array = np.zeros(self.shape, dtype=np.float32)
        elif self._kind == "npy":
            self._planar = _PlanarFile(np.lib.format.open_memmap(self._temps[0], mode="w+", dtype="<f4",
                                                                 shape=self.shape))
        elif self._kind == "envi":
            self._planar = _PlanarFile(np.memmap(self._temps[0], dtype="<f4", mode="w+", shape=self.shape))
        else:
            self._open_tiff(self._temps[0])

    def _open_tiff(self, tmp: Path) -> None:
        from csakd.data.io_tiff import gdal_env, import_rasterio, open_rasterio_writer

        _, h, w = self.shape
        rio = import_rasterio()
        if rio is None:
            self._planar = _PlanarFile(_tifffile_memmap(tmp, self._meta))
            return
        from rasterio.errors import NotGeoreferencedWarning

        tiles = {"tiled": True, "blockxsize": 256, "blockysize": 256} if h >= 256 and w >= 256 else {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            self._stack.enter_context(gdal_env(rio))  # written blocks are flushed, not held up to 5% of the RAM
            self._dataset = open_rasterio_writer(rio, tmp, self._meta, **tiles)

    @property
    def fraction_written(self) -> float:
        """The pixels written so far over the pixels of the cube (1.0 when every pixel was written once)."""
        return self._written / (self.shape[1] * self.shape[2])

    def write_window(self, rows: slice, cols: slice, block: np.ndarray) -> None:
        """Write ``block`` (C, rows, cols) at HR rows ``rows`` and columns ``cols`` (slices with step 1)."""
        if self._closed:
            raise CsakdError(f"{self.path}: the writer is closed")
        c, h, w = self.shape
        r0, r1, rstep = rows.indices(h)
        c0, c1, cstep = cols.indices(w)
        block = np.asarray(block)
        if rstep != 1 or cstep != 1 or block.shape != (c, r1 - r0, c1 - c0) or r1 <= r0 or c1 <= c0:
            raise InputError(
                f"block of shape {block.shape} at rows {rows}, cols {cols}: expected ({c}, rows, cols) inside "
                f"the {h}x{w} output"
            )
        if self._dataset is not None:
            from rasterio.windows import Window

            self._dataset.write(np.ascontiguousarray(block, dtype=np.float32),
                                window=Window(c0, r0, c1 - c0, r1 - r0))
        elif self._planar is not None:
            self._planar.write(r0, c0, block)
        else:
            assert self._array is not None
            self._array[:, r0:r1, c0:c1] = block
        self._written += (r1 - r0) * (c1 - c0)

    __call__ = write_window

    def close(self) -> Path:
        """Finish the file and move it onto its name; raise if not every pixel was written exactly once."""
        if self._closed:
            return self.path
        if self._written != self.shape[1] * self.shape[2]:
            self.abort()
            raise CsakdError(
                f"{self.path}: {self._written} pixel writes for {self.shape[1] * self.shape[2]} pixels; "
                "the output was not created"
            )
        try:
            self._finish()
        except BaseException:
            self.abort()
            raise
        self._closed = True
        self._stack.close()  # renames the temporary files onto their targets
        log.info("wrote %s: %s", self.path, self.shape)
        return self.path

    def _finish(self) -> None:
        if self._dataset is not None:
            self._dataset.close()
            self._dataset = None
        elif self._kind in ("npy", "envi"):
            assert self._planar is not None
            self._planar.close()
            self._planar = None
            if self._kind == "envi":
                from csakd.data.io_envi import write_envi_header

                write_envi_header(self.path, self._temps[1], self._meta)
        elif self._kind == "memory":
            assert self._array is not None
            cube = Cube(self._array, wavelengths=self._meta.wavelengths, band_names=self._meta.band_names,
                        geo=self._meta.geo)
            write_cube(self.path, cube, overwrite=self._overwrite)
            self._array = None
        else:  # a tifffile-made planar TIFF
            assert self._planar is not None
            self._planar.close()
            self._planar = None

    def abort(self) -> None:
        """Drop everything written: the temporary files are removed, the target is left as it was."""
        if self._closed:
            return
        self._closed = True
        if self._dataset is not None:
            with contextlib.suppress(Exception):
                self._dataset.close()
            self._dataset = None
        if self._planar is not None:
            self._planar.close()
            self._planar = None
        self._array = None
        error = CsakdError("aborted")
        self._stack.__exit__(type(error), error, None)

    def __enter__(self) -> CubeWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class _PlanarFile:
    """Positioned writes into the (C, H, W) float32 array that a memory map laid out in a file.

    The map only creates the file (header and size) and gives the data's offset; it is then dropped, and
    blocks go in with ``os.pwrite``. Written pages stay in the kernel's page cache, not in this process:
    through a live map every written page would count in the process's resident memory until the end.
    """

    def __init__(self, mapped: np.memmap) -> None:
        if not isinstance(mapped, np.memmap) or mapped.dtype != np.dtype("<f4") or mapped.ndim != 3:
            raise CsakdError("internal: expected a 3-D little-endian float32 memory map")
        self.shape = tuple(int(v) for v in mapped.shape)
        self.offset = int(mapped.offset)
        filename = mapped.filename
        mapped.flush()
        del mapped
        self._fd: int | None = os.open(str(filename), os.O_WRONLY | getattr(os, "O_BINARY", 0))

    def write(self, r0: int, c0: int, block: np.ndarray) -> None:
        """Write ``block`` (C, rows, cols) with its top-left corner at row ``r0``, column ``c0``."""
        assert self._fd is not None
        _, h, w = self.shape
        data = np.ascontiguousarray(block, dtype="<f4")
        rows, cols = data.shape[1:]
        for b in range(data.shape[0]):
            start = self.offset + 4 * ((b * h + r0) * w + c0)
            if cols == w:  # whole rows: one contiguous run per band
                _pwrite_all(self._fd, data[b].tobytes(), start)
            else:
                for r in range(rows):
                    _pwrite_all(self._fd, data[b, r].tobytes(), start + 4 * r * w)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def _tifffile_memmap(tmp: Path, meta: Cube) -> np.memmap:
    """A planar-separate float32 TIFF memory map with the GDAL items :mod:`csakd.data.io_tiff` reads."""
    import tifffile

    from csakd.data.io_tiff import tifffile_extratags

    extratags = tifffile_extratags(meta)
    tmp.unlink(missing_ok=True)
    nbytes = math.prod(meta.data.shape) * 4
    mm = tifffile.memmap(str(tmp), shape=meta.data.shape, dtype=np.float32, photometric="minisblack",
                         planarconfig="separate", extratags=extratags, bigtiff=nbytes > 2**32 - 2**25)
    if not isinstance(mm, np.memmap):
        raise CsakdError(f"{tmp}: tifffile did not give a memory map of the new file")
    return mm
