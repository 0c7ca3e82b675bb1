"""Read image cubes from the file formats hyperspectral data come in.

:func:`read_cube` chooses the reader from the path:

=================================  ===========================================================================
path                               format (module with the details)
=================================  ===========================================================================
a directory                        CAVE scene: one PNG per band, ``<scene>_ms_NN.png`` (:mod:`.io_cave`)
``.mat``                           MATLAB v5 (scipy) or v7.3 / HDF5 (h5py), ``(H, W, C)`` (:mod:`.io_mat`)
``.npy``, ``.npz``                 NumPy, ``(C, H, W)`` (:mod:`.io_numpy`)
``.tif``, ``.tiff``                (Geo)TIFF through rasterio, else tifffile (:mod:`.io_tiff`)
``.hdr`` or an ENVI data file      ENVI header + raw data (:mod:`.io_envi`); a data file is recognised by a
                                   ``.hdr`` beside it, whatever its extension (``.img``, ``.dat``, none...)
=================================  ===========================================================================

Every reader returns a :class:`~csakd.data.cube.Cube` whose ``data`` is ``(C, H, W)`` in the requested
floating dtype with the file's raw values (nothing is rescaled), and raises
:class:`~csakd.errors.InputError` for anything wrong with the file.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Literal

import numpy as np

from csakd.data.cube import Cube, wavelengths_to_nm
from csakd.data.io_common import check_float_dtype, check_layout
from csakd.errors import InputError

__all__ = ["SUPPORTED_READ_FORMATS", "read_cube", "read_wavelengths"]

logger = logging.getLogger(__name__)

SUPPORTED_READ_FORMATS = (
    "a CAVE scene directory, .mat (v5 or v7.3), .npy, .npz, .tif/.tiff, ENVI (.hdr with its data file)"
)


def read_cube(
    path: str | Path,
    *,
    variable: str | None = None,
    layout: Literal["auto", "chw", "hwc"] = "auto",
    dtype: type[np.floating] | np.dtype | str = np.float32,
) -> Cube:
    """Read one image cube from ``path``.

    Args:
        path: a file or a CAVE scene directory (see the module docstring for the formats).
        variable: for ``.mat`` and ``.npz``, the name of the array holding the cube; by default the only
            3-D numeric array (an error lists the candidates when there are none or several).
        layout: axis order of the stored array for ``.mat``, ``.npy``, ``.npz`` and TIFF: ``"chw"`` (bands
            first) or ``"hwc"`` (bands last). ``"auto"`` means ``"hwc"`` for ``.mat`` (MATLAB convention),
            ``"chw"`` for NumPy, and the file's own structure for TIFF. CAVE and ENVI files state their layout
            themselves and accept only ``"auto"``.
        dtype: floating dtype of the returned data (float32 by default).

    Returns:
        The cube: ``data`` ``(C, H, W)``, wavelengths in nm when the file has them, ``source`` = ``path``.

    Raises:
        InputError: a missing path, an unknown format, or a file that is empty, truncated, damaged, not a
            3-D numeric cube, has zero bands, or is too large for the memory available.

    Example:
        >>> cube = read_cube("scene.mat", variable="hyprImg")  # doctest: +SKIP
        >>> cube.data.shape  # (bands, height, width)  # doctest: +SKIP
    """
    p = Path(path).expanduser()
    check_layout(layout)
    dt = check_float_dtype(dtype)
    if not p.exists():
        raise InputError(f"{p} does not exist: expected {SUPPORTED_READ_FORMATS}")
    suffix = p.suffix.lower()
    if p.is_dir():
        _only_auto(layout, p, "a CAVE scene directory")
        from csakd.data.io_cave import read_cave

        return read_cave(p, dt)
    if not p.is_file():
        raise InputError(f"{p} is not a regular file or directory")
    if suffix == ".mat":
        from csakd.data.io_mat import read_mat

        return read_mat(p, variable, layout, dt)
    if suffix == ".npy":
        from csakd.data.io_numpy import read_npy

        return read_npy(p, "hwc" if layout == "hwc" else "chw", dt)
    if suffix == ".npz":
        from csakd.data.io_numpy import read_npz

        return read_npz(p, variable, "hwc" if layout == "hwc" else "chw", dt)
    if suffix in (".tif", ".tiff"):
        from csakd.data.io_tiff import read_tiff

        return read_tiff(p, layout, dt)

    from csakd.data.io_envi import find_envi_pair, read_envi

    pair = find_envi_pair(p)
    if pair is not None:
        _only_auto(layout, p, "ENVI (the header's interleave gives the layout)")
        return read_envi(pair[0], pair[1], dt)
    kind = f"{suffix!r} files" if suffix else "files without an extension"
    raise InputError(
        f"{p}: the format of {kind} is unknown (and no ENVI .hdr is beside it): "
        f"expected {SUPPORTED_READ_FORMATS}"
    )


def _only_auto(layout: str, path: Path, kind: str) -> None:
    """Refuse a layout override for formats whose files state their layout."""
    if layout != "auto":
        raise InputError(
            f"{path} is {kind}: its layout is fixed by the format, so layout must be 'auto', not {layout!r}"
        )


_SPLIT = re.compile(r"[,;\s]+")


def read_wavelengths(spec: str | Path) -> np.ndarray:
    """Read band wavelengths from a text or CSV file.

    Accepted content: one value per line, or the values on one line separated by commas, semicolons or
    spaces. Blank lines, lines starting with ``#`` and one leading header line without numbers (e.g.
    ``wavelength_nm``) are skipped. Values are nanometres, or micrometres if they are all below 20 (then
    converted).

    Args:
        spec: path of the file.

    Returns:
        float64 array ``(C,)`` of wavelengths in nanometres.

    Raises:
        InputError: missing/empty file, a value that is not a number, several values on several lines
            (a table: give one column), or non-finite values.
    """
    p = Path(spec).expanduser()
    if not p.is_file():
        raise InputError(f"wavelength file {p} does not exist: expected a text file of wavelengths")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"wavelength file {p} could not be read as text: {exc}") from exc
    rows: list[tuple[int, list[str]]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        rows.append((lineno, [t for t in _SPLIT.split(s) if t]))
    if rows and not _is_number(rows[0][1][0]):
        rows = rows[1:]  # a header line such as "wavelength_nm"
    if not rows:
        raise InputError(
            f"wavelength file {p} holds no values: expected one wavelength per line or a CSV line"
        )
    if len(rows) > 1:
        for lineno, toks in rows:
            if len(toks) != 1:
                raise InputError(
                    f"wavelength file {p}, line {lineno} has {len(toks)} values: expected one "
                    "wavelength per line, or all of them on a single comma-separated line"
                )
    tokens = [(lineno, t) for lineno, toks in rows for t in toks]
    values: list[float] = []
    for lineno, t in tokens:
        if not _is_number(t):
            raise InputError(f"wavelength file {p}, line {lineno}: {t!r} is not a number")
        values.append(float(t))
    try:
        return wavelengths_to_nm(values)
    except InputError as exc:
        raise InputError(f"wavelength file {p}: {exc}") from exc


def _is_number(token: str) -> bool:
    """True if ``token`` parses as a float."""
    try:
        float(token)
    except ValueError:
        return False
    return True
