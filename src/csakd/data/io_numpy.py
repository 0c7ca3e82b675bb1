"""NumPy ``.npy`` and ``.npz`` files.

Conventions:

* ``.npy``: one array, bands first ``(C, H, W)`` unless ``layout="hwc"``; no wavelengths.
* ``.npz``: the cube is the array named by ``variable`` or the only 3-D numeric array (bands first unless
  ``layout="hwc"``); an optional 1-D array named ``wavelengths`` (or ``wavelength``, ``wl``, ``lambda``) of
  length C gives the wavelengths (nm, or micrometres if all below 20), and an optional 1-D string array
  ``band_names`` the band names. :func:`write_npz` writes ``data``, ``wavelengths`` and ``band_names``.

Array headers are read before any data, so wrong shapes, object arrays and absurd sizes are refused
without loading the file.
"""

from __future__ import annotations

import logging
import math
import zipfile
from pathlib import Path
from typing import IO, Literal

import numpy as np

from csakd.data.cube import Cube, check_allocation
from csakd.data.io_common import (
    atomic_paths,
    check_numeric_dtype,
    is_wavelength_name,
    select_variable,
    to_chw,
)
from csakd.errors import InputError

__all__ = ["read_npy", "read_npz", "write_npy", "write_npz"]

logger = logging.getLogger(__name__)


def _read_npy_header(fh: IO[bytes], what: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    """Read the header of an ``.npy`` stream: (shape, fortran_order, dtype); leaves ``fh`` at the data."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(fh)
        else:
            raise InputError(f"{what}: .npy format version {version} is not supported (expected 1.0 or 2.0)")
    except InputError:
        raise
    except Exception as exc:  # numpy raises ValueError/EOFError/SyntaxError on damaged headers
        raise InputError(f"{what} is not a readable .npy file (damaged or truncated header): {exc}") from exc
    return tuple(int(s) for s in shape), bool(fortran), np.dtype(dtype)


def read_npy(path: Path, layout: Literal["chw", "hwc"], dtype: np.dtype) -> Cube:
    """Read a ``.npy`` cube, ``(C, H, W)`` for ``layout="chw"`` or ``(H, W, C)`` for ``"hwc"``.

    Raises:
        InputError: empty/truncated/damaged file, object or non-numeric dtype, not 3-D, zero bands, or too
            large for memory (checked from the header, before loading).
    """
    what = str(path)
    size = path.stat().st_size
    if size == 0:
        raise InputError(f"{what} is empty (0 bytes): expected a .npy array")
    with open(path, "rb") as fh:
        shape, _fortran, dt = _read_npy_header(fh, what)
        offset = fh.tell()
    check_numeric_dtype(dt, what)
    if len(shape) != 3:
        raise InputError(
            f"{what} holds a {len(shape)}-D array of shape {shape}: expected a 3-D cube "
            "(bands, height, width), or (height, width, bands) with layout='hwc'"
        )
    check_allocation(shape, max(dt.itemsize, np.dtype(dtype).itemsize), what)
    expected = offset + math.prod(shape) * dt.itemsize
    if size < expected:
        raise InputError(
            f"{what} is truncated: its header declares shape {shape} of {dt} ({expected} bytes with the "
            f"header) but the file has {size} bytes"
        )
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:
        raise InputError(f"{what} could not be read as .npy: {exc}") from exc
    data = to_chw(np.asarray(arr), layout, dtype, what)
    if not data.flags.writeable:  # still the read-only map of the file: read it into memory
        data = data.copy()
    return Cube(data=data, source=what)


def read_npz(path: Path, variable: str | None, layout: Literal["chw", "hwc"], dtype: np.dtype) -> Cube:
    """Read a cube (and optional ``wavelengths`` / ``band_names``) from an ``.npz`` archive.

    Raises:
        InputError: empty/damaged archive, no or several 3-D arrays (listed, with shapes) and no
            ``variable``, an absent ``variable``, or the checks of :func:`read_npy`.
    """
    what = str(path)
    if path.stat().st_size == 0:
        raise InputError(f"{what} is empty (0 bytes): expected an .npz archive")
    headers: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                with zf.open(info) as member:
                    shape, _f, dt = _read_npy_header(member, f"{what}:{info.filename}")
                headers[info.filename[: -len(".npy")]] = (shape, dt)
    except InputError:
        raise
    except Exception as exc:  # BadZipFile, zlib errors, OSError
        raise InputError(f"{what} is not a readable .npz archive (damaged or truncated): {exc}") from exc
    variables = {n: (s, d.name if d.kind in "biuf" else f"non-numeric {d}") for n, (s, d) in headers.items()}
    name = select_variable(variables, variable, what)
    shape, dt = headers[name]
    check_numeric_dtype(dt, f"{what}: array {name!r}")
    if len(shape) != 3:
        raise InputError(f"{what}: array {name!r} has shape {shape}, expected a 3-D cube")
    check_allocation(shape, max(dt.itemsize, np.dtype(dtype).itemsize), what)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arr = npz[name]
            data = to_chw(arr, layout, dtype, f"{what}: array {name!r}")
            c = data.shape[0]
            wl = _find_wavelengths(npz, headers, c, what)
            names = _find_band_names(npz, headers, c, what)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{what}: array {name!r} could not be read: {exc}") from exc
    return Cube(data=data, wavelengths=wl, band_names=names, source=what)


def _find_wavelengths(
    npz: np.lib.npyio.NpzFile, headers: dict[str, tuple[tuple[int, ...], np.dtype]], c: int, what: str
) -> np.ndarray | None:
    """The first wavelength-named numeric vector of length ``c`` in the archive, or None."""
    for n, (shape, dt) in headers.items():
        if not is_wavelength_name(n) or dt.kind not in "iuf":
            continue
        if int(np.prod(shape)) == c and sum(s != 1 for s in shape) <= 1:
            return np.asarray(npz[n], dtype=np.float64).reshape(-1)
        logger.warning(
            "%s: ignoring %r of shape %s: expected %d wavelengths (one per band)", what, n, shape, c
        )
    return None


def _find_band_names(
    npz: np.lib.npyio.NpzFile, headers: dict[str, tuple[tuple[int, ...], np.dtype]], c: int, what: str
) -> list[str] | None:
    """A 1-D string array ``band_names`` of length ``c``, or None."""
    if "band_names" not in headers:
        return None
    shape, dt = headers["band_names"]
    if dt.kind not in "US" or shape != (c,):
        logger.warning(
            "%s: ignoring band_names of shape %s dtype %s: expected %d strings", what, shape, dt, c
        )
        return None
    arr = npz["band_names"]
    return [x.decode() if isinstance(x, bytes) else str(x) for x in arr.tolist()]


def write_npy(path: Path, cube: Cube) -> None:
    """Write ``cube.data`` as a ``(C, H, W)`` ``.npy`` (atomically); wavelengths and names are not stored."""
    if cube.wavelengths is not None or cube.band_names is not None or cube.geo is not None:
        logger.info(
            "%s: .npy stores only the array; wavelengths, band names and geo are dropped "
            "(use .npz, .tif or ENVI to keep them)",
            path,
        )
    with atomic_paths([path]) as (tmp,), open(tmp, "wb") as fh:
        np.save(fh, np.ascontiguousarray(cube.data), allow_pickle=False)


def write_npz(path: Path, cube: Cube) -> None:
    """Write an ``.npz`` with ``data`` ``(C, H, W)``, plus ``wavelengths`` (nm, float64) and ``band_names``
    (strings) when the cube has them (atomically)."""
    arrays: dict[str, np.ndarray] = {"data": np.ascontiguousarray(cube.data)}
    if cube.wavelengths is not None:
        arrays["wavelengths"] = np.asarray(cube.wavelengths, dtype=np.float64)
    if cube.band_names is not None:
        arrays["band_names"] = np.array(cube.band_names, dtype=str)
    with atomic_paths([path]) as (tmp,), open(tmp, "wb") as fh:
        np.savez(fh, **arrays)  # type: ignore[arg-type]
