"""fit-scene's figures: composites, consistency maps, spectra, the Wald validation and training curves."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from csakd.degradation.estimate import degrade
from csakd.fit.estimates import SceneEstimates

__all__ = ["estimates_figure", "write_figures"]


def _rgb(cube: np.ndarray, picks: Sequence[int], reference: np.ndarray) -> np.ndarray:
    """A composite of bands ``picks`` of ``cube`` on the 1-99 % stretch of ``reference`` (same bands)."""
    from csakd.figures import false_colour

    index = np.arange(cube.shape[0], dtype=np.float64)  # band index as the 'wavelength': picks bands exactly
    return false_colour(cube, index, (float(picks[0]), float(picks[1]), float(picks[2])), reference=reference)


def _save(fig: Any, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    fig.savefig(path, format="png", dpi=110)
    return path


def estimates_figure(path: Path, est: SceneEstimates, wavelengths: np.ndarray | None) -> Path:
    """Each MSI band's estimated response against wavelength (with its offset and fit residual) and the PSF."""
    from matplotlib.figure import Figure

    r = est.response
    x_axis = wavelengths if wavelengths is not None else np.arange(r.shape[1])
    fig = Figure(figsize=(10, 3.6), layout="constrained")
    a, b = fig.subplots(1, 2, width_ratios=[1.6, 1])
    per_band = est.residual_db_per_band or [float("nan")] * r.shape[0]
    for k in range(r.shape[0]):
        a.plot(x_axis, r[k], marker=".", label=f"MSI band {k}: offset {est.offsets[k]:+.3g}, residual "
                                               f"{per_band[k]:.1f} dB")
    a.set_xlabel("wavelength (nm)" if wavelengths is not None else "HSI band", fontsize=8)
    a.set_ylabel("response (normalised units, unnormalised rows)", fontsize=8)
    a.set_title(f"response ({est.response_source})", fontsize=9)
    a.legend(fontsize=7)
    a.grid(True, alpha=0.3)
    a.tick_params(labelsize=7)
    image = b.imshow(est.kernel, cmap="viridis", interpolation="nearest")
    fig.colorbar(image, ax=b, shrink=0.85)
    b.set_title(f"PSF ({est.kernel_source}, {est.kernel.shape[0]}x{est.kernel.shape[1]} HR px, phase {est.phase})",
                fontsize=9)
    b.tick_params(labelsize=7)
    fig.suptitle(f"estimated degradation: S(Z) = R Y + o leaves {est.residual_db:.1f} dB of the degraded MSI's "
                 "variance unexplained", fontsize=10)
    return _save(fig, path)


def write_figures(
    rdir: Path, results: dict[str, torch.Tensor], lr01: torch.Tensor, msi01: torch.Tensor, est: SceneEstimates,
    wavelengths: np.ndarray | None, hsi_scale: float, msi_scale: float, wald: dict[str, Any], metrics_log: Path,
) -> list[Path]:
    from matplotlib.figure import Figure

    from csakd.figures import default_pixels, false_colour_bands, save_comparison_figure

    s = est.scale
    lr = lr01.numpy()
    cubes = {name: x.numpy() for name, x in results.items()}
    picks = false_colour_bands(lr.shape[0], wavelengths)
    written: list[Path] = []
    order = ["bicubic", *[n for n in cubes if n not in ("bicubic", "fitted")], "fitted"]

    # composites: LR-HSI upsampled / baselines / fitted / the HR-MSI, whole scene and a zoom
    msi = msi01.numpy()
    msi_rgb = _rgb(msi, (0, 1, 2), msi) if msi.shape[0] >= 3 else _rgb(msi, (0, 0, 0), msi)
    H, W = msi.shape[-2:]
    zh, zw = max(H // 4, min(H, 64)), max(W // 4, min(W, 64))
    y0, x0 = (H - zh) // 2, (W - zw) // 2
    panels = [(f"{n} ({'LR-HSI upsampled' if n == 'bicubic' else 'fused'})", _rgb(cubes[n], picks, lr))
              for n in order] + [("HR-MSI", msi_rgb)]
    fig = Figure(figsize=(3.2 * len(panels), 6.8), layout="constrained")
    axes = fig.subplots(2, len(panels), squeeze=False)
    for j, (title, img) in enumerate(panels):
        axes[0][j].imshow(img, interpolation="nearest")
        axes[0][j].set_title(title, fontsize=9)
        axes[1][j].imshow(img[y0:y0 + zh, x0:x0 + zw], interpolation="nearest")
        axes[1][j].set_title(f"centre {zh}x{zw}", fontsize=8)
        for ax in (axes[0][j], axes[1][j]):
            ax.set_xticks([])
            ax.set_yticks([])
    note = "bands " + "/".join(str(p) for p in picks)
    if wavelengths is not None:
        note = "/".join(f"{wavelengths[p]:.0f}" for p in picks) + " nm"
    fig.suptitle(f"HSI composites (R/G/B = {note}, on the LR-HSI's stretch) and the HR-MSI", fontsize=10)
    written.append(_save(fig, rdir / "composite.png"))
    written.append(estimates_figure(rdir / "estimates.png", est, wavelengths))

    # spectral consistency: each result degraded back, against the LR-HSI (errors in the LR-HSI's units)
    back = {n: degrade(results[n], torch.from_numpy(est.kernel), s, est.phase).numpy() * hsi_scale for n in order[::-1]}
    written.append(save_comparison_figure(
        rdir / "spectral_consistency.png", lr * hsi_scale, back, wavelengths,
        title="spectral consistency: each HR result blurred + decimated back vs the LR-HSI ('truth' = LR-HSI)"))

    # spatial consistency: R X against the HR-MSI, per-pixel RMSE over the MSI bands (the MSI's units)
    r = est.response
    off = est.offsets[:, None, None]
    maps = {n: np.sqrt(np.mean((np.tensordot(r, cubes[n], axes=(1, 0)) + off - msi) ** 2, axis=0)) * msi_scale
            for n in order[::-1]}
    vmax = float(np.percentile(np.concatenate([m.ravel() for m in maps.values()]), 99)) or 1.0
    fig = Figure(figsize=(3.4 * len(maps) + 0.8, 3.8), layout="constrained")
    axes = fig.subplots(1, len(maps), squeeze=False)[0]
    image = None
    for ax, (n, m) in zip(axes, maps.items(), strict=True):
        image = ax.imshow(m, cmap="magma", vmin=0, vmax=vmax, interpolation="nearest")
        ax.set_title(f"{n}: mean {m.mean():.4g}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    if image is not None:
        fig.colorbar(image, ax=list(axes), shrink=0.85, extend="max").set_label("RMSE of R X vs HR-MSI", fontsize=8)
    fig.suptitle("spatial consistency: each result through the estimated response vs the HR-MSI", fontsize=10)
    written.append(_save(fig, rdir / "spatial_consistency.png"))

    # spectra at a few HR pixels, with the LR-HSI pixel that covers each
    pixels = default_pixels(H, W, 4)
    x_axis = wavelengths if wavelengths is not None else np.arange(lr.shape[0])
    fig = Figure(figsize=(12, 3.2), layout="constrained")
    axes = fig.subplots(1, len(pixels), squeeze=False)[0]
    for ax, (row, col) in zip(axes, pixels, strict=True):
        ax.plot(x_axis, lr[:, row // s, col // s] * hsi_scale, color="black", linewidth=2.0, label="LR-HSI pixel")
        for n in order[::-1]:
            ax.plot(x_axis, cubes[n][:, row, col] * hsi_scale, linewidth=1.2, linestyle="--", label=n)
        ax.set_title(f"HR row {row}, col {col}", fontsize=9)
        ax.set_xlabel("wavelength (nm)" if wavelengths is not None else "band", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("spectra at HR pixels (LR-HSI units)", fontsize=10)
    written.append(_save(fig, rdir / "spectra.png"))

    # Wald validation: the LR-HSI recovered one scale down
    preds = wald["_predictions"]
    cols = slice(wald["columns"]["heldout"][0], None) if wald["columns"]["heldout"] else slice(0, None)
    region = "held-out columns" if wald["columns"]["heldout"] else "whole image"
    written.append(save_comparison_figure(
        rdir / "wald_validation.png", lr[:, :, cols] * hsi_scale,
        {n: preds[n][:, :, cols].numpy() * hsi_scale for n in ["fitted", *[k for k in preds if k != "fitted"]]},
        wavelengths, title=f"reduced scale (Wald), {region}: the LR-HSI ('truth') from its degraded version"))

    # training curves
    if metrics_log.exists():
        rows = [json.loads(line) for line in metrics_log.read_text().splitlines() if line.strip()]
        train = [(r["step"], r["student/loss"]) for r in rows if r["kind"] == "train" and "student/loss" in r]
        val = [(r["step"], r["sam"]) for r in rows if r["kind"] == "val/student" and "sam" in r]
        if train and val:
            fig = Figure(figsize=(8, 3), layout="constrained")
            a, b = fig.subplots(1, 2)
            a.plot(*zip(*train, strict=True), marker=".")
            a.set_title("training loss (epoch mean)", fontsize=9)
            a.set_xlabel("step", fontsize=8)
            b.plot(*zip(*val, strict=True), marker=".", label="fitted")
            bic = wald.get("heldout", wald["whole"])["bicubic"]["sam"]
            b.axhline(bic, color="grey", linestyle="--", label="bicubic")
            b.set_title(f"validation SAM (deg), {region}", fontsize=9)
            b.set_xlabel("step", fontsize=8)
            b.legend(fontsize=7)
            for ax in (a, b):
                ax.grid(True, alpha=0.3)
                ax.tick_params(labelsize=7)
            written.append(_save(fig, rdir / "training.png"))
    return written


