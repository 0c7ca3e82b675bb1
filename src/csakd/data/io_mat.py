"""MATLAB ``.mat`` files: v4/v5/v7 through scipy, v7.3 (HDF5) through h5py.

Conventions:

* The cube is the variable named by ``variable`` or, by default, the only 3-D numeric array in the file.
* MATLAB arrays are ``(H, W, C)`` by convention, so ``layout="auto"`` means ``"hwc"``; pass ``layout="chw"``
  for a file that stores bands first. Shapes and layouts are MATLAB's: h5py shows a v7.3 array with its axes
  reversed (a MATLAB ``(H, W, C)`` array appears as ``(C, W, H)``), which this module undoes, so both
  versions of the same MATLAB variable give the same cube.
* A numeric vector of length C named ``wavelength``, ``wavelengths``, ``wl`` or ``lambda`` (any case) gives
  the wavelengths (nm; micrometres if all below 20); a cell array or char matrix ``band_names`` the names.
* :func:`write_mat` writes a v5 file with ``data`` ``(H, W, C)``, ``wavelengths`` ``(1, C)`` and
  ``band_names`` (cell array) when known.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np

from csakd.data.cube import Cube, check_allocation
from csakd.data.io_common import (
    atomic_paths,
    is_numeric_description,
    is_wavelength_name,
    select_variable,
    to_chw,
)
from csakd.errors import InputError

__all__ = ["read_mat", "write_mat"]

logger = logging.getLogger(__name__)

_CLASS_ITEMSIZE = {
    "double": 8,
    "single": 4,
    "int8": 1,
    "uint8": 1,
    "int16": 2,
    "uint16": 2,
    "int32": 4,
    "uint32": 4,
    "int64": 8,
    "uint64": 8,
    "logical": 1,
}

#: MATLAB v5 stores sizes in 32 bits; larger variables are refused by :func:`write_mat`.
MAT_V5_MAX_BYTES = 2**31 - 1


def read_mat(
    path: Path, variable: str | None, layout: Literal["auto", "chw", "hwc"], dtype: np.dtype
) -> Cube:
    """Read a cube from a MATLAB file (any version).

    Raises:
        InputError: empty/damaged file, no or several 3-D arrays without ``variable`` (the message lists
            them with their shapes), a ``variable`` that is absent, non-numeric or not 3-D, or a cube too
            large for memory.
    """
    what = str(path)
    if path.stat().st_size == 0:
        raise InputError(f"{what} is empty (0 bytes): expected a MATLAB .mat file")
    lay: Literal["chw", "hwc"] = "hwc" if layout == "auto" else layout
    import h5py

    try:
        is_h5 = h5py.is_hdf5(str(path))
    except Exception:  # pragma: no cover - h5py raises only for unreadable paths
        is_h5 = False
    if is_h5:
        return _read_mat73(path, variable, lay, dtype)
    return _read_mat5(path, variable, lay, dtype)


def _read_mat5(path: Path, variable: str | None, layout: Literal["chw", "hwc"], dtype: np.dtype) -> Cube:
    """scipy.io path for MATLAB v4-v7 files."""
    import scipy.io
    from scipy.io.matlab import matfile_version

    from csakd.data.io_mat_check import check_mat5

    what = str(path)
    try:
        major, _minor = matfile_version(str(path))
    except Exception as exc:  # MatReadError / ValueError for what is not a MAT file at all
        raise InputError(
            f"{what} is not a readable MATLAB .mat file (damaged, truncated or not MATLAB): {exc}"
        ) from exc
    # scipy's compiled v5 reader can crash the process on a damaged file: check the structure first
    loadable = check_mat5(path, load=set()) if major == 1 else None
    try:
        listing = scipy.io.whosmat(str(path))
    except Exception as exc:  # scipy raises ValueError/TypeError/OSError/MatReadError on damaged files
        raise InputError(
            f"{what} is not a readable MATLAB .mat file (damaged, truncated or not MATLAB): {exc}"
        ) from exc
    variables = {name: (tuple(int(s) for s in shape), cls) for name, shape, cls in listing}
    name = select_variable(variables, variable, what)
    shape, cls = variables[name]
    _check_candidate(what, name, shape, cls)
    check_allocation(shape, max(_CLASS_ITEMSIZE.get(cls, 8), np.dtype(dtype).itemsize), what)
    extras = [
        n for n, (s, c) in variables.items() if n != name and (is_wavelength_name(n) or n == "band_names")
    ]
    if loadable is not None:
        extras = [n for n in extras if loadable.get(n, False)]  # e.g. a struct named band_names is not read
        check_mat5(path, load={name, *extras})
    try:
        mat = scipy.io.loadmat(str(path), variable_names=[name, *extras], squeeze_me=False)
    except Exception as exc:
        raise InputError(
            f"{what}: variable {name!r} could not be read (damaged or truncated file): {exc}"
        ) from exc
    arr = np.asarray(mat[name])
    data = to_chw(arr, layout, dtype, f"{what}: variable {name!r}")
    c = data.shape[0]
    wl = None
    names = None
    for n in extras:
        val = mat.get(n)
        if val is None:
            continue
        if n == "band_names":
            names = _cell_to_names(val, c, what)
        elif wl is None:
            wl = _as_wavelengths(np.asarray(val), c, n, what)
    return Cube(data=data, wavelengths=wl, band_names=names, source=what)


def _read_mat73(path: Path, variable: str | None, layout: Literal["chw", "hwc"], dtype: np.dtype) -> Cube:
    """h5py path for MATLAB v7.3 (HDF5) files; axes are reversed back to MATLAB order."""
    import h5py

    what = str(path)
    try:
        fh = h5py.File(str(path), "r")
    except Exception as exc:
        raise InputError(
            f"{what} is not a readable MATLAB v7.3 / HDF5 file (damaged or truncated): {exc}"
        ) from exc
    with fh:
        datasets: dict[str, Any] = {}
        variables: dict[str, tuple[tuple[int, ...], str]] = {}
        try:  # HDF5 reports damaged links, heaps and attributes as RuntimeError / KeyError / OSError
            for key in fh:
                if key.startswith("#"):
                    continue
                obj = fh.get(key)
                if not isinstance(obj, h5py.Dataset):
                    continue
                mshape = tuple(int(s) for s in obj.shape[::-1])  # MATLAB order
                cls = obj.attrs.get("MATLAB_class", None)
                if isinstance(cls, bytes):
                    cls = cls.decode("ascii", "replace")
                desc = str(cls) if cls else obj.dtype.name
                if obj.dtype.kind not in "biuf" or "MATLAB_empty" in obj.attrs:
                    desc = f"non-numeric {desc}"  # complex (compound), cell (references), empty: never a cube
                datasets[key] = obj
                variables[key] = (mshape, desc)
        except Exception as exc:
            raise InputError(
                f"{what} is not a readable MATLAB v7.3 / HDF5 file (damaged or truncated): {exc}"
            ) from exc
        name = select_variable(variables, variable, what)
        shape, cls = variables[name]
        _check_candidate(what, name, shape, cls)
        ds = datasets[name]
        check_allocation(shape, max(ds.dtype.itemsize, np.dtype(dtype).itemsize), what)
        try:
            arr = np.asarray(ds[()]).T  # back to MATLAB's (H, W, C)
        except Exception as exc:
            raise InputError(
                f"{what}: variable {name!r} could not be read (damaged or truncated file): {exc}"
            ) from exc
        data = to_chw(arr, layout, dtype, f"{what}: variable {name!r}")
        c = data.shape[0]
        wl = None
        for n, (_shape, desc) in variables.items():
            if n != name and is_wavelength_name(n) and is_numeric_description(desc):
                try:
                    wl = _as_wavelengths(np.asarray(datasets[n][()]).T, c, n, what)
                except Exception as exc:
                    logger.warning("%s: could not read wavelengths %r: %s", what, n, exc)
                if wl is not None:
                    break
    return Cube(data=data, wavelengths=wl, source=what)


def _check_candidate(what: str, name: str, shape: tuple[int, ...], cls: str) -> None:
    """Raise if the chosen variable is not a 3-D numeric array."""
    if not is_numeric_description(cls):
        raise InputError(f"{what}: variable {name!r} is of class {cls}, expected a numeric (real) array")
    if cls.lower().startswith(("logical", "bool")):
        raise InputError(
            f"{what}: variable {name!r} is a boolean array (class {cls}, a mask): expected image values "
            "(integers or floats); convert it to numbers first if it really is an image"
        )
    if len(shape) != 3:
        raise InputError(
            f"{what}: variable {name!r} has shape {shape}, expected a 3-D cube (height, width, bands)"
        )


def _as_wavelengths(val: np.ndarray, c: int, name: str, what: str) -> np.ndarray | None:
    """A numeric vector of length ``c`` (any of (C,), (1, C), (C, 1)) as float64, else None (logged)."""
    if val.dtype.kind in "iuf" and val.size == c and sum(s != 1 for s in val.shape) <= 1:
        return val.astype(np.float64).reshape(-1)
    logger.warning(
        "%s: ignoring %r of shape %s: expected %d wavelengths (one per band)", what, name, val.shape, c
    )
    return None


def _cell_to_names(val: Any, c: int, what: str) -> list[str] | None:
    """Band names from a MATLAB cell array of strings or a char matrix (one name per row)."""
    arr = np.asarray(val)
    names: list[str] = []
    if arr.dtype == object:
        for el in arr.ravel(order="F"):
            e = np.asarray(el).ravel()
            names.append(str(e[0]) if e.size else "")
    elif arr.dtype.kind == "U":
        names = [str(s).rstrip() for s in arr.ravel()]
    if len(names) != c:
        logger.warning("%s: ignoring band_names: %d names for %d bands", what, len(names), c)
        return None
    return names


def write_mat(path: Path, cube: Cube) -> None:
    """Write a MATLAB v5 file with ``data`` ``(H, W, C)`` (the cube's float type), ``wavelengths`` ``(1, C)``
    in nm and ``band_names`` (cell array) when known (atomically).

    Raises:
        InputError: if the data exceed MATLAB v5's 2 GiB variable limit (use .npy, .tif or ENVI).
    """
    import scipy.io

    if cube.data.nbytes > MAT_V5_MAX_BYTES:
        raise InputError(
            f"{path}: the cube needs {cube.data.nbytes} bytes, more than a MATLAB v5 variable can hold "
            f"({MAT_V5_MAX_BYTES}): write .npy, .tif or ENVI (.hdr) instead"
        )
    if cube.geo is not None:
        logger.info("%s: .mat does not store georeferencing; cube.geo is dropped", path)
    mdict: dict[str, Any] = {"data": np.ascontiguousarray(np.transpose(cube.data, (1, 2, 0)))}
    if cube.wavelengths is not None:
        mdict["wavelengths"] = np.asarray(cube.wavelengths, dtype=np.float64)
    if cube.band_names is not None:
        cell = np.empty((len(cube.band_names),), dtype=object)
        cell[:] = list(cube.band_names)
        mdict["band_names"] = cell
    with atomic_paths([path]) as (tmp,), open(tmp, "wb") as fh:
        scipy.io.savemat(fh, mdict, format="5", do_compression=False, oned_as="row")
