"""Using trained models on whole images: fusion of files and arrays, export, runtimes.

Fusing files goes through one pipeline (:mod:`csakd.inference.pipeline`) whatever runs the network: the
whole image through PyTorch (:mod:`.fuse`), tile by tile (:mod:`.tiled`, planned by :mod:`.tiling`, run by
:mod:`.passes`) or ONNX Runtime (:mod:`.onnx_runtime`).

The names are imported on first use, so that csakd.inference.onnx_runtime (no PyTorch) imports without torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from csakd.lazy import lazy_getattr

if TYPE_CHECKING:
    from csakd.data.cube_writer import CubeWriter
    from csakd.inference.fuse import fuse_arrays, fuse_files
    from csakd.inference.tiled import fuse_files_tiled, fuse_tiled, fuse_tiled_arrays
    from csakd.inference.tiling import receptive_field

__all__ = ["CubeWriter", "fuse_arrays", "fuse_files", "fuse_files_tiled", "fuse_tiled", "fuse_tiled_arrays",
           "receptive_field"]

_LAZY = {
    "CubeWriter": "csakd.data.cube_writer",
    "fuse_arrays": "csakd.inference.fuse",
    "fuse_files": "csakd.inference.fuse",
    "fuse_files_tiled": "csakd.inference.tiled",
    "fuse_tiled": "csakd.inference.tiled",
    "fuse_tiled_arrays": "csakd.inference.tiled",
    "receptive_field": "csakd.inference.tiling",
}


_lazy = lazy_getattr(__name__, _LAZY)


def __getattr__(name: str) -> Any:
    """Import fuse_arrays / fuse_files (which need torch) on first access."""
    return _lazy(name)
