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
from pathlib import Path

from csakd.data.cube import Cube
from csakd.data.io_common import atomic_paths, check_output_free
from csakd.errors import InputError

__all__ = ["SUPPORTED_WRITE_SUFFIXES", "write_cube"]

logger = logging.getLogger(__name__)

SUPPORTED_WRITE_SUFFIXES = (".npy", ".npz", ".mat", ".tif", ".tiff", ".hdr", ".img", ".dat")


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
    suffix = p.suffix.lower()
    if suffix not in SUPPORTED_WRITE_SUFFIXES:
        kind = f"{suffix!r} files" if suffix else "files without an extension"
        raise InputError(f"{p}: cannot write {kind}: expected one of {', '.join(SUPPORTED_WRITE_SUFFIXES)}")
    if suffix in (".hdr", ".img", ".dat"):
        from csakd.data.io_envi import envi_pair_for_writing, write_envi

        header, data_file = envi_pair_for_writing(p)
        check_output_free([data_file, header], overwrite)
        with atomic_paths([data_file, header]) as (data_tmp, header_tmp):
            write_envi(header, data_file, header_tmp, data_tmp, cube)
        logger.info("wrote ENVI %s + %s: %s", header, data_file.name, cube.data.shape)
        return p
    check_output_free([p], overwrite)
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
