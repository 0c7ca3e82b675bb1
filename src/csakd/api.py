"""The public API in a few names: load a model (``.pt`` or ``.onnx``) and fuse NumPy arrays in the data's units.

    import csakd
    model = csakd.load("runs/kd/student.pt")          # or student.onnx (ONNX Runtime, no PyTorch needed)
    lr, msi = csakd.read_cube("lr.tif"), csakd.read_cube("msi.tif")
    fused = model.fuse(lr.data, msi.data)              # (C, H, W) float32, in the LR-HSI's units
    csakd.write_cube("fused.tif", csakd.Cube(fused, wavelengths=lr.wavelengths, geo=msi.geo))
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from csakd.errors import InputError


@dataclass
class Model:
    """A loaded model: ``fuse(lr_hsi, hr_msi, tile=None)`` on (C, h, w) and (c, H, W) arrays in the data's units.

    Attributes:
        path: the file it was loaded from; runtime: ``torch`` or ``onnx``; bands, msi_bands, scale: what it fuses.
    """

    path: Path
    runtime: str
    bands: int
    msi_bands: int
    scale: int
    _impl: Any
    device: str = "auto"

    def fuse(self, lr_hsi: Any, hr_msi: Any, *, tile: int | None = None, clip: bool = True) -> np.ndarray:
        """The fused image, (C, H, W) float32 in the LR-HSI's units (values below 0 set to 0 unless ``clip=False``).

        ``tile`` fuses tile by tile (PyTorch models only; the result equals one whole-image pass with the default
        overlap). Raises :class:`~csakd.errors.InputError` for inputs that are not 3-D arrays of this model's bands
        and scale.
        """
        lr, msi = _array(lr_hsi, "lr_hsi"), _array(hr_msi, "hr_msi")
        if self.runtime == "onnx":
            if tile:
                raise InputError("tile is not available with an ONNX model: the attention needs a whole-scene pass")
            fused = self._impl.fuse(lr, msi)
        elif tile:
            from csakd.inference.tiled import fuse_tiled_arrays

            fused = fuse_tiled_arrays(self._impl, lr, msi, tile=tile, device=self.device)
        else:
            from csakd.inference.fuse import fuse_arrays

            fused = fuse_arrays(self._impl, lr, msi, device=self.device)
        assert fused is not None
        return np.maximum(fused, 0, out=fused) if clip else fused


def _array(value: Any, name: str) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    if not isinstance(value, np.ndarray):
        raise InputError(f"{name} must be a NumPy array (bands, height, width), got {type(value).__name__}")
    if value.ndim != 3:
        raise InputError(f"{name} must be 3-D (bands, height, width), got shape {value.shape}"
                         + (": drop the batch axis (fuse one pair at a time)" if value.ndim == 4 else ""))
    if value.dtype == np.bool_:
        raise InputError(f"{name} is a boolean array: expected radiance or reflectance values")
    return value


def load(path: str | Path, *, device: str = "auto") -> Model:
    """A checkpoint (``.pt``, csakd's or the reference's) or an exported ONNX model, ready to fuse arrays."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such model file")
    from csakd.inference.onnx_runtime import sniff_model_file

    if sniff_model_file(p) == "onnx":
        from csakd.inference.onnx_runtime import OnnxFuser

        fuser = OnnxFuser(p)
        return Model(p, "onnx", fuser.bands, fuser.msi_bands, fuser.scale, fuser, device)
    from csakd.checkpoint import load_checkpoint

    loaded = load_checkpoint(p)
    cfg = loaded.config
    return Model(p, "torch", cfg.bands, cfg.msi_bands, cfg.scale, loaded, device)
