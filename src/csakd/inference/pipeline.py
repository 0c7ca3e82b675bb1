"""Fusing a pair of files: one pipeline, whatever runs the network.

:func:`fuse_files` reads and checks once, then hands the arrays to a :class:`Runtime`, the strategy that
fuses them: the whole image through PyTorch (:class:`csakd.inference.fuse.TorchRuntime`), tile by tile
through PyTorch (:class:`csakd.inference.tiled.TiledRuntime`, which streams its output window by window
into a :class:`~csakd.data.cube_writer.CubeWriter`) or through ONNX Runtime
(:class:`csakd.inference.onnx_runtime.OnnxFuser`). The steps, in order:

1. the output: not one of the inputs, free (or ``overwrite``), of a known format whose file library is
   installed (:func:`check_target`);
2. the model, opened by the caller's function (a checkpoint or an ONNX file; its own settings checked);
3. the two files read, nodata pixels filled (so a NaN nodata value passes), finite values, band counts,
   grids (:func:`check_pair`) and georeferenced footprints checked; negative or absurd values warned about
   (refused with ``strict``); the pair's spectral consistency with the model's response measured
   (:func:`read_checked_pair`);
4. the fusion; each result (the image, or each window) refused when not finite, clipped at 0 (``clip``) and
   given the output's nodata;
5. the output written with the LR-HSI's wavelengths (else the model's) and band names and the HR-MSI's
   georeferencing.

This module imports no PyTorch (the ONNX Runtime path goes through it).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from csakd.data import Cube, read_cube, write_cube
from csakd.data.cube_writer import CubeWriter
from csakd.data.writers import check_writer_installed, output_targets
from csakd.errors import InputError
from csakd.files import check_outputs, check_result
from csakd.inference.checks import ClipCounter, check_pair_response
from csakd.inference.geo import NodataMasks, apply_nodata, check_footprint, output_geo, output_nodata, prepare_nodata
from csakd.normalization import Normalization, check_values

__all__ = ["CheckedPair", "Runtime", "check_arrays", "check_grids", "check_pair", "check_target", "fuse_files",
           "read_checked_pair"]

#: ``writer(rows, cols, block)``: HR row and column slices and the ``(C, rows, cols)`` float32 block.
BlockWriter = Callable[[slice, slice, np.ndarray], None]


class Runtime:
    """What fuses arrays in the files' units, as the pipeline sees it.

    Attributes:
        what: how messages name the model (``the checkpoint``, ``the ONNX model student.onnx``).
        bands, msi_bands, scale: what it fuses.
        normalization: how the files' units map to [0, 1].
        wavelengths: (C,) nm stored with the model, or None.
        streaming: :meth:`fuse_into` writes the output block by block (it is never whole in memory); else
            :meth:`fuse` returns it.
    """

    what: str
    bands: int
    msi_bands: int
    scale: int
    normalization: Normalization
    wavelengths: np.ndarray | None
    streaming: bool = False

    @property
    def response(self) -> dict[str, Any] | None:
        """The spectral response the model was trained through (``{"matrix": ...}``), or None."""
        return None

    @property
    def model_config(self) -> dict[str, Any]:
        """``scale``, ``blur_size``, ``blur_sigma``, ``residual_phase``: the degradation of the pairs it learnt."""
        return {"scale": self.scale}

    def check_bands(self, bands: int, msi_bands: int) -> None:
        """Refuse band counts other than the model's, naming both (:class:`~csakd.errors.CheckpointError`)."""
        raise NotImplementedError

    def result_cause(self) -> str:
        """The likely cause of a non-finite result from finite inputs (the weights, else an overflow)."""
        raise NotImplementedError

    def fuse(self, lr_hsi: np.ndarray, hr_msi: np.ndarray) -> np.ndarray:
        """(C, h, w) and (c, H, W) in the files' units -> (C, H, W) float32."""
        raise NotImplementedError

    def fuse_into(self, lr_hsi: np.ndarray, hr_msi: np.ndarray, writer: BlockWriter) -> None:
        """Fuse, handing every HR pixel exactly once to ``writer`` (a streaming runtime). ``lr_hsi`` and
        ``hr_msi`` may be overwritten (the pipeline does not use them again)."""
        raise NotImplementedError


# ------------------------------------------------------------------------------------------ checks


def check_grids(lr_shape: Sequence[int], msi_shape: Sequence[int], scale: int) -> None:
    """Raise when the HR-MSI grid is not ``scale`` times the LR-HSI grid (the last two axes of each shape)."""
    h, w = (int(v) for v in lr_shape[-2:])
    H, W = (int(v) for v in msi_shape[-2:])
    if h < 1 or w < 1 or H % h or W % w or H // h != W // w:
        raise InputError(
            f"hr_msi is {H}x{W} but lr_hsi is {h}x{w}: the grid ratio must be one integer scale in both axes"
        )
    if H // h != scale:
        raise InputError(
            f"hr_msi is {H}x{W} and lr_hsi {h}x{w}: a ratio of {H // h}, but the model fuses at x{scale}"
        )


def check_pair(lr_shape: Sequence[int], msi_shape: Sequence[int], model: Runtime) -> None:
    """Refuse an LR-HSI (C, h, w) / HR-MSI (c, H, W) pair that does not fit ``model``, before any work.

    Raises:
        InputError: not 3-D, or grids that are not ``model.scale`` apart (the message gives both sizes).
        CheckpointError: band counts other than the model's (:meth:`Runtime.check_bands`, naming both).
    """
    if len(lr_shape) != 3 or len(msi_shape) != 3:
        raise InputError(
            f"expected lr_hsi (C, h, w) and hr_msi (c, H, W), got shapes {tuple(lr_shape)} and {tuple(msi_shape)}"
        )
    model.check_bands(int(lr_shape[0]), int(msi_shape[0]))
    check_grids(lr_shape, msi_shape, model.scale)


def check_arrays(lr_hsi: np.ndarray, hr_msi: np.ndarray, model: Runtime) -> None:
    """:func:`check_pair` on two arrays, then refuse NaN or Inf values (the in-memory fusions' check)."""
    check_pair(lr_hsi.shape, hr_msi.shape, model)
    for name, arr in (("lr_hsi", lr_hsi), ("hr_msi", hr_msi)):
        bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        if bad:
            raise InputError(f"{name} has {bad} NaN or Inf values: expected finite numbers")


def check_target(out_path: str | os.PathLike[str], inputs: Mapping[str, str | os.PathLike[str]], *,
                 overwrite: bool = False) -> Path:
    """Check the output before any work: not one of ``inputs`` (:func:`csakd.files.check_outputs`), free
    unless ``overwrite``, of a format csakd writes, with its file library installed; return it as a Path."""
    check_outputs({"out": out_path}, inputs, overwrite=overwrite)
    target = Path(out_path).expanduser()
    output_targets(target, overwrite=overwrite)
    check_writer_installed(target)
    return target


@dataclass
class CheckedPair:
    """An LR-HSI and an HR-MSI read and checked against a model: their nodata masks (the pixels were filled)
    and their spectral consistency with the model's response (None when it stores none)."""

    lr: Cube
    msi: Cube
    masks: NodataMasks
    consistency: dict[str, Any] | None


def read_checked_pair(
    model: Runtime,
    lr_path: str | os.PathLike[str],
    msi_path: str | os.PathLike[str],
    *,
    variable_lr: str | None = None,
    variable_msi: str | None = None,
    layout: Literal["auto", "chw", "hwc"] = "auto",
    strict: bool = False,
) -> CheckedPair:
    """Read the two files and check them against ``model`` and each other, before any output exists.

    Nodata pixels are filled first (so a NaN nodata value is accepted), then finiteness, band counts and
    grids (:func:`check_pair`) and the georeferenced footprints are checked; negative or absurd values are
    warned about (refused with ``strict``, :func:`csakd.normalization.check_values`) and the pair's spectral
    consistency with the model's response is measured (:func:`csakd.inference.checks.check_pair_response`).
    """
    lr = read_cube(os.fspath(lr_path), variable=variable_lr, layout=layout)
    msi = read_cube(os.fspath(msi_path), variable=variable_msi, layout=layout)
    masks = prepare_nodata(lr, msi, model.scale)
    lr.check_finite("lr_hsi")
    msi.check_finite("hr_msi")
    check_pair(lr.data.shape, msi.data.shape, model)
    check_footprint(lr.geo, msi.geo, lr.data.shape, msi.data.shape, model.scale)
    check_values(model.normalization, lr.data, msi.data, strict=strict,
                 names=(f"lr_hsi {lr.source}", f"hr_msi {msi.source}"))
    consistency = check_pair_response(lr.data, msi.data, response=model.response, model_config=model.model_config,
                                      normalization=model.normalization, what=model.what)
    return CheckedPair(lr, msi, masks, consistency)


# ------------------------------------------------------------------------------------------ the pipeline


def fuse_files(
    open_model: Callable[[], Runtime],
    lr_path: str | os.PathLike[str],
    msi_path: str | os.PathLike[str],
    model_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    model_option: str = "checkpoint",
    overwrite: bool = False,
    variable_lr: str | None = None,
    variable_msi: str | None = None,
    layout: Literal["auto", "chw", "hwc"] = "auto",
    strict: bool = False,
    clip: bool = True,
    report: dict[str, Any] | None = None,
) -> Path:
    """Read the two files, fuse them with the runtime that ``open_model()`` gives, and write the result in the
    format of ``out_path``'s extension (the steps in the module docstring).

    Everything is checked before the output is written; an existing output needs ``overwrite``; the output is
    never one of the inputs (``model_path`` included, named ``model_option`` in messages). A result with NaN
    or Inf values is not written (a streaming runtime stops at the first such window; its temporary file is
    removed and the output never appears). With ``clip`` fused values below 0 are set to 0 and counted;
    ``report``, when given, receives ``spectral_consistency`` and ``clip``.

    Returns:
        ``out_path`` as a :class:`~pathlib.Path`.
    """
    target = check_target(out_path, {"lr_hsi": lr_path, "hr_msi": msi_path, model_option: model_path},
                          overwrite=overwrite)
    model = open_model()
    pair = read_checked_pair(model, lr_path, msi_path, variable_lr=variable_lr, variable_msi=variable_msi,
                             layout=layout, strict=strict)
    lr, msi, masks = pair.lr, pair.msi, pair.masks
    clipped = ClipCounter(inplace=not model.streaming)  # streamed blocks may be views of the blending buffers
    geo = output_geo(msi.geo, masks)
    fill = output_nodata(geo)
    wavelengths = lr.wavelengths if lr.wavelengths is not None else model.wavelengths

    def finished(rows: slice, cols: slice, block: np.ndarray, what: str) -> np.ndarray:
        check_result(block, what, target=target, cause=model.result_cause)  # before nodata (NaN) is filled in
        if clip:
            block = clipped(block)
        mask = masks.hr_window(rows, cols)
        if mask is not None and mask.any():
            owned = not model.streaming
            block = apply_nodata(block if owned else np.array(block, dtype=np.float32), mask, fill)
        return block

    if model.streaming:
        shape = (lr.bands, msi.height, msi.width)
        with CubeWriter(target, shape, wavelengths=wavelengths, band_names=lr.band_names, geo=geo,
                        overwrite=overwrite) as out:

            def writer(rows: slice, cols: slice, block: np.ndarray) -> None:
                where = f"rows {rows.start}:{rows.stop}, columns {cols.start}:{cols.stop}"
                out(rows, cols, finished(rows, cols, block, f"the fused window at {where}"))

            model.fuse_into(lr.data, msi.data, writer)
    else:
        fused = model.fuse(lr.data, msi.data)
        fused = finished(slice(0, msi.height), slice(0, msi.width), fused, "the fused image")
        write_cube(target, Cube(fused, wavelengths=wavelengths, band_names=lr.band_names, geo=geo,
                                source=str(lr_path)), overwrite=overwrite)
    if clip:
        clipped.log()
    if report is not None:
        report.update({"spectral_consistency": pair.consistency, "clip": clipped.summary() if clip else None})
    return target
