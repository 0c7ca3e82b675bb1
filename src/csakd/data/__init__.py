"""Reading and writing image cubes, and datasets of paired samples.

* :class:`Cube`: one ``(C, H, W)`` image with wavelengths (nm), band names and georeferencing.
* :func:`read_cube` / :func:`write_cube`: CAVE PNG folders, MATLAB (v5, v7.3), NumPy, (Geo)TIFF, ENVI.
* :class:`AvirisReferenceDataset`: the CSAKD reference implementation's AVIRIS patches.

The readers and writers need only numpy (plus the file libraries of each format), not PyTorch: the
AVIRIS dataset (a ``torch.utils.data.Dataset``) is imported on first use, so that the torch-free ONNX
runtime (:mod:`csakd.inference.onnx_runtime`) can read and write files.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from csakd.data.cube import Cube, GeoInfo
from csakd.data.readers import read_cube, read_wavelengths
from csakd.data.writers import write_cube
from csakd.lazy import lazy_getattr

if TYPE_CHECKING:
    from csakd.data.aviris import AvirisReferenceDataset, read_split_list

__all__ = [
    "AvirisReferenceDataset",
    "Cube",
    "GeoInfo",
    "read_cube",
    "read_split_list",
    "read_wavelengths",
    "write_cube",
]

_LAZY = {"AvirisReferenceDataset": "csakd.data.aviris", "read_split_list": "csakd.data.aviris"}


_lazy = lazy_getattr(__name__, _LAZY)


def __getattr__(name: str) -> Any:
    """Import the torch-dependent names (the AVIRIS dataset) on first access."""
    return _lazy(name)
