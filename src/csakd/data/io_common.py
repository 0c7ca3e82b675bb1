"""Helpers shared by the format modules: layouts, dtype checks and atomic writes."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np

from csakd.errors import InputError, OutputExistsError

__all__ = [
    "Layout",
    "atomic_paths",
    "check_float_dtype",
    "check_layout",
    "check_numeric_dtype",
    "check_output_free",
    "is_wavelength_name",
    "to_chw",
]

Layout = Literal["auto", "chw", "hwc"]

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
    """Raise OutputExistsError naming the first existing path unless ``overwrite``; refuse directories."""
    for p in paths:
        if p.is_dir():
            raise InputError(f"output path {p} is a directory: expected a file name")
        if p.exists() and not overwrite:
            raise OutputExistsError(
                f"output file {p} already exists: pass --overwrite (overwrite=True) to replace it"
            )


def _default_file_mode() -> int:
    """The mode a newly created file gets under the current umask (mkstemp's files are 0600).

    The umask is read from ``/proc/self/status`` where possible, since setting it to read it back is not
    thread-safe."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_paths(targets: list[Path]) -> Iterator[list[Path]]:
    """Give temporary paths beside ``targets``; on success move each onto its target with ``os.replace``.

    The temporary files sit in the target's directory (so the rename is atomic on one file system) and keep
    the target's suffix (so libraries that choose a format by suffix still work). On any error every
    temporary file is removed and no target is touched. Targets are replaced in the order given.
    """
    temps: list[Path] = []
    try:
        for t in targets:
            t.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=f".{t.name}.", suffix=f".tmp{t.suffix}", dir=t.parent)
            os.close(fd)
            temps.append(Path(name))
        yield temps
        mode = _default_file_mode()
        for tmp, t in zip(temps, targets, strict=True):
            with contextlib.suppress(OSError):
                os.chmod(tmp, mode)
            os.replace(tmp, t)
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
