"""Helpers shared by the format modules: layouts, dtype checks and atomic writes."""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np

from csakd.errors import CsakdError, InputError, OutputExistsError
from csakd.files import check_parent, default_file_mode, new_part_file, write_error

__all__ = [
    "Layout",
    "atomic_paths",
    "check_float_dtype",
    "check_image_dtype",
    "check_layout",
    "check_numeric_dtype",
    "check_output_free",
    "is_wavelength_name",
    "to_chw",
]

Layout = Literal["auto", "chw", "hwc"]

logger = logging.getLogger(__name__)

_WAVELENGTH_NAME = re.compile(
    r"^(wavelengths?|wavelength_nm|wl|wls|lambdas?|wave|waves|bands_nm)$", re.IGNORECASE
)


def is_wavelength_name(name: str) -> bool:
    """True for variable names that hold a wavelength vector by convention: ``wavelength``,
    ``wavelengths``, ``wl``, ``lambda`` (any case) and a few close variants."""
    return bool(_WAVELENGTH_NAME.match(name.strip()))


def check_layout(layout: str) -> None:
    """Raise InputError unless ``layout`` is ``"auto"``, ``"chw"`` or ``"hwc"``."""
    if layout not in ("auto", "chw", "hwc"):
        raise InputError(f"layout {layout!r} is not supported: expected 'auto', 'chw' or 'hwc'")


def check_float_dtype(dtype: object) -> np.dtype:
    """Return ``dtype`` as a numpy floating dtype, or raise InputError."""
    try:
        dt = np.dtype(dtype)  # type: ignore[call-overload]
    except TypeError as exc:
        raise InputError(f"dtype {dtype!r} is not a numpy dtype: expected float32 or float64") from exc
    if dt.kind != "f":
        raise InputError(f"dtype {dt} is not a floating type: expected float32 (default) or float64")
    return dt


def check_numeric_dtype(dt: np.dtype, what: str) -> None:
    """Raise InputError unless ``dt`` is a real numeric (bool, integer or float) dtype."""
    if dt.kind not in "biuf":
        raise InputError(
            f"{what} has dtype {dt}, which is not a real number type: expected integers or floats"
        )


def check_image_dtype(dt: np.dtype, what: str) -> None:
    """Refuse a boolean array (a mask, a MATLAB ``logical``: not an image), and log what an integer one means:
    its values are read as they are (digital numbers), not rescaled."""
    if dt.kind == "b":
        raise InputError(
            f"{what} holds a boolean array (dtype {dt}, e.g. a MATLAB logical mask): expected image values "
            "(integers or floats); convert it to numbers first if it really is an image"
        )
    if dt.kind in "iu":
        info = np.iinfo(dt)
        logger.info("%s holds %s integers (range %d..%d): read as plain numbers (digital numbers), not rescaled; "
                    "csakd takes the values as they are", what, dt, info.min, info.max)


def to_chw(arr: np.ndarray, layout: Literal["chw", "hwc"], dtype: np.dtype, what: str) -> np.ndarray:
    """Convert a 3-D array in ``layout`` to a C-contiguous ``(C, H, W)`` array of ``dtype``.

    Args:
        arr: a 3-D array, ``(C, H, W)`` if ``layout == "chw"``, ``(H, W, C)`` if ``"hwc"``.
        layout: the axis order of ``arr``.
        dtype: the floating dtype of the result.
        what: names the array in error messages.

    Raises:
        InputError: if ``arr`` is not 3-D, not numeric, or has no bands or pixels.
    """
    check_numeric_dtype(arr.dtype, what)
    check_image_dtype(arr.dtype, what)
    if arr.ndim != 3:
        raise InputError(
            f"{what} has {arr.ndim} dimension(s) {arr.shape}: expected a 3-D cube "
            "(bands, height, width) or (height, width, bands)"
        )
    chw = arr if layout == "chw" else np.transpose(arr, (2, 0, 1))
    if chw.shape[0] < 1:
        raise InputError(f"{what} has zero bands (shape {arr.shape}, layout {layout}): expected at least one")
    if chw.shape[1] < 1 or chw.shape[2] < 1:
        raise InputError(f"{what} has no pixels (shape {arr.shape}, layout {layout})")
    return np.ascontiguousarray(chw, dtype=dtype)


def check_output_free(paths: list[Path], overwrite: bool) -> None:
    """Raise OutputExistsError naming the first existing path unless ``overwrite``; refuse directories, and
    paths whose folder cannot exist (a file stands where a folder should be)."""
    for p in paths:
        if p.is_dir():
            raise InputError(f"output path {p} is a directory: expected a file name")
        if p.exists() and not overwrite:
            raise OutputExistsError(
                f"output file {p} already exists: pass --overwrite (overwrite=True) to replace it"
            )
        check_parent(p)


@contextlib.contextmanager
def atomic_paths(targets: list[Path]) -> Iterator[list[Path]]:
    """Give temporary paths beside ``targets``; on success move each onto its target with ``os.replace``.

    The temporary files are hidden, ``.<name>.<random>.part``, in the target's directory (so the rename is
    atomic on one file system); each is flushed to disk (``fsync``) before its rename. On any error every
    temporary file is removed and no target is touched. A process killed while writing leaves the targets as
    they were, plus ``.part`` files that are safe to delete.

    Several targets (an ENVI data file and its header) are replaced in the order given, the last one being
    the commit point: an existing last target is removed before the first rename, so a kill between the
    renames leaves the earlier files without it (an incomplete set that readers refuse), never a mix of an
    old and a new file that would read as one.

    Raises:
        CsakdError: an OSError while creating, writing or renaming (disk full, permissions...), naming the
            target; the temporary files are removed first.
    """
    temps: list[Path] = []
    current = targets[0] if targets else Path()
    try:
        for t in targets:
            current = t
            temps.append(new_part_file(t))
        yield temps
        mode = default_file_mode()
        for tmp, t in zip(temps, targets, strict=True):
            current = t
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            with contextlib.suppress(OSError):
                os.chmod(tmp, mode)
        if len(targets) > 1:
            current = targets[-1]
            with contextlib.suppress(FileNotFoundError):
                targets[-1].unlink()
        for tmp, t in zip(temps, targets, strict=True):
            current = t
            os.replace(tmp, t)
    except OSError as exc:
        if isinstance(exc, CsakdError):  # OutputExistsError is an OSError too
            raise
        raise write_error(current, exc) from exc
    finally:
        for tmp in temps:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def select_variable(
    variables: dict[str, tuple[tuple[int, ...], str]],
    variable: str | None,
    what: str,
) -> str:
    """Choose the cube among the arrays of a container file (.mat, .npz).

    Args:
        variables: every array in the file: name -> (shape, dtype description); a dtype description of
            ``"numeric"``-kind is one whose numpy kind is in ``biuf`` (see :func:`is_numeric_description`).
        variable: the name asked for, or ``None`` to take the only 3-D numeric array.
        what: names the file in messages.

    Returns:
        The chosen name.

    Raises:
        InputError: if ``variable`` is absent (listing what there is), or ``variable`` is ``None`` and there
            is not exactly one 3-D numeric array (listing the candidates with their shapes).
    """
    listing = ", ".join(f"{n} {_shape_str(s)} {d}" for n, (s, d) in variables.items()) or "nothing"
    if variable is not None:
        if variable not in variables:
            raise InputError(f"{what} has no variable {variable!r}; it holds: {listing}")
        return variable
    cubes = [n for n, (s, d) in variables.items() if len(s) == 3 and is_numeric_description(d)]
    if len(cubes) == 1:
        return cubes[0]
    if not cubes:
        raise InputError(f"{what} holds no 3-D numeric array (expected one image cube); it holds: {listing}")
    cands = ", ".join(f"{n} {_shape_str(variables[n][0])}" for n in cubes)
    raise InputError(
        f"{what} holds {len(cubes)} 3-D arrays: {cands}; choose one with variable=NAME (--variable NAME)"
    )


_NUMERIC_WORDS = (
    "bool",
    "logical",
    "int",
    "uint",
    "float",
    "double",
    "single",
    "numeric",
)


def is_numeric_description(desc: str) -> bool:
    """True for a dtype description that names a real number type (numpy names such as ``uint16`` or
    ``float64``, MATLAB classes such as ``double``, ``single``, ``logical``); false for ``complex``, ``cell``,
    ``struct``, ``char``, strings and objects."""
    d = desc.lower()
    if "complex" in d:
        return False
    return any(d.startswith(w) for w in _NUMERIC_WORDS)


def _shape_str(shape: tuple[int, ...]) -> str:
    """``(2, 3, 4)`` -> ``'2x3x4'``."""
    return "x".join(str(s) for s in shape) if shape else "scalar"
