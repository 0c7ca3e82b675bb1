"""Tile planning for tiled fusion: LR-aligned cores and windows, and the overlap that makes them exact.

**Tiles.** The HR image is split along each axis into cores: contiguous runs of LR pixels (``tile / scale``
at most, the sizes balanced), so that every core starts and ends on an LR pixel. The cores partition the
image. Each core is run inside a window that extends it by ``overlap`` HR pixels on each side; windows all
have the same size (``max core + 2 overlap``, or the image side when that is smaller): a window at the
image border is shifted inwards rather than clipped, so it still has ``overlap`` pixels of context on each
interior side and tiles can be batched. A window that would span a whole image axis makes that axis one core
(the same work, done once).

**Exactness.** :func:`receptive_field` is the overlap (HR pixels, a multiple of the scale) beyond which the
window's border no longer reaches the core: with ``overlap >= receptive_field(config)`` every core pixel
is exactly what one pass over the whole image gives (up to float rounding). Every convolution pads with
zeros, and zero padding at an image border is the same in a window that touches that border, so windows
need context only on their interior sides. :func:`statistics_receptive_field` is the same bound for the
attention sums of pass 1 (:mod:`csakd.inference.passes`).

**Ramps.** Below the receptive field, each interior core boundary may get a blending ramp
(:meth:`AxisPlan.pieces`: the weights of the windows that meet there, summing to 1).

Planning is pure arithmetic on sizes (no PyTorch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from csakd.errors import InputError
from csakd.models.config import ModelConfig
from csakd.models.detail import detail_reach

__all__ = ["BLENDS", "AxisPlan", "BlendKind", "TilePlan", "check_tiling", "plan_tiles", "receptive_field",
           "statistics_receptive_field"]

BlendKind = Literal["linear", "cosine", "none"]
BLENDS: tuple[str, ...] = ("cosine", "linear", "none")

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
      (:func:`csakd.models.detail.detail_reach`); with ``feedback`` the streams also read the base around
      the LR samples of ``r = Y - S(base)``: the base's reach, the blur, three LR cells (the sample's cell,
      the nearest upsampling's and the head's neighbour) and the joint streams' reach (the joint-HR stream
      reading ``U(r)``, two LR pixels each way).

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
        base = detail_reach(s, config.blur_size, config.detail_radius)
        reach = max(reach, base)
        if config.feedback:  # the streams read r = Y - S(base) at LR pixels, the joint-HR stream U(r) as well
            reach = max(reach, base + config.blur_size // 2 + 3 * s + max(joint_hr + 2 * s, joint_lr) + 2)
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
