"""Tiled, streaming fusion of whole scenes: bounded memory, the same result as one whole-image pass.

The tiles and the overlap that makes them exact are planned in :mod:`csakd.inference.tiling`; the passes
over them (the scene-wide attention of pass 1, the windows of pass 2) and the blending of neighbouring windows
are in :mod:`csakd.inference.passes`. When one window would cover the whole image, the fusion is one
whole-image pass.

**Streaming.** The output goes through ``writer(rows, cols, block)``: rows and columns are HR slices,
``block`` a ``(C, rows, cols)`` float32 array; every pixel is written exactly once. Only ramp regions wait
for their second window (a strip of ``overlap`` pixels along the shorter image side); nothing else is
held, and without a writer the result is assembled into one array. :class:`~csakd.data.cube_writer.CubeWriter`
writes such blocks into a GeoTIFF (rasterio windows), ENVI or ``.npy`` file (positioned writes), atomically;
:func:`fuse_files_tiled` is the file pipeline (:func:`csakd.inference.pipeline.fuse_files`) with the tiled
runtime, :class:`TiledRuntime`.

Example:
    >>> model = create_model("student", bands=31, msi_bands=3).eval()  # doctest: +SKIP
    >>> out = fuse_tiled(model, lr_hsi, hr_msi, tile=256)  # (C, H, W), the network's [-1, 1] scale  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from csakd.checkpoint import LoadedModel
from csakd.data.cube_writer import CubeWriter
from csakd.errors import InputError
from csakd.inference.fuse import TorchRuntime
from csakd.inference.passes import Writer, fuse_windows, scene_attention
from csakd.inference.pipeline import check_arrays
from csakd.inference.tiling import (
    BLENDS,
    AxisPlan,
    BlendKind,
    TilePlan,
    check_tiling,
    plan_tiles,
    receptive_field,
    statistics_receptive_field,
)
from csakd.models.dts import DTSNet

__all__ = [
    "BLENDS",
    "AxisPlan",
    "CubeWriter",
    "TilePlan",
    "TiledRuntime",
    "Writer",
    "check_tiling",
    "fuse_files_tiled",
    "fuse_tiled",
    "fuse_tiled_arrays",
    "plan_tiles",
    "receptive_field",
    "statistics_receptive_field",
]

log = logging.getLogger(__name__)


@torch.no_grad()
def fuse_tiled(
    model: DTSNet,
    lr_hsi: torch.Tensor,
    hr_msi: torch.Tensor,
    *,
    tile: int,
    overlap: int | None = None,
    batch_tiles: int = 1,
    writer: Writer | None = None,
    progress: bool = False,
    blend: BlendKind = "cosine",
) -> np.ndarray | None:
    """Fuse one scene tile by tile, on the network's scale (inputs and output in [-1, 1]).

    See :mod:`csakd.inference.tiling` for the tiling and :mod:`csakd.inference.passes` for the two passes of
    the attention fusions and the blending.

    Args:
        model: the network (its device is used; the inputs may stay on the CPU).
        lr_hsi: (1, C, h, w), the network's scale.
        hr_msi: (1, c, h * scale, w * scale), the network's scale.
        tile: the largest core side in HR pixels, a multiple of the scale; 0 = one pass over the whole image.
        overlap: context on each side of a core, HR pixels (a multiple of the scale); None =
            :func:`receptive_field` (exact cores). Smaller is faster and approximate.
        batch_tiles: windows run together in one batch.
        writer: receives every HR pixel exactly once as ``writer(rows, cols, block)``, ``block`` a
            ``(C, rows, cols)`` float32 array; the whole output is then never held in memory.
        progress: show a tqdm progress bar (with ETA) on stderr.
        blend: ``cosine``, ``linear`` or ``none``: how neighbouring windows are blended across core boundaries
            when ``overlap`` is below the receptive field (a ramp of ``overlap / 2`` pixels).

    Returns:
        The (C, H, W) float32 output when ``writer`` is None, else None.

    Raises:
        InputError: bad tiling settings (:func:`check_tiling`), or inputs that do not fit the network or
            are not one scene (batch 1).
    """
    cfg = model.config
    ov = check_tiling(cfg, tile=tile, overlap=overlap, batch_tiles=batch_tiles, blend=blend)
    if lr_hsi.ndim != 4 or lr_hsi.shape[0] != 1 or hr_msi.ndim != 4 or hr_msi.shape[0] != 1:
        raise InputError(
            f"fuse_tiled fuses one scene: expected (1, C, h, w) and (1, c, H, W), got lr_hsi "
            f"{tuple(lr_hsi.shape)} and hr_msi {tuple(hr_msi.shape)}"
        )
    model.check_inputs(lr_hsi, hr_msi)
    device = next(model.parameters()).device
    bands, (height, width) = cfg.bands, hr_msi.shape[-2:]
    rf = receptive_field(cfg)
    plan: TilePlan | None = None
    if tile > 0:
        ramp = ov // 4 if (blend != "none" and ov < rf) else 0
        plan = plan_tiles(height, width, tile=tile, overlap=ov, scale=cfg.scale, ramp=ramp)
        if plan.count == 1:
            log.info("tile %d with overlap %d: the one window is the whole %dx%d image: one pass", tile, ov,
                     height, width)
            plan = None
    output: np.ndarray | None = None
    sink: Writer
    if writer is None:
        full = output = np.empty((bands, height, width), dtype=np.float32)

        def sink(rows: slice, cols: slice, block: np.ndarray) -> None:
            full[:, rows, cols] = block

    else:
        sink = writer
    if plan is None:
        out, _ = model(lr_hsi.to(device=device, dtype=torch.float32), hr_msi.to(device=device, dtype=torch.float32))
        sink(slice(0, height), slice(0, width), out[0].float().cpu().numpy())
        return output

    attention_needed = model.attention_module is not None
    stats_plan: TilePlan | None = None
    if attention_needed:
        stats_ov = min(ov, statistics_receptive_field(cfg))
        stats_plan = plan_tiles(height, width, tile=tile, overlap=stats_ov, scale=cfg.scale)
    windows = plan.count
    log.info(
        "tiled fusion of %dx%d HR pixels: %dx%d tiles of at most %d, overlap %d (receptive field %d), windows "
        "%dx%d (%.1fx the pixels of one pass), %s%s",
        height, width, plan.rows.count, plan.cols.count, tile, ov, rf, plan.rows.window, plan.cols.window,
        windows * plan.rows.window * plan.cols.window / (height * width),
        "two passes (scene-wide attention)" if attention_needed else "one pass",
        f", {blend} blending over {2 * plan.rows.ramp} pixels" if plan.rows.ramp or plan.cols.ramp else "",
    )
    if ov < rf:
        log.warning(
            "overlap %d is below the receptive field %d: tile cores are approximate near their borders", ov, rf
        )

    from tqdm.auto import tqdm

    with tqdm(total=windows * (2 if attention_needed else 1), disable=not progress, unit="tile",
              desc="fusing", dynamic_ncols=True) as bar:
        attention: torch.Tensor | None = None
        if stats_plan is not None:
            bar.set_description("fusing (pass 1: attention)")
            attention = scene_attention(model, lr_hsi, hr_msi, stats_plan, batch_tiles, device, bar.update)
            bar.set_description("fusing (pass 2)")
        fuse_windows(model, lr_hsi, hr_msi, plan, batch_tiles=batch_tiles, blend=blend, writer=sink,
                     attention=attention, device=device, tick=bar.update)
    return output


# ------------------------------------------------------------------------------- arrays and files


def _as_cube_tensor(x: np.ndarray | torch.Tensor, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        t = x.detach().cpu()
        if t.is_complex() or t.dtype == torch.bool:
            raise InputError(f"{name} has dtype {t.dtype}: expected real numbers")
    else:
        arr = np.asarray(x)
        if arr.dtype.kind not in "iuf":
            raise InputError(f"{name} has dtype {arr.dtype}: expected real numbers")
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        with warnings.catch_warnings():  # a read-only array (a memory-mapped file) is shared, never written to:
            warnings.simplefilter("ignore", UserWarning)  # fuse_tiled_arrays copies it before any in-place step
            t = torch.from_numpy(arr)
    if t.ndim != 3:
        raise InputError(f"{name} has shape {tuple(t.shape)}: expected a (bands, height, width) cube")
    return t.to(torch.float32)


def fuse_tiled_arrays(
    loaded: LoadedModel,
    lr_hsi: np.ndarray | torch.Tensor,
    hr_msi: np.ndarray | torch.Tensor,
    *,
    tile: int,
    overlap: int | None = None,
    batch_tiles: int = 1,
    writer: Writer | None = None,
    progress: bool = False,
    device: str = "auto",
    blend: BlendKind = "cosine",
    inplace: bool = False,
) -> np.ndarray | None:
    """Fuse one pair in the files' units, tile by tile: (C, h, w) and (c, H, W) -> (C, H, W) float32.

    The checkpoint's normalisation is applied to the whole scene first (``per_image`` divides by the
    maximum of the WHOLE LR-HSI, never a tile's), the network sees [-1, 1], and each block is mapped back
    before it reaches ``writer``. With ``tile=0`` this is :func:`csakd.inference.fuse.fuse_arrays`. The two
    inputs are held in memory as float32 (``scale^2`` and ``C / c`` times smaller than the output); the
    output is not, when a writer is given.

    Args:
        loaded: a :class:`~csakd.checkpoint.LoadedModel`.
        lr_hsi, hr_msi: the two images, bands first.
        tile, overlap, batch_tiles, writer, progress, blend: as for :func:`fuse_tiled`.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (the model is moved there; tiles go there one batch
            at a time).
        inplace: the inputs may be overwritten: float32 arrays are normalised where they lie, so a large
            scene's inputs are held once, not twice (what :func:`fuse_files_tiled` does with what it read).

    Returns:
        The fused (C, H, W) float32 cube, or None when ``writer`` is given.

    Raises:
        InputError: shapes, grids, non-finite values or tiling settings that do not fit.
        CheckpointError: band counts that differ from the checkpoint's.
    """
    from csakd.devices import resolve_device
    from csakd.normalization import from_network, to_network

    cfg = loaded.config
    check_tiling(cfg, tile=tile, overlap=overlap, batch_tiles=batch_tiles, blend=blend)
    lr = _as_cube_tensor(lr_hsi, "lr_hsi")[None]
    msi = _as_cube_tensor(hr_msi, "hr_msi")[None]
    check_arrays(lr[0].numpy(), msi[0].numpy(), TorchRuntime(loaded))
    dev = resolve_device(device)
    model = loaded.model.to(dev).eval()
    f_hsi, f_msi = loaded.normalization.factors(lr)
    factor = np.float32(f_hsi.reshape(-1)[0].item())
    # in place, a large scene's inputs are held once; a read-only array (a memory map) is never written to
    inplace = inplace and all(not isinstance(x, np.ndarray) or x.flags.writeable for x in (lr_hsi, hr_msi))
    lr_n = to_network(lr.div_(f_hsi) if inplace else lr / f_hsi, inplace=True)
    msi_n = to_network(msi.div_(f_msi) if inplace else msi / f_msi, inplace=True)

    def to_units(block: np.ndarray) -> np.ndarray:
        # the same float32 operations as fuse_arrays: (x + 1) * 0.5 * factor
        block = from_network(block, inplace=True)
        block *= factor
        return block

    if writer is None:
        out = fuse_tiled(model, lr_n, msi_n, tile=tile, overlap=overlap, batch_tiles=batch_tiles,
                         progress=progress, blend=blend)
        assert out is not None
        return to_units(out)
    sink = writer

    def unit_writer(rows: slice, cols: slice, block: np.ndarray) -> None:
        sink(rows, cols, to_units(np.array(block, dtype=np.float32, copy=True)))

    fuse_tiled(model, lr_n, msi_n, tile=tile, overlap=overlap, batch_tiles=batch_tiles, writer=unit_writer,
               progress=progress, blend=blend)
    return None


class TiledRuntime(TorchRuntime):
    """A loaded checkpoint as a streaming :class:`~csakd.inference.pipeline.Runtime`: tile by tile
    (:func:`fuse_tiled_arrays`, the inputs normalised in place), each block handed on as it is complete."""

    streaming = True

    def __init__(self, loaded: LoadedModel, *, checkpoint: object = None, device: str = "auto", tile: int,
                 overlap: int | None = None, batch_tiles: int = 1, blend: BlendKind = "cosine",
                 progress: bool = False) -> None:
        super().__init__(loaded, checkpoint=checkpoint, device=device)
        check_tiling(loaded.config, tile=tile, overlap=overlap, batch_tiles=batch_tiles, blend=blend)
        self.tile, self.overlap, self.batch_tiles = tile, overlap, batch_tiles
        self.blend, self.progress = blend, progress

    def fuse_into(self, lr_hsi: np.ndarray, hr_msi: np.ndarray, writer: Writer) -> None:
        fuse_tiled_arrays(self.loaded, lr_hsi, hr_msi, tile=self.tile, overlap=self.overlap,
                          batch_tiles=self.batch_tiles, writer=writer, progress=self.progress, device=self.device,
                          blend=self.blend, inplace=True)  # the arrays read are not used again


def fuse_files_tiled(
    lr_path: str | os.PathLike[str],
    msi_path: str | os.PathLike[str],
    checkpoint: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    tile: int,
    overlap: int | None = None,
    batch_tiles: int = 1,
    blend: BlendKind = "cosine",
    overwrite: bool = False,
    device: str = "auto",
    variable_lr: str | None = None,
    variable_msi: str | None = None,
    layout: Literal["auto", "chw", "hwc"] = "auto",
    progress: bool = False,
    strict: bool = False,
    clip: bool = True,
    report: dict[str, Any] | None = None,
) -> Path:
    """Read the two files, fuse tile by tile and write the output window by window (:class:`CubeWriter`).

    As :func:`csakd.inference.fuse.fuse_files` (wavelengths from the LR-HSI, else the checkpoint;
    georeferencing from the HR-MSI; footprints checked and nodata handled by :mod:`csakd.inference.geo`, the
    output's nodata mask applied window by window), with bounded memory for the output. Everything is checked
    before the output file is created; an existing output needs ``overwrite``, and no input is ever the output.
    Each window is checked before it is written: one with NaN or Inf values stops the fusion, removes the
    temporary file, and the output never appears. ``clip`` and ``report`` as for
    :func:`csakd.inference.fuse.fuse_files` (values below 0 are clipped window by window).
    """
    from csakd.checkpoint import load_checkpoint
    from csakd.inference import pipeline

    def open_model() -> TiledRuntime:
        return TiledRuntime(load_checkpoint(checkpoint), checkpoint=checkpoint, device=device, tile=tile,
                            overlap=overlap, batch_tiles=batch_tiles, blend=blend, progress=progress)

    return pipeline.fuse_files(open_model, lr_path, msi_path, checkpoint, out_path, overwrite=overwrite,
                               variable_lr=variable_lr, variable_msi=variable_msi, layout=layout, strict=strict,
                               clip=clip, report=report)
