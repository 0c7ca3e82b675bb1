"""Tiled, streaming fusion of whole scenes: bounded memory, the same result as one whole-image pass.

**Tiles.** The HR image is split along each axis into cores: contiguous runs of LR pixels (``tile / scale``
at most, the sizes balanced), so that every core starts and ends on an LR pixel. The cores partition the
image. Each core is run inside a window that extends it by ``overlap`` HR pixels on each side; windows all
have the same size (``max core + 2 overlap``, or the image side when that is smaller): a window at the
image border is shifted inwards rather than clipped, so it still has ``overlap`` pixels of context on each
interior side and tiles can be batched.

**Exactness.** :func:`receptive_field` is the overlap (HR pixels, a multiple of the scale) beyond which the
window's border no longer reaches the core: with ``overlap >= receptive_field(config)`` every core pixel
is exactly what one pass over the whole image gives (up to float rounding). Every convolution pads with
zeros, and zero padding at an image border is the same in a window that touches that border, so windows
need context only on their interior sides.

**Global attention (two passes).** The ``cross_attention`` and ``csa`` fusions reduce over every pixel of
the image (:class:`~csakd.models.fusion.ChannelCrossAttention`). Pass 1 runs only the HSI and MSI
streams (the inputs of Q and K) on each window and adds, over the window's core only, the per-head sums
``Q K^T`` and, for the ``normalized`` form, the squared norms of the Q and K channels
(:meth:`~csakd.models.dts.DTSNet.fusion_statistics`); its overlap is ``min(overlap,
statistics_receptive_field(config))``. The scene's attention matrix is computed once from these sums
(:meth:`~csakd.models.dts.DTSNet.attention_from_statistics`, in float64) and pass 2 runs every window
with it. Fusions without attention (``none``, ``sigmoid``, ``concat_gating``) need pass 2 only.

**Trading overlap for speed (blending).** With a smaller overlap the cores are approximate, the error
largest next to a core boundary, where the two neighbouring windows' errors differ: a seam. To soften it,
each interior boundary gets a ramp of ``overlap / 2`` HR pixels (``overlap / 4`` each side) over which the
two windows' outputs are blended with weights ``1 - r(t)`` and ``r(t)`` (``cosine``, the default:
``r(t) = (1 - cos(pi t)) / 2``; ``linear``: ``r(t) = t``; ``t`` in (0, 1) across the ramp); at a corner the
four windows' weights are products, which also sum to 1. A window's output is thus used no closer than
``3 overlap / 4`` to its border. (Measured on CAVE crops with tiny random networks at overlaps of 8 and 16
below a receptive field of 128: the cosine ramp halves the error step at core boundaries and keeps the RMS
error at or below the hard cut's; a ramp over the whole overlap raised the RMS error 2-3x, as it uses
outputs close to window borders, where errors grow fast.) With ``overlap >= receptive_field`` or
``blend="none"`` there are no ramps: each core is written as it is. Below
:func:`statistics_receptive_field` pass 1's sums are approximate too, so the scene's attention matrix
changes slightly, and with it every pixel (a global error without seams).

A window that would span a whole image axis makes that axis one core (the same work, done once); when that
holds for both axes, the fusion is one whole-image pass.

**Streaming.** The output goes through ``writer(rows, cols, block)``: rows and columns are HR slices,
``block`` a ``(C, rows, cols)`` float32 array; every pixel is written exactly once. Only ramp regions wait
for their second window (a strip of ``overlap`` pixels along the shorter image side); nothing else is
held, and without a writer the result is assembled into one array. :class:`CubeWriter` writes such blocks
into a GeoTIFF (rasterio windows), ENVI or ``.npy`` file (positioned writes), atomically.

Example:
    >>> model = create_model("student", bands=31, msi_bands=3).eval()  # doctest: +SKIP
    >>> out = fuse_tiled(model, lr_hsi, hr_msi, tile=256)  # (C, H, W), the network's [-1, 1] scale  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from csakd.checkpoint import LoadedModel
from csakd.data.cube_writer import CubeWriter
from csakd.errors import InputError
from csakd.models.config import ModelConfig
from csakd.models.detail import detail_reach
from csakd.models.dts import DTSNet

__all__ = [
    "BLENDS",
    "AxisPlan",
    "CubeWriter",
    "TilePlan",
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

BlendKind = Literal["linear", "cosine", "none"]
BLENDS: tuple[str, ...] = ("cosine", "linear", "none")
Writer = Callable[[slice, slice, np.ndarray], None]
"""``writer(rows, cols, block)``: HR row and column slices and the ``(C, rows, cols)`` float32 block."""

_CONVS_PER_CLRA = 15  # three CLRBs of five 3x3 convolutions


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def receptive_field(config: ModelConfig) -> int:
    """The tile overlap, in HR pixels, that makes tiled cores exact: a bound on the network's reach.

    For tiles on LR pixel boundaries, an output pixel depends only on inputs (and zero padding at the image
    border) within this many HR pixels of it. Per path, with ``s`` the scale, ``n`` a stream's CLRA blocks
    (15 3x3 convolutions each, after the stream's first convolution) and the head's two 3x3 convolutions:

    - HSI stream: ``s (1 + 15 n_hsi)`` (LR convolutions; nearest upsampling stays in the LR pixel);
    - MSI stream: ``1 + 15 n_msi``;
    - joint LR stream: ``s (1 + 15 n_lr + e)``: ``e = 1`` at ``s = 2``, where the bicubic downsampling of
      the HR-MSI reads HR pixels of the neighbouring LR cells, else 0 (odd scales sample the cell's centre
      pixel exactly, even scales from 4 up read four pixels inside the cell);
    - joint HR stream: ``s + 1 + 15 n_hr`` (bilinear upsampling reads the neighbouring LR pixel; ``n_hr = 0``
      when the joint-HR blocks are not applied);
    - then ``+ 2`` for the head; the bicubic residual reads two LR pixels each way (``2 s``), the
      ``regression`` residual its local windows and the MSI's blur
      (:func:`csakd.models.detail.detail_reach`).

    The result is the largest of these, rounded up to a multiple of ``s``. The student preset (blocks 1, 4,
    4, 1 at x4) gives 248; the teacher (6, 6, 4, 4), 368.
    """
    s = config.scale
    n_hr, n_lr, n_hsi, n_msi = config.blocks
    hsi = s * (1 + _CONVS_PER_CLRA * n_hsi)
    msi = 1 + _CONVS_PER_CLRA * n_msi
    joint_lr = s * (1 + _CONVS_PER_CLRA * n_lr + (1 if s == 2 else 0))
    joint_hr = s + 1 + _CONVS_PER_CLRA * (n_hr if config.apply_joint_hr_blocks else 0)
    reach = max(hsi, msi, joint_lr, joint_hr) + 2
    if config.residual == "bicubic":
        reach = max(reach, 2 * s)
    if config.residual == "regression":
        reach = max(reach, detail_reach(s, config.blur_size, config.detail_radius))
    return _round_up(reach, s)


def statistics_receptive_field(config: ModelConfig) -> int:
    """The overlap (HR pixels, a multiple of the scale) that makes pass 1's attention sums exact.

    Q and K read only the HSI stream (``s (1 + 15 n_hsi)``) and the MSI stream (``1 + 15 n_msi``).
    """
    s = config.scale
    _, _, n_hsi, n_msi = config.blocks
    return _round_up(max(s * (1 + _CONVS_PER_CLRA * n_hsi), 1 + _CONVS_PER_CLRA * n_msi), s)


# --------------------------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class AxisPlan:
    """How one image axis of ``size`` HR pixels is tiled.

    Attributes:
        size: HR pixels along the axis.
        bounds: core boundaries ``0 = b_0 < b_1 < ... < b_n = size`` (multiples of the scale); core ``k`` is
            ``[b_k, b_k+1)``.
        window: the window length (the same for every core).
        starts: window ``k`` is ``[starts[k], starts[k] + window)``; it holds ``[b_k - overlap, b_k+1 +
            overlap)`` clipped to the image.
        ramp: half-width of the blending ramp around each interior boundary (0: cores are written as they are).
    """

    size: int
    bounds: tuple[int, ...]
    window: int
    starts: tuple[int, ...]
    ramp: int

    @property
    def count(self) -> int:
        """The number of cores (and windows) along the axis."""
        return len(self.starts)

    def pieces(self, blend: BlendKind) -> list[tuple[int, int, dict[int, np.ndarray]]]:
        """Segments of the axis with the weight of each contributing window: ``(start, stop, {k: w})``.

        The weights of a segment sum to 1 at every pixel; interior segments have one window of weight 1.
        """
        out: list[tuple[int, int, dict[int, np.ndarray]]] = []
        m = self.ramp
        n = self.count
        for k in range(n):
            lo = self.bounds[k] + (m if k > 0 else 0)
            hi = self.bounds[k + 1] - (m if k < n - 1 else 0)
            if hi > lo:
                out.append((lo, hi, {k: np.ones(hi - lo, dtype=np.float32)}))
            if k < n - 1 and m > 0:
                b = self.bounds[k + 1]
                t = (np.arange(2 * m, dtype=np.float64) + 0.5) / (2 * m)
                rise = t if blend == "linear" else 0.5 - 0.5 * np.cos(np.pi * t)
                out.append((b - m, b + m, {k: (1.0 - rise).astype(np.float32), k + 1: rise.astype(np.float32)}))
        return out


@dataclass(frozen=True)
class TilePlan:
    """The tiling of an ``H x W`` HR image: one :class:`AxisPlan` per axis, and the overlap used."""

    rows: AxisPlan
    cols: AxisPlan
    overlap: int

    @property
    def count(self) -> int:
        return self.rows.count * self.cols.count

    def window_slices(self, i: int, j: int, scale: int = 1) -> tuple[slice, slice]:
        """The window of tile ``(i, j)`` in HR pixels (``scale=1``) or on the LR grid (``scale=s``)."""
        r0, c0 = self.rows.starts[i], self.cols.starts[j]
        return (
            slice(r0 // scale, (r0 + self.rows.window) // scale),
            slice(c0 // scale, (c0 + self.cols.window) // scale),
        )

    def core_slices(self, i: int, j: int) -> tuple[slice, slice]:
        """The core of tile ``(i, j)`` in HR pixels."""
        return (
            slice(self.rows.bounds[i], self.rows.bounds[i + 1]),
            slice(self.cols.bounds[j], self.cols.bounds[j + 1]),
        )

    def order(self) -> list[tuple[int, int]]:
        """Tiles in the order they are run: the inner loop along the longer axis, so that the ramp regions
        waiting for their second window span the shorter side."""
        if self.cols.size >= self.rows.size:
            return [(i, j) for i in range(self.rows.count) for j in range(self.cols.count)]
        return [(i, j) for j in range(self.cols.count) for i in range(self.rows.count)]


def _plan_axis(size: int, tile: int, overlap: int, scale: int, ramp: int) -> AxisPlan:
    n_lr = size // scale
    tile_lr = max(1, tile // scale)
    count = -(-n_lr // tile_lr)
    base, extra = divmod(n_lr, count)
    lengths = [(base + (1 if k < extra else 0)) * scale for k in range(count)]
    if max(lengths) + 2 * overlap >= size:  # every window would span the axis: one core does the same work once
        lengths, count = [size], 1
    bounds = [0]
    for length in lengths:
        bounds.append(bounds[-1] + length)
    window = min(size, max(lengths) + 2 * overlap)
    starts = tuple(min(max(bounds[k] - overlap, 0), size - window) for k in range(count))
    m = min(ramp, min(lengths) // 2) if count > 1 else 0
    return AxisPlan(size=size, bounds=tuple(bounds), window=window, starts=starts, ramp=m)


def plan_tiles(height: int, width: int, *, tile: int, overlap: int, scale: int, ramp: int = 0) -> TilePlan:
    """Split an ``height x width`` HR image (multiples of ``scale``) into LR-aligned tiles.

    Args:
        tile: the largest core side, HR pixels (a positive multiple of ``scale``).
        overlap: context on each interior side of a core, HR pixels (a multiple of ``scale``).
        scale: the HR / LR grid ratio.
        ramp: half-width of the blending ramps (capped at half the smallest core).
    """
    return TilePlan(
        rows=_plan_axis(height, tile, overlap, scale, ramp),
        cols=_plan_axis(width, tile, overlap, scale, ramp),
        overlap=overlap,
    )


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_tiling(
    config: ModelConfig,
    *,
    tile: int,
    overlap: int | None = None,
    batch_tiles: int = 1,
    blend: str = "cosine",
) -> int:
    """Check the tiling settings against a model; return the overlap to use (the receptive field for None).

    Raises:
        InputError: ``tile`` is not 0 or a positive multiple of the scale, ``overlap`` is negative or not a
            multiple of the scale, ``batch_tiles`` is not a positive integer, or ``blend`` is unknown.
    """
    s = config.scale
    if not _is_int(tile) or tile < 0:
        raise InputError(f"tile={tile!r}: expected 0 (one pass) or a positive number of HR pixels")
    if tile % s:
        lower, upper = tile - tile % s, tile - tile % s + s
        hint = f"{lower} or {upper}" if lower > 0 else f"{upper}"
        raise InputError(
            f"tile={tile} is not a multiple of the scale {s}: tiles must start and end on LR pixels; "
            f"use {hint} (or 0 for one pass)"
        )
    if overlap is None:
        overlap = receptive_field(config)
    elif not _is_int(overlap) or overlap < 0:
        raise InputError(f"overlap={overlap!r}: expected a non-negative number of HR pixels")
    elif overlap % s:
        raise InputError(
            f"overlap={overlap} is not a multiple of the scale {s}: windows must start on LR pixels; "
            f"use {overlap - overlap % s} or {overlap - overlap % s + s}"
        )
    if not _is_int(batch_tiles) or batch_tiles < 1:
        raise InputError(f"batch_tiles={batch_tiles!r}: expected a positive integer")
    if blend not in BLENDS:
        raise InputError(f"blend={blend!r}: expected one of {', '.join(BLENDS)}")
    return int(overlap)


# ------------------------------------------------------------------------------------------ the passes


class _Assembler:
    """Collects window outputs into written blocks: interior pieces at once, ramp pieces once complete."""

    def __init__(self, plan: TilePlan, blend: BlendKind, writer: Writer) -> None:
        self.plan = plan
        self.writer = writer
        self.row_pieces = plan.rows.pieces(blend)
        self.col_pieces = plan.cols.pieces(blend)
        self.pending: dict[tuple[int, int], tuple[np.ndarray, int]] = {}
        self.pending_peak = 0

    def add(self, i: int, j: int, output: np.ndarray) -> None:
        """Take window ``(i, j)``'s output, ``(C, window rows, window cols)``."""
        r_off, c_off = self.plan.rows.starts[i], self.plan.cols.starts[j]
        for pi, (r0, r1, rw) in enumerate(self.row_pieces):
            if i not in rw:
                continue
            for pj, (c0, c1, cw) in enumerate(self.col_pieces):
                if j not in cw:
                    continue
                part = output[:, r0 - r_off : r1 - r_off, c0 - c_off : c1 - c_off]
                total = len(rw) * len(cw)
                if total == 1:
                    self.writer(slice(r0, r1), slice(c0, c1), np.ascontiguousarray(part))
                    continue
                weighted = part * (rw[i][:, None] * cw[j][None, :])
                key = (pi, pj)
                if key in self.pending:
                    acc, done = self.pending[key]
                    acc += weighted
                else:
                    acc, done = weighted, 0
                done += 1
                if done == total:
                    self.pending.pop(key, None)
                    self.writer(slice(r0, r1), slice(c0, c1), acc)
                else:
                    self.pending[key] = (acc, done)
        held = sum(acc.nbytes for acc, _ in self.pending.values())
        self.pending_peak = max(self.pending_peak, held)


def _batches(items: Sequence[tuple[int, int]], size: int) -> Iterator[list[tuple[int, int]]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def _window_batch(
    plan: TilePlan, tiles: list[tuple[int, int]], lr_hsi: torch.Tensor, hr_msi: torch.Tensor, scale: int,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    lrs, msis = [], []
    for i, j in tiles:
        lr_rows, lr_cols = plan.window_slices(i, j, scale)
        rows, cols = plan.window_slices(i, j)
        lrs.append(lr_hsi[0, :, lr_rows, lr_cols])
        msis.append(hr_msi[0, :, rows, cols])
    lr = torch.stack(lrs).to(device=device, dtype=torch.float32)
    msi = torch.stack(msis).to(device=device, dtype=torch.float32)
    return lr, msi


def _scene_attention(
    model: DTSNet, lr_hsi: torch.Tensor, hr_msi: torch.Tensor, plan: TilePlan, batch_tiles: int,
    device: torch.device, tick: Callable[[int], None],
) -> torch.Tensor:
    """Pass 1: the attention sums over every core, then the scene's (1, heads, d, d) attention (float64)."""
    s = model.config.scale
    totals: dict[str, torch.Tensor] = {}
    for tiles in _batches(plan.order(), batch_tiles):
        lr, msi = _window_batch(plan, tiles, lr_hsi, hr_msi, s, device)
        weight = torch.zeros(len(tiles), 1, plan.rows.window, plan.cols.window, device=device)
        for n, (i, j) in enumerate(tiles):
            rows, cols = plan.core_slices(i, j)
            r0, c0 = plan.rows.starts[i], plan.cols.starts[j]
            weight[n, 0, rows.start - r0 : rows.stop - r0, cols.start - c0 : cols.stop - c0] = 1.0
        stats = model.fusion_statistics(lr, msi, weight)
        for key, value in stats.items():
            part = value.double().sum(dim=0, keepdim=True)
            totals[key] = totals[key] + part if key in totals else part
        del stats, lr, msi, weight
        tick(len(tiles))
    return model.attention_from_statistics(totals)


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

    See the module docstring for the tiling, the two passes of the attention fusions and the blending.

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
            attention = _scene_attention(model, lr_hsi, hr_msi, stats_plan, batch_tiles, device, bar.update)
            bar.set_description("fusing (pass 2)")
        assembler = _Assembler(plan, blend, sink)
        for tiles in _batches(plan.order(), batch_tiles):
            lr, msi = _window_batch(plan, tiles, lr_hsi, hr_msi, cfg.scale, device)
            out = model(lr, msi)[0] if attention is None else model(lr, msi, attention=attention)[0]
            block = out.float().cpu().numpy()
            for n, (i, j) in enumerate(tiles):
                assembler.add(i, j, block[n])
            # not held through the next batch's forward pass (one 768x768 window of 172 bands: 387 MB)
            del out, block, lr, msi
            bar.update(len(tiles))
    if assembler.pending:  # pragma: no cover - a planning bug, not a user error
        raise RuntimeError(f"tiled fusion left {len(assembler.pending)} blended regions unwritten")
    log.debug("tiled fusion held at most %d bytes of blended regions", assembler.pending_peak)
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
    from csakd.inference.fuse import check_pair
    from csakd.normalization import to_network

    cfg = loaded.config
    check_tiling(cfg, tile=tile, overlap=overlap, batch_tiles=batch_tiles, blend=blend)
    lr = _as_cube_tensor(lr_hsi, "lr_hsi")[None]
    msi = _as_cube_tensor(hr_msi, "hr_msi")[None]
    check_pair(loaded, lr, msi)
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
        block += np.float32(1.0)
        block *= np.float32(0.5)
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
    layout: str = "auto",
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
    from csakd.inference.checks import ClipCounter
    from csakd.inference.fuse import (
        check_input_values,
        output_wavelengths,
        pair_consistency,
        read_checked_pair,
        result_cause,
    )
    from csakd.inference.geo import apply_nodata, output_geo, output_nodata
    from csakd.io_utils import check_outputs, check_result

    target = Path(out_path).expanduser()
    check_outputs({"out": out_path}, {"lr_hsi": lr_path, "hr_msi": msi_path, "checkpoint": checkpoint},
                  overwrite=overwrite)
    CubeWriter.check_path(target, overwrite=overwrite)
    loaded = load_checkpoint(checkpoint)
    check_tiling(loaded.config, tile=tile, overlap=overlap, batch_tiles=batch_tiles, blend=blend)
    lr, msi, masks = read_checked_pair(loaded, lr_path, msi_path, variable_lr=variable_lr,
                                       variable_msi=variable_msi, layout=layout)
    check_input_values(loaded, lr, msi, strict=strict)
    consistency = pair_consistency(loaded, lr.data, msi.data)
    wavelengths = output_wavelengths(loaded, lr)
    shape = (lr.bands, msi.height, msi.width)
    clipped = ClipCounter(inplace=False)  # blocks may be views of the blending buffers
    geo = output_geo(msi.geo, masks)
    fill = output_nodata(geo)
    with CubeWriter(target, shape, wavelengths=wavelengths, band_names=lr.band_names, geo=geo,
                    overwrite=overwrite) as out:

        def checked_writer(rows: slice, cols: slice, block: np.ndarray) -> None:
            where = f"rows {rows.start}:{rows.stop}, columns {cols.start}:{cols.stop}"
            check_result(block, f"the fused window at {where}", target=target,
                         cause=lambda: result_cause(loaded, checkpoint))  # before nodata (NaN) is filled in
            if clip:
                block = clipped(block)
            mask = masks.hr_window(rows, cols)
            if mask is not None and mask.any():
                block = apply_nodata(np.array(block, dtype=np.float32), mask, fill)  # a copy: blocks may be views
            out(rows, cols, block)

        fuse_tiled_arrays(loaded, lr.data, msi.data, tile=tile, overlap=overlap, batch_tiles=batch_tiles,
                          writer=checked_writer, progress=progress, device=device,
                          blend=blend, inplace=True)  # the arrays read are not used again
    if clip:
        clipped.log()
    if report is not None:
        report.update({"spectral_consistency": consistency, "clip": clipped.summary() if clip else None})
    return target
