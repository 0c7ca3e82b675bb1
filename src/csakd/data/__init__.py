"""Reading and writing image cubes, and datasets of paired samples.

* :class:`Cube`: one ``(C, H, W)`` image with wavelengths (nm), band names and georeferencing.
* :func:`read_cube` / :func:`write_cube`: CAVE PNG folders, MATLAB (v5, v7.3), NumPy, (Geo)TIFF, ENVI.
* :class:`AvirisReferenceDataset`: the CSAKD reference implementation's AVIRIS patches.
"""

from __future__ import annotations

from csakd.data.aviris import AvirisReferenceDataset, read_split_list
from csakd.data.cube import Cube, GeoInfo
from csakd.data.readers import read_cube, read_wavelengths
from csakd.data.writers import write_cube

__all__ = [
    "AvirisReferenceDataset",
    "Cube",
    "GeoInfo",
    "read_cube",
    "read_split_list",
    "read_wavelengths",
    "write_cube",
]
