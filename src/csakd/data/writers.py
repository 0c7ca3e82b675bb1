"""Write image cubes, choosing the format from the file extension.

=========================  ==================================================================================
extension                  what is written
=========================  ==================================================================================
``.npy``                   the ``(C, H, W)`` array only
``.npz``                   ``data`` ``(C, H, W)``, ``wavelengths`` (nm), ``band_names``
``.mat``                   MATLAB v5: ``data`` ``(H, W, C)``, ``wavelengths`` ``(1, C)``, names (cell)
``.tif``, ``.tiff``        float32 multi-band GeoTIFF, bands first (rasterio; tifffile without it): crs,
                           transform and nodata from ``cube.geo``, band descriptions = names, wavelengths as
                           band metadata (convention in :mod:`.io_tiff`)
``.hdr``, ``.img``, ``.dat``  ENVI float32 bsq, little-endian, with wavelengths (nm), band names and
                           ``data ignore value`` (= ``cube.geo.nodata``); ``x.hdr`` pairs with ``x.img``
=========================  ==================================================================================

Every write is atomic: the data go to a temporary file in the target directory, which is renamed onto the
target (for ENVI, the data file first, then the header) only once it is complete.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from csakd.data.cube import Cube
from csakd.data.io_common import atomic_paths, check_output_free
from csakd.errors import InputError

__all__ = ["ENVI_WRITE_SUFFIXES", "SUPPORTED_WRITE_SUFFIXES", "check_writer_installed", "output_targets",
           "write_cube"]

logger = logging.getLogger(__name__)

SUPPORTED_WRITE_SUFFIXES = (".npy", ".npz", ".mat", ".tif", ".tiff", ".hdr", ".img", ".dat")
#: The suffixes written as ENVI (a header and a data file).
ENVI_WRITE_SUFFIXES = (".hdr", ".img", ".dat")
#: The optional file libraries each output format needs (any one of them).
_WRITER_LIBRARIES = {".tif": ("rasterio", "tifffile"), ".tiff": ("rasterio", "tifffile"), ".mat": ("scipy",)}


def output_targets(path: str | os.PathLike[str], *, overwrite: bool = False) -> list[Path]:
    """Check that ``path`` has a writable extension and that its file(s) may be written; return the files a
    write creates (ENVI: the data file, then the header, the order in which they are committed).

    Raises:
        InputError: an unsupported extension, a directory in the way, or a file where a folder should be.
        OutputExistsError: an output exists and ``overwrite`` is False.
    """
    p = Path(path).expanduser()
    suffix = p.suffix.lower()
    if suffix not in SUPPORTED_WRITE_SUFFIXES:
        kind = f"{suffix!r} files" if suffix else "files without an extension"
        raise InputError(f"{p}: cannot write {kind}: expected one of {', '.join(SUPPORTED_WRITE_SUFFIXES)}")
    if suffix in ENVI_WRITE_SUFFIXES:
        from csakd.data.io_envi import envi_pair_for_writing

        header, data_file = envi_pair_for_writing(p)
        targets = [data_file, header]
    else:
        targets = [p]
    check_output_free(targets, overwrite)
    return targets


def check_writer_installed(path: str | os.PathLike[str]) -> None:
    """Refuse, before any work, an output format whose file library is not installed (a minimal install).

    Raises:
        InputError: naming the library to install.
    """
    import importlib.util

    p = Path(path)
    needed = _WRITER_LIBRARIES.get(p.suffix.lower(), ())
    if needed and not any(importlib.util.find_spec(name) is not None for name in needed):
        raise InputError(f"{p}: writing {p.suffix} files needs {' or '.join(needed)}: pip install {needed[-1]}")


def write_cube(path: str | Path, cube: Cube, *, overwrite: bool = False) -> Path:
    """Write ``cube`` to ``path`` in the format given by its extension (see the module docstring).

    Args:
        path: the output file (for ENVI either the ``.hdr`` or the data file name).
        cube: the cube to write.
        overwrite: replace existing files; otherwise an existing output is an error.

    Returns:
        ``path`` as a :class:`~pathlib.Path` (readable back with :func:`~csakd.data.readers.read_cube`).

    Raises:
        InputError: an unsupported extension, or a cube the format cannot hold.
        OutputExistsError: the output (either ENVI file) exists and ``overwrite`` is false.
    """
    if not isinstance(cube, Cube):
        raise InputError(f"write_cube expects a Cube, got {type(cube).__name__}")
    p = Path(path).expanduser()
    targets = output_targets(p, overwrite=overwrite)
    suffix = p.suffix.lower()
    if suffix in ENVI_WRITE_SUFFIXES:
        from csakd.data.io_envi import write_envi

        data_file, header = targets
        with atomic_paths(targets) as (data_tmp, header_tmp):
            write_envi(header, data_file, header_tmp, data_tmp, cube)
        logger.info("wrote ENVI %s + %s: %s", header, data_file.name, cube.data.shape)
        return p
    if suffix == ".npy":
        from csakd.data.io_numpy import write_npy

        write_npy(p, cube)
    elif suffix == ".npz":
        from csakd.data.io_numpy import write_npz

        write_npz(p, cube)
    elif suffix == ".mat":
        from csakd.data.io_mat import write_mat

        write_mat(p, cube)
    else:
        from csakd.data.io_tiff import import_rasterio, write_tiff_rasterio, write_tiff_tifffile

        rio = import_rasterio()
        with atomic_paths([p]) as (tmp,):
            if rio is not None:
                write_tiff_rasterio(rio, tmp, cube)
            else:
                write_tiff_tifffile(tmp, cube)
    logger.info("wrote %s: %s", p, cube.data.shape)
    return p
