"""The passes of tiled fusion over a :class:`~csakd.inference.tiling.TilePlan`, and the assembly of their output.

**Global attention (two passes).** The ``cross_attention`` and ``csa`` fusions reduce over every pixel of
the image (:class:`~csakd.models.fusion.ChannelCrossAttention`). Pass 1 (:func:`scene_attention`) runs only
the HSI and MSI streams (the inputs of Q and K) on each window and adds, over the window's core only, the
per-head sums ``Q K^T`` and, for the ``normalized`` form, the squared norms of the Q and K channels
(:meth:`~csakd.models.dts.DTSNet.fusion_statistics`); its overlap is ``min(overlap,
statistics_receptive_field(config))``. The scene's attention matrix is computed once from these sums
(:meth:`~csakd.models.dts.DTSNet.attention_from_statistics`, in float64) and pass 2 (:func:`fuse_windows`)
runs every window with it. Fusions without attention (``none``, ``sigmoid``, ``concat_gating``) need pass 2
only.

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
:func:`~csakd.inference.tiling.statistics_receptive_field` pass 1's sums are approximate too, so the scene's
attention matrix changes slightly, and with it every pixel (a global error without seams).

**Assembly.** :class:`Assembler` hands every HR pixel exactly once to ``writer(rows, cols, block)``: interior
pieces at once, ramp pieces once their last window has come (a strip of ``overlap`` pixels along the shorter
image side waits; nothing else is held).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch

from csakd.inference.tiling import BlendKind, TilePlan
from csakd.models.dts import DTSNet

__all__ = ["Assembler", "Writer", "fuse_windows", "scene_attention"]

Writer = Callable[[slice, slice, np.ndarray], None]
"""``writer(rows, cols, block)``: HR row and column slices and the ``(C, rows, cols)`` float32 block."""

log = logging.getLogger(__name__)


class Assembler:
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


def scene_attention(
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


def fuse_windows(
    model: DTSNet, lr_hsi: torch.Tensor, hr_msi: torch.Tensor, plan: TilePlan, *, batch_tiles: int,
    blend: BlendKind, writer: Writer, attention: torch.Tensor | None, device: torch.device,
    tick: Callable[[int], None],
) -> None:
    """Pass 2: every window of ``plan`` through the network (with the scene's ``attention`` when given), its
    output assembled into blocks for ``writer``; each batch is dropped before the next one runs."""
    assembler = Assembler(plan, blend, writer)
    for tiles in _batches(plan.order(), batch_tiles):
        lr, msi = _window_batch(plan, tiles, lr_hsi, hr_msi, model.config.scale, device)
        out = model(lr, msi)[0] if attention is None else model(lr, msi, attention=attention)[0]
        block = out.float().cpu().numpy()
        for n, (i, j) in enumerate(tiles):
            assembler.add(i, j, block[n])
        # not held through the next batch's forward pass (one 768x768 window of 172 bands: 387 MB)
        del out, block, lr, msi
        tick(len(tiles))
    if assembler.pending:  # pragma: no cover - a planning bug, not a user error
        raise RuntimeError(f"tiled fusion left {len(assembler.pending)} blended regions unwritten")
    log.debug("tiled fusion held at most %d bytes of blended regions", assembler.pending_peak)
