"""Fuse an LR-HSI and an HR-MSI with a trained model (in-memory arrays or files)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from csakd.checkpoint import LoadedModel, check_compatible, load_checkpoint
from csakd.data import Cube, read_cube, write_cube
from csakd.devices import resolve_device
from csakd.errors import InputError
from csakd.inference.checks import check_pair_response, clip_and_report
from csakd.inference.geo import NodataMasks, apply_nodata, check_footprint, output_geo, output_nodata, prepare_nodata
from csakd.io_utils import check_outputs, check_result, check_writable
from csakd.normalization import check_values, from_network, to_network

log = logging.getLogger(__name__)


def check_grids(lr_shape: tuple[int, ...], msi_shape: tuple[int, ...], scale: int) -> None:
    """Raise when the HR-MSI grid is not ``scale`` times the LR-HSI grid."""
    h, w = lr_shape[-2:]
    H, W = msi_shape[-2:]
    if H % h or W % w or H // h != W // w:
        raise InputError(
            f"hr_msi is {H}x{W} but lr_hsi is {h}x{w}: the grid ratio must be one integer scale in both axes"
        )
    if H // h != scale:
        raise InputError(
            f"hr_msi is {H}x{W} and lr_hsi {h}x{w}: a ratio of {H // h}, but the model fuses at x{scale}"
        )


def check_pair(loaded: LoadedModel, lr: torch.Tensor, msi: torch.Tensor) -> None:
    """Refuse a (1, C, h, w) / (1, c, H, W) pair that does not fit the checkpoint or holds NaN / Inf."""
    check_compatible(loaded, bands=lr.shape[1], msi_bands=msi.shape[1])
    check_grids(tuple(lr.shape), tuple(msi.shape), loaded.config.scale)
    for name, t in (("lr_hsi", lr), ("hr_msi", msi)):
        bad = int((~torch.isfinite(t)).sum())
        if bad:
            raise InputError(f"{name} has {bad} NaN or Inf values: expected finite numbers")


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
    lr = torch.as_tensor(np.array(lr_hsi, dtype=np.float32))[None]
    msi = torch.as_tensor(np.array(hr_msi, dtype=np.float32))[None]
    check_pair(loaded, lr, msi)
    dev = resolve_device(device)
    model = loaded.model.to(dev).eval()
    lr, msi = lr.to(dev), msi.to(dev)
    f_hsi, f_msi = loaded.normalization.factors(lr)
    out, _ = model(to_network(lr / f_hsi), to_network(msi / f_msi))
    fused = from_network(out.float()) * f_hsi
    return fused[0].cpu().numpy().astype(np.float32)


def read_checked_pair(
    loaded: LoadedModel,
    lr_path: str | os.PathLike[str],
    msi_path: str | os.PathLike[str],
    *,
    variable_lr: str | None = None,
    variable_msi: str | None = None,
    layout: str = "auto",
) -> tuple[Cube, Cube, NodataMasks]:
    """Read the two files and check them against the checkpoint and each other, before any output exists.

    Nodata pixels are filled first (so a NaN nodata value is accepted), then finiteness, band counts, the
    grid ratio and the georeferenced footprints are checked.
    """
    lr = read_cube(lr_path, variable=variable_lr, layout=layout)  # type: ignore[arg-type]
    msi = read_cube(msi_path, variable=variable_msi, layout=layout)  # type: ignore[arg-type]
    scale = loaded.config.scale
    masks = prepare_nodata(lr, msi, scale)
    lr.check_finite("lr_hsi")
    msi.check_finite("hr_msi")
    check_compatible(loaded, bands=lr.bands, msi_bands=msi.bands)
    check_grids(lr.data.shape, msi.data.shape, scale)
    check_footprint(lr.geo, msi.geo, lr.data.shape, msi.data.shape, scale)
    return lr, msi, masks


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


def check_input_values(loaded: LoadedModel, lr: Cube, msi: Cube, *, strict: bool = False) -> None:
    """Warn about (``strict``: refuse) negative or absurd input values (:func:`csakd.normalization.check_values`)."""
    check_values(loaded.normalization, lr.data, msi.data, strict=strict,
                 names=(f"lr_hsi {lr.source}", f"hr_msi {msi.source}"))


def pair_consistency(loaded: LoadedModel, lr_hsi: np.ndarray, hr_msi: np.ndarray) -> dict[str, Any] | None:
    """The pair's spectral consistency with the checkpoint (:func:`csakd.inference.checks.check_pair_response`)."""
    return check_pair_response(lr_hsi, hr_msi, response=loaded.response, model_config=loaded.config.to_dict(),
                               normalization=loaded.normalization)


def output_wavelengths(loaded: LoadedModel, lr: Cube) -> np.ndarray | None:
    """The fused image's wavelengths: the LR-HSI's, else the checkpoint's."""
    if lr.wavelengths is None and loaded.wavelengths is not None:
        return np.asarray(loaded.wavelengths, dtype=np.float64)
    return lr.wavelengths


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
    layout: str = "auto",
    strict: bool = False,
    clip: bool = True,
    report: dict[str, Any] | None = None,
) -> Path:
    """Read the two files, fuse, and write the result in the format of ``out_path``'s extension.

    Everything is checked before the output is written; an existing output needs ``overwrite``; the output is
    never one of the inputs (:func:`csakd.io_utils.check_outputs`). Negative or absurd input values are warned
    about (refused with ``strict``); a result with NaN or Inf values is not written.
    Wavelengths come from the LR-HSI (else the checkpoint); georeferencing from the HR-MSI. Georeferenced
    inputs must cover the same footprint (:func:`csakd.inference.geo.check_footprint`); nodata pixels are
    filled before the network and are nodata in the output (:mod:`csakd.inference.geo`).

    The pair's spectral consistency with the checkpoint's response is checked (a warning when it is far off,
    :func:`csakd.inference.checks.check_pair_response`); with ``clip`` (the default) fused values below 0 are set
    to 0 and counted. ``report``, when given, receives ``spectral_consistency`` and ``clip``.
    """
    check_outputs({"out": out_path}, {"lr_hsi": lr_path, "hr_msi": msi_path, "checkpoint": checkpoint},
                  overwrite=overwrite)
    check_writable(out_path, overwrite=overwrite)
    loaded = load_checkpoint(checkpoint)
    lr, msi, masks = read_checked_pair(loaded, lr_path, msi_path, variable_lr=variable_lr,
                                       variable_msi=variable_msi, layout=layout)
    check_input_values(loaded, lr, msi, strict=strict)
    consistency = pair_consistency(loaded, lr.data, msi.data)
    fused = fuse_arrays(loaded, lr.data, msi.data, device=device)
    check_result(fused, "the fused image", target=out_path, cause=lambda: result_cause(loaded, checkpoint))
    fused = clip_and_report(fused, clip=clip, consistency=consistency, report=report)
    geo = output_geo(msi.geo, masks)
    apply_nodata(fused, masks.hr_window(slice(0, msi.height), slice(0, msi.width)), output_nodata(geo))
    cube = Cube(fused, wavelengths=output_wavelengths(loaded, lr), band_names=lr.band_names, geo=geo,
                source=str(lr_path))
    return write_cube(out_path, cube, overwrite=overwrite)
