"""The degradation of one pair as fit-scene estimates it (:func:`estimate_scene`), and the no-reference
consistency measures (:func:`spectral_consistency`, :func:`spatial_consistency`) computed with it."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from csakd.degradation import gaussian_kernel
from csakd.degradation.estimate import degrade, estimate_gaussian_blur, estimate_response
from csakd.errors import InputError
from csakd.metrics import cc, compute_metrics, psnr, rmse, sam, ssim

log = logging.getLogger("csakd.fit")

__all__ = ["SceneEstimates", "estimate_scene", "spatial_consistency", "spectral_consistency"]


@dataclass
class SceneEstimates:
    """The degradation estimated from a normalised pair (see :func:`estimate_scene`).

    Attributes:
        scale, phase: the grids' ratio and the decimation phase.
        sigma: the Gaussian blur's sigma (HR pixels); ``kernel`` the (k, k) kernel, summing to 1.
        blur_residual: the share of the variance of ``S(Z)`` that ``[Y, 1]`` leaves unexplained at this blur
            (0 is a perfect fit; the blur and phase minimise it).
        phase_scores: per phase tried, its best sigma and that residual.
        response: ``R`` (c, C) in normalised units: ``Z / msi_scale ~ R Y / hsi_scale``.
        response_source: ``estimated (NNLS)`` or the given spec.
        response_residual: per MSI band, the share of the variance of ``S(Z)_k`` that ``R_k Y`` leaves
            unexplained (no offset: the observation model has none).
        response_gain: per MSI band, the gain fitted to a given response (None when estimated).
    """

    scale: int
    phase: int
    sigma: float
    kernel: np.ndarray
    blur_residual: float
    phase_scores: dict[int, dict[str, float]]
    response: np.ndarray
    response_source: str
    response_residual: list[float]
    response_gain: list[float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "scale": self.scale,
            "phase": self.phase,
            "blur": {"kind": "gaussian", "sigma_hr_pixels": self.sigma, "kernel_size": int(self.kernel.shape[0]),
                     "relative_residual": self.blur_residual,
                     "phases_tried": {str(p): v for p, v in self.phase_scores.items()}},
            "response": {
                "source": self.response_source,
                "units": "normalised: hr_msi / msi_scale ~ R @ lr_hsi / hsi_scale",
                "matrix": self.response.tolist(),
                "row_sums": self.response.sum(axis=1).tolist(),
                "peak_band": [int(i) for i in self.response.argmax(axis=1)],
                "relative_residual_per_msi_band": self.response_residual,
                "gain_per_msi_band": self.response_gain,
            },
        }


def _relative_residual(design: torch.Tensor, target: torch.Tensor) -> list[float]:
    """Per target column, ``|t - D b|^2 / |t - mean t|^2`` with ``b`` the least-squares solution."""
    sol = torch.linalg.lstsq(design, target, driver="gelsd").solution
    res = (target - design @ sol).square().sum(dim=0)
    var = (target - target.mean(dim=0)).square().sum(dim=0).clamp_min(1e-300)
    return (res / var).tolist()


def _blur_residual(lr: torch.Tensor, msi_lr: torch.Tensor) -> float:
    """The share of the variance of the degraded MSI that the LR-HSI bands and a constant leave unexplained."""
    y = lr.reshape(lr.shape[0], -1).T
    design = torch.cat([y, torch.ones(y.shape[0], 1, dtype=y.dtype)], dim=1)
    z = msi_lr.reshape(msi_lr.shape[0], -1).T
    res = _relative_residual(design, z)
    var = (z - z.mean(dim=0)).square().sum(dim=0)
    return float(sum(r * float(v) for r, v in zip(res, var, strict=True)) / float(var.sum().clamp_min(1e-300)))


def _gaussian(sigma: float, hr_shape: tuple[int, int]) -> torch.Tensor:
    """The Gaussian kernel of :func:`estimate_gaussian_blur` for a given sigma (side ``2 ceil(3 sigma) + 1``)."""
    half = min(max(0, min(hr_shape) - 1), max(1, math.ceil(3.0 * sigma)))
    return gaussian_kernel(2 * half + 1, sigma, dtype=torch.float64)


def estimate_scene(
    lr: torch.Tensor,
    msi: torch.Tensor,
    scale: int,
    *,
    phase: int | None = None,
    sigma: float | None = None,
    response: np.ndarray | None = None,
    response_source: str = "estimated (NNLS)",
) -> SceneEstimates:
    """Estimate the blur, the decimation phase and the spectral response of a pair (both normalised).

    For each phase (``phase``, or all of 0..scale-1) the Gaussian blur is estimated
    (:func:`~csakd.degradation.estimate.estimate_gaussian_blur`; or the given ``sigma`` is used) and scored by the
    share of the variance of ``S(Z)`` left unexplained by ``[Y, 1]``; the phase with the smallest wins. ``R`` is
    then estimated by NNLS between ``S(Z)`` and ``Y``, or, when ``response`` (c, C) is given, each of its rows
    is scaled by the least-squares gain.

    Shape:
        - lr: (C, h, w); msi: (c, h scale, w scale), float64
    """
    lr = lr.to(torch.float64)
    msi = msi.to(torch.float64)
    hr_shape = (int(msi.shape[-2]), int(msi.shape[-1]))
    phases = [phase] if phase is not None else list(range(scale))
    scores: dict[int, dict[str, float]] = {}
    kernels: dict[int, torch.Tensor] = {}
    for p in phases:
        if sigma is None:
            s_p, k_p = estimate_gaussian_blur(lr, msi, scale, p)
        else:
            s_p, k_p = float(sigma), _gaussian(float(sigma), hr_shape)
        kernels[p] = k_p
        scores[p] = {"sigma": float(s_p), "relative_residual": _blur_residual(lr, degrade(msi, k_p, scale, p))}
        log.info("fit-scene: phase %d: blur sigma %.3f, relative residual %.4g", p, s_p,
                 scores[p]["relative_residual"])
    best = min(scores, key=lambda p: scores[p]["relative_residual"])
    kernel = kernels[best]
    msi_lr = degrade(msi, kernel, scale, best)
    y = lr.reshape(lr.shape[0], -1).T
    z = msi_lr.reshape(msi_lr.shape[0], -1).T
    gains: list[float] | None = None
    if response is None:
        r = estimate_response(lr, msi_lr)
    else:
        r0 = np.array(response, dtype=np.float64)  # a writable copy
        if r0.shape != (msi.shape[0], lr.shape[0]):
            raise InputError(f"the response is {r0.shape[0]}x{r0.shape[1]} but the pair has {msi.shape[0]} MSI "
                             f"and {lr.shape[0]} HSI bands: expected ({msi.shape[0]}, {lr.shape[0]})")
        pred = y @ torch.from_numpy(r0).T  # (n, c)
        g = ((pred * z).sum(dim=0) / pred.square().sum(dim=0).clamp_min(1e-300)).numpy()
        gains = [float(v) for v in g]
        r = r0 * g[:, None]
    pred = y @ torch.from_numpy(r).T
    var = (z - z.mean(dim=0)).square().sum(dim=0).clamp_min(1e-300)
    residual = ((z - pred).square().sum(dim=0) / var).tolist()
    return SceneEstimates(
        scale=scale, phase=best, sigma=scores[best]["sigma"], kernel=kernel.numpy(),
        blur_residual=scores[best]["relative_residual"], phase_scores=scores, response=r,
        response_source=response_source, response_residual=[float(v) for v in residual], response_gain=gains,
    )


# ---------------------------------------------------------------------------------------------- metrics
def spectral_consistency(
    fused: torch.Tensor, lr: torch.Tensor, kernel: np.ndarray | torch.Tensor, scale: int, phase: int,
    *, units: float = 1.0,
) -> dict[str, float]:
    """The fused image blurred and decimated back (``S(X)``) against the LR-HSI ``Y``, both normalised.

    Returns PSNR (per-band peak), SAM (degrees), ERGAS (at ``scale``), RMSE (times ``units``: the file's units
    for ``units = hsi_scale``) and SSIM, from :func:`csakd.metrics.compute_metrics`. Higher PSNR / SSIM and
    lower SAM / ERGAS / RMSE mean more consistent; the ideal is an exact match.

    Shape:
        - fused: (C, H, W); lr: (C, H / scale, W / scale)
    """
    k = torch.tensor(np.array(kernel, dtype=np.float64))
    back = degrade(fused.to(torch.float64), k, scale, phase)
    m = compute_metrics(back, lr.to(torch.float64), scale=scale, units=units)
    return {key: float(m[key][0]) for key in ("psnr", "sam", "ergas", "rmse", "ssim")}


def spatial_consistency(
    fused: torch.Tensor, msi: torch.Tensor, response: np.ndarray, *, units: float = 1.0
) -> dict[str, float]:
    """The fused image through the response (``R X``) against the HR-MSI ``Z``, both normalised.

    Returns PSNR (per-band peak), RMSE (times ``units``), CC (mean correlation per band,
    :func:`csakd.metrics.cc`), SSIM (data range 1) and SAM (degrees, over the MSI bands).

    Shape:
        - fused: (C, H, W); msi: (c, H, W); response: (c, C)
    """
    r = torch.tensor(np.array(response, dtype=np.float64))
    x = fused.to(torch.float64)
    pred = (r @ x.reshape(x.shape[0], -1)).reshape(r.shape[0], *x.shape[-2:])
    z = msi.to(torch.float64)
    return {
        "psnr": float(psnr(pred, z)[0]),
        "rmse": float(rmse(pred, z, units=units)[0]),
        "cc": float(cc(pred, z)[0]),
        "ssim": float(ssim(pred, z)[0]),
        "sam": float(sam(pred, z)[0]),
    }


def _warn_about_fit(est: SceneEstimates, msi01: torch.Tensor) -> None:
    """Log what makes the estimates (and so the whole fit) doubtful on this scene."""
    if est.sigma >= 1.5 * est.scale:
        log.warning("fit-scene: the blur sigma %.2f is at the top of the range searched (%.1f HR pixels): the blur "
                    "may be larger, or it is absorbing misregistration or a non-linear MSI", est.sigma,
                    1.5 * est.scale)
    if max(est.response_residual) > 0.1 or est.blur_residual > 0.1:
        log.warning("fit-scene: the linear model S(Z) = R Y leaves %.0f%% of the degraded MSI's variance unexplained "
                    "(blur fit) and %.0f%% (response fit, worst band): a gamma-encoded MSI, misregistration or "
                    "different acquisition times? Consistency metrics are then only a rough guide",
                    100 * est.blur_residual, 100 * max(est.response_residual))
    dark = float((msi01.amax(dim=0) <= 0).double().mean())
    if dark > 0.005:
        log.warning("fit-scene: %.1f%% of the HR-MSI's pixels are 0 in every band: undeclared nodata? They are "
                    "fitted and fused like any other pixel", 100 * dark)


