"""Fuse an LR-HSI and an HR-MSI with a trained PyTorch model (in-memory arrays or files).

:func:`fuse_files` is the file pipeline (:func:`csakd.inference.pipeline.fuse_files`) with the whole-image
PyTorch runtime, :class:`TorchRuntime`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from csakd.checkpoint import LoadedModel, check_compatible, load_checkpoint
from csakd.devices import resolve_device
from csakd.inference import pipeline
from csakd.inference.pipeline import Runtime, check_arrays, check_grids
from csakd.normalization import from_network, to_network

__all__ = ["TorchRuntime", "check_grids", "fuse_arrays", "fuse_files", "nonfinite_weights", "result_cause"]

log = logging.getLogger(__name__)


class TorchRuntime(Runtime):
    """A loaded checkpoint as a :class:`~csakd.inference.pipeline.Runtime`: the whole image in one pass
    (:func:`fuse_arrays`) on ``device``; ``checkpoint`` (its file) names it in the messages about its weights."""

    what = "the checkpoint"

    def __init__(self, loaded: LoadedModel, *, checkpoint: object = None, device: str = "auto") -> None:
        cfg = loaded.config
        self.loaded, self.checkpoint, self.device = loaded, checkpoint, device
        self.bands, self.msi_bands, self.scale = cfg.bands, cfg.msi_bands, cfg.scale
        self.normalization = loaded.normalization
        self.wavelengths = None if loaded.wavelengths is None else np.asarray(loaded.wavelengths, dtype=np.float64)

    @property
    def response(self) -> dict[str, Any] | None:
        return self.loaded.response

    @property
    def model_config(self) -> dict[str, Any]:
        return self.loaded.config.to_dict()

    def check_bands(self, bands: int, msi_bands: int) -> None:
        check_compatible(self.loaded, bands=bands, msi_bands=msi_bands)

    def result_cause(self) -> str:
        return result_cause(self.loaded, self.checkpoint)

    def fuse(self, lr_hsi: np.ndarray, hr_msi: np.ndarray) -> np.ndarray:
        return fuse_arrays(self.loaded, lr_hsi, hr_msi, device=self.device)


@torch.no_grad()
def fuse_arrays(
    loaded: LoadedModel,
    lr_hsi: np.ndarray | torch.Tensor,
    hr_msi: np.ndarray | torch.Tensor,
    *,
    device: str = "auto",
) -> np.ndarray:
    """Fuse one pair in the files' units: (C, h, w) and (c, H, W) -> (C, H, W) float32.

    The checkpoint's normalisation maps the inputs to [0, 1] (and the output back); the network sees
    [-1, 1]. The whole image goes through in one pass.
    """
    lr_np, msi_np = _float32(lr_hsi), _float32(hr_msi)
    check_arrays(lr_np, msi_np, TorchRuntime(loaded))
    lr, msi = torch.from_numpy(lr_np)[None], torch.from_numpy(msi_np)[None]
    dev = resolve_device(device)
    model = loaded.model.to(dev).eval()
    lr, msi = lr.to(dev), msi.to(dev)
    f_hsi, f_msi = loaded.normalization.factors(lr)
    out, _ = model(to_network(lr / f_hsi), to_network(msi / f_msi))
    fused = from_network(out.float()) * f_hsi
    return fused[0].cpu().numpy().astype(np.float32)


def nonfinite_weights(model: torch.nn.Module) -> int:
    """How many of ``model``'s floating-point parameters and buffers are NaN or Inf."""
    return sum(int((~torch.isfinite(t)).sum()) for t in model.state_dict().values() if t.is_floating_point())


def result_cause(loaded: LoadedModel, checkpoint: object) -> str:
    """The likely cause of a non-finite result from finite inputs: the checkpoint's weights, else an overflow."""
    bad = nonfinite_weights(loaded.model)
    if bad:
        return (f"the checkpoint {checkpoint} has {bad} non-finite weight(s) (NaN or Inf): it is damaged or its "
                "training diverged; use another checkpoint")
    return (f"the inputs and the weights of {checkpoint} are finite, so the network overflowed: are the inputs in "
            "the units the checkpoint was trained on?")


def fuse_files(
    lr_path: str | Path,
    msi_path: str | Path,
    checkpoint: str | Path,
    out_path: str | Path,
    *,
    overwrite: bool = False,
    device: str = "auto",
    variable_lr: str | None = None,
    variable_msi: str | None = None,
    layout: Literal["auto", "chw", "hwc"] = "auto",
    strict: bool = False,
    clip: bool = True,
    report: dict[str, Any] | None = None,
) -> Path:
    """Read the two files, fuse, and write the result in the format of ``out_path``'s extension.

    Everything is checked before the output is written; an existing output needs ``overwrite``; the output is
    never one of the inputs (:func:`csakd.files.check_outputs`). Negative or absurd input values are warned
    about (refused with ``strict``); a result with NaN or Inf values is not written.
    Wavelengths come from the LR-HSI (else the checkpoint); georeferencing from the HR-MSI. Georeferenced
    inputs must cover the same footprint (:func:`csakd.inference.geo.check_footprint`); nodata pixels are
    filled before the network and are nodata in the output (:mod:`csakd.inference.geo`).

    The pair's spectral consistency with the checkpoint's response is checked (a warning when it is far off,
    :func:`csakd.inference.checks.check_pair_response`); with ``clip`` (the default) fused values below 0 are set
    to 0 and counted. ``report``, when given, receives ``spectral_consistency`` and ``clip``.
    """
    return pipeline.fuse_files(
        lambda: TorchRuntime(load_checkpoint(checkpoint), checkpoint=checkpoint, device=device),
        lr_path, msi_path, checkpoint, out_path, overwrite=overwrite, variable_lr=variable_lr,
        variable_msi=variable_msi, layout=layout, strict=strict, clip=clip, report=report,
    )


def _float32(x: np.ndarray | torch.Tensor) -> np.ndarray:
    """A float32 NumPy copy of an array or a tensor (on any device)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.array(x, dtype=np.float32)
