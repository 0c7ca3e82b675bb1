"""The degradation of one pair as fit-scene estimates it (:func:`estimate_scene`), and the no-reference
consistency measures (:func:`spectral_consistency`, :func:`spatial_consistency`) computed with it."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from csakd.degradation import gaussian_kernel
from csakd.degradation.estimate import degrade, estimate_gaussian_blur
from csakd.errors import InputError
from csakd.metrics import cc, compute_metrics, psnr, rmse, sam, ssim

log = logging.getLogger("csakd.fit")

__all__ = [
    "SceneEstimates", "check_msi_wavelengths", "check_same_scene", "estimate_scene", "spatial_consistency",
    "spectral_consistency",
]


@dataclass
class SceneEstimates:
    """The degradation estimated from a normalised pair (see :func:`estimate_scene`).

    Attributes:
        scale, phase: the grids' ratio and the decimation phase.
        sigma: the sigma (HR pixels) of the best isotropic Gaussian blur (the phase search's, and the
            Gaussian the network's residual base uses).
        kernel: the PSF (k, k), summing to 1: estimated jointly with the response (``kernel_source`` "joint",
            any shape) or the Gaussian of ``sigma`` ("gaussian": a given ``--blur-sigma``).
        blur_residual: the share of the variance of ``S(Z)`` that ``[Y, 1]`` leaves unexplained at the
            Gaussian blur (the phase search's score).
        phase_scores: per phase tried, its best sigma and that residual.
        response: ``R`` (c, C) in normalised units, rows unnormalised (each MSI band's gain is in its row):
            ``Z / msi_scale ~ R Y / hsi_scale + offset``.
        offset: per MSI band (normalised MSI units).
        response_source: ``estimated`` or the given spec.
        response_residual: per MSI band, the share of the variance of ``S(Z)_k`` that ``R_k Y + o_k`` leaves
            unexplained, with the final PSF.
        residual_db, residual_db_per_band: the same over all bands and per band, in dB
            (``10 log10`` of the share; more negative is a better fit); ``history_db`` per alternation.
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
    offset: np.ndarray | None = None
    kernel_source: str = "gaussian"
    residual_db: float = 0.0
    residual_db_per_band: list[float] = field(default_factory=list)
    history_db: list[float] = field(default_factory=list)

    @property
    def offsets(self) -> np.ndarray:
        """The per-band offsets (zeros when none was fitted)."""
        return np.zeros(self.response.shape[0]) if self.offset is None else np.asarray(self.offset)

    def to_dict(self) -> dict[str, Any]:
        return {
            "scale": self.scale,
            "phase": self.phase,
            "blur": {"kind": self.kernel_source, "gaussian_sigma_hr_pixels": self.sigma,
                     "sigma_hr_pixels": self.sigma, "kernel_size": int(self.kernel.shape[0]),
                     "kernel": self.kernel.tolist(),
                     "relative_residual": self.blur_residual,
                     "phases_tried": {str(p): v for p, v in self.phase_scores.items()}},
            "response": {
                "source": self.response_source,
                "units": "normalised: hr_msi / msi_scale ~ R @ lr_hsi / hsi_scale + offset",
                "matrix": self.response.tolist(),
                "offset": self.offsets.tolist(),
                "row_sums": self.response.sum(axis=1).tolist(),
                "peak_band": [int(i) for i in self.response.argmax(axis=1)],
                "relative_residual_per_msi_band": self.response_residual,
                "gain_per_msi_band": self.response_gain,
            },
            "model_residual_db": {"all_bands": self.residual_db, "per_msi_band": self.residual_db_per_band,
                                  "per_alternation": self.history_db,
                                  "definition": "10 log10(|S(Z) - R Y - o|^2 / |S(Z) - mean|^2), LR pixels"},
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
    response_source: str = "estimated",
    psf: str = "estimate",
    valid: np.ndarray | None = None,
) -> SceneEstimates:
    """Estimate the PSF, the decimation phase, the spectral response and per-band offsets of a normalised pair.

    1. For each phase (``phase``, or all of 0..scale-1) the best isotropic Gaussian blur is found
       (:func:`~csakd.degradation.estimate.estimate_gaussian_blur`; or the given ``sigma`` is used) and scored
       by the share of the variance of ``S(Z)`` left unexplained by ``[Y, 1]``; the phase with the smallest wins.
    2. From that Gaussian, the PSF (any shape, on a support of ``2 ceil(1.5 scale) + 1`` pixels or the
       Gaussian's if larger, at most ``4 scale + 1`` and fewer taps than valid LR pixels), the non-negative
       response (each row unnormalised) and an offset per MSI band are estimated jointly
       (:func:`~csakd.degradation.estimate.estimate_degradation`). With ``sigma`` given or
       ``psf="gaussian"`` the Gaussian is kept and only the response and offsets are fitted. With ``response``
       (c, C) given, each of its rows is scaled by a fitted gain. Only LR pixels where ``valid`` (h, w) is True
       (when given) enter this estimate; too few of them is an :class:`InputError`.

    Shape:
        - lr: (C, h, w); msi: (c, h scale, w scale), float64
    """
    from csakd.degradation.estimate import estimate_degradation

    if psf not in ("estimate", "gaussian"):
        raise InputError(f"psf {psf!r}: expected 'estimate' or 'gaussian'")
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
    gaussian = kernels[best]
    shape: np.ndarray | None = None
    if response is not None:
        shape = np.array(response, dtype=np.float64)  # a writable copy
        if shape.shape != (msi.shape[0], lr.shape[0]):
            raise InputError(f"the response is {shape.shape[0]}x{shape.shape[1]} but the pair has {msi.shape[0]} MSI "
                             f"and {lr.shape[0]} HSI bands: expected ({msi.shape[0]}, {lr.shape[0]})")
    joint = sigma is None and psf == "estimate"
    size = int(gaussian.shape[0])
    if joint:
        size = min(max(size, 2 * math.ceil(1.5 * scale) + 1), 4 * scale + 1, 2 * (min(hr_shape) - 1) + 1)
        n_valid = int(lr.shape[-2] * lr.shape[-1]) if valid is None else int(np.count_nonzero(valid))
        while size > 3 and size * size + 1 > n_valid:  # as many LR pixels as the PSF has taps, at least
            size -= 2
    fit = estimate_degradation(lr, msi, scale, best, kernel_size=size, init_kernel=gaussian, response_shape=shape,
                               fit_kernel=joint, valid=valid)
    kernel = fit.kernel if joint else gaussian.numpy()
    r = fit.response
    gains: list[float] | None = None
    if shape is not None:
        gains = [float(r[b].sum() / shape[b].sum()) if shape[b].sum() > 0 else 0.0 for b in range(r.shape[0])]
    residual = [float(10 ** (v / 10)) for v in fit.residual_db_per_band]
    return SceneEstimates(
        scale=scale, phase=best, sigma=scores[best]["sigma"], kernel=np.ascontiguousarray(kernel),
        blur_residual=scores[best]["relative_residual"], phase_scores=scores, response=r,
        response_source=response_source, response_residual=residual, response_gain=gains, offset=fit.offset,
        kernel_source="joint" if joint else "gaussian", residual_db=fit.residual_db,
        residual_db_per_band=fit.residual_db_per_band, history_db=fit.history_db,
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
    fused: torch.Tensor, msi: torch.Tensor, response: np.ndarray, *, units: float = 1.0,
    offset: np.ndarray | None = None,
) -> dict[str, float]:
    """The fused image through the response (``R X + offset``) against the HR-MSI ``Z``, both normalised.

    Returns PSNR (per-band peak), RMSE (times ``units``), CC (mean correlation per band,
    :func:`csakd.metrics.cc`), SSIM (data range 1) and SAM (degrees, over the MSI bands).

    Shape:
        - fused: (C, H, W); msi: (c, H, W); response: (c, C)
    """
    r = torch.tensor(np.array(response, dtype=np.float64))
    x = fused.to(torch.float64)
    pred = (r @ x.reshape(x.shape[0], -1)).reshape(r.shape[0], *x.shape[-2:])
    if offset is not None:
        pred = pred + torch.as_tensor(np.asarray(offset, dtype=np.float64))[:, None, None]
    z = msi.to(torch.float64)
    return {
        "psnr": float(psnr(pred, z)[0]),
        "rmse": float(rmse(pred, z, units=units)[0]),
        "cc": float(cc(pred, z)[0]),
        "ssim": float(ssim(pred, z)[0]),
        "sam": float(sam(pred, z)[0]),
    }


#: The model residual (dB) above which the two images are taken not to show the same scene: ``S(Z) = R Y + o``
#: leaves more than 80% of the degraded MSI's variance unexplained.
UNRELATED_DB = -1.0


def check_same_scene(est: SceneEstimates) -> None:
    """Raise :class:`InputError` when the estimated linear model explains almost nothing of the degraded MSI:
    the pair does not overlap (different scenes, a wrong crop, a large misregistration)."""
    if est.residual_db > UNRELATED_DB:
        raise InputError(
            f"the LR-HSI explains only {100 * (1 - 10 ** (est.residual_db / 10)):.0f}% of the degraded HR-MSI's "
            f"variance (model residual {est.residual_db:.1f} dB, at best over the blurs and phases tried): the two "
            "images do not seem to overlap (different scenes or areas, or misregistered by more than the PSF "
            "support); check the pair, or crop both to the common area"
        )


def check_msi_wavelengths(msi_wavelengths: np.ndarray | None, hsi_wavelengths: np.ndarray | None) -> None:
    """Raise :class:`InputError` when an HR-MSI band's centre lies outside the LR-HSI's wavelength range (both
    known): its response cannot be made of the HSI's bands. The range is widened by half a band spacing."""
    if msi_wavelengths is None or hsi_wavelengths is None or len(hsi_wavelengths) < 2:
        return
    hw = np.sort(np.asarray(hsi_wavelengths, dtype=np.float64))
    half = 0.5 * float(np.median(np.diff(hw)))
    lo, hi = float(hw[0]) - half, float(hw[-1]) + half
    outside = [(i, float(v)) for i, v in enumerate(np.asarray(msi_wavelengths, dtype=np.float64))
               if not lo <= v <= hi]
    if outside:
        listed = ", ".join(f"band {i} at {v:g} nm" for i, v in outside)
        raise InputError(
            f"the HR-MSI has bands outside the LR-HSI's wavelengths ({hw[0]:g}-{hw[-1]:g} nm): {listed}; the "
            "observation model Z = R X cannot hold for them: drop those bands from the HR-MSI"
        )


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


