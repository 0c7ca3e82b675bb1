"""Reading one 2-D numeric array from a file (a spectral response matrix, a PSF): ``.npy``, ``.npz``, ``.mat``
(v5 and v7.3) and headerless text."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from csakd.errors import InputError


def read_matrix(path: str | os.PathLike[str], *, what: str = "matrix") -> np.ndarray:
    """Read one 2-D numeric array from a file.

    Formats: ``.npy``; ``.npz`` and ``.mat`` holding one 2-D array (or, among several, one named
    ``R``, ``srf``, ``psf``, ``kernel`` or ``s``); MATLAB v7.3 ``.mat`` (HDF5, read with h5py and
    transposed back to MATLAB's row/column order); ``.txt`` / ``.csv`` without header (``np.loadtxt``).

    Returns:
        a float64 array of 2 dimensions.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{what} file {p} not found")
    suffix = p.suffix.lower()
    arrays: dict[str, np.ndarray]
    try:
        if suffix in (".npy", ".npz"):
            _check_numpy_headers(p, suffix)
        if suffix == ".npy":
            arrays = {"array": np.load(p, allow_pickle=False)}
        elif suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        elif suffix == ".mat":
            arrays = _read_mat(p)
        elif suffix in (".txt", ".csv", ".dat"):
            arrays = {"array": np.loadtxt(p, delimiter="," if suffix == ".csv" else None, ndmin=2)}
        else:
            raise InputError(f"{what} file {p}: unsupported suffix {suffix!r}; use .npy, .npz, .mat or .txt")
    except InputError:
        raise
    except Exception as exc:  # a corrupt or foreign file: say which and why
        raise InputError(
            f"{what} file {p} could not be read as {suffix} ({type(exc).__name__}: {exc})"
        ) from exc
    candidates = {k: v for k, v in arrays.items() if isinstance(v, np.ndarray) and v.ndim == 2 and v.size > 1}
    if len(candidates) > 1:
        for pref in ("R", "srf", "psf", "kernel", "s"):
            if pref in candidates:
                candidates = {pref: candidates[pref]}
                break
    if len(candidates) != 1:
        found = {k: getattr(v, "shape", None) for k, v in arrays.items()}
        raise InputError(f"{what} file {p}: expected exactly one 2-D array, found {found}")
    arr = next(iter(candidates.values()))
    if not np.issubdtype(arr.dtype, np.number):
        raise InputError(f"{what} file {p}: the array is not numeric ({arr.dtype})")
    return np.asarray(arr, dtype=np.float64)


def _check_numpy_headers(p: Path, suffix: str) -> None:
    """Refuse, from the array headers and before loading, ``.npy`` / ``.npz`` arrays that are truncated or
    declare more than memory could hold (see :func:`csakd.data.cube.check_allocation`)."""
    import zipfile

    from csakd.data.cube import check_allocation
    from csakd.data.io_numpy import _read_npy_header

    if suffix == ".npy":
        with open(p, "rb") as fh:
            shape, _fortran, dt = _read_npy_header(fh, str(p))
            offset = fh.tell()
        check_allocation(shape, max(dt.itemsize, 8), str(p))
        if p.stat().st_size < offset + math.prod(shape) * dt.itemsize:
            raise InputError(f"{p} is truncated: its header declares {shape} of {dt}")
        return
    with zipfile.ZipFile(p) as zf:
        for info in zf.infolist():
            if info.filename.endswith(".npy"):
                with zf.open(info) as member:
                    shape, _fortran, dt = _read_npy_header(member, f"{p}:{info.filename}")
                check_allocation(shape, max(dt.itemsize, 8), f"{p}:{info.filename}")


def _read_mat(p: Path) -> dict[str, np.ndarray]:
    import scipy.io
    from scipy.io.matlab import matfile_version

    from csakd.data.io_mat_check import check_mat5

    try:
        names = None
        if matfile_version(str(p))[0] == 1:  # v5: scipy's compiled reader can crash on damaged files
            names = [n for n, ok in check_mat5(p).items() if ok]
        raw = scipy.io.loadmat(p, variable_names=names)
        return {k: v for k, v in raw.items() if not k.startswith("__") and isinstance(v, np.ndarray)}
    except NotImplementedError:  # MATLAB v7.3 = HDF5
        import h5py

        out: dict[str, np.ndarray] = {}
        with h5py.File(p, "r") as f:
            for k, v in f.items():
                if isinstance(v, h5py.Dataset):
                    out[k] = np.asarray(v[()]).T  # h5py sees MATLAB arrays transposed
        return out
