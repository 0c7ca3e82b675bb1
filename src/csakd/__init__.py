"""csakd: hyperspectral / multispectral image fusion with CSAKD (cross self-attention knowledge distillation).

The public API, imported on first use so that ``import csakd`` stays cheap:

- :func:`csakd.load` (``.pt`` or ``.onnx``) -> a model whose ``fuse(lr_hsi, hr_msi, tile=None)`` fuses NumPy
  arrays in the data's units;
- :func:`csakd.read_cube`, :func:`csakd.write_cube`, :class:`csakd.Cube` (every format csakd reads and writes);
- :func:`csakd.simulate_pair` (an LR-HSI / HR-MSI pair from an HR-HSI through a
  :class:`csakd.Degradation`);
- :mod:`csakd.metrics` (PSNR, SAM, ERGAS, RMSE, SSIM).
"""

from __future__ import annotations

import importlib
from typing import Any

from csakd.lazy import lazy_getattr

__version__ = "0.1.0"

_LAZY = {
    "load": "csakd.api",
    "Model": "csakd.api",
    "read_cube": "csakd.data",
    "write_cube": "csakd.data",
    "Cube": "csakd.data",
    "simulate_pair": "csakd.data.hr_cubes",
    "Degradation": "csakd.degradation",
    "DegradationConfig": "csakd.degradation",
}

__all__ = ["__version__", "metrics", *_LAZY]


_lazy = lazy_getattr(__name__, _LAZY)


def __getattr__(name: str) -> Any:
    if name == "metrics":
        return importlib.import_module("csakd.metrics")
    return _lazy(name)
